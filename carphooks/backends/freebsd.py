"""FreeBSD: ``ifconfig`` for addresses and kernel CARP, ``sysctl`` for demotion."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from carphooks.backends.base import Backend, CarpState, Change, Interface, InterfaceMissing
from carphooks.backends.ifconfig_parse import IfInfo, ParseError, parse_all, parse_one
from carphooks.config import Group, IPInterface
from carphooks.errors import CarphooksError, CommandError, ConfigError
from carphooks.runner import Runner
from carphooks.state import StateDir

if TYPE_CHECKING:
    from carphooks.backends.bpf import Opener

# Unicast CARP (`peer`, `peer6`, `mcast`, `mcast6` in sbin/ifconfig/carp.c) exists from
# FreeBSD 14.0 (commit 137818006de5, "carp: support unicast").
UNICAST_MIN_MAJOR = 14
CARP_GROUP = ipaddress.IPv4Address("224.0.0.18")  # INADDR_CARP_GROUP, the kernel's default
CARP_GROUP6 = ipaddress.IPv6Address("ff02::12")
_RELEASE_RE = re.compile(r"(\d+)\.\d+")


def family(address: IPInterface) -> str:
    """``inet`` or ``inet6``."""
    return "inet6" if address.version == 6 else "inet"


def release_major(release: str | None) -> int | None:
    """The major version of a ``kern.osrelease`` value (14 for ``14.1-RELEASE-p3``)."""
    match = _RELEASE_RE.match(release or "")
    return int(match.group(1)) if match else None


def unicast_refusal(groups: Sequence[Group], release: str | None) -> str | None:
    """Why the groups' unicast peers cannot run on ``release`` (before 14.0), or None."""
    major = release_major(release)
    names = [g.name for g in groups if g.carp.peers or g.carp.peers6]
    if major is None or major >= UNICAST_MIN_MAJOR or not names:
        return None
    return (f"group {', '.join(names)}: carp.peers/peers6 (unicast CARP) need FreeBSD "
            f"{UNICAST_MIN_MAJOR}.0 or later, but this host runs {release} (its ifconfig has "
            "no 'peer' keyword): remove the peers to use multicast, or upgrade")


