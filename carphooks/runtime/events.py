"""Parse what devd, tinc, ucarp and keepalived hand to a hook into validated values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from carphooks.backends.base import CarpState
from carphooks.config import IFNAME_RE, NODE_RE
from carphooks.errors import UsageError

SUBSYSTEM_RE = re.compile(r"([0-9]{1,3})@([A-Za-z0-9_.-]{1,15})")


@dataclass(frozen=True)
class CarpEvent:
    """One devd CARP notification: ``VHID@IF TYPE``."""

    vhid: int
    interface: str
    state: CarpState

    @property
    def subsystem(self) -> str:
        """``VHID@IF`` as devd prints it."""
        return f"{self.vhid}@{self.interface}"


def parse_carp_event(subsystem: str, type_: str) -> CarpEvent:
    """Validate devd's ``$subsystem $type`` strictly."""
    match = SUBSYSTEM_RE.fullmatch(subsystem)
    if match is None or not IFNAME_RE.fullmatch(match.group(2)):
        raise UsageError(f"bad subsystem {subsystem!r}: expected VHID@INTERFACE, e.g. 1@vtnet0")
    vhid = int(match.group(1))
    if not 1 <= vhid <= 255:
        raise UsageError(f"bad subsystem {subsystem!r}: vhid {vhid} is out of range 1-255")
    try:
        state = CarpState.parse(type_)
    except ValueError as exc:
        raise UsageError(f"bad type: {exc}") from None
    return CarpEvent(vhid=vhid, interface=match.group(2), state=state)


@dataclass(frozen=True)
class TincEnv:
    """The environment tinc gives its scripts (no arguments)."""

    netname: str | None
    name: str
    interface: str
    device: str | None
    node: str | None = None
    remote_address: str | None = None
    remote_port: str | None = None


def parse_tinc_env(env: Mapping[str, str], *, need_node: bool) -> TincEnv:
    """Validate tinc's script environment; ``need_node`` for host-up/host-down."""
    name = env.get("NAME", "")
    if not NODE_RE.fullmatch(name):
        raise UsageError(f"bad environment: NAME={name!r} is not a tinc node name")
    interface = env.get("INTERFACE", "")
    if not IFNAME_RE.fullmatch(interface):
        raise UsageError(f"bad environment: INTERFACE={interface!r} is not an interface name")
    netname = env.get("NETNAME") or None
    if netname is not None and not NODE_RE.fullmatch(netname):
        raise UsageError(f"bad environment: NETNAME={netname!r} is not a tinc network name")
    node = env.get("NODE") or None
    if need_node and (node is None or not NODE_RE.fullmatch(node)):
        raise UsageError(f"bad environment: NODE={node!r} is not a tinc node name")
    if not need_node:
        node = None
    return TincEnv(netname=netname, name=name, interface=interface,
                   device=env.get("DEVICE") or None, node=node,
                   remote_address=env.get("REMOTEADDRESS") or None,
                   remote_port=env.get("REMOTEPORT") or None)
