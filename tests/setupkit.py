"""Cluster configs shared by the render, devd-rule and install tests.

Three hosts hA, hB, hC in both topologies. Config files are written mode 0600
(the loader refuses group/other-writable files).

Names differ from conftest's on purpose: ``write_cluster`` writes one of these
templates (conftest's ``write_config`` writes any text), ``RENDER_BINDIR`` is the
bindir rendered into generated files (conftest's ``BINDIR`` is this venv's scripts).
"""

from __future__ import annotations

import os
from pathlib import Path

from carphooks import config as configmod
from carphooks.setup import devd, render

HOSTS = ("hA", "hB", "hC")
RENDER_BINDIR = Path("/usr/local/bin")
CONFIG_PATH = Path("/usr/local/etc/carphooks.toml")

TINC = """\
log_tag = "carphooks"
backend = "{backend}"
state_dir = "{state_dir}"
syslog_socket = "{syslog}"
topology = "tinc"
quorum = "majority"
lock_timeout = 5.0

[tinc]
netname = "carp"
nodes = ["hA", "hB", "hC"]

[hosts.hA]
vpn_address = "192.0.2.11/24"

[hosts.hB]
vpn_address = "192.0.2.12/24"

[hosts.hC]
vpn_address = "192.0.2.13/24"

[[group]]
name = "web"
vhid = 1
carp_interface = "tap0"
external_interface = "vtnet0"
addresses = ["198.51.100.100/24", "2001:db8:100::100/64"]

[group.carp]
address = "192.0.2.254/24"
advbase = 1
password = "s3cret"

[[group]]
name = "mail"
vhid = 2
carp_interface = "tap0"
external_interface = "vtnet0"
addresses = ["198.51.100.101/24"]

[group.carp]
address = "192.0.2.253/24"
advbase = 2
password = "0ther"
"""

UNICAST = """\
log_tag = "carphooks"
backend = "{backend}"
state_dir = "{state_dir}"
syslog_socket = "{syslog}"
topology = "unicast"
quorum = "none"

[tinc]
nodes = ["hA", "hB", "hC"]

[hosts.hA]
vpn_address = "10.0.0.11/24"

[hosts.hB]
vpn_address = "10.0.0.12/24"

[hosts.hC]
vpn_address = "10.0.0.13/24"

[[group]]
name = "web"
vhid = 1
carp_interface = "vtnet1"
external_interface = "vtnet0"
addresses = ["198.51.100.100/24", "2001:db8:100::100/64"]

[group.carp]
address = "10.0.0.254/24"
advbase = 1
password = "s3cret"
peers = ["10.0.0.11", "10.0.0.12", "10.0.0.13"]

[[group]]
name = "db"
vhid = 7
carp_interface = "vtnet1.100"
external_interface = "vtnet0"
addresses = ["198.51.100.107/24"]

[group.carp]
address = "fd00:100::254/64"
password = "db.pass"
"""

TEMPLATES = {"tinc": TINC, "unicast": UNICAST}


def write_cluster(path: Path, topology: str = "tinc", *, backend: str = "freebsd",
                 state_dir: Path | None = None, syslog: Path | None = None,
                 extra: str = "", replace: tuple[str, str] | None = None) -> Path:
    """Write a cluster config (mode 0600) and return its path."""
    base = path.parent
    text = TEMPLATES[topology].format(
        backend=backend, state_dir=state_dir or base / "state",
        syslog=syslog or base / "no-syslog.sock")
    if replace is not None:
        assert replace[0] in text, replace[0]
        text = text.replace(*replace)
    path.write_text(extra + text, encoding="utf-8")
    os.chmod(path, 0o600)
    return path


def load(path: Path) -> configmod.Config:
    return configmod.load(path)


def target(config: configmod.Config, host: str, **kw: object) -> render.Target:
    """A target with the fixed paths the golden files use."""
    args: dict[str, object] = {"bindir": RENDER_BINDIR, "config_path": CONFIG_PATH}
    args.update(kw)
    return render.target(config, host=host, **args)  # type: ignore[arg-type]


def first_match(conf: devd.DevdConfig, event: devd.Event) -> devd.Rule | None:
    """The one rule devd would run for ``event`` (None: nothing runs)."""
    matches = conf.all_matches(event)
    return matches[0] if matches else None
