"""The FreeBSD ifconfig parser against real and constructed outputs of every release."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from carphooks.backends.base import CarpState
from carphooks.backends.ifconfig_parse import ParseError, parse_all, parse_one

FIXTURES = Path(__file__).parent / "fixtures" / "ifconfig"
CASES = sorted(p.stem for p in FIXTURES.glob("*.txt"))


def test_fixture_set_covers_every_format():
    assert len(CASES) >= 10
    text = "".join((FIXTURES / f"{c}.txt").read_text() for c in CASES)
    for needle in ("carp: ", "\t      peer ", "vrrp: ", "%", "tentative", "duplicated", "-->",
                   "lagg0_vlan220", "vtnet0.100", "vhid 10"):
        assert needle in text, needle


@pytest.mark.parametrize("case", CASES)
def test_fixture(case):
    text = (FIXTURES / f"{case}.txt").read_text()
    expected = json.loads((FIXTURES / f"{case}.json").read_text())
    info = parse_one(text, expected["name"])
    assert sorted(info.flags) == sorted(expected["flags"])
    assert info.mtu == expected["mtu"]
    assert info.ether == expected["ether"]
    got = [{"address": str(a.iface), "vhid": a.vhid, "flags": sorted(a.flags),
            **({"scope": a.scope} if a.scope else {})} for a in info.addresses]
    want = [{"address": a["address"], "vhid": a["vhid"], "flags": sorted(a["flags"]),
             **({"scope": a["scope"]} if a.get("scope") else {})} for a in expected["addresses"]]
    assert got == want
    carp = []
    for c in info.carp.values():
        entry = {"vhid": c.vhid, "state": c.state.value, "advbase": c.advbase,
                 "advskew": c.advskew, "peer": c.peer, "peer6": c.peer6, "version": c.version}
        if c.version == 3:
            entry.update(prio=c.prio, interval=c.interval)
        carp.append(entry)
    assert sorted(carp, key=lambda c: c["vhid"]) == sorted(expected["carp"],
                                                           key=lambda c: c["vhid"])


def test_vhid_1_and_10_are_distinct():
    info = parse_one((FIXTURES / "r13_two_vhids_1_and_10.txt").read_text(), "vtnet1")
    assert set(info.carp) == {1, 10}
    assert info.carp[1].state is CarpState.MASTER
    assert info.carp[10].state is CarpState.BACKUP
    assert {a.vhid for a in info.addresses if a.vhid} == {1, 10}


def test_192_0_2_1_is_not_192_0_2_10():
    text = (FIXTURES / "r14_backup_slash32_and_1_vs_10.txt").read_text()
    name = json.loads((FIXTURES / "r14_backup_slash32_and_1_vs_10.json").read_text())["name"]
    info = parse_one(text, name)
    ips = [a.iface.ip for a in info.addresses]
    assert ipaddress.ip_address("192.0.2.10") in ips
    assert ips.count(ipaddress.ip_address("192.0.2.1")) <= 1


def test_cidr_and_dotted_forms():
    text = ("em0: flags=8843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST> metric 0 mtu 1500\n"
            "\tinet 198.51.100.7/24 broadcast 198.51.100.255 vhid 3\n"
            "\tinet 198.51.100.8 netmask 255.255.255.128 broadcast 198.51.100.127\n"
            "\tinet6 2001:db8::5/64 vhid 3\n")
    info = parse_one(text, "em0")
    assert [str(a.iface) for a in info.addresses] == [
        "198.51.100.7/24", "198.51.100.8/25", "2001:db8::5/64"]
    assert [a.vhid for a in info.addresses] == [3, None, 3]


def test_state_words_in_any_case():
    info = parse_one("tap0: flags=8843<UP> metric 0 mtu 1500\n"
                     "\tcarp: init vhid 4 advbase 2 advskew 50\n", "tap0")
    assert info.carp[4].state is CarpState.INIT
    assert (info.carp[4].advbase, info.carp[4].advskew) == (2, 50)


@pytest.mark.parametrize("text", [
    "\tinet 192.0.2.1 netmask 0xffffff00\n",  # status line before a header
    "vtnet0: flags=8843<UP> metric 0 mtu 1500\n\tinet 192.0.2.300 netmask 0xffffff00\n",
    "vtnet0: flags=8843<UP> metric 0 mtu 1500\n\tinet 192.0.2.3 netmask 0xff00ff00\n",
    "vtnet0: flags=8843<UP> metric 0 mtu 1500\n\tcarp: SLEEPY vhid 1 advbase 1 advskew 0\n",
    "vtnet0: flags=8843<UP> metric 0 mtu 1500\n\tcarp: MASTER advbase 1\n",
])
def test_garbage_is_a_parse_error(text):
    with pytest.raises(ParseError):
        parse_all(text)


def test_other_interface_is_not_returned():
    with pytest.raises(ParseError):
        parse_one((FIXTURES / "e_tap_softether.txt").read_text(), "tap0")
