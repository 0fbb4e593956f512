"""A bpf(4) descriptor for the emulator, and other hosts on the emulated link.

``FakeBpf`` stands in for one open of FreeBSD's cloning ``/dev/bpf``; give
``FakeBSD.bpf_opener()`` to ``FreeBSDBackend(bpf_opener=...)``. It checks what the kernel
checks (``sys/net/bpf.c``) and answers like the kernel does:

* ioctl request numbers are derived here, independently of carphooks, from
  ``sys/sys/ioccom.h`` and LP64 structure sizes; an unknown request is EINVAL
  (``bpfioctl`` default). ``BIOCSETIF`` needs an existing interface (else ENXIO,
  ``bpf_setif``); ``BIOCSDIRECTION`` takes 0..2 (else EINVAL); ``BIOCSETF`` copies the
  program from the caller's memory (``copyin``) and resets the buffer (``reset_d``);
  only the classic-BPF opcodes listed in ``_run_filter`` are emulated, any other is
  refused with EINVAL (the kernel's ``bpf_validate`` accepts more).
* ``write`` needs an attached descriptor (ENXIO), an UP interface (ENETDOWN) and a frame
  of a full Ethernet header up to the MTU (EMSGSIZE) (``bpfwrite``/``bpf_movein``).
  With direction ``BPF_D_INOUT`` (the default) the descriptor captures its own frame on
  the way out, as the driver's tap does; ``BPF_D_IN`` skips it (``bpf_mtap``).
* A host declared with ``FakeBSD.link_host(IF, IP, MAC)`` answers an ARP request for IP
  seen on IF as FreeBSD's ``in_arpinput`` does: a unicast reply to the asker's MAC with
  sender = (MAC, IP) and target = the asker's (hardware, protocol) addresses - so a
  probe with sender 0.0.0.0 gets target 0.0.0.0 back. A link that is down (``set_link``)
  carries nothing.
* ``read`` must ask for exactly ``BIOCGBLEN`` bytes (EINVAL, ``bpfread``) and returns
  ``struct bpf_hdr`` (LP64: 16-byte timeval, caplen, datalen, hdrlen = 26 for Ethernet)
  + frame records at 8-byte boundaries (``catchpacket``/``bpf_hdrlen``).
* ``wait`` is ``poll(2)``: true at once when something is buffered (immediate mode) or
  the descriptor is not attached (POLLHUP), else false after the timeout.

Every frame written is kept in the emulator state (``FakeBSD.bpf_frames()``).
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

try:
    from . import fakebsd_kernel as kernel
except ImportError:  # imported as a plain module
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fakebsd_kernel as kernel  # type: ignore[no-redef]

_IOC_OUT, _IOC_IN = 0x40000000, 0x80000000


def _req(inout: int, num: int, size: int) -> int:
    return inout | (size << 16) | (0x42 << 8) | num  # group 'B'


# LP64 sizes: u_int 4, struct bpf_program 16, struct ifreq 32
REQUESTS = {
    _req(_IOC_OUT, 102, 4): "BIOCGBLEN",
    _req(_IOC_IN, 103, 16): "BIOCSETF",
    _req(_IOC_IN, 108, 32): "BIOCSETIF",
    _req(_IOC_IN, 112, 4): "BIOCIMMEDIATE",
    _req(_IOC_IN, 117, 4): "BIOCSHDRCMPLT",
    _req(_IOC_IN, 119, 4): "BIOCSDIRECTION",
}
BPF_D_IN, BPF_D_INOUT, BPF_D_OUT = 0, 1, 2
BUFSIZE = 4096  # net.bpf.bufsize default
BPF_MAXINSNS = 512
ETHER_HDR_LEN = 14


def _oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def link_hosts(st: dict[str, Any], ifname: str) -> dict[str, str]:
    """{ip: mac} of the other hosts on ``ifname``'s link."""
    return dict(st.get("bpf_link_hosts", {}).get(ifname, {}))


