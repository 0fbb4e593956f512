"""Gratuitous ARP and unsolicited neighbour advertisements, sent in-process.

Runs only in the detached child after addresses are taken: a few rounds over a
few seconds, each round announcing only the addresses still present (so a host
that lost mastership meanwhile stops announcing). Packets are built here rather
than by forking ``arping`` per address per round: iputils ``arping -U -c 1``
blocks for a second, and a /24 of service addresses would mean 256 forks a round.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
from collections.abc import Sequence

SCHEDULE = (0.0, 0.5, 1.0, 2.0, 4.0)  # seconds after the take-over
ETH_P_ARP = 0x0806
ND_NEIGHBOR_ADVERT = 136
ALL_NODES = "ff02::1"


def link_mac(ifname: str) -> bytes | None:
    """The interface's MAC as 6 bytes, via netifaces."""
    import netifaces

    try:
        links = netifaces.ifaddresses(ifname).get(netifaces.AF_LINK, [])
    except ValueError:
        return None
    for link in links:
        addr = str(link.get("addr", ""))
        parts = addr.split(":")
        if len(parts) == 6:
            try:
                return bytes(int(p, 16) for p in parts)
            except ValueError:
                continue
    return None


def present(ifname: str) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Addresses on ``ifname`` now (without scope)."""
    import netifaces

    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    try:
        table = netifaces.ifaddresses(ifname)
    except ValueError:
        return found
    for fam in (netifaces.AF_INET, netifaces.AF_INET6):
        for entry in table.get(fam, []):
            text = str(entry.get("addr", "")).partition("%")[0]
            try:
                found.add(ipaddress.ip_address(text))
            except ValueError:
                continue
    return found


def garp_frame(mac: bytes, ip: ipaddress.IPv4Address) -> bytes:
    """A broadcast ARP request for ``ip`` from ``ip`` (what ``arping -U`` sends)."""
    eth = b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip.packed + b"\x00" * 6 + ip.packed
    return eth + arp


def na_packet(mac: bytes, ip: ipaddress.IPv6Address) -> bytes:
    """An unsolicited NA (override flag) with the target link-layer address option."""
    flags = 0x20000000  # O (override); not a router, not solicited
    body = struct.pack("!BBHI", ND_NEIGHBOR_ADVERT, 0, 0, flags) + ip.packed
    return body + struct.pack("!BB", 2, 1) + mac  # kernel fills in the checksum


def send_garp(ifname: str, mac: bytes, ips: Sequence[ipaddress.IPv4Address]) -> int:
    """Send one gratuitous ARP per address (Linux AF_PACKET); return how many went out."""
    if not ips or not hasattr(socket, "AF_PACKET"):
        return 0
    sent = 0
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((ifname, 0))
        for ip in ips:
            sock.send(garp_frame(mac, ip))
            sent += 1
    return sent


def send_na(ifname: str, mac: bytes, ips: Sequence[ipaddress.IPv6Address]) -> int:
    """Send one unsolicited NA per address to ff02::1; tentative ones are skipped."""
    sent = 0
    index = socket.if_nametoindex(ifname)
    for ip in ips:
        with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
            try:
                sock.bind((str(ip), 0, 0, 0))
            except OSError:
                continue  # still tentative: the next round tries again
            sock.sendto(na_packet(mac, ip), (ALL_NODES, 0, 0, index))
            sent += 1
    return sent


def repeat(ifname: str, v4: Sequence[ipaddress.IPv4Interface],
           v6: Sequence[ipaddress.IPv6Interface], schedule: Sequence[float] = SCHEDULE) -> int:
    """Announce the addresses on SCHEDULE while they stay on ``ifname``; return packets sent."""
    mac = link_mac(ifname)
    if mac is None:
        return 0
    start = time.monotonic()
    total = 0
    for offset in schedule:
        delay = start + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        still = present(ifname)
        ips4 = [a.ip for a in v4 if a.ip in still]
        ips6 = [a.ip for a in v6 if a.ip in still]
        if not ips4 and not ips6:
            break
        try:
            total += send_garp(ifname, mac, ips4) + send_na(ifname, mac, ips6)
        except OSError:
            break
    return total


class Probe:
    """RFC 5227-style ARP probe: which addresses does another host answer for?

    ``start`` sends a who-has with sender address 0.0.0.0 per address; the kernel
    queues the answers while the caller does other work; ``collect`` reads them until
    ``timeout`` seconds after the start. Linux (AF_PACKET) only.
    """

    def __init__(self, ifname: str, ips: Sequence[ipaddress.IPv4Address]) -> None:
        self.ifname = ifname
        self.ips = list(ips)
        self.sock: socket.socket | None = None
        self.mac: bytes | None = None
        self.started = 0.0

    def start(self) -> None:
        """Send the probes."""
        self.mac = link_mac(self.ifname)
        if not self.ips or self.mac is None or not hasattr(socket, "AF_PACKET"):
            return
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        sock.bind((self.ifname, ETH_P_ARP))
        self.sock = sock
        self.started = time.monotonic()
        for ip in self.ips:
            eth = b"\xff" * 6 + self.mac + struct.pack("!H", ETH_P_ARP)
            arp = (struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + self.mac + b"\x00" * 4
                   + b"\x00" * 6 + ip.packed)
            sock.send(eth + arp)

    def collect(self, timeout: float) -> dict[ipaddress.IPv4Address, str]:
        """{address: MAC of the other host that answered} within ``timeout`` of the start."""
        sock, mac = self.sock, self.mac
        if sock is None or mac is None:
            return {}
        wanted = {ip.packed: ip for ip in self.ips}
        found: dict[ipaddress.IPv4Address, str] = {}
        deadline = self.started + timeout
        try:
            while len(found) < len(wanted):
                left = deadline - time.monotonic()
                sock.settimeout(max(left, 0.0))
                try:
                    frame = sock.recv(128)
                except (TimeoutError, BlockingIOError):
                    break
                if len(frame) < 42 or frame[12:14] != b"\x08\x06":
                    continue
                sha, spa = frame[22:28], frame[28:32]
                if sha != mac and spa in wanted:
                    found[wanted[spa]] = ":".join(f"{b:02x}" for b in sha)
        finally:
            sock.close()
            self.sock = None
        return found

