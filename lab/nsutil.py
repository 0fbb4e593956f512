"""Low-level helpers: run commands in namespaces, open sockets inside a namespace,
read addresses/links over rtnetlink, and check processes by PID (zombie-aware).

stdlib only.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import socket
import struct
import subprocess
import time
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def sh(*argv: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    """Run a command (no shell), capture output; raise with stderr on failure."""
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: rc={p.returncode}: {p.stderr.strip()}")
    return p


def ip(ns: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip"] + (["-n", ns] if ns else []) + list(args)
    return sh(*argv, check=check)


def netns_exists(ns: str) -> bool:
    return os.path.exists(f"/run/netns/{ns}")


@contextlib.contextmanager
def in_netns(ns: str) -> Iterator[None]:
    """Switch the calling thread into netns `ns` for the duration (sockets created
    inside stay bound to that namespace afterwards)."""
    with open("/proc/thread-self/ns/net", "rb") as orig, open(f"/run/netns/{ns}", "rb") as tgt:
        if _libc.setns(tgt.fileno(), CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns({ns}): {os.strerror(e)}")
        try:
            yield
        finally:
            if _libc.setns(orig.fileno(), CLONE_NEWNET) != 0:
                e = ctypes.get_errno()
                raise OSError(e, f"setns(back): {os.strerror(e)}")


def socket_in(ns: str, family: int, type_: int, proto: int = 0) -> socket.socket:
    with in_netns(ns):
        return socket.socket(family, type_, proto)


# ---------------------------------------------------------------- rtnetlink
RTM_GETLINK, RTM_GETADDR = 18, 22
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000
IFA_F_DADFAILED, IFA_F_TENTATIVE = 0x08, 0x40


def _attrs(buf: bytes, off: int, end: int) -> Iterator[tuple[int, bytes]]:
    while off + 4 <= end:
        alen, atype = struct.unpack_from("HH", buf, off)
        if alen < 4:
            break
        yield atype & 0x3FFF, buf[off + 4 : off + alen]
        off += (alen + 3) & ~3


class Netlink:
    """One rtnetlink socket inside a namespace; dump links and addresses."""

    def __init__(self, ns: str):
        self.ns = ns
        self.sock = socket_in(ns, socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
        self.sock.settimeout(1.0)
        self.seq = 0

    def _dump(self, msgtype: int, body: bytes) -> Iterator[tuple[bytes, int, int]]:
        self.seq += 1
        hdr = struct.pack("IHHII", 16 + len(body), msgtype, NLM_F_REQUEST | NLM_F_DUMP, self.seq, 0)
        self.sock.send(hdr + body)
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + 16 <= len(data):
                mlen, mtype, _fl, seq, _pid = struct.unpack_from("IHHII", data, off)
                if mlen < 16:
                    return
                if seq == self.seq:
                    if mtype == NLMSG_DONE:
                        return
                    if mtype == NLMSG_ERROR:
                        raise OSError("netlink error")
                    yield data, off + 16, off + mlen
                off += (mlen + 3) & ~3

    def links(self) -> dict[str, tuple[int, int]]:
        """name -> (ifindex, flags)"""
        out: dict[str, tuple[int, int]] = {}
        for buf, off, end in self._dump(RTM_GETLINK, struct.pack("BxHiII", 0, 0, 0, 0, 0)):
            _fam, _type, index, flags, _chg = struct.unpack_from("BxHiII", buf, off)
            for t, v in _attrs(buf, off + 16, end):
                if t == IFLA_IFNAME:
                    out[v.rstrip(b"\0").decode()] = (index, flags)
        return out

    def addrs(self) -> dict[int, list[tuple[str, int]]]:
        """ifindex -> [(addr/prefix, flags)]"""
        out: dict[int, list[tuple[str, int]]] = {}
        for buf, off, end in self._dump(RTM_GETADDR, struct.pack("BBBBI", 0, 0, 0, 0, 0)):
            fam, plen, flags, _scope, index = struct.unpack_from("BBBBI", buf, off)
            addr = local = None
            for t, v in _attrs(buf, off + 8, end):
                if t == IFA_ADDRESS:
                    addr = v
                elif t == IFA_LOCAL:
                    local = v
                elif t == IFA_FLAGS:
                    flags = struct.unpack("I", v[:4])[0]
            raw = local if (fam == socket.AF_INET and local) else addr
            if raw is None:
                continue
            a = ipaddress.ip_address(raw)
            out.setdefault(index, []).append((f"{a}/{plen}", flags))
        return out

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------- processes
def proc_state(pid: int) -> tuple[str, int] | None:
    """(state letter, starttime) or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2 :].split()
    return rest[0], int(rest[19])


def alive(pid: int, start: int | None = None) -> bool:
    """True when pid runs (not a zombie) and, if given, has the recorded start time."""
    st = proc_state(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return start is None or st[1] == start


def reap() -> None:
    """Collect any exited children of this process."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_wait(pid: int, start: int | None, sig: int = 15, timeout: float = 3.0) -> bool:
    """Send sig to pid (if it is still the same process); wait until it is gone or a
    zombie; SIGKILL after timeout. Returns True if it is gone."""
    if not alive(pid, start):
        reap()
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap()
        if not alive(pid, start):
            return True
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 9)
    for _ in range(100):
        reap()
        if not alive(pid, start):
            return True
        time.sleep(0.02)
    return False
