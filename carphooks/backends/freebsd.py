"""FreeBSD: ``ifconfig`` for addresses and kernel CARP, ``sysctl`` for demotion."""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Sequence

from carphooks.backends import announce
from carphooks.backends.base import Backend, Change, Interface, InterfaceMissing
from carphooks.backends.ifconfig_parse import ParseError, parse_one
from carphooks.config import Group, IPInterface
from carphooks.errors import CarphooksError, CommandError
from carphooks.events import CarpState


def family(address: IPInterface) -> str:
    """``inet`` or ``inet6``."""
    return "inet6" if address.version == 6 else "inet"


class FreeBSDBackend(Backend):
    """Kernel CARP; aliases with ``ifconfig IF inet|inet6 A/P alias|-alias``."""

    name = "freebsd"

    @property
    def supports_demotion(self) -> bool:
        return True

    @classmethod
    def is_supported(cls) -> bool:
        return sys.platform.startswith("freebsd")

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
        return Interface(name=ifname, addresses=info.addresses, carp=info.carp,
                         mac=info.ether, up=info.up)

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

    def configure_carp(self, group: Group, advskew: int, secret: str | None,
                       current: Interface) -> list[str]:
        carp = group.carp
        ifname = group.carp_interface
        entry = current.carp.get(group.vhid)
        vhid_addr = next((a for a in current.addresses if a.vhid == group.vhid), None)
        if carp.address is None:
            raise CarphooksError(f"group {group.name}: carp.address is not set")
        if entry is None or vhid_addr is None or vhid_addr.iface != carp.address:
            argv = ["ifconfig", ifname, family(carp.address), carp.address.with_prefixlen,
                    "vhid", str(group.vhid), "advbase", str(carp.advbase),
                    "advskew", str(advskew)]
            if secret:
                argv += ["pass", secret]
            for peer in carp.peers:
                argv += ["peer", str(peer)]
            for peer6 in carp.peers6:
                argv += ["peer6", str(peer6)]
            argv.append("alias")
            self.runner.run(argv, mutating=True)
            return [f"configured vhid {group.vhid} on {ifname} ({carp.address.with_prefixlen}, "
                    f"advbase {carp.advbase}, advskew {advskew})"]
        if entry.advbase != carp.advbase or entry.advskew != advskew:
            self.runner.run(["ifconfig", ifname, "vhid", str(group.vhid), "advbase",
                             str(carp.advbase), "advskew", str(advskew)], mutating=True)
            return [f"updated vhid {group.vhid} on {ifname} to advbase {carp.advbase}, "
                    f"advskew {advskew}"]
        return []

    def announce(self, ifname: str, addresses: Sequence[IPInterface]) -> None:
        # The kernel sends one gratuitous ARP per IPv4 alias on add (more with
        # net.link.ether.inet.garp_rexmit_count); IPv6 gets unsolicited NAs from us.
        v6 = [a for a in addresses if isinstance(a, ipaddress.IPv6Interface)]
        if v6:
            announce.repeat(ifname, [], v6)

    def sysctl(self, name: str) -> int | None:
        result = self.runner.run(["sysctl", "-n", name], mutating=False, check=False)
        if result.returncode != 0:
            return None
        try:
            return int(result.stdout.strip())
        except ValueError:
            return None

    def add_demotion(self, delta: int) -> None:
        self.runner.run(["sysctl", f"net.inet.carp.demotion={delta}"], mutating=True)