class FreeBSDBackend(Backend):
    """Kernel CARP; aliases with ``ifconfig IF inet|inet6 A/P alias|-alias``."""

    name = "freebsd"

    def __init__(self, runner: Runner, state: StateDir, demotion_file: Path | None = None,
                 *, bpf_opener: Opener | None = None) -> None:
        super().__init__(runner, state, demotion_file)
        self.bpf_opener = bpf_opener  # None: the real /dev/bpf
        self._probe_problem = None if bpf_opener is not None else _bpf_problem()
        self.supports_probe = self._probe_problem is None
        self._macs: dict[str, bytes | None] = {}

    @property
    def supports_demotion(self) -> bool:
        return True

    def read(self, ifname: str) -> Interface:
        result = self.runner.run(["ifconfig", ifname], mutating=False, check=False)
        if result.returncode != 0:
            if "does not exist" in result.stderr:
                raise InterfaceMissing(f"interface {ifname} does not exist")
            raise CommandError(list(result.argv), result.returncode, result.stderr)
        try:
            info = parse_one(result.stdout, ifname)
        except ParseError as exc:
            raise CarphooksError(f"ifconfig {ifname}: {exc}") from None
        return _interface(info)

    def read_many(self, names: Sequence[str]) -> dict[str, Interface | None]:
        """One ``ifconfig -a`` for two interfaces or more (``ifconfig IF`` for one).

        ``ifconfig -a`` prints every interface exactly as ``ifconfig IF`` prints it
        (sbin/ifconfig/ifconfig.c ``main`` and ``list_interfaces`` both end in
        ``ifconfig_netlink.c`` ``list_interfaces_nl`` -> ``status_nl``, or on 13.x
        ``list_interfaces_ioctl`` -> ``status``; ``ifconfig IF`` only filters on the
        name). An interface it does not list does not exist. Only the interfaces asked
        for are parsed."""
        wanted = list(dict.fromkeys(names))
        if len(wanted) < 2:
            return super().read_many(wanted)
        result = self.runner.run(["ifconfig", "-a"], mutating=False)
        try:
            found = parse_all(result.stdout, wanted)
        except ParseError as exc:
            raise CarphooksError(f"ifconfig -a: {exc}") from None
        return {name: _interface(found[name]) if name in found else None for name in wanted}

    @staticmethod
    def argv(change: Change) -> list[str]:
        """The exact ifconfig argv for one change."""
        if change.op == "add":
            return ["ifconfig", change.interface, family(change.address),
                    change.address.with_prefixlen, "alias"]
        return ["ifconfig", change.interface, family(change.address),
                str(change.address.ip), "-alias"]

    def apply(self, changes: Sequence[Change]) -> list[tuple[Change, str]]:
        failed: list[tuple[Change, str]] = []
        for change in changes:
            try:
                self.runner.run(self.argv(change), mutating=True)
            except CommandError as exc:
                failed.append((change, str(exc)))
        return failed

    def carp_state(self, group: Group, carp_if: Interface | None) -> CarpState:
        if carp_if is None:
            return CarpState.INIT
        entry = carp_if.carp.get(group.vhid)
        return entry.state if entry is not None else CarpState.INIT

    def setup_vpn(self, ifname: str, mac: str | None, address: IPInterface | None) -> list[str]:
        current = self.read(ifname)
        done: list[str] = []
        if mac is not None and current.mac != mac:
            self.runner.run(["ifconfig", ifname, "ether", mac], mutating=True)
            done.append(f"set MAC {mac} on {ifname}")
        if address is not None:
            entry = current.find(address)
            if entry is None or entry.iface != address:
                self.runner.run(["ifconfig", ifname, family(address), address.with_prefixlen,
                                 "alias"], mutating=True)
                done.append(f"assigned VPN address {address.with_prefixlen} on {ifname}")
        if not current.up:
            self.runner.run(["ifconfig", ifname, "up"], mutating=True)
            done.append(f"brought {ifname} up")
        return done

    @functools.cached_property
    def os_release(self) -> str | None:
        """``kern.osrelease`` (``14.1-RELEASE``), read once."""
        return self.sysctl_str("kern.osrelease")

    def check_carp_features(self, groups: Sequence[Group]) -> None:
        problem = unicast_refusal(groups, self.os_release)
        if problem is not None:
            raise ConfigError(problem)

    def peer_words(self, peer: ipaddress.IPv4Address | None,
                   peer6: ipaddress.IPv6Address | None) -> list[str]:
        """``peer A``/``mcast`` and ``peer6 B``/``mcast6`` for every vhid command on 14+.

        14.x's ifconfig sends its multicast defaults with every SIOCSVH unless the
        command names the peers (sbin/ifconfig/carp.c: carp_ctor() calls
        setcarp_mcast()/setcarp_mcast6(), setcarp_callback() copies them), so
        ``vhid N advskew S`` alone would turn a unicast vhid back to multicast.
        Before 14 the words do not exist: nothing is added (peers are refused)."""
        major = release_major(self.os_release)
        explicit = major >= UNICAST_MIN_MAJOR if major is not None else bool(peer or peer6)
        if not explicit:
            if peer is not None or peer6 is not None:
                raise ConfigError(f"unicast CARP needs FreeBSD {UNICAST_MIN_MAJOR}.0 or later; "
                                  f"this host runs {self.os_release}")
            return []
        return ((["peer", str(peer)] if peer is not None else ["mcast"])
                + (["peer6", str(peer6)] if peer6 is not None else ["mcast6"]))

    def configure_carp(self, group: Group, advskew: int, secret: str | None,
                       current: Interface, *, peer: ipaddress.IPv4Address | None = None,
                       peer6: ipaddress.IPv6Address | None = None) -> list[str]:
        carp = group.carp
        ifname = group.carp_interface
        entry = current.carp.get(group.vhid)
        vhid_addr = next((a for a in current.addresses if a.vhid == group.vhid), None)
        if carp.address is None:
            raise CarphooksError(f"group {group.name}: carp.address is not set")
        words = self.peer_words(peer, peer6)
        sends_to = ", ".join(str(p) for p in (peer, peer6) if p is not None) or "multicast"
        if entry is None or vhid_addr is None or vhid_addr.iface != carp.address:
            argv = ["ifconfig", ifname, family(carp.address), carp.address.with_prefixlen,
                    "vhid", str(group.vhid), "advbase", str(carp.advbase),
                    "advskew", str(advskew)]
            if secret:
                argv += ["pass", secret]
            argv += words
            argv.append("alias")
            self.runner.run(argv, mutating=True)
            return [f"configured vhid {group.vhid} on {ifname} ({carp.address.with_prefixlen}, "
                    f"advbase {carp.advbase}, advskew {advskew}, {sends_to})"]
        moved = bool(words) and entry.peer is not None and (
            _addr(entry.peer) != (peer or CARP_GROUP)
            or _addr(entry.peer6) != (peer6 or CARP_GROUP6))
        if entry.advbase != carp.advbase or entry.advskew != advskew or moved:
            self.runner.run(["ifconfig", ifname, "vhid", str(group.vhid), "advbase",
                             str(carp.advbase), "advskew", str(advskew), *words], mutating=True)
            return [f"updated vhid {group.vhid} on {ifname} to advbase {carp.advbase}, "
                    f"advskew {advskew}, {sends_to}"]
        return []

    def probe_problem(self) -> str | None:
        return self._probe_problem

    def probe(self, ifname: str, ips: Sequence[ipaddress.IPv4Address],
              timeout: float) -> dict[ipaddress.IPv4Address, str] | None:
        """ARP probe (RFC 5227) through bpf(4): see :mod:`carphooks.backends.bpf`."""
        from carphooks.backends import bpf

        if not self.supports_probe:
            return None
        mac = self._mac(ifname) if ips else None
        if mac is None:
            return {}  # no IPv4 address to probe, or no Ethernet (so no ARP) on this link
        prober = bpf.ArpProbe(ifname, mac, ips, self.bpf_opener or bpf.FileDevice)
        prober.start()
        return prober.collect(timeout)

    def _mac(self, ifname: str) -> bytes | None:
        """The interface's own MAC from ``ifconfig`` (read once per process)."""
        from carphooks.backends import announce  # the detached child's: not on the hook path

        if ifname not in self._macs:
            try:
                self._macs[ifname] = announce.parse_mac(self.read(ifname).mac or "")
            except InterfaceMissing:
                return None
        return self._macs[ifname]

    def na_router_flag(self, ifname: str) -> bool:
        """The NA Router flag the kernel itself would set (``nd6_nbr.c`` ``nd6_ns_input``):
        ``net.inet6.ip6.forwarding``, unless ``net.inet6.ip6.norbit_raif`` is set and the
        interface accepts router advertisements (nd6 flag ACCEPT_RTADV)."""
        if not self.sysctl("net.inet6.ip6.forwarding"):
            return False
        if self.sysctl("net.inet6.ip6.norbit_raif"):
            result = self.runner.run(["ifconfig", ifname], mutating=False, check=False)
            try:
                nd6 = parse_one(result.stdout, ifname).nd6 if result.returncode == 0 else None
            except ParseError:
                nd6 = None
            if nd6 is None or "ACCEPT_RTADV" in nd6:
                return False
        return True

    def announce(self, ifname: str, addresses: Sequence[IPInterface]) -> None:
        # The kernel sends one gratuitous ARP per IPv4 alias on add (more with
        # net.link.ether.inet.garp_rexmit_count); IPv6 gets unsolicited NAs from us.
        from carphooks.backends import announce

        v6 = [a for a in addresses if isinstance(a, ipaddress.IPv6Interface)]
        if v6:
            announce.repeat(ifname, [], v6, router=self.na_router_flag(ifname))

    def sysctl(self, name: str) -> int | None:
        result = self.runner.run(["sysctl", "-n", name], mutating=False, check=False)
        if result.returncode != 0:
            return None
        try:
            return int(result.stdout.strip())
        except ValueError:
            return None

    def sysctl_str(self, name: str) -> str | None:
        result = self.runner.run(["sysctl", "-n", name], mutating=False, check=False)
        value = result.stdout.strip()
        return value if result.returncode == 0 and value else None

    def add_demotion(self, delta: int) -> None:
        self.runner.run(["sysctl", f"net.inet.carp.demotion={delta}"], mutating=True)


def _interface(info: IfInfo) -> Interface:
    return Interface(name=info.name, addresses=info.addresses, carp=info.carp, mac=info.ether,
                     up=info.up)


def _bpf_problem() -> str | None:
    from carphooks.backends import bpf

    return bpf.unavailable()


def _addr(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A peer address from the ``peer`` line (None when absent or unreadable)."""
    try:
        return ipaddress.ip_address(text) if text else None
    except ValueError:
        return None
