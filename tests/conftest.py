"""Shared fixtures: config files, a real syslog socket, the FreeBSD emulator, CLI runners."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

from fakebsd.control import FakeBSD  # noqa: E402

BINDIR = Path(sys.executable).parent
SYSLOG_RE = re.compile(r"^<(?P<pri>\d+)>(?P<stamp>\w{3} [ \d]\d \d\d:\d\d:\d\d) "
                       r"(?P<tag>[^\[:]+)\[(?P<pid>\d+)\]: (?P<msg>.*)$", re.S)


@dataclass(frozen=True)
class SyslogMessage:
    """One datagram as syslogd would receive it."""

    facility: int
    severity: int
    tag: str
    pid: int
    message: str


class SyslogServer:
    """A unix datagram socket standing in for /var/run/log, drained by a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.received: list[SyslogMessage] = []
        self.raw: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self.raw.append(data)

    def messages(self, settle: float = 0.1) -> list[SyslogMessage]:
        """Everything received so far, parsed (waits briefly for in-flight datagrams)."""
        time.sleep(settle)
        with self._lock:
            raw = list(self.raw)
        out = []
        for data in raw:
            match = SYSLOG_RE.match(data.decode())
            assert match, f"not a syslog datagram: {data!r}"
            pri = int(match["pri"])
            out.append(SyslogMessage(pri // 8, pri % 8, match["tag"], int(match["pid"]),
                                     match["msg"]))
        return out

    def texts(self) -> list[str]:
        return [m.message for m in self.messages()]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.sock.close()


@pytest.fixture
def syslog(tmp_path: Path) -> Iterator[SyslogServer]:
    server = SyslogServer(tmp_path / "log.sock")
    yield server
    server.close()


def write_config(path: Path, text: str, mode: int = 0o600) -> Path:
    """Write a config file with safe permissions."""
    path.write_text(textwrap.dedent(text))
    os.chmod(path, mode)
    return path


@pytest.fixture
def bsd(tmp_path: Path) -> FakeBSD:
    """An emulated FreeBSD 14.1 host with vtnet0 (public) and tap0 (VPN, vhid 1 BACKUP)."""
    host = FakeBSD(tmp_path / "bsd", release="14.1")
    host.add_interface("vtnet0", mac="58:9c:fc:00:00:01")
    host.add_address("vtnet0", "203.0.113.11/24")
    host.add_interface("tap0", mac="02:00:00:00:00:11", kind="tap")
    host.add_address("tap0", "192.0.2.11/24")
    host.add_vhid("tap0", 1)
    host.add_address("tap0", "192.0.2.254/24", vhid=1)
    host.set_carp_state("tap0", 1, "BACKUP")
    return host


BASE_CONFIG = """\
log_tag = "carphooks-test"
backend = "freebsd"
state_dir = "{state}"
syslog_socket = "{sock}"
quorum = "none"
lock_timeout = 5

[[group]]
name = "web"
vhid = 1
carp_interface = "tap0"
external_interface = "vtnet0"
addresses = ["203.0.113.10/24", "2001:db8:10::10/64"]

[group.carp]
address = "192.0.2.254/24"
advbase = 1
password = "s3cret"
"""


@pytest.fixture
def config(tmp_path: Path, syslog: SyslogServer) -> Path:
    """A valid FreeBSD config pointing at the test syslog socket."""
    return write_config(tmp_path / "carphooks.toml",
                        BASE_CONFIG.format(state=tmp_path / "state", sock=syslog.path))


@dataclass
class Run:
    """A finished console-script run."""

    code: int
    out: str
    err: str


def run_script(name: str, *args: str, env: dict[str, str], config: Path | None = None,
               timeout: float = 60) -> Run:
    """Run an installed console script as a subprocess (what devd and tinc do)."""
    full = dict(env)
    if config is not None:
        full["CARPHOOKS_CONFIG"] = str(config)
    proc = subprocess.run([str(BINDIR / name), *args], env=full, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def addrs(host: FakeBSD, ifname: str) -> set[str]:
    """The emulator's addresses on ``ifname`` as 'A/P' strings."""
    return {str(a[0]) for a in host.addresses(ifname)}


def mutating(host: FakeBSD) -> list[list[str]]:
    """ifconfig/sysctl calls that change state (not plain reads)."""
    out = []
    for argv in host.calls():
        name = Path(argv[0]).name
        if name == "ifconfig" and len(argv) > 2:
            out.append(argv)
        elif name == "sysctl" and any("=" in a for a in argv[1:]):
            out.append(argv)
    return out
