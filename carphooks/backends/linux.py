"""Linux: ``ip`` for changes, netifaces and /proc for reads, no kernel CARP.

The CARP state is the last one ``carp-event`` recorded (ucarp or keepalived drive
it through the adapters in ``hooks/``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

from carphooks.backends import announce
from carphooks.backends.base import (
    AddrInfo,
    Backend,
    CarpState,
    Change,
    Interface,
    InterfaceMissing,
)
from carphooks.config import Group, IPInterface
from carphooks.errors import CommandError, StateError
from carphooks.runner import Runner
from carphooks.state import StateDir, read_regular, replace_file

IF_INET6 = Path("/proc/net/if_inet6")
IPV6_CONF = Path("/proc/sys/net/ipv6/conf")
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40
IFF_UP = 0x1


def _inet6_rows(ifname: str) -> list[AddrInfo]:
    """IPv6 addresses with prefix and flags from /proc/net/if_inet6."""
    rows: list[AddrInfo] = []
    try:
        text = IF_INET6.read_text()
    except OSError:
        return rows
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 6 or parts[5] != ifname:
            continue
        addr = ipaddress.IPv6Address(int(parts[0], 16))
        plen = int(parts[2], 16)
        bits = int(parts[4], 16)
        flags = {name for bit, name in ((IFA_F_TENTATIVE, "tentative"),
                                        (IFA_F_DADFAILED, "duplicated"),
                                        (IFA_F_DEPRECATED, "deprecated")) if bits & bit}
        if "duplicated" in flags:
            flags.discard("tentative")
        rows.append(AddrInfo(iface=ipaddress.IPv6Interface((addr, plen)),
                             flags=frozenset(flags),
                             scope=ifname if addr.is_link_local else None))
    return rows


class LinuxBackend(Backend):
    """``ip addr add|del`` (batched), addresses read in-process."""

    name = "linux"
    reads_carp_interface = False
    supports_probe = True

    def read(self, ifname: str) -> Interface:
        import netifaces

        try:
            table = netifaces.ifaddresses(ifname)
        except ValueError:
            raise InterfaceMissing(f"interface {ifname} does not exist") from None
        addresses: list[AddrInfo] = []
        for entry in table.get(netifaces.AF_INET, []):
            mask = str(entry.get("netmask") or "255.255.255.255")
            addresses.append(AddrInfo(iface=ipaddress.IPv4Interface(f"{entry['addr']}/{mask}")))
        addresses.extend(_inet6_rows(ifname))
        mac = None
        for link in table.get(netifaces.AF_LINK, []):
            mac = str(link.get("addr") or "") or None
        up = True
        try:
            up = bool(int(Path(f"/sys/class/net/{ifname}/flags").read_text(), 16) & IFF_UP)
        except (OSError, ValueError):
            pass
        return Interface(name=ifname, addresses=addresses, mac=mac, up=up)

    @staticmethod
    def line(change: Change) -> list[str]:
        """``addr add|del A/P dev IF [nodad]`` (the words after ``ip``)."""
        words = ["addr", "add" if change.op == "add" else "del", change.address.with_prefixlen,
                 "dev", change.interface]
        if change.op == "add" and change.address.version == 6:
            words.append("nodad")
        return words

    def promote_secondaries(self, ifname: str) -> None:
        """Make deleting a primary IPv4 address promote a secondary instead of deleting
        every secondary of its subnet (Linux' default would drop other groups' addresses)."""
        path = Path(f"/proc/sys/net/ipv4/conf/{ifname}/promote_secondaries")
        try:
            if path.read_text().strip() == "1":
                return
            if self.runner.dry_run:
                self.runner.echo(f"echo 1 > {path}")
                return
            path.write_text("1\n")
        except OSError:
            return

    def apply(self, changes: Sequence[Change]) -> list[tuple[Change, str]]:
        if not changes:
            return []
        for ifname in {c.interface for c in changes
                       if c.op == "remove" and c.address.version == 4}:
            self.promote_secondaries(ifname)
        if len(changes) == 1:
            try:
                self.runner.run(["ip", *self.line(changes[0])], mutating=True)
            except CommandError as exc:
                return [(changes[0], str(exc))]
            return []
        script = "".join(" ".join(self.line(c)) + "\n" for c in changes)
        try:
            self.runner.run(["ip", "-force", "-batch", "-"], mutating=True, stdin=script)
        except CommandError as exc:
            # ip -force went on past the failing lines; the engine's verification
            # read decides which changes really failed.
            return [(c, str(exc)) for c in changes]
        return []

    def __init__(self, runner: Runner, state: StateDir,
                 demotion_file: Path | None = None) -> None:
        super().__init__(runner, state, demotion_file)
        # Events this process saw but did not record (a dry run, or the write failed):
        # only those are taken from memory. A recorded event is read back from the file,
        # so a long-lived detached child (the ARP prober, DAD follow-up) sees a later
        # event that another hook recorded, instead of the state its parent saw.
        self._unrecorded: dict[str, CarpState] = {}

    def carp_state(self, group: Group, carp_if: Interface | None) -> CarpState:
        if group.subsystem in self._unrecorded:
            return self._unrecorded[group.subsystem]
        try:
            recorded = self.state.carp_state(group.subsystem)
        except StateError:
            return CarpState.INIT  # corrupt: the safe side
        return CarpState(recorded[0]) if recorded else CarpState.INIT

    def record_event(self, subsystem: str, state: CarpState) -> None:
        if self.runner.dry_run:
            self._unrecorded[subsystem] = state
            return
        try:
            self.state.write_carp_state(subsystem, state.value)
        except StateError:
            self._unrecorded[subsystem] = state  # this process still acts on it
            raise
        self._unrecorded.pop(subsystem, None)

    def setup_vpn(self, ifname: str, mac: str | None, address: IPInterface | None) -> list[str]:
        current = self.read(ifname)
        lines: list[list[str]] = []
        done: list[str] = []
        if mac is not None and (current.mac or "").lower() != mac:
            lines.append(["link", "set", "dev", ifname, "address", mac])
            done.append(f"set MAC {mac} on {ifname}")
        if address is not None:
            entry = current.find(address)
            if entry is None or entry.iface != address:
                words = ["addr", "add", address.with_prefixlen, "dev", ifname]
                if address.version == 6:
                    words.append("nodad")
                lines.append(words)
                done.append(f"assigned VPN address {address.with_prefixlen} on {ifname}")
        if not current.up:
            lines.append(["link", "set", "dev", ifname, "up"])
            done.append(f"brought {ifname} up")
        if len(lines) == 1:
            self.runner.run(["ip", *lines[0]], mutating=True)
        elif lines:  # one fork for all of them: tinc waits for this script
            self.runner.run(["ip", "-batch", "-"], mutating=True,
                            stdin="".join(" ".join(words) + "\n" for words in lines))
        return done

    def configure_carp(self, group: Group, advskew: int, secret: str | None,
                       current: Interface, *, peer: ipaddress.IPv4Address | None = None,
                       peer6: ipaddress.IPv6Address | None = None) -> list[str]:
        return []  # no kernel CARP: ucarp or keepalived run the protocol

    @property
    def supports_demotion(self) -> bool:
        """With ``demotion_file`` set (keepalived's track_file), demotion works here too."""
        return self.demotion_file is not None

    def sysctl(self, name: str) -> int | None:
        if name != "net.inet.carp.demotion" or self.demotion_file is None:
            return None
        try:  # never blocks on a FIFO nor follows a link planted there
            raw = read_regular(self.demotion_file, 64)
            return int(raw.strip() or b"0") if raw is not None else 0
        except (StateError, ValueError):
            return None

    def add_demotion(self, delta: int) -> None:
        """Add ``delta`` to the integer in ``demotion_file`` (keepalived: ``track_file``
        with ``weight -1`` lowers the VRRP priority by it, as FreeBSD's demotion does)."""
        path = self.demotion_file
        if path is None:
            super().add_demotion(delta)
            return
        value = max(0, (self.sysctl("net.inet.carp.demotion") or 0) + delta)
        if self.runner.dry_run:
            self.runner.echo(f"echo {value} > {path}")
            return
        try:  # a fresh O_EXCL temporary file, renamed: never written through a link
            replace_file(path.parent, path.name, f"{value}\n".encode(), 0o644)
        except StateError as exc:
            raise CommandError([f"write {path}"], 1, str(exc)) from None

    def probe(self, ifname: str, ips: Sequence[ipaddress.IPv4Address],
              timeout: float) -> dict[ipaddress.IPv4Address, str] | None:
        prober = announce.Probe(ifname, ips)
        prober.start()
        return prober.collect(timeout)

    @staticmethod
    def na_router_flag(ifname: str) -> bool:
        """The NA Router flag Linux itself sets (``ndisc_send_unsol_na``): whether the
        interface forwards IPv6 (``/proc/sys/net/ipv6/conf/IF/forwarding``)."""
        try:
            return int((IPV6_CONF / ifname / "forwarding").read_text().strip() or "0") > 0
        except (OSError, ValueError):
            return False

    def announce(self, ifname: str, addresses: Sequence[IPInterface]) -> None:
        v4 = [a for a in addresses if isinstance(a, ipaddress.IPv4Interface)]
        v6 = [a for a in addresses if isinstance(a, ipaddress.IPv6Interface)]
        announce.repeat(ifname, v4, v6, router=bool(v6) and self.na_router_flag(ifname))
