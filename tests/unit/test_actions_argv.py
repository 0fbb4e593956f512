"""Actions on a hand-built Context: the exact commands each one runs (fake runner)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from carphooks.errors import CarphooksError, ConfigError, UsageError
from carphooks.runtime import actions
from carphooks.runtime.events import TincEnv, parse_carp_event

from .conftest import Rig, standard_host
from .fakerunner import FakeFreeBSD

V4, V6 = "203.0.113.10/24", "2001:db8:10::10/64"
VTNET = ["ifconfig", "vtnet0"]
ALL = ["ifconfig", "-a"]  # tap0 (CARP) and vtnet0 (floating) in one read
ADD = [["ifconfig", "vtnet0", "inet", V4, "alias"], ["ifconfig", "vtnet0", "inet6", V6, "alias"]]
REMOVE = [["ifconfig", "vtnet0", "inet", "203.0.113.10", "-alias"],
          ["ifconfig", "vtnet0", "inet6", "2001:db8:10::10", "-alias"]]
OWN = "203.0.113.11/24"
Build = Callable[..., Rig]
CLAIMS = ("Assigned", "Removed", "Re-added", "demoted CARP", "removed carphooks' CARP demotion",
          "reconcile: group", "group web: hold requested", "group web: release requested")


def claims_a_change(r: Rig) -> list[str]:
    """Log lines saying something changed (a dry run must write none)."""
    return [t for t in r.log.texts() if t.startswith(CLAIMS)]


def master(release: str = "14.1", holding: bool = False) -> FakeFreeBSD:
    bsd = standard_host(release)
    bsd.set_carp_state("tap0", 1, "MASTER")
    if holding:
        bsd.run(("ifconfig", "vtnet0", "inet", V4, "alias"))
        bsd.run(("ifconfig", "vtnet0", "inet6", V6, "alias"))
    return bsd


def holding_backup() -> FakeFreeBSD:
    bsd = standard_host()
    bsd.run(("ifconfig", "vtnet0", "inet", V4, "alias"))
    bsd.run(("ifconfig", "vtnet0", "inet6", V6, "alias"))
    return bsd


def test_carp_event_master_takes(rig: Build) -> None:
    r = rig(master())
    outcomes = actions.carp_event(r.ctx, parse_carp_event("1@tap0", "MASTER")).outcomes
    # the last read verifies the adds and is the CARP re-check before unlocking
    assert r.runner.commands() == [ALL, *ADD, ALL]
    assert r.bsd.addresses("vtnet0") == {OWN, V4, V6}
    assert [o.ok for o in outcomes] == [True]
    assert len(r.spawned) == 1  # announcements handed to the detached child
    assert r.ctx.state.last_event()["detail"] == "1@tap0 MASTER"


def test_carp_event_backup_releases(rig: Build) -> None:
    r = rig(holding_backup())
    actions.carp_event(r.ctx, parse_carp_event("1@tap0", "BACKUP"))
    assert r.runner.commands() == [ALL, *REMOVE, VTNET]
    assert r.bsd.addresses("vtnet0") == {OWN}
    assert r.spawned == []


def test_carp_event_acts_on_the_kernel_state_not_the_event(rig: Build) -> None:
    r = rig(standard_host())  # the kernel says BACKUP
    actions.carp_event(r.ctx, parse_carp_event("1@tap0", "MASTER"))
    assert r.runner.mutations() == []
    assert any("CARP reports BACKUP now: acting on BACKUP" in t for t in r.log.texts())


@pytest.mark.parametrize("subsystem", ["10@tap0", "1@tap1"])
def test_carp_event_for_another_vhid_runs_nothing(rig: Build, subsystem: str) -> None:
    r = rig(master())
    assert actions.carp_event(r.ctx, parse_carp_event(subsystem, "MASTER")).outcomes == []
    assert r.runner.calls == [] and not r.state.exists()


def test_carp_event_master_without_quorum_releases(rig: Build) -> None:
    r = rig(master(holding=True), quorum="majority")  # no peers recorded: 1 of 3
    actions.carp_event(r.ctx, parse_carp_event("1@tap0", "MASTER"))
    assert r.runner.mutations() == REMOVE
    assert any("MASTER but releasing: no quorum: 1 of 3 votes" in t for t in r.log.texts())


def test_carp_event_dry_run_prints_and_writes_nothing(rig: Build) -> None:
    r = rig(master(), dry_run=True)
    [outcome] = actions.carp_event(r.ctx, parse_carp_event("1@tap0", "MASTER")).outcomes
    assert r.runner.echoed == [" ".join(argv) for argv in ADD]
    assert r.runner.mutations() == [] and r.bsd.addresses("vtnet0") == {OWN}
    assert outcome.ok and len(outcome.done) == 2  # what it would do, not a failure
    assert r.runner.commands() == [ALL]  # no verification read of a dry run
    assert not r.state.exists()
    assert r.spawned == []
    assert claims_a_change(r) == []


def test_reconcile_repairs_drift_once(rig: Build) -> None:
    r = rig(master())
    actions.reconcile(r.ctx)
    assert r.runner.mutations() == ADD
    r.runner.calls.clear()
    actions.reconcile(r.ctx)
    assert r.runner.commands() == [ALL]  # converged: reads only


def test_reconcile_dry_run_says_would_and_claims_nothing(rig: Build) -> None:
    r = rig(master(), dry_run=True)
    result = actions.reconcile(r.ctx)
    assert r.runner.mutations() == [] and r.bsd.addresses("vtnet0") == {OWN}
    assert claims_a_change(r) == []  # no "group web repaired" in syslog
    assert result.text(dry_run=True) == [f"would add {V4} on vtnet0", f"would add {V6} on vtnet0"]
    assert not r.state.exists()


def test_reconcile_names_a_group_once(rig: Build) -> None:
    r = rig(master())
    group = r.ctx.config.groups[0]
    actions.reconcile(r.ctx, [group, group])
    assert r.runner.mutations() == ADD  # not re-added (FreeBSD would bounce an IPv4 re-add)


def test_manual_hold_is_refused_on_backup_unless_forced(rig: Build) -> None:
    r = rig(standard_host())
    group = r.ctx.config.groups[0]
    with pytest.raises(UsageError, match="refusing to hold"):
        actions.manual(r.ctx, group, True, False)
    assert r.runner.mutations() == []
    actions.manual(r.ctx, group, True, True)
    assert r.runner.mutations() == ADD
    r.runner.calls.clear()
    actions.manual(r.ctx, group, False, False)
    assert r.runner.mutations() == REMOVE


def test_manual_dry_run(rig: Build) -> None:
    r = rig(holding_backup(), dry_run=True)
    [outcome] = actions.manual(r.ctx, r.ctx.config.groups[0], False, False).outcomes
    assert r.runner.echoed == [" ".join(argv) for argv in REMOVE]
    assert r.bsd.addresses("vtnet0") == {OWN, V4, V6} and not r.state.exists()
    assert outcome.ok and claims_a_change(r) == []


def env(name: str = "hA", node: str | None = None, netname: str = "carp") -> TincEnv:
    return TincEnv(netname=netname, name=name, interface="tap0", device="/dev/tap0", node=node)


def fresh_tap0(release: str = "14.1") -> FakeFreeBSD:
    """tinc just created tap0: another MAC, no address, down; vtnet0 holds stale aliases."""
    bsd = standard_host(release)
    bsd.ifaces.pop("tap0")
    bsd.add_interface("tap0", "02:aa:aa:aa:aa:aa", tap=True, up=False)
    bsd.run(("ifconfig", "vtnet0", "inet", V4, "alias"))
    return bsd


def test_tinc_up_addresses_the_vpn_configures_carp_and_releases(rig: Build) -> None:
    r = rig(fresh_tap0())
    done = actions.tinc_up(r.ctx, env())
    assert r.runner.mutations() == [
        ["ifconfig", "tap0", "ether", "02:00:00:00:00:11"],
        ["ifconfig", "tap0", "inet", "192.0.2.11/24", "alias"],
        ["ifconfig", "tap0", "up"],
        ["ifconfig", "tap0", "inet", "192.0.2.254/24", "vhid", "1", "advbase", "1",
         "advskew", "0", "pass", "s3cret", "mcast", "mcast6", "alias"],
        ["ifconfig", "vtnet0", "inet", "203.0.113.10", "-alias"],  # stale: CARP is not MASTER
    ]
    assert r.runner.commands()[0] == ["sysctl", "-n", "kern.osrelease"]  # checked first
    assert len(done.text()) == 5
    r.runner.calls.clear()
    actions.tinc_up(r.ctx, env())
    assert r.runner.mutations() == []  # a second tinc-up changes nothing


def test_tinc_up_13_has_no_peer_words(rig: Build) -> None:
    r = rig(fresh_tap0("13.3"))
    actions.tinc_up(r.ctx, env())
    assert ["ifconfig", "tap0", "inet", "192.0.2.254/24", "vhid", "1", "advbase", "1",
            "advskew", "0", "pass", "s3cret", "alias"] in r.runner.mutations()


def test_tinc_up_refuses_unicast_on_13_before_any_change(rig: Build) -> None:
    r = rig(fresh_tap0("13.3"), extra='peers = ["192.0.2.12"]\n')
    with pytest.raises(ConfigError, match=r"need FreeBSD 14\.0 or later"):
        actions.tinc_up(r.ctx, env())
    assert r.runner.commands() == [["sysctl", "-n", "kern.osrelease"]]
    assert not r.state.exists()


def test_tinc_up_for_another_network_runs_nothing(rig: Build) -> None:
    r = rig(fresh_tap0())
    result = actions.tinc_up(r.ctx, env(netname="other"))
    assert result.outcomes == [] and result.lines == []
    assert r.runner.calls == []


def test_tinc_down_releases_without_reading_carp(rig: Build) -> None:
    r = rig(master(holding=True))
    actions.tinc_down(r.ctx, env())
    assert r.runner.commands() == [VTNET, *REMOVE, VTNET]


def test_host_down_loses_quorum_releases_then_demotes(rig: Build) -> None:
    r = rig(master(holding=True), quorum="majority")
    r.ctx.state.write_peers(frozenset({"hB"}), True)
    actions.tinc_host(r.ctx, env(node="hB"), up=False)
    assert r.runner.mutations() == [*REMOVE, ["sysctl", "net.inet.carp.demotion=240"]]
    assert r.bsd.sysctls["net.inet.carp.demotion"] == 240
    r.runner.calls.clear()
    actions.tinc_host(r.ctx, env(node="hB"), up=True)  # regained: undemote first, then take
    assert r.runner.mutations() == [["sysctl", "net.inet.carp.demotion=-240"], *ADD]
    assert r.bsd.sysctls["net.inet.carp.demotion"] == 0


def test_host_up_of_a_non_voter_changes_nothing(rig: Build) -> None:
    r = rig(master(), quorum="majority")
    actions.tinc_host(r.ctx, env(node="hZ"), up=True)
    assert r.runner.calls == []


def test_maintenance_on_and_off(rig: Build) -> None:
    r = rig(standard_host())
    lines = actions.maintenance_on(r.ctx, wait=0).text()
    assert r.runner.mutations() == [["sysctl", "net.inet.carp.demotion=240"]]
    assert lines[0] == "demoted CARP by 240" and lines[-1].startswith("maintenance on")
    r.runner.calls.clear()
    assert actions.maintenance_on(r.ctx, wait=0).text()[0].startswith("maintenance on")
    assert r.runner.mutations() == []  # already demoted: not twice
    actions.maintenance_off(r.ctx)
    assert r.runner.mutations() == [["sysctl", "net.inet.carp.demotion=-240"]]
    assert r.bsd.sysctls["net.inet.carp.demotion"] == 0


def test_maintenance_on_while_still_master_fails(rig: Build) -> None:
    r = rig(master())
    with pytest.raises(CarphooksError, match="no peer took over web within 0 s"):
        actions.maintenance_on(r.ctx, wait=0)
    assert ["sysctl", "net.inet.carp.demotion=240"] in r.runner.mutations()


def test_maintenance_dry_run_writes_nothing(rig: Build) -> None:
    r = rig(standard_host(), dry_run=True)
    actions.maintenance_on(r.ctx, wait=0)
    assert r.runner.echoed == ["sysctl net.inet.carp.demotion=240"]
    assert r.bsd.sysctls["net.inet.carp.demotion"] == 0 and not r.state.exists()
    assert claims_a_change(r) == []
