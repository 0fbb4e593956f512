"""What every OS backend provides (and the types they share); the engine and actions
use only this."""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from carphooks.config import Group, IPInterface
from carphooks.errors import CarphooksError
from carphooks.runner import Runner
from carphooks.state import StateDir


class CarpState(enum.Enum):
    """A CARP vhid's state as the kernel (or a userland CARP) reports it."""

    INIT = "INIT"
    BACKUP = "BACKUP"
    MASTER = "MASTER"

    @classmethod
    def parse(cls, text: str) -> CarpState:
        """Parse a state word in any case; raise ValueError otherwise."""
        try:
            return cls(text.upper())
        except ValueError:
            raise ValueError(f"{text!r} is not MASTER, BACKUP or INIT") from None


class AddressState(enum.StrEnum):
    """A floating address on its interface (the exact address, compared as such)."""

    HELD = "held"  # there, with the right prefix, usable
    ABSENT = "absent"
    TENTATIVE = "tentative"  # IPv6 DAD running (or stuck)
    DUPLICATED = "duplicated"  # IPv6 DAD failed: another host answers for it
    WRONG_PREFIX = "wrong-prefix"  # the address is there with another prefix length

    @property
    def present(self) -> bool:
        """On the interface with the right prefix (usable or not)."""
        return self in (AddressState.HELD, AddressState.TENTATIVE, AddressState.DUPLICATED)

    @property
    def in_dad(self) -> bool:
        """Not usable because of IPv6 duplicate address detection."""
        return self in (AddressState.TENTATIVE, AddressState.DUPLICATED)


@dataclass(frozen=True)
class AddrInfo:
    """One address line."""

    iface: IPInterface
    vhid: int | None = None
    flags: frozenset[str] = frozenset()
    scope: str | None = None
    dest: str | None = None


@dataclass(frozen=True)
class CarpInfo:
    """One ``carp:`` (CARP) or ``vrrp:`` (VRRPv3) status entry."""

    vhid: int
    state: CarpState
    advbase: int | None = None
    advskew: int | None = None
    peer: str | None = None
    peer6: str | None = None
    version: int = 2
    prio: int | None = None
    interval: int | None = None


class InterfaceMissing(CarphooksError):
    """The interface does not exist."""


@dataclass
class Interface:
    """An interface's addresses and CARP entries, read once."""

    name: str
    addresses: list[AddrInfo] = field(default_factory=list)
    carp: dict[int, CarpInfo] = field(default_factory=dict)
    mac: str | None = None
    up: bool = True

    def __post_init__(self) -> None:
        # by address, first entry wins: find() is O(1) for a thousand aliases
        self._by_ip = {e.iface.ip: e for e in reversed(self.addresses)}

    def find(self, wanted: IPInterface) -> AddrInfo | None:
        """The entry with exactly this address (any prefix), or None."""
        return self._by_ip.get(wanted.ip)


@dataclass(frozen=True)
class Change:
    """One alias operation."""

    op: str  # "add" | "remove"
    interface: str
    address: IPInterface


class Backend(abc.ABC):
    """One class per OS; every command goes through ``self.runner``."""

    name: str = "base"
    reads_carp_interface: bool = True  # False where the CARP state does not live on an interface
    supports_probe: bool = False  # ARP probe before taking an address

    def __init__(self, runner: Runner, state: StateDir,
                 demotion_file: Path | None = None) -> None:
        self.runner = runner
        self.state = state
        self.demotion_file = demotion_file

    @property
    def supports_demotion(self) -> bool:
        """Whether CARP demotion (net.inet.carp.demotion or its stand-in) works here."""
        return False

    @abc.abstractmethod
    def read(self, ifname: str) -> Interface:
        """Read an interface once (raise InterfaceMissing when absent)."""

    def read_many(self, names: Sequence[str]) -> dict[str, Interface | None]:
        """Read several interfaces at once (None for an absent one); backends that can
        read them all with one command override this."""
        out: dict[str, Interface | None] = {}
        for name in dict.fromkeys(names):
            try:
                out[name] = self.read(name)
            except InterfaceMissing:
                out[name] = None
        return out

    @abc.abstractmethod
    def apply(self, changes: Sequence[Change]) -> list[tuple[Change, str]]:
        """Run the changes; return the ones whose command failed, with the error."""

    @abc.abstractmethod
    def carp_state(self, group: Group, carp_if: Interface | None) -> CarpState:
        """The CARP state of the group's vhid as the system reports it now."""

    def record_event(self, subsystem: str, state: CarpState) -> None:  # noqa: B027
        """Remember an event's state (only where no kernel CARP exists)."""

    @abc.abstractmethod
    def setup_vpn(self, ifname: str, mac: str | None, address: IPInterface | None) -> list[str]:
        """Give the VPN interface its MAC and address and bring it up; return what changed."""

    @abc.abstractmethod
    def configure_carp(self, group: Group, advskew: int, secret: str | None,
                       current: Interface, *, peer: IPv4Address | None = None,
                       peer6: IPv6Address | None = None) -> list[str]:
        """Create or update the group's vhid on its CARP interface; return what changed.

        ``peer``/``peer6``: the unicast peer of each family (None: multicast)."""

    def check_carp_features(self, groups: Sequence[Group]) -> None:  # noqa: B027
        """Raise ConfigError when this system cannot run the groups' CARP settings."""

    def announce(self, ifname: str, addresses: Sequence[IPInterface]) -> None:  # noqa: B027
        """Tell neighbours about addresses just taken (runs in a detached child)."""

    def probe_problem(self) -> str | None:
        """Why this backend cannot probe here (None when it can)."""
        return None if self.supports_probe else f"the {self.name} backend has no ARP probe"

    def probe(self, ifname: str, ips: Sequence[IPv4Address],
              timeout: float) -> dict[IPv4Address, str] | None:
        """Which addresses another host answers for ({ip: MAC}); None where unsupported.

        The runner's imports are loaded while the answers come in, so a take that
        follows a quiet probe costs no extra start-up time."""
        return None

    def sysctl(self, name: str) -> int | None:
        """Read an integer sysctl; None where it does not exist."""
        return None

    def sysctl_str(self, name: str) -> str | None:
        """Read a string sysctl (``kern.osrelease``); None where it does not exist."""
        return None

    def add_demotion(self, delta: int) -> None:
        """Add ``delta`` to the CARP demotion counter (additive, like the kernel)."""
        raise CarphooksError(f"the {self.name} backend has no CARP demotion")