def set_link_host(st: dict[str, Any], ifname: str, ip: str, mac: str | None) -> None:
    """Declare (``mac``) or remove (None) another host holding ``ip`` on ``ifname``'s link."""
    hosts = st.setdefault("bpf_link_hosts", {}).setdefault(ifname, {})
    key = str(ipaddress.IPv4Address(ip))
    if mac is None:
        hosts.pop(key, None)
    else:
        hosts[key] = mac.lower()


def _mac(text: str) -> bytes:
    return bytes(int(p, 16) for p in text.split(":"))


def _run_filter(prog: list[tuple[int, int, int, int]], pkt: bytes) -> int:
    """Classic BPF, the subset used here: ld h/w/b [k], jeq #k, ja, ret #k, ret a."""
    a = 0
    pc = 0
    while 0 <= pc < len(prog):
        code, jt, jf, k = prog[pc]
        pc += 1
        if code in (0x28, 0x20, 0x30):  # ld h / w / b [k]
            size = {0x28: 2, 0x20: 4, 0x30: 1}[code]
            if k + size > len(pkt):
                return 0  # out of bounds: the kernel's bpf_filter rejects the packet
            a = int.from_bytes(pkt[k:k + size], "big")
        elif code == 0x15:  # jeq #k
            pc += jt if a == k else jf
        elif code == 0x05:  # ja
            pc += k
        elif code == 0x06:  # ret #k
            return k
        elif code == 0x16:  # ret a
            return a
    return 0


def _valid(prog: list[tuple[int, int, int, int]]) -> bool:
    for i, (code, jt, jf, k) in enumerate(prog):
        if code not in (0x28, 0x20, 0x30, 0x15, 0x05, 0x06, 0x16):
            return False
        if code == 0x15 and (i + 1 + jt >= len(prog) or i + 1 + jf >= len(prog)):
            return False
        if code == 0x05 and i + 1 + k >= len(prog):
            return False
    return bool(prog) and prog[-1][0] in (0x06, 0x16)


