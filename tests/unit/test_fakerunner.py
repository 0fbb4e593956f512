"""The unit tests' fake: fixtures read back verbatim, edits shown in FreeBSD's format."""

from __future__ import annotations

import pytest

from carphooks.errors import CommandError

from .fakerunner import FIXTURES, FakeFreeBSD, FakeRunner, NotModelled


@pytest.mark.parametrize("fixture", ["f_constructed_14", "r13_two_vhids_1_and_10",
                                     "e_tap_softether"])
def test_fixture_is_served_verbatim(fixture: str) -> None:
    bsd = FakeFreeBSD().load(fixture)
    text = (FIXTURES / f"{fixture}.txt").read_text()
    assert "".join(bsd.text(name) for name in bsd.ifaces) == text


def test_alias_lines_in_freebsd_format() -> None:
    bsd = FakeFreeBSD().load("f_constructed_14")
    runner = FakeRunner(bsd)
    runner.run(["ifconfig", "vtnet0", "inet", "198.51.100.8/32", "alias"], mutating=True)
    runner.run(["ifconfig", "vtnet0", "inet6", "2001:db8::8/64", "alias"], mutating=True)
    lines = bsd.text("vtnet0").splitlines()
    at = lines.index("\tinet 198.51.100.7 netmask 0xffffffff broadcast 198.51.100.7")
    assert lines[at + 1] == "\tinet 198.51.100.8 netmask 0xffffffff broadcast 198.51.100.8"
    assert lines[lines.index("\tinet6 2001:db8::7 prefixlen 128 tentative") + 1] == \
        "\tinet6 2001:db8::8 prefixlen 64"
    runner.run(["ifconfig", "vtnet0", "inet", "198.51.100.8", "-alias"], mutating=True)
    assert "198.51.100.8" not in bsd.text("vtnet0")
    assert runner.count == 3


def test_errors_as_freebsd_prints_them() -> None:
    runner = FakeRunner(FakeFreeBSD().load("f_constructed_14"))
    missing = runner.run(["ifconfig", "vtnet9"], mutating=False, check=False)
    assert (missing.returncode, missing.stderr) == (
        1, "ifconfig: interface vtnet9 does not exist\n")
    with pytest.raises(CommandError, match="Can't assign requested address"):
        runner.run(["ifconfig", "vtnet0", "inet", "192.0.2.10", "-alias"], mutating=True)
    with pytest.raises(CommandError, match="Invalid argument"):  # IPv6 prefix change
        runner.run(["ifconfig", "vtnet0", "inet6", "2001:db8::7/64", "alias"], mutating=True)
    with pytest.raises(CommandError, match=r"unknown oid 'net\.inet\.nosuch'"):
        runner.run(["sysctl", "-n", "net.inet.nosuch"], mutating=False)
    with pytest.raises(NotModelled):
        runner.run(["route", "-n", "get", "default"], mutating=False)


def test_13_has_no_peer_words() -> None:
    bsd = FakeFreeBSD(release="13.3").add_interface("tap0", "02:00:00:00:00:11", tap=True)
    runner = FakeRunner(bsd)
    bad = runner.run(["ifconfig", "tap0", "vhid", "1", "advskew", "0", "mcast"],
                     mutating=True, check=False)
    assert (bad.returncode, bad.stderr) == (1, "ifconfig: mcast: bad value\n")


def test_dry_run_records_and_echoes_without_running() -> None:
    bsd = FakeFreeBSD().add_interface("vtnet0", "58:9c:fc:00:00:01")
    runner = FakeRunner(bsd, dry_run=True)
    runner.run(["ifconfig", "vtnet0", "inet", "203.0.113.10/24", "alias"], mutating=True)
    runner.run(["ifconfig", "tap0", "vhid", "1", "pass", "s3cret"], mutating=True)
    assert runner.echoed == ["ifconfig vtnet0 inet 203.0.113.10/24 alias",
                             "ifconfig tap0 vhid 1 pass ********"]
    assert runner.mutations() == [] and len(runner.asked_to_mutate()) == 2
    assert bsd.addresses("vtnet0") == set() and runner.count == 0
