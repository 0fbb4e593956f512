"""The reads of one CARP event: one ``ifconfig -a`` for the CARP and the floating
interface, and the verification read after a take doubling as the CARP re-check
before the lock is released (issue 11)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from carphooks.backends.freebsd import FreeBSDBackend
from carphooks.errors import CarphooksError
from carphooks.runner import Result
from carphooks.runtime import actions
from carphooks.runtime.events import parse_carp_event
from carphooks.state import StateDir

from .conftest import Rig, standard_host
from .fakerunner import FakeFreeBSD, FakeRunner

V4, V6 = "203.0.113.10/24", "2001:db8:10::10/64"
OWN = "203.0.113.11/24"
ALL = ["ifconfig", "-a"]
VTNET = ["ifconfig", "vtnet0"]
ADD = [["ifconfig", "vtnet0", "inet", V4, "alias"], ["ifconfig", "vtnet0", "inet6", V6, "alias"]]
REMOVE = [["ifconfig", "vtnet0", "inet", "203.0.113.10", "-alias"],
          ["ifconfig", "vtnet0", "inet6", "2001:db8:10::10", "-alias"]]
Build = Callable[..., Rig]


def flip_to_backup_on_first_add(bsd: FakeFreeBSD) -> None:
    """A peer takes over while this host adds its first address (the kernel's CARP
    changes between two of our commands)."""
    run = bsd.run

    def wrapped(args: tuple[str, ...]) -> Result:
        if args[-1] == "alias" and "vtnet0" in args:
            bsd.set_carp_state("tap0", 1, "BACKUP")
        return run(args)

    bsd.run = wrapped  # type: ignore[method-assign]


def test_a_carp_change_during_the_take_is_seen_by_the_verification_read(rig: Build) -> None:
    bsd = standard_host()
    bsd.set_carp_state("tap0", 1, "MASTER")
    flip_to_backup_on_first_add(bsd)
    r = rig(bsd)
    actions.carp_event(r.ctx, parse_carp_event("1@tap0", "MASTER"))
    # the read after the adds shows BACKUP: converged again before the lock is released
    assert r.runner.commands() == [ALL, *ADD, ALL, *REMOVE, VTNET]
    assert r.bsd.addresses("vtnet0") == {OWN}
    assert any("CARP is BACKUP now, it changed while the group was being taken" in t
               for t in r.log.texts())


def test_a_command_after_the_verification_read_makes_the_re_check_read_again(
        rig: Build, monkeypatch: pytest.MonkeyPatch) -> None:
    r = rig(standard_host())
    r.bsd.set_carp_state("tap0", 1, "MASTER")
    finish_take = actions.apply_views

    def then_a_command(*args: object, **kwargs: object) -> object:
        out = finish_take(*args, **kwargs)  # type: ignore[arg-type]
        r.ctx.backend.sysctl("net.inet.carp.demotion")  # any command in between
        return out

    monkeypatch.setattr(actions, "apply_views", then_a_command)
    actions.carp_event(r.ctx, parse_carp_event("1@tap0", "MASTER"))
    assert r.runner.commands() == [ALL, *ADD, ALL, ["sysctl", "-n", "net.inet.carp.demotion"],
                                   ["ifconfig", "tap0"]]  # not the older reading


def backend(bsd: FakeFreeBSD | None = None) -> tuple[FreeBSDBackend, FakeRunner]:
    runner = FakeRunner(bsd)
    return FreeBSDBackend(runner, StateDir("/nonexistent/state")), runner


def test_read_many_is_one_ifconfig_a_and_parses_only_what_is_asked() -> None:
    be, runner = backend()
    runner.answer(ALL, stdout=(
        "lo0: flags=8049<UP,LOOPBACK,RUNNING,MULTICAST> metric 0 mtu 16384\n"
        "\tinet not-an-address netmask 0xff000000\n"  # unreadable, but not asked for
        "vtnet0: flags=8843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST> metric 0 mtu 1500\n"
        "\tinet 203.0.113.11 netmask 0xffffff00 broadcast 203.0.113.255\n"
        "tap0: flags=8843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST> metric 0 mtu 1500\n"
        "\tinet 192.0.2.254 netmask 0xffffff00 broadcast 192.0.2.255 vhid 1\n"
        "\tcarp: MASTER vhid 1 advbase 1 advskew 0\n"))
    got = be.read_many(["tap0", "vtnet0", "tap1"])
    assert runner.commands() == [ALL]
    assert got["tap0"] is not None and got["tap0"].carp[1].state.value == "MASTER"
    assert got["vtnet0"] is not None and [str(a.iface) for a in got["vtnet0"].addresses] == \
        [OWN]
    assert got["tap1"] is None  # not listed: it does not exist


def test_read_many_of_one_interface_reads_only_it() -> None:
    be, runner = backend(standard_host())
    assert be.read_many(["vtnet0", "vtnet0"])["vtnet0"] is not None
    assert runner.commands() == [VTNET]


def test_read_many_reports_a_failing_ifconfig() -> None:
    be, runner = backend()
    runner.answer(ALL, stderr="ifconfig: socket: Protocol not supported", returncode=1)
    with pytest.raises(CarphooksError, match="Protocol not supported"):
        be.read_many(["tap0", "vtnet0"])
