"""Gratuitous ARP, unsolicited neighbour advertisements and ARP probes, built in-process.

Announcements run only in the detached child after addresses are taken: a few rounds
over a few seconds, each round announcing only the addresses still present (so a host
that lost mastership meanwhile stops announcing). Packets are built here rather than by
forking ``arping`` per address per round: iputils ``arping -U -c 1`` blocks for a
second, and a /24 of service addresses would mean 256 forks a round.

The frames match what the kernels send themselves (FreeBSD ``sys/netinet/if_ether.c``
``arprequest_internal``/``arp_announce_ifaddr``; ``sys/netinet6/nd6_nbr.c``
``nd6_na_output_fib``, as called by ``ip_carp.c`` ``carp_send_na``) and RFC 5227 / RFC 4861.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
from collections.abc import Sequence

SCHEDULE = (0.0, 0.5, 1.0, 2.0, 4.0)  # seconds after the take-over
ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARPOP_REPLY = 2
BROADCAST = b"\xff" * 6
ND_NEIGHBOR_ADVERT = 136
ND_OPT_TARGET_LINKADDR = 2
ND_NA_FLAG_ROUTER = 0x80000000
ND_NA_FLAG_SOLICITED = 0x40000000
ND_NA_FLAG_OVERRIDE = 0x20000000
ALL_NODES = "ff02::1"
ND_HOP_LIMIT = 255  # RFC 4861 7.1.2: receivers drop ND messages with any other hop limit
# RFC 4861 7.2.6 / 10: at most MAX_NEIGHBOR_ADVERTISEMENT unsolicited NAs per address,
# at least RetransTimer (RETRANS_TIMER, 1 s) apart.
MAX_NEIGHBOR_ADVERTISEMENT = 3
RETRANS_TIMER = 1.0

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address


def link_mac(ifname: str) -> bytes | None:
    """The interface's MAC as 6 bytes, via netifaces."""
    import netifaces

    try:
        links = netifaces.ifaddresses(ifname).get(netifaces.AF_LINK, [])
    except ValueError:
        return None
    for link in links:
        mac = parse_mac(str(link.get("addr", "")))
        if mac is not None:
            return mac
    return None


def parse_mac(text: str) -> bytes | None:
    """``aa:bb:cc:dd:ee:ff`` as 6 bytes (None when it is not one)."""
    parts = text.split(":")
    if len(parts) != 6:
        return None
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        return None


def mac_text(mac: bytes) -> str:
    """6 bytes as ``aa:bb:cc:dd:ee:ff``."""
    return ":".join(f"{b:02x}" for b in mac)


def present(ifname: str) -> set[IPv4 | IPv6]:
    """Addresses on ``ifname`` now (without scope)."""
    import netifaces

    found: set[IPv4 | IPv6] = set()
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


# -- ARP --------------------------------------------------------------------------------

def arp_frame(op: int, sha: bytes, spa: IPv4, tha: bytes, tpa: IPv4,
              dst: bytes = BROADCAST) -> bytes:
    """An Ethernet ARP frame for IPv4 (RFC 826), unpadded (the driver pads to 60 bytes)."""
    eth = dst + sha + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", ARPHRD_ETHER, ETH_P_IP, 6, 4, op)
    return eth + arp + sha + spa.packed + tha + tpa.packed


def garp_frame(mac: bytes, ip: IPv4) -> bytes:
    """An ARP Announcement (RFC 5227 3): broadcast request, sender = target = ``ip``,
    target hardware address zero, exactly as FreeBSD ``arp_announce_ifaddr`` sends."""
    return arp_frame(ARPOP_REQUEST, mac, ip, bytes(6), ip)


def probe_frame(mac: bytes, ip: IPv4) -> bytes:
    """An ARP Probe (RFC 5227 2.1.1): broadcast request for ``ip`` with sender address
    0.0.0.0 (so no neighbour's cache learns anything) and target hardware address zero."""
    return arp_frame(ARPOP_REQUEST, mac, IPv4(0), bytes(6), ip)


def arp_answer(frame: bytes, mac: bytes,
               wanted: dict[bytes, IPv4]) -> tuple[IPv4, str] | None:
    """(address, MAC) when ``frame`` is ARP from another host whose sender address is one
    we probe for (RFC 5227 2.1.1: a request or a reply counts), else None."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06":
        return None
    hrd, pro, hln, pln, op = struct.unpack_from("!HHBBH", frame, 14)
    if (hrd, pro, hln, pln) != (ARPHRD_ETHER, ETH_P_IP, 6, 4) or op not in (ARPOP_REQUEST,
                                                                            ARPOP_REPLY):
        return None
    sha, spa = frame[22:28], frame[28:32]
    if sha == mac or spa not in wanted:
        return None
    return wanted[spa], mac_text(sha)


def send_garp(ifname: str, mac: bytes, ips: Sequence[IPv4]) -> int:
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


# -- unsolicited neighbour advertisements ------------------------------------------------

def na_packet(mac: bytes, ip: IPv6, router: bool) -> bytes:
    """An unsolicited NA for ``ip`` (RFC 4861 4.4, 7.2.6): type 136, code 0, checksum 0
    (raw ICMPv6 sockets fill it in: FreeBSD ``rip6_output``, Linux always), R when this host
    forwards IPv6, S clear (unsolicited), O set (we take the address over), and the target
    link-layer address option carrying our MAC."""
    flags = ND_NA_FLAG_OVERRIDE | (ND_NA_FLAG_ROUTER if router else 0)
    body = struct.pack("!BBHI", ND_NEIGHBOR_ADVERT, 0, 0, flags) + ip.packed
    return body + struct.pack("!BB", ND_OPT_TARGET_LINKADDR, 1) + mac


def na_socket(index: int) -> socket.socket:
    """A raw ICMPv6 socket set up like the kernel's own NA output (``nd6_na_output_fib``):
    hop limit 255, out through interface ``index``, and multicast loopback off, so our
    advertisement of our own address never comes back to us (FreeBSD ``nd6_na_input`` logs
    ``duplicate IP6 address`` at LOG_ERR for that, and fails DAD of a tentative address)."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ND_HOP_LIMIT)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ND_HOP_LIMIT)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
    except OSError:
        sock.close()
        raise
    return sock