class FakeBpf:
    """One open descriptor; state is read from the emulator on every operation."""

    def __init__(self, state_path: str | os.PathLike[str]) -> None:
        self.state_path = str(state_path)
        self.ifname: str | None = None
        self.immediate = 0
        self.hdrcmplt = 0
        self.direction = BPF_D_INOUT
        self.program: list[tuple[int, int, int, int]] | None = None
        self.captured: list[bytes] = []
        self.closed = False
        self.ioctls: list[str] = []

    # -- helpers
    def _check_open(self) -> None:
        if self.closed:
            raise _oserror(errno.EBADF)

    def _capture(self, frame: bytes) -> None:
        snap = len(frame) if self.program is None else _run_filter(self.program, frame)
        if snap:
            self.captured.append(frame[:snap])

    # -- the Device interface
    def ioctl(self, request: int, arg: bytes) -> bytes:
        self._check_open()
        name = REQUESTS.get(request)
        if name is None:
            raise _oserror(errno.EINVAL)
        self.ioctls.append(name)
        if name == "BIOCGBLEN":
            return struct.pack("=I", BUFSIZE)
        if name == "BIOCSETIF":
            ifname = bytes(arg[:16]).split(b"\0", 1)[0].decode("ascii", "replace")
            with kernel.locked_state(self.state_path, write=False) as st:
                if ifname not in st["ifaces"]:
                    raise _oserror(errno.ENXIO)
            self.ifname = ifname
            self.captured.clear()
            return arg
        value = struct.unpack("=I", bytes(arg[:4]))[0]
        if name == "BIOCIMMEDIATE":
            self.immediate = value
        elif name == "BIOCSHDRCMPLT":
            self.hdrcmplt = 1 if value else 0
        elif name == "BIOCSDIRECTION":
            if value not in (BPF_D_IN, BPF_D_INOUT, BPF_D_OUT):
                raise _oserror(errno.EINVAL)
            self.direction = value
        elif name == "BIOCSETF":
            length, address = struct.unpack("=IxxxxQ", bytes(arg[:16]))
            if length > BPF_MAXINSNS or (address == 0 and length != 0):
                raise _oserror(errno.EINVAL)
            raw = ctypes.string_at(address, 8 * length) if length else b""
            prog = [struct.unpack_from("=HBBI", raw, 8 * i) for i in range(length)]
            if prog and not _valid(prog):
                raise _oserror(errno.EINVAL)
            self.program = prog or None
            self.captured.clear()
        return arg

    def write(self, frame: bytes) -> int:
        self._check_open()
        if self.ifname is None:
            raise _oserror(errno.ENXIO)
        with kernel.locked_state(self.state_path) as st:
            iface = st["ifaces"].get(self.ifname)
            if iface is None:
                raise _oserror(errno.ENXIO)
            if not iface["up"]:
                raise _oserror(errno.ENETDOWN)
            if len(frame) < ETHER_HDR_LEN or len(frame) - ETHER_HDR_LEN > iface["mtu"]:
                raise _oserror(errno.EMSGSIZE)
            sent = bytearray(frame)
            if not self.hdrcmplt and iface.get("mac"):
                sent[6:12] = _mac(iface["mac"])  # bpf_movein fills in our source address
            st.setdefault("bpf_sent", []).append({"if": self.ifname, "frame": sent.hex()})
            answers = self._link_answers(bytes(sent), link_hosts(st, self.ifname)) \
                if iface["link"] else []
        if self.direction == BPF_D_INOUT:
            self._capture(bytes(sent))
        for answer in answers:
            if self.direction in (BPF_D_IN, BPF_D_INOUT):
                self._capture(answer)
        return len(frame)

    @staticmethod
    def _link_answers(frame: bytes, hosts: dict[str, str]) -> list[bytes]:
        """Replies of the other hosts on the link to an ARP request (``in_arpinput``)."""
        if len(frame) < 42 or frame[12:14] != b"\x08\x06":
            return []
        hrd, pro, hln, pln, op = struct.unpack_from("!HHBBH", frame, 14)
        if (hrd, pro, hln, pln, op) != (1, 0x0800, 6, 4, 1):
            return []
        sha, spa, tpa = frame[22:28], frame[28:32], frame[38:42]
        answers = []
        for ip, mac_text in hosts.items():
            mac = _mac(mac_text)
            if ipaddress.IPv4Address(ip).packed != tpa or sha == mac:
                continue
            arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + mac + tpa + sha + spa
            answers.append(sha + mac + b"\x08\x06" + arp + bytes(18))  # padded to 60
        return answers

    def wait(self, timeout: float) -> bool:
        self._check_open()
        if self.ifname is None or (self.captured and self.immediate):
            return True
        time.sleep(max(0.0, timeout))
        return bool(self.captured) and bool(self.immediate)

    def read(self, size: int) -> bytes:
        self._check_open()
        if size != BUFSIZE:
            raise _oserror(errno.EINVAL)
        if not self.captured:
            if self.ifname is None:
                raise _oserror(errno.ENXIO)
            raise _oserror(errno.EWOULDBLOCK)  # a real read would block here
        out = bytearray()
        while self.captured:
            frame = self.captured[0]
            hdrlen = 26  # BPF_WORDALIGN(14 + SIZEOF_BPF_HDR) - 14
            record = (struct.pack("=qqIIH", int(time.time()), 0, len(frame), len(frame),
                                  hdrlen) + frame)
            pad = bytes((-len(out)) % 8)  # each record starts word-aligned; no tail padding
            if len(out) + len(pad) + len(record) > size:
                break
            out += pad + record
            self.captured.pop(0)
        return bytes(out)

    def close(self) -> None:
        self._check_open()
        self.closed = True
