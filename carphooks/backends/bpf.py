"""An RFC 5227 ARP probe through bpf(4), for the FreeBSD backend.

FreeBSD has no AF_PACKET; a bpf descriptor both sends a complete Ethernet frame and
captures the answers. Everything here follows ``sys/net/bpf.c`` and ``sys/net/bpf.h``:

* ``/dev/bpf`` is a cloning device: every open gets its own descriptor (``bpfopen``),
  readable and writable, direction ``BPF_D_INOUT``, kernel buffers.
* ``BIOCSETIF`` (a ``struct ifreq`` naming the interface) attaches it (``bpf_setif``:
  ENXIO for an unknown interface); ``BIOCIMMEDIATE`` makes a read or poll return as soon
  as one frame is stored (``bpf_ready``); ``BIOCSHDRCMPLT`` sends our Ethernet source
  address as written (``bpf_movein``); ``BIOCSDIRECTION`` ``BPF_D_IN`` leaves our own
  probes out of the capture (``bpf_mtap``); ``BIOCSETF`` installs a classic BPF program
  that keeps only ARP and also flushes what was captured before (``bpf_setf``/``reset_d``).
* ``read`` must ask for exactly the buffer size (``BIOCGBLEN``), else EINVAL (``bpfread``);
  it returns records of ``struct bpf_hdr`` + frame, each starting at a ``BPF_WORDALIGN``
  boundary (``catchpacket``, ``bpf_hdrlen``).

Request numbers come from ``sys/sys/ioccom.h`` (``_IOC``) and the structure sizes of
LP64 FreeBSD (amd64, arm64, riscv64, powerpc64); a 32-bit system is refused by
:func:`unavailable`. The device sits behind :class:`Device`, so the emulator
(``tests/fakebsd/bpf.py``) can stand in for the kernel.
"""

from __future__ import annotations

import ipaddress
import os
import struct
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from carphooks.backends.announce import arp_answer, probe_frame
from carphooks.errors import CarphooksError

DEVICE = "/dev/bpf"

# sys/sys/ioccom.h
IOCPARM_SHIFT = 13
IOCPARM_MASK = (1 << IOCPARM_SHIFT) - 1
IOC_OUT = 0x40000000
IOC_IN = 0x80000000


def _ioc(inout: int, num: int, size: int) -> int:
    """``_IOC(inout, 'B', num, size)``."""
    return inout | ((size & IOCPARM_MASK) << 16) | (ord("B") << 8) | num


IFNAMSIZ = 16
SIZEOF_U_INT = 4
SIZEOF_IFREQ = IFNAMSIZ + 16  # char ifr_name[16] + a union whose largest member is 16 bytes
SIZEOF_BPF_PROGRAM = 16  # u_int bf_len, 4 bytes padding, struct bpf_insn *bf_insns (LP64)
SIZEOF_TIMEVAL = 16  # struct timeval {time_t; suseconds_t} (LP64)
BPF_ALIGNMENT = 8  # sizeof(long) (LP64)

BIOCGBLEN = _ioc(IOC_OUT, 102, SIZEOF_U_INT)  # _IOR('B', 102, u_int)
BIOCSETF = _ioc(IOC_IN, 103, SIZEOF_BPF_PROGRAM)  # _IOW('B', 103, struct bpf_program)
BIOCSETIF = _ioc(IOC_IN, 108, SIZEOF_IFREQ)  # _IOW('B', 108, struct ifreq)
BIOCIMMEDIATE = _ioc(IOC_IN, 112, SIZEOF_U_INT)  # _IOW('B', 112, u_int)
BIOCSHDRCMPLT = _ioc(IOC_IN, 117, SIZEOF_U_INT)  # _IOW('B', 117, u_int)
BIOCSDIRECTION = _ioc(IOC_IN, 119, SIZEOF_U_INT)  # _IOW('B', 119, u_int)
BPF_D_IN = 0

# struct bpf_hdr: struct timeval bh_tstamp; u_int32 bh_caplen, bh_datalen; u_short bh_hdrlen
BPF_HDR_FIELDS = struct.Struct("=IIH")
SIZEOF_BPF_HDR = SIZEOF_TIMEVAL + BPF_HDR_FIELDS.size  # 26, as SIZEOF_BPF_HDR() in bpf.c

# Classic BPF (sys/net/bpf.h): struct bpf_insn {u_short code; u_char jt, jf; u_int32 k}.
BPF_INSN = struct.Struct("=HBBI")
BPF_LD_H_ABS = 0x28  # BPF_LD | BPF_H | BPF_ABS
BPF_JMP_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
BPF_RET_K = 0x06  # BPF_RET | BPF_K
SNAPLEN = 128  # an Ethernet ARP frame is 42 bytes (60 with padding)
ARP_ONLY = (
    (BPF_LD_H_ABS, 0, 0, 12),  # the EtherType
    (BPF_JMP_JEQ_K, 0, 1, 0x0806),  # ARP?
    (BPF_RET_K, 0, 0, SNAPLEN),  # keep
    (BPF_RET_K, 0, 0, 0),  # drop
)


def wordalign(n: int) -> int:
    """``BPF_WORDALIGN(n)``."""
    return (n + BPF_ALIGNMENT - 1) & ~(BPF_ALIGNMENT - 1)