def send_na(ifname: str, mac: bytes, ips: Sequence[IPv6], router: bool = False) -> list[IPv6]:
    """Send one unsolicited NA per address to ff02::1; return the addresses announced.

    The source is the target itself: binding to it fails (EADDRNOTAVAIL) while the address
    is tentative or duplicated (FreeBSD ``rip6_bind``: also deprecated; Linux
    ``rawv6_bind``), so an address not ours to use is never announced. RFC 4861 4.4 allows any
    address of the interface; Linux ``ndisc_send_na`` makes the same choice, FreeBSD's
    kernel picks one by ``in6_selectsrc``."""
    sent: list[IPv6] = []
    if not ips:
        return sent
    index = socket.if_nametoindex(ifname)
    for ip in ips:
        with na_socket(index) as sock:
            try:
                sock.bind((str(ip), 0, 0, 0))
            except OSError:
                continue  # still tentative (or duplicated): a later round tries again
            sock.sendto(na_packet(mac, ip, router), (ALL_NODES, 0, 0, index))
            sent.append(ip)
    return sent


class NaPacer:
    """RFC 4861 7.2.6 for unsolicited NAs: at most MAX_NEIGHBOR_ADVERTISEMENT per address,
    at least RETRANS_TIMER apart (counted from the ones that really went out)."""

    def __init__(self) -> None:
        self.count: dict[IPv6, int] = {}
        self.last: dict[IPv6, float] = {}

    def due(self, ips: Sequence[IPv6], now: float) -> list[IPv6]:
        """The addresses an NA may go out for at ``now`` (seconds)."""
        return [ip for ip in ips if self.count.get(ip, 0) < MAX_NEIGHBOR_ADVERTISEMENT
                and (ip not in self.last or now - self.last[ip] >= RETRANS_TIMER)]

    def sent(self, ips: Sequence[IPv6], now: float) -> None:
        """Record the NAs that went out at ``now``."""
        for ip in ips:
            self.count[ip] = self.count.get(ip, 0) + 1
            self.last[ip] = now


def repeat(ifname: str, v4: Sequence[ipaddress.IPv4Interface],
           v6: Sequence[ipaddress.IPv6Interface], schedule: Sequence[float] = SCHEDULE,
           router: bool = False) -> int:
    """Announce the addresses on ``schedule`` while they stay on ``ifname``; return packets
    sent. Gratuitous ARP goes out every round, unsolicited NAs as :class:`NaPacer` allows."""
    mac = link_mac(ifname)
    if mac is None:
        return 0
    start = time.monotonic()
    total = 0
    pacer = NaPacer()
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
            total += send_garp(ifname, mac, ips4)
            done = send_na(ifname, mac, pacer.due(ips6, offset), router)
        except OSError:
            break
        pacer.sent(done, offset)
        total += len(done)
    return total


class Probe:
    """RFC 5227-style ARP probe: which addresses does another host answer for?

    ``start`` sends a probe per address; the kernel queues the answers while the caller
    does other work; ``collect`` reads them until ``timeout`` seconds after the start.
    Linux (AF_PACKET) only; FreeBSD uses :class:`carphooks.backends.bpf.ArpProbe`.
    """

    def __init__(self, ifname: str, ips: Sequence[IPv4]) -> None:
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
            sock.send(probe_frame(self.mac, ip))

    def collect(self, timeout: float) -> dict[IPv4, str]:
        """{address: MAC of the other host that answered} within ``timeout`` of the start."""
        sock, mac = self.sock, self.mac
        if sock is None or mac is None:
            return {}
        wanted = {ip.packed: ip for ip in self.ips}
        found: dict[IPv4, str] = {}
        deadline = self.started + timeout
        try:
            while len(found) < len(wanted):
                left = deadline - time.monotonic()
                sock.settimeout(max(left, 0.0))
                try:
                    frame = sock.recv(128)
                except (TimeoutError, BlockingIOError):
                    break
                hit = arp_answer(frame, mac, wanted)
                if hit is not None:
                    found[hit[0]] = hit[1]
        finally:
            sock.close()
            self.sock = None
        return found
