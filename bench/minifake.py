"""A minimal FreeBSD fake in POSIX sh, so a benchmark measures the hook, not the emulator.

The Python emulator in ``tests/fakebsd`` costs ~40 ms per call (an interpreter start
and a JSON state round trip). Here ``ifconfig IF`` is one ``sh`` plus one ``cat`` of
prepared files (``ifconfig -a``: vtnet0 then tap0, in one ``cat``), and
``ifconfig IF [inet|inet6] A[/P] alias|-alias`` fills or empties one line file with
shell builtins; ``logger`` appends to a file with builtins. The output text comes from
the emulator (same FreeBSD 14 format), and every call is appended to ``calls.log``.

Layout of the directory::

    bin/ifconfig, bin/logger        the fakes
    state/IF.head, state/IF.tail    ifconfig output around the floating addresses
    state/IF.a/                     one file per floating address (empty = absent)
    lines/ADDR                      the ifconfig line of each floating address
    calls.log                       "ifconfig vtnet0", "logger -t ...", one a line
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from bench.common import FakeBSD, bench_host

IFCONFIG = r"""#!/bin/sh
# minimal fake ifconfig (bench/minifake.py): reads cat prepared files, writes toggle a line
D=${MINIFAKE_DIR:?MINIFAKE_DIR is not set}
echo "ifconfig $*" >> "$D/calls.log"
if [ "$*" = "-a" ]; then  # every interface in ifindex order, each as "ifconfig IF" shows it
  S=$D/state
  exec cat "$S/vtnet0.head" "$S/vtnet0.a/"* "$S/vtnet0.tail" "$S/tap0.head" "$S/tap0.a/"* \
    "$S/tap0.tail"
fi
IF=$1
if [ ! -f "$D/state/$IF.head" ]; then
  echo "ifconfig: interface $IF does not exist" >&2
  exit 1
fi
if [ $# -eq 1 ]; then
  exec cat "$D/state/$IF.head" "$D/state/$IF.a/"* "$D/state/$IF.tail"
fi
shift
case $1 in inet|inet6) shift ;; esac
A=${1%%/*}
case $2 in
  alias|add)
    IFS= read -r L < "$D/lines/$A" || { echo "ifconfig: $1: bad value" >&2; exit 1; }
    printf '%s\n' "$L" > "$D/state/$IF.a/$A" ;;
  -alias|delete)
    if [ ! -s "$D/state/$IF.a/$A" ]; then
      echo "ifconfig: ioctl (SIOCDIFADDR): Can't assign requested address" >&2
      exit 1
    fi
    : > "$D/state/$IF.a/$A" ;;
  *) echo "minifake: not emulated: ifconfig $IF $*" >&2; exit 1 ;;
esac
"""

LOGGER = r"""#!/bin/sh
# minimal fake logger (bench/minifake.py)
D=${MINIFAKE_DIR:?MINIFAKE_DIR is not set}
echo "logger $*" >> "$D/calls.log"
"""


def address_line(text: str) -> str:
    """The FreeBSD ifconfig line of an address (the emulator's format)."""
    iface = ipaddress.ip_interface(text)
    if iface.version == 4:
        net = iface.network
        return (f"\tinet {iface.ip} netmask 0x{int(net.netmask):08x} "
                f"broadcast {net.broadcast_address}")
    return f"\tinet6 {iface.ip} prefixlen {iface.network.prefixlen}"


def _split(text: str) -> tuple[str, str]:
    """Head (through the last inet/inet6/ether line) and tail of one ifconfig output."""
    lines = text.splitlines(keepends=True)
    cut = 1
    for i, line in enumerate(lines):
        if line.startswith(("\tinet ", "\tinet6 ", "\tether ", "\toptions=")):
            cut = i + 1
    return "".join(lines[:cut]), "".join(lines[cut:])


class MiniFake:
    """A minimal fake host: vtnet0 and tap0 (vhids, MASTER or BACKUP), floating addresses."""

    def __init__(self, directory: Path, floating: Iterable[str], vhids: Sequence[int] = (1,),
                 emulator_dir: Path | None = None) -> None:
        self.dir = directory
        self.bin = directory / "bin"
        self.vhids = list(vhids)
        for sub in ("bin", "state/vtnet0.a", "state/tap0.a", "lines"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        for name, text in (("ifconfig", IFCONFIG), ("logger", LOGGER)):
            path = self.bin / name
            path.write_text(text)
            path.chmod(0o755)
        # Output text from the emulator itself, so the formats match exactly.
        emu = bench_host(emulator_dir or directory / "emulator", vhids=self.vhids)
        self._tap0: dict[str, str] = {}
        for state in ("BACKUP", "MASTER"):
            for vhid in self.vhids:
                emu.set_carp_state("tap0", vhid, state)
            self._tap0[state] = emu.ifconfig("tap0")
        head, tail = _split(emu.ifconfig("vtnet0"))
        (directory / "state/vtnet0.head").write_text(head)
        (directory / "state/vtnet0.tail").write_text(tail)
        (directory / "state/tap0.tail").write_text("")
        for sub in ("vtnet0.a", "tap0.a"):  # keeps the glob from staying literal
            (directory / "state" / sub / "0").write_text("")
        self._check_format(emu)
        self.floating = list(floating)
        for text in self.floating:
            ip = str(ipaddress.ip_interface(text).ip)
            (directory / "lines" / ip).write_text(address_line(text) + "\n")
        self.set_carp("BACKUP")
        (directory / "calls.log").write_text("")

    @staticmethod
    def _check_format(emu: FakeBSD) -> None:
        probe = ["198.51.100.200/25", "2001:db8:1::ff/64"]
        for text in probe:
            emu.add_address("vtnet0", text)
        shown = emu.ifconfig("vtnet0").splitlines()
        for text in probe:
            if address_line(text) not in shown:
                raise RuntimeError(f"minifake: emulator format changed for {text}: {shown}")
            emu.remove_address("vtnet0", text)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env["PATH"] = os.pathsep.join([str(self.bin), env.get("PATH", "")])
        env["MINIFAKE_DIR"] = str(self.dir)
        env["CARPHOOKS_PASSENV"] = "MINIFAKE_DIR"  # the runner passes nothing else
        env.pop("FAKEBSD_STATE", None)
        return env

    def set_carp(self, state: str) -> None:
        """Every vhid on tap0 MASTER or BACKUP (what ``ifconfig tap0`` will show)."""
        (self.dir / "state/tap0.head").write_text(self._tap0[state])

    def held(self, ifname: str = "vtnet0") -> set[str]:
        """Floating addresses present (by IP text)."""
        return {p.name for p in (self.dir / "state" / f"{ifname}.a").iterdir()
                if p.name != "0" and p.stat().st_size > 0}

    def calls(self) -> list[list[str]]:
        return [line.split() for line in
                (self.dir / "calls.log").read_text().splitlines() if line.strip()]

    def clear_calls(self) -> None:
        (self.dir / "calls.log").write_text("")