def ifreq(ifname: str) -> bytes:
    """A ``struct ifreq`` naming ``ifname`` (the union part zeroed)."""
    name = ifname.encode("ascii")
    if not 0 < len(name) < IFNAMSIZ:
        raise ValueError(f"bad interface name {ifname!r}")
    return name.ljust(SIZEOF_IFREQ, b"\0")


def records(buf: bytes) -> list[bytes]:
    """The frames in one bpf read: ``bpf_hdr`` + frame each, word-aligned."""
    frames: list[bytes] = []
    off = 0
    while off + SIZEOF_BPF_HDR <= len(buf):
        caplen, _datalen, hdrlen = BPF_HDR_FIELDS.unpack_from(buf, off + SIZEOF_TIMEVAL)
        start = off + hdrlen
        if hdrlen < SIZEOF_BPF_HDR or start + caplen > len(buf):
            break
        frames.append(buf[start:start + caplen])
        off += wordalign(hdrlen + caplen)
    return frames


class Device(Protocol):
    """What the probe needs of a bpf descriptor."""

    def ioctl(self, request: int, arg: bytes) -> bytes:
        """``ioctl(2)``; returns the argument as the kernel left it."""

    def write(self, frame: bytes) -> int:
        """Send one complete frame."""

    def wait(self, timeout: float) -> bool:
        """Whether a read would return data within ``timeout`` seconds (``poll(2)``)."""

    def read(self, size: int) -> bytes:
        """One ``read(2)`` of exactly the buffer size."""

    def close(self) -> None:
        """Release the descriptor."""


Opener = Callable[[], Device]


class FileDevice:
    """The real ``/dev/bpf``."""

    def __init__(self, path: str = DEVICE) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def ioctl(self, request: int, arg: bytes) -> bytes:
        import fcntl

        return fcntl.ioctl(self.fd, request, arg)

    def write(self, frame: bytes) -> int:
        return os.write(self.fd, frame)

    def wait(self, timeout: float) -> bool:
        import select

        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return bool(poller.poll(max(0, int(timeout * 1000))))

    def read(self, size: int) -> bytes:
        return os.read(self.fd, size)

    def close(self) -> None:
        os.close(self.fd)


def unavailable(path: str = DEVICE) -> str | None:
    """Why bpf probing cannot work on this machine (None when it can)."""
    if struct.calcsize("P") != 8 or struct.calcsize("l") != 8:
        return ("the bpf(4) probe is built for 64-bit FreeBSD (amd64, arm64); this system "
                "is 32-bit")
    if not os.path.exists(path):
        return (f"{path} does not exist (a kernel without bpf(4), or a jail whose devfs "
                "ruleset hides it)")
    return None


def uint(value: int) -> bytes:
    """A ``u_int`` ioctl argument."""
    return struct.pack("=I", value)


class ArpProbe:
    """Send an ARP probe per address and report which ones another host answers for."""

    def __init__(self, ifname: str, mac: bytes, ips: Sequence[ipaddress.IPv4Address],
                 opener: Opener = FileDevice) -> None:
        self.ifname = ifname
        self.mac = mac
        self.ips = list(ips)
        self.opener = opener
        self.dev: Device | None = None
        self.blen = 0
        self.started = 0.0

    def _fail(self, what: str, exc: OSError) -> CarphooksError:
        return CarphooksError(f"ARP probe on {self.ifname}: {what}: "
                              f"{exc.strerror or exc}")

    def start(self) -> None:
        """Open and attach a descriptor, then send the probes."""
        if not self.ips:
            return
        try:
            dev = self.opener()
        except OSError as exc:
            raise self._fail(f"open {DEVICE}", exc) from None
        import ctypes  # only here: hooks that never probe do not pay for it

        try:
            dev.ioctl(BIOCSETIF, ifreq(self.ifname))
            dev.ioctl(BIOCIMMEDIATE, uint(1))
            dev.ioctl(BIOCSHDRCMPLT, uint(1))
            dev.ioctl(BIOCSDIRECTION, uint(BPF_D_IN))
            program = b"".join(BPF_INSN.pack(*insn) for insn in ARP_ONLY)
            insns = ctypes.create_string_buffer(program, len(program))
            prog = struct.pack("=IxxxxQ", len(ARP_ONLY), ctypes.addressof(insns))
            dev.ioctl(BIOCSETF, prog)  # the kernel copies the program in (copyin)
            self.blen = struct.unpack("=I", dev.ioctl(BIOCGBLEN, uint(0)))[0]
            self.started = time.monotonic()
            for ip in self.ips:
                dev.write(probe_frame(self.mac, ip))
        except OSError as exc:
            dev.close()
            raise self._fail("bpf", exc) from None
        self.dev = dev

    def collect(self, timeout: float) -> dict[ipaddress.IPv4Address, str]:
        """{address: MAC of the other host that answered} within ``timeout`` of the start."""
        dev = self.dev
        if dev is None:
            return {}
        wanted = {ip.packed: ip for ip in self.ips}
        found: dict[ipaddress.IPv4Address, str] = {}
        deadline = self.started + timeout
        try:
            while len(found) < len(wanted):
                left = deadline - time.monotonic()
                if left <= 0 or not dev.wait(left):
                    break
                for frame in records(dev.read(self.blen)):
                    hit = arp_answer(frame, self.mac, wanted)
                    if hit is not None:
                        found[hit[0]] = hit[1]
        except OSError as exc:
            raise self._fail("bpf read", exc) from None
        finally:
            dev.close()
            self.dev = None
        return found
