"""engine.plan, address_status and keep_primary as tables; Engine.converge's exact commands."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from carphooks.backends.base import Change, Interface
from carphooks.backends.freebsd import FreeBSDBackend
from carphooks.backends.ifconfig_parse import AddrInfo
from carphooks.config import CarpParams, Group
from carphooks.runtime.engine import Engine, address_status, keep_primary, plan, primary_address
from carphooks.state import StateDir

from .conftest import RecordingLog
from .fakerunner import FakeFreeBSD, FakeRunner

V4 = "203.0.113.10/24"
V6 = "2001:db8:10::10/64"


def group(*addresses: str) -> Group:
    return Group(name="web", vhid=1, carp_interface="tap0", external_interface="vtnet0",
                 addresses=tuple(ipaddress.ip_interface(a) for a in addresses),
                 carp=CarpParams())


def iface(*entries: tuple[str, int | None, str]) -> Interface:
    """vtnet0 with (address, vhid, space-separated inet6 flags) entries."""
    return Interface(name="vtnet0", addresses=[
        AddrInfo(iface=ipaddress.ip_interface(a), vhid=v, flags=frozenset(f.split()))
        for a, v, f in entries])


OWN = ("203.0.113.11/24", None, "")  # the host's own primary address


def ch(op: str, text: str) -> Change:
    return Change(op, "vtnet0", ipaddress.ip_interface(text))


# name, wanted, current entries, hold, readd, expected changes
PLAN = [
    ("v4 absent, hold", V4, [OWN], True, False, [ch("add", V4)]),
    ("v4 absent, release", V4, [OWN], False, False, []),
    ("v4 held, hold", V4, [OWN, (V4, None, "")], True, False, []),
    ("v4 held, release", V4, [OWN, (V4, None, "")], False, False, [ch("remove", V4)]),
    ("v4 wrong prefix, hold", V4, [OWN, ("203.0.113.10/32", None, "")], True, False,
     [ch("remove", "203.0.113.10/32"), ch("add", V4)]),
    ("v4 wrong prefix, release", V4, [OWN, ("203.0.113.10/32", None, "")], False, False,
     [ch("remove", "203.0.113.10/32")]),
    ("v4 owned by a vhid, hold", V4, [OWN, (V4, 1, "")], True, False, []),
    ("v4 owned by a vhid, release", V4, [OWN, (V4, 1, "")], False, False, []),
    ("v4 vhid with another prefix, hold", V4, [OWN, ("203.0.113.10/32", 3, "")], True,
     False, []),
    ("v6 absent, hold", V6, [OWN], True, False, [ch("add", V6)]),
    ("v6 held, release", V6, [OWN, (V6, None, "")], False, False, [ch("remove", V6)]),
    ("v6 wrong prefix, hold", V6, [OWN, ("2001:db8:10::10/128", None, "")], True, False,
     [ch("remove", "2001:db8:10::10/128"), ch("add", V6)]),
    ("v6 duplicated, hold, no repair due", V6, [OWN, (V6, None, "duplicated")], True, False,
     []),
    ("v6 duplicated, hold, repair due", V6, [OWN, (V6, None, "duplicated")], True, True,
     [ch("remove", V6), ch("add", V6)]),
    ("v6 tentative, hold, repair due", V6, [OWN, (V6, None, "tentative")], True, True,
     [ch("remove", V6), ch("add", V6)]),
    ("v6 duplicated, release", V6, [OWN, (V6, None, "duplicated")], False, True,
     [ch("remove", V6)]),
    ("v6 tentative, release", V6, [OWN, (V6, None, "tentative")], False, False,
     [ch("remove", V6)]),
    ("v6 vhid-owned, readd asked", V6, [OWN, (V6, 2, "duplicated")], True, True, []),
    ("192.0.2.1 wanted, .10 present, hold", "192.0.2.1/24", [OWN, ("192.0.2.10/24", None, "")],
     True, False, [ch("add", "192.0.2.1/24")]),
    ("192.0.2.1 wanted, .10 present, release", "192.0.2.1/24",
     [OWN, ("192.0.2.10/24", None, "")], False, False, []),
    ("192.0.2.10 wanted, .1 present, hold", "192.0.2.10/24", [OWN, ("192.0.2.1/24", None, "")],
     True, False, [ch("add", "192.0.2.10/24")]),
    ("192.0.2.10 wanted, .1 present, release", "192.0.2.10/24",
     [OWN, ("192.0.2.1/24", None, "")], False, False, []),
    ("::10 wanted, ::1 present, release", "2001:db8::10/64", [OWN, ("2001:db8::1/64", None, "")],
     False, False, []),
    ("v4 wanted, its v6-mapped twin present", V4, [OWN, ("::ffff:203.0.113.10/128", None, "")],
     True, False, [ch("add", V4)]),
]


@pytest.mark.parametrize("name, wanted, current, hold, readd, expected", PLAN,
                         ids=[row[0] for row in PLAN])
def test_plan(name: str, wanted: str, current: list[tuple[str, int | None, str]], hold: bool,
              readd: bool, expected: list[Change]) -> None:
    g = group(wanted)
    again = g.addresses if readd else ()
    assert plan(g, hold, iface(*current), again) == expected


def test_plan_two_addresses_in_config_order() -> None:
    g = group(V4, V6)
    assert plan(g, True, iface(OWN)) == [ch("add", V4), ch("add", V6)]
    held = iface(OWN, (V6, None, ""), (V4, None, ""))
    assert plan(g, False, held) == [ch("remove", V4), ch("remove", V6)]


@pytest.mark.parametrize("current, status", [
    (None, "absent"),
    ([OWN], "absent"),
    ([OWN, (V6, None, "")], "held"),
    ([OWN, (V6, None, "autoconf")], "held"),
    ([OWN, ("2001:db8:10::10/128", None, "")], "wrong-prefix"),
    ([OWN, (V6, None, "duplicated")], "duplicated"),
    ([OWN, (V6, None, "tentative")], "tentative"),
    ([OWN, (V6, None, "tentative duplicated")], "duplicated"),
    ([OWN, ("2001:db8:10::1/64", None, "")], "absent"),
])
def test_address_status(current: list[tuple[str, int | None, str]] | None,
                        status: str) -> None:
    found = iface(*current) if current is not None else None
    assert address_status(found, ipaddress.ip_interface(V6)) == status


# current entries, changes -> changes kept, refused?
KEEP = [
    ("alone: refused", [OWN], [ch("remove", "203.0.113.11/24")], [], True),
    ("another plain IPv4 stays", [OWN, (V4, None, "")], [ch("remove", "203.0.113.11/24")],
     [ch("remove", "203.0.113.11/24")], False),
    ("the other IPv4 goes too: primary kept", [OWN, (V4, None, "")],
     [ch("remove", "203.0.113.11/24"), ch("remove", V4)], [ch("remove", V4)], True),
    ("only a vhid address would be left", [OWN, (V4, 1, "")],
     [ch("remove", "203.0.113.11/24")], [], True),
    ("another IPv4 is added", [OWN], [ch("remove", "203.0.113.11/24"), ch("add", V4)],
     [ch("remove", "203.0.113.11/24"), ch("add", V4)], False),
    ("re-prefixing the lone primary", [OWN],
     [ch("remove", "203.0.113.11/24"), ch("add", "203.0.113.11/32")], [], True),
    ("a vhid address is first: no primary", [(V4, 1, ""), OWN],
     [ch("remove", "203.0.113.11/24")], [ch("remove", "203.0.113.11/24")], False),
    ("IPv6 is not guarded", [(V6, None, "")], [ch("remove", V6)], [ch("remove", V6)], False),
    ("an IPv6 address does not save the primary", [OWN, (V6, None, "")],
     [ch("remove", "203.0.113.11/24")], [], True),
    ("the primary is not touched", [OWN, (V4, None, "")], [ch("remove", V4)],
     [ch("remove", V4)], False),
]


@pytest.mark.parametrize("name, current, changes, kept, refused", KEEP,
                         ids=[row[0] for row in KEEP])
def test_keep_primary(name: str, current: list[tuple[str, int | None, str]],
                      changes: list[Change], kept: list[Change], refused: bool) -> None:
    got, errors = keep_primary(changes, iface(*current))
    assert got == kept
    assert len(errors) == (1 if refused else 0)
    if refused:
        assert "refusing to remove 203.0.113.11/24 from vtnet0" in errors[0]


def test_primary_is_the_first_ipv4_line() -> None:
    assert primary_address(iface((V6, None, ""), OWN, (V4, None, ""))) == \
        ipaddress.ip_interface("203.0.113.11/24")
    assert primary_address(iface((V6, None, ""))) is None


# -- Engine.converge through the FreeBSD backend: exact commands ------------------------

def engine(tmp_path: Path, bsd: FakeFreeBSD) -> tuple[Engine, FakeRunner, RecordingLog]:
    runner = FakeRunner(bsd)
    log = RecordingLog()
    backend = FreeBSDBackend(runner, StateDir(tmp_path / "state"))
    return Engine(backend, log), runner, log


def vtnet0(*addresses: str) -> FakeFreeBSD:
    return FakeFreeBSD().add_interface("vtnet0", "58:9c:fc:00:00:01",
                                       addresses=["203.0.113.11/24", *addresses])


READ = ["ifconfig", "vtnet0"]


def test_converge_hold_adds_then_verifies_and_is_idempotent(tmp_path: Path) -> None:
    eng, runner, log = engine(tmp_path, bsd := vtnet0())
    outcome = eng.converge(group(V4, V6), True)
    assert runner.commands() == [
        READ,
        ["ifconfig", "vtnet0", "inet", V4, "alias"],
        ["ifconfig", "vtnet0", "inet6", V6, "alias"],
        ["ifconfig", "-a"],  # verification, with the CARP interface of the group taken
    ]
    assert outcome.ok and outcome.held == {V4: "held", V6: "held"}
    assert bsd.addresses("vtnet0") == {"203.0.113.11/24", V4, V6}
    assert "Assigned 203.0.113.10/24 on vtnet0." in log.texts()
    runner.calls.clear()
    again = eng.converge(group(V4, V6), True)
    assert runner.commands() == [READ]  # nothing to change: read once, nothing else
    assert again.ok and again.done == []


def test_converge_release_removes_by_address_only(tmp_path: Path) -> None:
    eng, runner, _ = engine(tmp_path, bsd := vtnet0(V4, "2001:db8:10::10/128"))
    outcome = eng.converge(group(V4, V6), False)
    assert runner.mutations() == [
        ["ifconfig", "vtnet0", "inet", "203.0.113.10", "-alias"],
        ["ifconfig", "vtnet0", "inet6", "2001:db8:10::10", "-alias"],
    ]
    assert outcome.ok and bsd.addresses("vtnet0") == {"203.0.113.11/24"}


def test_converge_one_failure_does_not_stop_the_others(tmp_path: Path) -> None:
    eng, runner, log = engine(tmp_path, bsd := vtnet0())
    runner.answer(["ifconfig", "vtnet0", "inet", V4, "alias"],
                  stderr="ifconfig: ioctl (SIOCAIFADDR): Invalid argument\n", returncode=1)
    outcome = eng.converge(group(V4, V6), True)
    assert runner.mutations()[-1] == ["ifconfig", "vtnet0", "inet6", V6, "alias"]
    assert bsd.addresses("vtnet0") == {"203.0.113.11/24", V6}
    assert outcome.errors == [f"failed to assign {V4} on vtnet0: ifconfig vtnet0 inet {V4} "
                              "alias: ifconfig: ioctl (SIOCAIFADDR): Invalid argument"]
    assert outcome.errors[0] in log.texts()


def test_converge_refuses_the_primary_and_runs_no_remove(tmp_path: Path) -> None:
    eng, runner, _ = engine(tmp_path, vtnet0())
    outcome = eng.converge(group("203.0.113.11/24"), False)
    assert runner.mutations() == []
    assert len(outcome.errors) == 1 and "primary IPv4 address" in outcome.errors[0]


def test_converge_leaves_a_vhid_address_to_the_kernel(tmp_path: Path) -> None:
    bsd = vtnet0()
    bsd.add_vhid("vtnet0", 5, V4, "MASTER")
    eng, runner, _ = engine(tmp_path, bsd)
    outcome = eng.converge(group(V4), False)
    assert runner.mutations() == []
    assert outcome.warnings == [f"{V4} on vtnet0 belongs to CARP vhid 5: left to the kernel"]


def test_converge_missing_interface(tmp_path: Path) -> None:
    eng, runner, _ = engine(tmp_path, FakeFreeBSD())
    held = eng.converge(group(V4), True)
    released = eng.converge(group(V4), False)
    assert runner.commands() == [READ, READ]
    assert held.errors == [f"interface vtnet0 does not exist: cannot assign {V4}"]
    assert released.ok and released.warnings == ["interface vtnet0 does not exist: "
                                                 "nothing to remove"]
