"""Parse FreeBSD ``ifconfig`` output (10.x-15.x) into exact objects.

Line by line on the first token, never by position or substring; addresses
become ``ipaddress`` objects and vhids integers.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass, field

from carphooks.backends.base import AddrInfo, CarpInfo, CarpState

HEADER_RE = re.compile(r"^(?P<name>[^\s:]+):(?:\s+flags=(?P<hex>[0-9a-fA-F]+)<(?P<flags>[^>]*)>)?"
                       r"(?:.*?\bmtu (?P<mtu>\d+))?")
INET6_FLAGS = ("anycast", "tentative", "duplicated", "detached", "deprecated", "autoconf",
               "temporary", "prefer_source")


@dataclass
class IfInfo:
    """One interface as ``ifconfig IF`` shows it."""

    name: str
    flags: frozenset[str] = frozenset()
    mtu: int | None = None
    ether: str | None = None
    addresses: list[AddrInfo] = field(default_factory=list)
    carp: dict[int, CarpInfo] = field(default_factory=dict)
    nd6: frozenset[str] = frozenset()

    @property
    def up(self) -> bool:
        """Administratively up."""
        return "UP" in self.flags


class ParseError(ValueError):
    """Output that is not ifconfig's."""


def _mask_to_len(token: str) -> int:
    if token.lower().startswith("0x"):
        value = int(token, 16)
        length = bin(value).count("1")
        if value != ((1 << 32) - 1) ^ ((1 << (32 - length)) - 1):
            raise ParseError(f"non-contiguous netmask {token}")
        return length
    return ipaddress.IPv4Network(f"0.0.0.0/{token}").prefixlen


def _kv(tokens: list[str], start: int) -> dict[str, str]:
    """Keyword/value pairs after ``start`` (lone flag words map to '')."""
    out: dict[str, str] = {}
    i = start
    while i < len(tokens):
        word = tokens[i]
        if word in INET6_FLAGS:
            out[word] = ""
            i += 1
            continue
        if i + 1 < len(tokens):
            out[word] = tokens[i + 1]
            i += 2
        else:
            out[word] = ""
            i += 1
    return out


def _dest_and_kv(tokens: list[str]) -> tuple[str | None, dict[str, str]]:
    """The ``--> DEST`` of a point-to-point line and the keyword pairs after the address."""
    if len(tokens) > 3 and tokens[2] == "-->":
        return tokens[3], _kv(tokens, 4)
    return None, _kv(tokens, 2)


def _parse_inet(tokens: list[str]) -> AddrInfo:
    addr = tokens[1]
    dest, kv = _dest_and_kv(tokens)
    if "/" in addr:  # -f inet:cidr
        iface = ipaddress.IPv4Interface(addr)
    else:
        length = _mask_to_len(kv["netmask"]) if "netmask" in kv else 32
        iface = ipaddress.IPv4Interface(f"{addr}/{length}")
    vhid = int(kv["vhid"]) if "vhid" in kv else None
    return AddrInfo(iface=iface, vhid=vhid, dest=dest)


def _parse_inet6(tokens: list[str]) -> AddrInfo:
    addr = tokens[1]
    length: int | None = None
    if "/" in addr:
        addr, _, plen = addr.partition("/")
        length = int(plen)
    scope = None
    if "%" in addr:
        addr, _, scope = addr.partition("%")
    dest, kv = _dest_and_kv(tokens)
    if length is None:
        length = int(kv.get("prefixlen", "128"))
    flags = frozenset(f for f in INET6_FLAGS if f in kv)
    vhid = int(kv["vhid"]) if "vhid" in kv else None
    return AddrInfo(iface=ipaddress.IPv6Interface(f"{addr}/{length}"), vhid=vhid, flags=flags,
                    scope=scope, dest=dest)


def _parse_carp(tokens: list[str]) -> CarpInfo:
    state = CarpState.parse(tokens[1])
    kv = _kv(tokens, 2)
    if "vhid" not in kv:
        raise ParseError("carp line without vhid")
    return CarpInfo(vhid=int(kv["vhid"]), state=state,
                    advbase=int(kv["advbase"]) if "advbase" in kv else None,
                    advskew=int(kv["advskew"]) if "advskew" in kv else None)


def _parse_vrrp(tokens: list[str]) -> CarpInfo:
    state = CarpState.parse(tokens[1])
    kv = _kv(tokens, 2)
    if "vrid" not in kv:
        raise ParseError("vrrp line without vrid")
    return CarpInfo(vhid=int(kv["vrid"]), state=state, version=3,
                    prio=int(kv["prio"]) if "prio" in kv else None,
                    interval=int(kv["interval"]) if "interval" in kv else None)


def _flag_names(text: str) -> frozenset[str]:
    return frozenset(f for f in text.split(",") if f)


def parse_all(text: str, only: Collection[str] | None = None) -> dict[str, IfInfo]:
    """Parse the output of ``ifconfig`` / ``ifconfig -a`` / ``ifconfig IF``.

    ``only``: parse just these interfaces; the status lines of the others are skipped
    unread (an interface carphooks does not use cannot make a read fail)."""
    result: dict[str, IfInfo] = {}
    current: IfInfo | None = None
    skipping = False
    last_carp: CarpInfo | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        if not raw[0].isspace():
            match = HEADER_RE.match(raw)
            if match is None:
                raise ParseError(f"line {lineno}: not an interface header: {raw!r}")
            skipping = only is not None and match.group("name") not in only
            last_carp = None
            if skipping:
                continue
            current = IfInfo(name=match.group("name"),
                             flags=_flag_names(match.group("flags") or ""),
                             mtu=int(match.group("mtu")) if match.group("mtu") else None)
            result[current.name] = current
            continue
        if skipping:
            continue
        if current is None:
            raise ParseError(f"line {lineno}: status line before any interface header")
        tokens = raw.split()
        head = tokens[0]
        try:
            if head == "inet" and len(tokens) >= 2:
                current.addresses.append(_parse_inet(tokens))
            elif head == "inet6" and len(tokens) >= 2:
                current.addresses.append(_parse_inet6(tokens))
            elif head == "carp:" and len(tokens) >= 2:
                last_carp = _parse_carp(tokens)
                current.carp[last_carp.vhid] = last_carp
                continue
            elif head == "vrrp:" and len(tokens) >= 2:
                entry = _parse_vrrp(tokens)
                current.carp[entry.vhid] = entry
            elif head in ("peer", "peer6") and last_carp is not None:
                kv = _kv(tokens, 0)
                last_carp = CarpInfo(
                    vhid=last_carp.vhid, state=last_carp.state, advbase=last_carp.advbase,
                    advskew=last_carp.advskew, peer=kv.get("peer"), peer6=kv.get("peer6"),
                    version=last_carp.version)
                current.carp[last_carp.vhid] = last_carp
            elif head in ("ether", "lladdr") and len(tokens) >= 2:
                current.ether = tokens[1].lower()
            elif head == "nd6" and len(tokens) >= 2:
                m = re.search(r"<([^>]*)>", tokens[1])
                current.nd6 = _flag_names(m.group(1)) if m else frozenset()
        except (ValueError, KeyError, IndexError) as exc:
            raise ParseError(f"line {lineno}: cannot parse {raw.strip()!r}: {exc}") from None
        last_carp = None
    return result


def parse_one(text: str, name: str) -> IfInfo:
    """Parse ``ifconfig NAME`` output and return that interface."""
    interfaces = parse_all(text, {name})
    if name not in interfaces:
        raise ParseError(f"ifconfig output does not describe {name}")
    return interfaces[name]
