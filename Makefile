# carphooks — run `make help` for the targets.
# This file needs GNU make (gmake on FreeBSD). BSD make reads the define line
# below as an assignment and stops at the .error; GNU make only stores the text.
define BSD_MAKE_STOP :=
.error this Makefile needs GNU make: on FreeBSD run "pkg install gmake", then "gmake help"
endef
# bash where it exists (Debian), else sh (FreeBSD has no /bin/bash).
SHELL := $(firstword $(wildcard /bin/bash) /bin/sh)
PYTHON ?= $(shell for p in python3.11 python3.12 python3.13 python3; do \
	  command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  2>/dev/null && { command -v $$p; break; }; done)
VENV ?= .venv
BIN := $(VENV)/bin
PREFIX ?= /usr/local
MANDIR ?= $(PREFIX)/share/man
# Debian packages the tests, the lab and the demo need (installed only when missing, as root).
APT_PACKAGES := python3 python3-venv python3-dev gcc make iproute2 tinc ucarp keepalived \
	iputils-arping iputils-ping mandoc tcpdump bmake curl

.PHONY: help deps venv check test test-fast lint bench demo lab-down install man clean

help:
	@echo "make demo   - three failovers, the bare shell hook vs carphooks, in a three-host"
	@echo "              lab (root, under 2 min); log, tables and picture in out/demo/"
	@echo "make demo-full - every lab scenario with both hook sets (~6 min), out/demo-full/"
	@echo "make check  - lint, types and the in-process unit tests (under a minute)"
	@echo "make test   - unit, emulator, CLI and lab tests (installs what it needs)"
	@echo "make lint   - ruff and mypy --strict"
	@echo "make bench  - benchmarks (bench/)"
	@echo "make install [PREFIX=/usr/local] - package, console scripts and man pages"

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "warning: missing Debian packages:$$missing (lab tests will be skipped)"; fi; \
	fi

$(BIN)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: Python >= 3.11 not found"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: deps $(BIN)/.installed

# The inner loop: no subprocess, no emulator, no namespace (tests/unit and parsers).
CHECK_TESTS := tests/unit tests/test_events.py tests/test_ifconfig_parse.py tests/test_config.py

check: lint
	$(BIN)/python -m pytest -q $(CHECK_TESTS)

test: venv
	$(BIN)/python -m pytest -q

test-fast: venv
	$(BIN)/python -m pytest -q -m "not lab"

lint: venv
	$(BIN)/ruff check carphooks tests bench lab
	$(BIN)/mypy

bench: venv
	$(BIN)/python -m bench

# The lab's demo (lab/, docs/lab.md): a few lines on the terminal; the per-step log,
# timelines, tables and picture in out/demo/ (out/demo-full/: every scenario).
DEMO_PREP = $(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/pip install -q \
	matplotlib >/dev/null 2>&1 || echo "matplotlib unavailable: the picture will be SVG"; \
	mkdir -p out/$@
DEMO_RUN = $(BIN)/python -m lab demo --log out/$@/demo.log --json out/$@/results.json \
	--markdown out/$@/results.md --plot out/$@/timeline.png

demo: venv
	@$(DEMO_PREP)
	@$(DEMO_RUN)

demo-full: venv
	@$(DEMO_PREP)
	@$(DEMO_RUN) --full
.PHONY: demo-full

lab-down: venv
	$(BIN)/python -m lab down

install:
	$(PYTHON) -m pip install .
	install -d $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5
	install -m 0444 man/*.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 0444 man/*.5 $(DESTDIR)$(MANDIR)/man5/

# The FreeBSD port (port/sysutils/carphooks) builds from this checkout's sdist:
# written to dist/ and copied to DISTDIR, where the ports framework looks for it.
# Needs "build" and setuptools >= 77 (the dev venv has them; on FreeBSD:
# pkg install py311-build py311-setuptools). See port/README.md.
DISTDIR ?= /usr/ports/distfiles
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
PORT_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
.PHONY: port-distfile
port-distfile:
	$(PORT_PYTHON) -m build --sdist --no-isolation --outdir dist .
	install -d $(DISTDIR)
	install -m 0644 dist/carphooks-$(VERSION).tar.gz $(DISTDIR)/
	@echo "next: cd port/sysutils/carphooks && make makesum && make install clean"

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache out
