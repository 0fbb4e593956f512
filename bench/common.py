"""Shared pieces of the benchmarks: child measurement, statistics, syslog sink, configs."""

from __future__ import annotations

import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINDIR = Path(sys.executable).parent
TESTS = ROOT / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from fakebsd.control import FakeBSD  # noqa: E402

ORIGINAL_SH = ROOT / "bench" / "original.sh"
SH = shutil.which("sh") or "/bin/sh"


@dataclass(frozen=True)
class Sample:
    """One finished child: wall time, CPU time (it and its reaped children), peak RSS."""

    wall: float
    cpu: float
    maxrss_kb: int
    code: int
    stderr: str


def measure(argv: Sequence[str], env: dict[str, str], *, stdin: str | None = None) -> Sample:
    """Run ``argv`` as a cold process; rusage from ``os.wait4`` of that child.

    ``ru_utime + ru_stime`` include the descendants the child waited for;
    ``ru_maxrss`` is the largest of the child and those descendants.
    """
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), env=env, stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.PIPE if stdin is not None else
                                subprocess.DEVNULL)
        if stdin is not None and proc.stdin is not None:
            proc.stdin.write(stdin.encode())
            proc.stdin.close()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    return Sample(wall, usage.ru_utime + usage.ru_stime, int(usage.ru_maxrss), proc.returncode,
                  text)


TIME = Path("/usr/bin/time") if Path("/usr/bin/time").exists() else None


def peak_rss_kb(argv: Sequence[str], env: dict[str, str]) -> int | None:
    """Peak RSS of ``argv`` and its descendants through GNU time (None without it).

    ``os.wait4`` from this Python process over-reports: a forked child's high-water
    mark starts at this interpreter's RSS before the exec. GNU time forks from a
    ~2 MB process instead.
    """
    if TIME is None:
        return None
    with tempfile.NamedTemporaryFile("r") as out:
        proc = subprocess.run([str(TIME), "-f", "%M", "-o", out.name, *argv], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              stdin=subprocess.DEVNULL, check=False)
        text = out.read().strip().splitlines()
    if proc.returncode != 0 or not text or not text[-1].isdigit():
        return None
    return int(text[-1])


def children_cpu() -> float:
    """user+sys of all reaped children so far (for cross-checks)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


@dataclass(frozen=True)
class Stats:
    """Median and spread of a series."""

    median: float
    lo: float
    hi: float
    q1: float
    q3: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.lo, "max": self.hi, "q1": self.q1,
                "q3": self.q3, "n": self.n}


def stats(values: Sequence[float]) -> Stats:
    vals = sorted(values)
    if len(vals) >= 2:
        q = statistics.quantiles(vals, n=4, method="inclusive")
        q1, q3 = q[0], q[2]
    else:
        q1 = q3 = vals[0]
    return Stats(statistics.median(vals), vals[0], vals[-1], q1, q3, len(vals))


def fmt_ms(s: Stats) -> str:
    return f"{s.median * 1e3:.1f} ms [{s.q1 * 1e3:.1f}-{s.q3 * 1e3:.1f}]"


def fmt_ratio(s: Stats) -> str:
    return f"{s.median:.2f}x [{s.q1:.2f}-{s.q3:.2f}]"


class SyslogSink:
    """A unix datagram socket standing in for syslogd, drained by a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.count = 0
        self.last: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, OSError):
                continue
            self.count += 1
            self.last = [*self.last[-20:], data]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.sock.close()


@contextmanager
def workdir(prefix: str = "carphooks-bench-") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_config(path: Path, *, state: Path, sock: Path, groups: Sequence[dict[str, object]],
                 backend: str = "freebsd") -> Path:
    """A carphooks config (mode 0600) with the given groups."""
    lines = [
        'log_tag = "carphooks-bench"',
        f'backend = "{backend}"',
        f'state_dir = "{state}"',
        f'syslog_socket = "{sock}"',
        'quorum = "none"',
        "lock_timeout = 30",
        "",
    ]
    for g in groups:
        addrs = ", ".join(f'"{a}"' for a in g["addresses"])  # type: ignore[attr-defined]
        lines += [
            "[[group]]",
            f'name = "{g["name"]}"',
            f"vhid = {g['vhid']}",
            f'carp_interface = "{g.get("carp_interface", "tap0")}"',
            f'external_interface = "{g.get("external_interface", "vtnet0")}"',
            f"addresses = [{addrs}]",
            "probe = false",  # the benchmarks time the direct take, not the probe window
            "",
            "[group.carp]",
            f'address = "{carp_address(int(g["vhid"]))}"',  # type: ignore[call-overload]
            "",
        ]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines))
    os.chmod(path, 0o600)
    return path


def floating_addresses(n: int) -> list[str]:
    """``n`` documentation addresses: up to half IPv4 (two /24s), the rest IPv6 (/64)."""
    pool4 = [f"198.51.100.{i}/24" for i in range(1, 254)] + [
        f"203.0.113.{i}/24" for i in range(1, 255) if i != 11]
    n4 = min(len(pool4), n - n // 2)
    out = pool4[:n4]
    out += [f"2001:db8:1::{i + 1:x}/64" for i in range(n - n4)]
    return out


def bench_host(directory: Path, *, vhids: Sequence[int] = (1,)) -> FakeBSD:
    """The emulated FreeBSD host of the tests: vtnet0 (public), tap0 with the vhids."""
    host = FakeBSD(directory, release="14.1")
    host.add_interface("vtnet0", mac="58:9c:fc:00:00:01")
    host.add_address("vtnet0", "203.0.113.11/24")
    host.add_interface("tap0", mac="02:00:00:00:00:11", kind="tap")
    host.add_address("tap0", "192.0.2.11/24")
    for vhid in vhids:
        host.add_vhid("tap0", vhid)
        host.add_address("tap0", carp_address(vhid), vhid=vhid)
        host.set_carp_state("tap0", vhid, "BACKUP")
    return host


def carp_address(vhid: int) -> str:
    """The VPN-side CARP address of a vhid (192.0.2.0/24, never the host's .11)."""
    return "192.0.2.254/24" if vhid == 1 else f"192.0.2.{100 + vhid}/24"
