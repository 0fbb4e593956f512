"""Test-side API of the FreeBSD emulator.

    from fakebsd.control import FakeBSD      # tests/ is on sys.path under pytest

    bsd = FakeBSD(tmp_path, release="14.1")
    bsd.add_interface("vtnet0")
    bsd.add_address("vtnet0", "192.0.2.11/24")
    bsd.add_address("vtnet0", "192.0.2.1/24", vhid=1)
    subprocess.run(["ifconfig", "vtnet0"], env=bsd.env())

All methods take the same lock as the fake executables, so they are safe to call
while commands run.  Control methods are *not* logged as calls.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

try:
    from . import bpf as fakebpf
    from . import fakebsd_kernel as kernel
except ImportError:  # imported as a plain module
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bpf as fakebpf  # type: ignore[no-redef]
    import fakebsd_kernel as kernel  # type: ignore[no-redef]

BIN_DIR = Path(__file__).resolve().parent / "bin"
FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "ifconfig"

Address = tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, int | None, tuple[str, ...]]


class FakeBSD:
    """One emulated FreeBSD host whose kernel state lives in ``tmpdir``."""

    def __init__(self, tmpdir: str | os.PathLike[str], release: str = "14.1",
                 dad: str = "instant", hostname: str = "fakebsd", name: str = "fakebsd") -> None:
        self.dir = Path(tmpdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.release = release
        self.state_path = self.dir / f"{name}-state.json"
        self.log_path = self.dir / f"{name}-calls.jsonl"
        self.syslog_path = self.dir / f"{name}-syslog.jsonl"
        _check_dad(dad)
        st = kernel.new_state(hostname=hostname, dad=dad)
        self.state_path.write_text(json.dumps(st, indent=1), encoding="utf-8")
        self.log_path.write_text("", encoding="utf-8")
        self.syslog_path.write_text("", encoding="utf-8")

    # ------------------------------------------------------------------ plumbing
    def _locked(self) -> Any:
        return kernel.locked_state(str(self.state_path))

    def _read(self) -> dict[str, Any]:
        """The kernel state now (its timers run first, as before every tool call)."""
        with kernel.locked_state(str(self.state_path)) as st:
            kernel.kernel_tick(st)
            return st

    def _major(self) -> int:
        return kernel.release_major(self.release)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for subprocesses: fake bin dir first on PATH.

        The directory of the running interpreter comes second so ``#!/usr/bin/env python3``
        in the fakes finds a fast python (not a pyenv shim); then the inherited PATH.
        """
        env = dict(os.environ if base is None else base)
        parts = [str(BIN_DIR)]
        pydir = str(Path(sys.executable).parent)
        if (Path(pydir) / "python3").exists():
            parts.append(pydir)
        parts.extend(p for p in env.get("PATH", "").split(os.pathsep) if p and p not in parts)
        env["PATH"] = os.pathsep.join(parts)
        env["FAKEBSD_STATE"] = str(self.state_path)
        env["FAKEBSD_LOG"] = str(self.log_path)
        env["FAKEBSD_RELEASE"] = self.release
        env["FAKEBSD_SYSLOG"] = str(self.syslog_path)
        # carphooks' runner gives commands a clean environment; these pass through
        env["CARPHOOKS_PASSENV"] = "FAKEBSD_STATE:FAKEBSD_LOG:FAKEBSD_RELEASE:FAKEBSD_SYSLOG"
        return env

    def run(self, *argv: str, input: str | None = None,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a command (e.g. ``bsd.run("ifconfig", "vtnet0")``) in this host's env."""
        return subprocess.run(list(argv), env=self.env(), capture_output=True, text=True,
                              input=input, check=check)

    # ------------------------------------------------------------------ interfaces
    def add_interface(self, name: str, mac: str | None = None, up: bool = True,
                      kind: str = "vtnet", *, link: bool = True, mtu: int = 1500,
                      nd6: int | None = None, link_local: bool = False,
                      description: str | None = None, opened_by: int | None = None) -> None:
        """kind: "vtnet" (Ethernet), "tap" (if_tuntap tap) or "tun" (point-to-point)."""
        with self._locked() as st:
            if name in st["ifaces"]:
                raise ValueError(f"interface {name} already exists")
            iface = kernel.create_iface(st, name, kind=kind, mac=mac, up=up, link=link,
                                        mtu=mtu, nd6=nd6, opened_by=opened_by)
            iface["description"] = description
            if link_local:
                kernel.add_inet6(st, name, _eui64_link_local(iface["mac"] or "02:00:00:00:00:01"),
                                 64)
                iface["up"] = up  # the driver ioctl of that add must not change set-up

    def remove_interface(self, name: str) -> None:
        with self._locked() as st:
            del st["ifaces"][name]

    def interfaces(self) -> list[str]:
        return list(self._read()["ifaces"])

    def interface(self, name: str) -> dict[str, Any]:
        """Raw emulator record of one interface (read-only copy)."""
        return self._read()["ifaces"][name]

    def set_up(self, ifname: str, up: bool) -> None:
        """Administrative up/down, like ``ifconfig IF up|down`` (vhids go INIT on down;
        up runs DAD for tentative addresses, in6_if_up)."""
        with self._locked() as st:
            if st["ifaces"][ifname]["up"] != up:
                st["ifaces"][ifname]["up"] = up
                kernel.carp_linkstate(st, ifname)
                if up:
                    kernel.in6_if_up(st, ifname)

    def set_link(self, ifname: str, link: bool) -> None:
        """Carrier (link state) change, e.g. cable pulled; vhids go INIT and demotion rises."""
        with self._locked() as st:
            if st["ifaces"][ifname]["link"] != link:
                st["ifaces"][ifname]["link"] = link
                kernel.carp_linkstate(st, ifname)

    def set_mac(self, ifname: str, mac: str) -> None:
        with self._locked() as st:
            st["ifaces"][ifname]["mac"] = mac

    def set_nd6(self, ifname: str, flags: int) -> None:
        with self._locked() as st:
            st["ifaces"][ifname]["nd6"] = flags

    def nd6_flags(self, ifname: str) -> int:
        return int(self.interface(ifname)["nd6"])

    # ------------------------------------------------------------------ addresses
    def add_address(self, ifname: str, address: str, vhid: int | None = None,
                    flags: Iterable[str] = (), *, dst: str | None = None) -> None:
        """Add like ``ifconfig IF inet|inet6 A alias`` would (re-add, CARP, DAD per ``dad``).

        ``flags`` (inet6 only) are shown as given and never change, e.g. ("deprecated",)
        or ("tentative",) for an address that stays tentative; such an address runs
        no DAD.  A ``vhid`` that does not exist yet is created with defaults (see
        ``add_vhid``) first.  Errors (e.g. an IPv6 prefix change) raise ValueError.
        """
        iface_addr = ipaddress.ip_interface(_strip_scope(address))
        with self._locked() as st:
            iface = st["ifaces"][ifname]
            if vhid is not None and str(vhid) not in iface["carp"]:
                kernel.carp_alloc(iface, vhid)
            addr = str(iface_addr.ip)
            plen = iface_addr.network.prefixlen
            was_up = bool(iface["up"])
            try:
                if iface_addr.version == 4:
                    if flags:
                        raise ValueError("flags are for inet6 addresses only")
                    kernel.add_inet(st, ifname, addr, plen, vhid=vhid, dst=dst)
                else:
                    kernel.add_inet6(st, ifname, addr, plen, vhid=vhid, flags=list(flags),
                                     dst=dst, static=bool(flags))
            except kernel.Exit as exc:
                raise ValueError(exc.message) from None
            kernel.after_address_add(st, ifname, was_up, self._major())

    def remove_address(self, ifname: str, address: str) -> None:
        ip = ipaddress.ip_interface(_strip_scope(address)).ip
        with self._locked() as st:
            kernel.del_addr(st, ifname, ip.version, str(ip))

    def addresses(self, ifname: str) -> list[Address]:
        """[(ip_interface, vhid or None, flags)], inet first then inet6, kernel order.

        Link-local inet6 addresses are returned without their %scope.  Reading here
        does not count as an ``ifconfig`` read for the DAD countdown.
        """
        iface = self.interface(ifname)
        result: list[Address] = []
        for fam in (4, 6):
            for a in iface["addrs"]:
                if a["family"] == fam:
                    result.append((ipaddress.ip_interface(f"{a['addr']}/{a['plen']}"),
                                   a.get("vhid"), tuple(kernel.addr_flags(a))))
        return result

    def set_address_flags(self, ifname: str, address: str, flags: Iterable[str]) -> None:
        """Replace the inet6 flags of an address with static ones; stops its DAD."""
        ip = str(ipaddress.ip_interface(address.split("/", 1)[0]).ip)
        with self._locked() as st:
            for a in st["ifaces"][ifname]["addrs"]:
                if a["addr"] == ip:
                    a["flags"] = list(flags)
                    a["dad"] = None
                    a["static"] = True
                    return
            raise KeyError(address)

    def set_dad(self, mode: str, ifname: str | None = None) -> None:
        """How DAD of *future* inet6 adds completes (the outcome is the kernel's).

        "instant" (default): at once.  "tentative[:N]": after N ``ifconfig`` reads of the
        interface (default 1).  "timed[:S]": S seconds after it starts (default
        net.inet6.ip6.dad_count x 1 s; see ``advance_clock``).  "manual": only by
        ``complete_dad``.  The outcome: ``duplicated`` when a ``neighbour`` on the link
        holds the address, else clean; "duplicated[:N]" forces ``duplicated`` after N
        reads (default 0).  Skipped on NO_DAD interfaces and anycast addresses.
        """
        _check_dad(mode)
        with self._locked() as st:
            if ifname is None:
                st["dad"] = mode
            else:
                st["ifaces"][ifname]["dad"] = mode

    def complete_dad(self, ifname: str | None = None, address: str | None = None) -> int:
        """Finish the running DADs (of ``ifname``/``address``) now; return how many."""
        ip = str(ipaddress.ip_interface(_strip_scope(address)).ip) if address else None
        with self._locked() as st:
            return kernel.complete_dad(st, ifname, ip)

    def advance_clock(self, seconds: float) -> None:
        """Move the emulated kernel's clock forward (DAD "timed" mode, address lifetimes)."""
        with self._locked() as st:
            st["clock"] = float(st.get("clock", 0.0)) + seconds
            kernel.kernel_tick(st)

    # ------------------------------------------------------------------ link neighbours
    def neighbour(self, ifname: str, ip: str, mac: str = "02:00:5e:00:00:99") -> None:
        """Another host on ``ifname``'s link now holds ``ip``: it answers DAD for it.

        A later DAD of ``ip`` on ``ifname`` ends ``duplicated`` (nd6_dad_na_input).
        """
        addr = str(ipaddress.ip_interface(_strip_scope(ip)).ip)
        with self._locked() as st:
            st.setdefault("neighbours", {}).setdefault(ifname, {})[addr] = mac

    def neighbour_gone(self, ifname: str, ip: str) -> None:
        """The other host released ``ip`` (no-op when it never held it)."""
        addr = str(ipaddress.ip_interface(_strip_scope(ip)).ip)
        with self._locked() as st:
            st.setdefault("neighbours", {}).get(ifname, {}).pop(addr, None)

    def neighbours(self, ifname: str) -> dict[str, str]:
        """{ip: mac} of the other hosts on ``ifname``'s link."""
        return dict(self._read().get("neighbours", {}).get(ifname, {}))

    def readd_count(self, ifname: str | None = None, address: str | None = None) -> int:
        """How often an add hit an address already there (IPv4: delete + re-add;
        IPv6: updated in place, ``duplicated`` cleared without DAD)."""
        readd = self._read()["readd"]
        ip = str(ipaddress.ip_interface(address).ip) if address else None
        total = 0
        for key, n in readd.items():
            k_if, _, k_addr = key.partition(" ")
            if (ifname is None or k_if == ifname) and (ip is None or k_addr == ip):
                total += n
        return total

    def garps(self) -> list[dict[str, Any]]:
        """Add-time gratuitous ARPs: [{"if", "addr", "count"}] (none for vhid addresses)."""
        return list(self._read()["garp"])

    # ------------------------------------------------------------------ link, bpf(4)
    def link_host(self, ifname: str, ip: str, mac: str) -> None:
        """Another host on ``ifname``'s link holds ``ip`` and answers ARP for it (bpf.py)."""
        with self._locked() as st:
            fakebpf.set_link_host(st, ifname, ip, mac)

    def link_host_gone(self, ifname: str, ip: str) -> None:
        """The other host no longer holds ``ip``."""
        with self._locked() as st:
            fakebpf.set_link_host(st, ifname, ip, None)

    def bpf_opener(self) -> Callable[[], fakebpf.FakeBpf]:
        """Opens a fake ``/dev/bpf`` descriptor on this host (``FreeBSDBackend(bpf_opener=)``)."""
        return lambda: fakebpf.FakeBpf(self.state_path)

    def bpf_frames(self, ifname: str | None = None) -> list[bytes]:
        """Every frame written to a fake bpf descriptor (on ``ifname``), oldest first."""
        return [bytes.fromhex(f["frame"]) for f in self._read().get("bpf_sent", [])
                if ifname is None or f["if"] == ifname]

    # ------------------------------------------------------------------ CARP
    def add_vhid(self, ifname: str, vhid: int, *, advbase: int = 1, advskew: int = 0,
                 password: str = "", peer: str | None = None, peer6: str | None = None,
                 version: int = 2, prio: int = 100, interval: int = 100) -> None:
        """Create (or update) a vhid without addresses; it stays INIT until one is added."""
        if version == 3 and self._major() < 15:
            raise ValueError("VRRPv3 (carpver 3) needs release 15.0+")
        with self._locked() as st:
            iface = st["ifaces"][ifname]
            sc = iface["carp"].get(str(vhid)) or kernel.carp_alloc(iface, vhid)
            sc.update(advbase=advbase, advskew=advskew, key=password, version=version,
                      prio=prio, interval=interval)
            if peer:
                sc["peer"] = peer
            if peer6:
                sc["peer6"] = peer6

    def set_carp_state(self, ifname: str, vhid: int, state: str,
                       reason: str | None = None) -> None:
        """Force a state as the kernel would (logs + devd event only on a real change)."""
        state = state.upper()
        if state not in kernel.CARP_STATES:
            raise ValueError(state)
        default = {"MASTER": "master timed out", "BACKUP": "more frequent advertisement received",
                   "INIT": "hardware interface down"}[state]
        with self._locked() as st:
            sc = st["ifaces"][ifname]["carp"][str(vhid)]
            kernel.carp_set_state(st, ifname, sc, state, reason or default)

    def carp_state(self, ifname: str, vhid: int) -> str | None:
        sc = self.interface(ifname)["carp"].get(str(vhid))
        return None if sc is None else str(sc["state"])

    def carp(self, ifname: str) -> dict[int, dict[str, Any]]:
        """{vhid: {"state", "advbase", "advskew", "key", "peer", "peer6", "version", ...}}"""
        return {int(k): v for k, v in self.interface(ifname)["carp"].items()}

    def events(self) -> list[str]:
        """devd lines emitted so far: ``!system=CARP subsystem=1@vtnet0 type=MASTER``."""
        return list(self._read()["events"])

    def clear_events(self) -> None:
        with self._locked() as st:
            st["events"] = []

    def kernel_log(self) -> list[str]:
        """Kernel messages: ``carp: 1@vtnet0: INIT -> BACKUP (initialization complete)``."""
        return list(self._read()["klog"])

    # ------------------------------------------------------------------ sysctl
    def sysctl(self, name: str) -> int | str:
        st = self._read()
        value = kernel.sysctl_value(st, name)
        if value is None:
            raise KeyError(name)
        return value

    def set_sysctl(self, name: str, value: int | str) -> None:
        """Set the value directly (demotion is NOT additive here; allow re-evaluates)."""
        with self._locked() as st:
            old = st["sysctl"].get(name)
            if name == "kern.hostname":
                st["hostname"] = str(value)
                return
            st["sysctl"][name] = value
            if name == "net.inet.carp.allow" and bool(int(old or 0)) != bool(int(value)):
                kernel.carp_allow_changed(st)

    # ------------------------------------------------------------------ calls, faults
    def calls(self, tool: str | None = None) -> list[list[str]]:
        """argv of every fake invocation so far (argv[0] is the tool name)."""
        result = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                argv = json.loads(line)["argv"]
                if tool is None or argv[0] == tool:
                    result.append(argv)
        return result

    def call_records(self) -> list[dict[str, Any]]:
        """Full log records: {"argv", "pid", "t"}."""
        return [json.loads(x) for x in self.log_path.read_text(encoding="utf-8").splitlines()
                if x.strip()]

    def clear_calls(self) -> None:
        self.log_path.write_text("", encoding="utf-8")

    def fail_next(self, argv_prefix: Sequence[str] | str, stderr: str = "", rc: int = 1,
                  stdout: str = "") -> None:
        """Make the next call whose argv starts with ``argv_prefix`` fail once.

        The prefix includes the tool name: ``["ifconfig", "vtnet0", "inet"]`` or the
        string ``"ifconfig vtnet0 inet"``.  The call is logged but changes nothing.
        """
        prefix = shlex.split(argv_prefix) if isinstance(argv_prefix, str) else list(argv_prefix)
        with self._locked() as st:
            st["fail"].append({"prefix": prefix, "stderr": stderr, "stdout": stdout, "rc": rc})

    def syslog(self) -> list[dict[str, Any]]:
        """Messages sent with the fake logger: [{"t", "pri", "tag", "pid", "msg"}]."""
        return [json.loads(x) for x in self.syslog_path.read_text(encoding="utf-8").splitlines()
                if x.strip()]

    # ------------------------------------------------------------------ convenience
    def ifconfig(self, *args: str) -> str:
        """stdout of the fake ``ifconfig ARGS`` (raises on failure); counts as a read."""
        return self.run("ifconfig", *args, check=True).stdout


def _strip_scope(address: str) -> str:
    """"fe80::1%vtnet0/64" -> "fe80::1/64"."""
    if "%" not in address:
        return address
    head, _, tail = address.partition("%")
    plen = tail.partition("/")[2]
    return head + ("/" + plen if plen else "")


def _check_dad(mode: str) -> None:
    kind, _, n = mode.partition(":")
    ok = kind in ("instant", "tentative", "duplicated", "timed", "manual")
    if kind in ("instant", "manual"):
        ok = ok and not n
    elif kind == "timed" and n:
        try:
            ok = float(n) >= 0
        except ValueError:
            ok = False
    elif n:
        ok = ok and n.isdigit()
    if not ok:
        raise ValueError(f"bad dad mode {mode!r}")


def _eui64_link_local(mac: str) -> str:
    b = [int(x, 16) for x in mac.split(":")]
    b[0] ^= 0x02
    eui = [*b[:3], 0xFF, 0xFE, *b[3:]]
    return str(ipaddress.IPv6Address(bytes([0xFE, 0x80, 0, 0, 0, 0, 0, 0, *eui])))
