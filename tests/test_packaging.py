"""Issue 12, packaging: sdist and wheel contents, where the wheel installs the man pages and
the sample config, the FreeBSD port skeleton, and the Makefile under BSD make."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PORT = REPO / "port" / "sysutils" / "carphooks"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = PYPROJECT["project"]["version"]
MAN_PAGES = {"share/man/man8/carphooks.8": "man/carphooks.8",
             "share/man/man8/carp-event.8": "man/carp-event.8",
             "share/man/man5/carphooks.toml.5": "man/carphooks.toml.5"}
DATA = {**MAN_PAGES, "etc/carphooks.toml.sample": "carphooks.toml.sample"}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sdist and wheel of this checkout, built offline with the venv's setuptools."""
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir",
                           str(out), str(REPO)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


def test_wheel_holds_the_man_pages_the_sample_and_the_license(dist: Path) -> None:
    (wheel,) = dist.glob(f"carphooks-{VERSION}-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        data = f"carphooks-{VERSION}.data/data/"
        for installed, source in DATA.items():
            assert data + installed in names, installed
            assert zf.read(data + installed) == (REPO / source).read_bytes()
        assert f"carphooks-{VERSION}.dist-info/licenses/LICENSE" in names
        meta = zf.read(f"carphooks-{VERSION}.dist-info/METADATA").decode()
    assert "License-Expression: BSD-2-Clause" in meta
    assert "carphooks/data/devd/carphooks.conf" in names
    assert "carphooks/data/templates/cron" in names


def test_sdist_holds_what_the_port_and_the_tests_need(dist: Path) -> None:
    (sdist,) = dist.glob(f"carphooks-{VERSION}.tar.gz")
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for path in ("LICENSE", "carphooks.toml.sample", "man/carphooks.8", "man/carp-event.8",
                 "man/carphooks.toml.5", "devd/carphooks.conf", "templates/rc.conf",
                 "hooks/tinc-up", "port/sysutils/carphooks/Makefile",
                 "port/sysutils/carphooks/pkg-descr", "Makefile", "pyproject.toml"):
        assert path in names, path


def test_wheel_installs_them_under_the_prefix(dist: Path, tmp_path: Path) -> None:
    """What the port's installer (--prefix ${PREFIX}) and a system pip do."""
    (wheel,) = dist.glob("*.whl")
    prefix = tmp_path / "prefix"
    # --ignore-installed: never uninstall the editable carphooks of the running venv
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--no-index", "--ignore-installed", "--prefix", str(prefix),
                           str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for installed, source in DATA.items():
        assert (prefix / installed).read_bytes() == (REPO / source).read_bytes(), installed
    assert (prefix / "bin" / "carp-event").is_file()
    assert (Path(sys.executable).parent / "carp-event").is_file()  # the venv's, untouched


# -- the port skeleton ----------------------------------------------------------------------

def make_vars(text: str) -> dict[str, str]:
    """``NAME=<tab>value`` assignments of a port Makefile (continuation lines joined)."""
    joined = text.replace("\\\n", " ")
    result: dict[str, str] = {}
    for line in joined.splitlines():
        m = re.match(r"^([A-Z_]+)[+?]?=\s*(.*)$", line)
        if m:
            result[m.group(1)] = " ".join(m.group(2).split())
    return result


def test_port_makefile_follows_the_handbook() -> None:
    v = make_vars((PORT / "Makefile").read_text(encoding="utf-8"))
    assert v["PORTNAME"] == PYPROJECT["project"]["name"]
    assert v["DISTVERSION"] == VERSION
    assert v["USES"].startswith("python")
    assert set(v["USE_PYTHON"].split()) == {"autoplist", "concurrent", "pep517"}
    assert v["LICENSE"] == "BSD2CLAUSE" and v["NO_ARCH"] == "yes"
    assert v["PKGNAMEPREFIX"] == "${PYTHON_PKGNAMEPREFIX}"
    assert '"@sample etc/carphooks.toml.sample"' in v["PLIST_FILES"]
    assert v["SUB_FILES"] == "pkg-message"
    for name in ("pkg-descr", "files/pkg-message.in"):
        assert (PORT / name).is_file(), name


def test_port_depends_on_every_runtime_dependency() -> None:
    """Each pyproject dependency is a RUN_DEPENDS for the port's Python flavor, with the
    same minimum version; the build backend is a BUILD_DEPENDS."""
    v = make_vars((PORT / "Makefile").read_text(encoding="utf-8"))
    run = {m.group(1): m.group(2) for m in re.finditer(
        r"\$\{PYTHON_PKGNAMEPREFIX\}([a-z0-9_-]+)>=([0-9.]+):[a-z]+/py-\1@\$\{PY_FLAVOR\}",
        v["RUN_DEPENDS"])}
    wanted = {}
    for dep in PYPROJECT["project"]["dependencies"]:
        name, _, version = dep.partition(">=")
        wanted[name.strip().lower()] = version.strip()
    assert run == wanted
    backend = PYPROJECT["build-system"]["requires"]
    assert backend == ["setuptools>=77"]
    assert "${PYTHON_PKGNAMEPREFIX}setuptools>=77:devel/py-setuptools@${PY_FLAVOR}" \
        in v["BUILD_DEPENDS"]


def test_pkg_message_names_the_first_steps() -> None:
    text = (PORT / "files" / "pkg-message.in").read_text(encoding="utf-8")
    for step in ("%%PREFIX%%/etc/carphooks.toml", "carphooks install",
                 "service devd restart", "carphooks check"):
        assert step in text, step


# -- the Makefile -----------------------------------------------------------------------------

def test_bsd_make_says_it_needs_gmake(tmp_path: Path) -> None:
    bmake = shutil.which("bmake")
    if bmake is None:
        pytest.skip("bmake is not installed (apt-get install bmake)")
    proc = subprocess.run([bmake, "-C", str(REPO), "help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    assert 'this Makefile needs GNU make: on FreeBSD run "pkg install gmake", then ' \
           '"gmake help"' in proc.stderr
    assert proc.stdout == ""


def test_gnu_make_help_and_port_distfile(tmp_path: Path) -> None:
    proc = subprocess.run(["make", "-C", str(REPO), "help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "make demo" in proc.stdout
    proc = subprocess.run(["make", "-C", str(REPO), "-n", "port-distfile",
                           f"DISTDIR={tmp_path}"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"install -m 0644 dist/carphooks-{VERSION}.tar.gz {tmp_path}/" in proc.stdout


# -- the README's FreeBSD quick start ---------------------------------------------------------

def test_readme_quick_start_config_installs_and_checks(tmp_path: Path) -> None:
    """The config of the quick start loads and renders a full install for each host."""
    from carphooks import config as configmod
    from carphooks.setup import install, render

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## FreeBSD quick start", 1)[1].split("\n## ", 1)[0]
    toml = re.search(r"```toml\n(.*?)```", section, re.S)
    assert toml is not None
    commands = re.search(r"```sh\n(.*?)```", section, re.S)
    assert commands is not None
    for step in ("pkg install", "carphooks install", "service devd restart",
                 "carphooks check"):
        assert step in commands.group(1), step
    password = tmp_path / "carphooks.pass"
    password.write_text("0123456789abcdef\n")
    password.chmod(0o600)
    cfg = tmp_path / "carphooks.toml"
    cfg.write_text(toml.group(1).replace("/usr/local/etc/carphooks.pass", str(password)))
    cfg.chmod(0o600)
    config = configmod.load(cfg)
    assert [g.name for g in config.groups] == ["web"]
    for host in config.nodes:
        tgt = render.target(config, host=host, bindir="/usr/local/bin")
        report = install.install(render.render_install_set(tgt), tmp_path / host)
        assert {p.action for p in report.planned} == {"create"}
