"""Announcement and probe packets against RFC 4861 / RFC 5227 and the kernels' own
(FreeBSD nd6_nbr.c nd6_na_output_fib, if_ether.c arprequest_internal), and the NA socket."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from pathlib import Path

import pytest

from carphooks.backends import announce, linux
from carphooks.backends.freebsd import FreeBSDBackend
from carphooks.runner import Runner
from carphooks.state import StateDir

MAC = bytes.fromhex("589cfc000001")
OTHER = bytes.fromhex("02000000aa01")
V6 = ipaddress.IPv6Address("2001:db8:10::10")
V4 = ipaddress.IPv4Address("203.0.113.10")


def na_fields(packet: bytes) -> dict[str, object]:
    typ, code, cksum, flags = struct.unpack_from("!BBHI", packet)
    opt_type, opt_len = struct.unpack_from("!BB", packet, 24)
    return {"type": typ, "code": code, "cksum": cksum, "R": bool(flags >> 31),
            "S": bool(flags >> 30 & 1), "O": bool(flags >> 29 & 1),
            "reserved": flags & 0x1FFFFFFF, "target": ipaddress.IPv6Address(packet[8:24]),
            "opt": (opt_type, opt_len), "lladdr": packet[26:32], "len": len(packet)}


@pytest.mark.parametrize("router", [False, True])
def test_unsolicited_na_fields(router: bool) -> None:
    """Type 136, code 0, checksum left to the kernel, R only on a router, never S, O set,
    target = the address, one target link-layer option (type 2, 8 bytes) with our MAC."""
    assert na_fields(announce.na_packet(MAC, V6, router)) == {
        "type": 136, "code": 0, "cksum": 0, "R": router, "S": False, "O": True,
        "reserved": 0, "target": V6, "opt": (2, 1), "lladdr": MAC, "len": 32}


@pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMPv6 sockets need root")
def test_na_goes_out_on_a_socket_without_multicast_loopback(monkeypatch) -> None:
    """The socket send_na uses has loopback off and hop limit 255, and an address the
    kernel does not let us bind (absent, tentative, duplicated) is not announced."""
    seen: list[dict[str, int]] = []
    real = announce.na_socket

    def observe(index: int) -> socket.socket:
        sock = real(index)
        seen.append({name: sock.getsockopt(socket.IPPROTO_IPV6, getattr(socket, name))
                     for name in ("IPV6_MULTICAST_LOOP", "IPV6_MULTICAST_HOPS",
                                  "IPV6_UNICAST_HOPS", "IPV6_MULTICAST_IF")})
        return sock

    monkeypatch.setattr(announce, "na_socket", observe)
    index = socket.if_nametoindex("lo")
    assert announce.send_na("lo", MAC, [V6], router=False) == []  # not on lo: not sent
    assert seen == [{"IPV6_MULTICAST_LOOP": 0, "IPV6_MULTICAST_HOPS": 255,
                     "IPV6_UNICAST_HOPS": 255, "IPV6_MULTICAST_IF": index}]


def test_na_pacing_follows_rfc4861() -> None:
    """At most 3 unsolicited NAs per address, at least 1 s apart, counted from the ones
    that went out: a late (tentative) address still gets its later ones."""
    pacer = announce.NaPacer()
    late = ipaddress.IPv6Address("2001:db8:10::11")
    sent: dict[ipaddress.IPv6Address, list[float]] = {V6: [], late: []}
    for offset in announce.SCHEDULE:
        due = pacer.due([V6, late], offset)
        done = [ip for ip in due if ip == V6 or offset >= 1.5]  # late binds from 1.5 s on
        pacer.sent(done, offset)
        for ip in done:
            sent[ip].append(offset)
    assert sent == {V6: [0.0, 1.0, 2.0], late: [2.0, 4.0]}


def test_probe_frame_is_an_rfc5227_probe() -> None:
    frame = announce.probe_frame(MAC, V4)
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == MAC and frame[12:14] == b"\x08\x06"
    assert struct.unpack_from("!HHBBH", frame, 14) == (1, 0x0800, 6, 4, 1)  # request
    assert frame[22:28] == MAC
    assert frame[28:32] == bytes(4)  # sender 0.0.0.0: no cache learns from a probe
    assert frame[32:38] == bytes(6)
    assert frame[38:42] == V4.packed


def test_arp_answer_counts_only_another_host_claiming_the_address() -> None:
    wanted = {V4.packed: V4}
    reply = announce.arp_frame(2, OTHER, V4, MAC, ipaddress.IPv4Address(0), dst=MAC)
    assert announce.arp_answer(reply, MAC, wanted) == (V4, "02:00:00:00:aa:01")
    announcement = announce.garp_frame(OTHER, V4)  # its own gratuitous ARP counts too
    assert announce.arp_answer(announcement, MAC, wanted) == (V4, "02:00:00:00:aa:01")
    assert announce.arp_answer(announce.garp_frame(MAC, V4), MAC, wanted) is None  # ours
    assert announce.arp_answer(announce.probe_frame(OTHER, V4), MAC, wanted) is None
    other_ip = announce.garp_frame(OTHER, ipaddress.IPv4Address("203.0.113.99"))
    assert announce.arp_answer(other_ip, MAC, wanted) is None
    not_arp = reply[:12] + b"\x08\x00" + reply[14:]
    assert announce.arp_answer(not_arp, MAC, wanted) is None


def test_linux_router_flag_follows_the_interface_forwarding(tmp_path: Path,
                                                            monkeypatch) -> None:
    monkeypatch.setattr(linux, "IPV6_CONF", tmp_path)
    (tmp_path / "ext0").mkdir()
    (tmp_path / "ext1").mkdir()
    (tmp_path / "ext0" / "forwarding").write_text("1\n")
    (tmp_path / "ext1" / "forwarding").write_text("0\n")
    assert linux.LinuxBackend.na_router_flag("ext0") is True
    assert linux.LinuxBackend.na_router_flag("ext1") is False
    assert linux.LinuxBackend.na_router_flag("ext2") is False  # no such interface


def test_freebsd_router_flag_is_what_nd6_ns_input_would_set(bsd, tmp_path: Path,
                                                              monkeypatch) -> None:
    """R = net.inet6.ip6.forwarding, cleared by net.inet6.ip6.norbit_raif on an interface
    that accepts router advertisements."""
    for key, value in bsd.env().items():
        monkeypatch.setenv(key, value)
    backend = FreeBSDBackend(Runner(), StateDir(tmp_path / "state"))
    assert backend.na_router_flag("vtnet0") is False
    bsd.set_sysctl("net.inet6.ip6.forwarding", 1)
    assert backend.na_router_flag("vtnet0") is True
    bsd.set_sysctl("net.inet6.ip6.norbit_raif", 1)
    assert backend.na_router_flag("vtnet0") is True  # nd6 21<PERFORMNUD,AUTO_LINKLOCAL>
    bsd.set_nd6("vtnet0", 0x23)  # + ACCEPT_RTADV
    assert backend.na_router_flag("vtnet0") is False
