"""IPv6 duplicate address detection: a duplicated (or stuck tentative) floating address
is not held, and is removed and added again once due (issue 9 item 1).

FreeBSD behaviour relied on (tests/fakebsd/README.md has the sources): DAD runs once per
new address; a neighbour answering it leaves the address ``duplicated``; re-adding the
same address only clears the flag without DAD, so the repair must be remove + add.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import re
import time
from pathlib import Path

import pytest
from conftest import SyslogServer, mutating, run_script
from fakebsd.control import FakeBSD

from carphooks.log import Log
from carphooks.runtime.dad import FIRST_RETRY, STUCK_AFTER, Repairs, backoff
from carphooks.state import StateDir

V4 = "203.0.113.10/24"
V6 = "2001:db8:10::10/64"
V6_IP = "2001:db8:10::10"
REMOVE = ["ifconfig", "vtnet0", "inet6", V6_IP, "-alias"]
ADD = ["ifconfig", "vtnet0", "inet6", V6, "alias"]


def carphooks(bsd: FakeBSD, config: Path, *args: str):
    return run_script("carphooks", *args, env=bsd.env(), config=config)


def v6_flags(bsd: FakeBSD) -> tuple[str, ...] | None:
    for iface, _vhid, flags in bsd.addresses("vtnet0"):
        if str(iface) == V6:
            return flags
    return None


def duplicated_master(bsd: FakeBSD) -> None:
    """MASTER with both addresses, V6 duplicated: the old master still answered for it."""
    bsd.set_carp_state("tap0", 1, "MASTER")
    bsd.add_address("vtnet0", V4)
    bsd.neighbour("vtnet0", V6_IP, "58:9c:fc:00:00:02")
    bsd.add_address("vtnet0", V6)
    assert v6_flags(bsd) == ("duplicated",)


def seed(config_state: Path, record: dict[str, float | int]) -> None:
    """Write carphooks' DAD record for V6 (state written by an earlier run)."""
    state = StateDir(config_state)
    state.write("dad.json", {"addresses": {f"vtnet0 {V6_IP}": record}})


def state_dir(config: Path) -> Path:
    return config.parent / "state"


# -- reconcile ----------------------------------------------------------------------------

def test_reconcile_readds_duplicated_address_once_the_other_host_let_go(bsd, config, syslog):
    duplicated_master(bsd)
    bsd.neighbour_gone("vtnet0", V6_IP)
    bsd.clear_calls()
    res = carphooks(bsd, config, "reconcile")
    assert res.code == 0, res.err
    assert mutating(bsd) == [REMOVE, ADD]  # the add only after its remove
    assert v6_flags(bsd) == ()
    texts = syslog.texts()
    assert f"Re-added {V6} on vtnet0." in texts
    assert any("reconcile: group web repaired" in t for t in texts)
    assert bsd.readd_count("vtnet0") == 0  # never a plain re-add (it skips DAD)


def test_reconcile_while_the_other_host_answers_backs_off(bsd, config, syslog):
    duplicated_master(bsd)
    bsd.clear_calls()
    res = carphooks(bsd, config, "reconcile")
    assert res.code == 1  # still unusable: an error, exit 1
    assert mutating(bsd) == [REMOVE, ADD]
    assert v6_flags(bsd) == ("duplicated",)  # DAD ran again and failed again
    assert re.search(rf"next re-add in [1-{FIRST_RETRY:.0f}] s", res.out), res.out
    record = json.loads((state_dir(config) / "dad.json").read_text())
    assert record["addresses"][f"vtnet0 {V6_IP}"]["attempts"] == 1
    # a repair is due again only after the backoff (here: recorded 8 attempts ago now)
    seed(state_dir(config), {"since": time.time(), "attempts": 8, "last": time.time()})
    bsd.clear_calls()
    res = carphooks(bsd, config, "reconcile")
    assert res.code == 1
    assert mutating(bsd) == []
    assert "re-added 8 times" in res.out and "next re-add in" in res.out
    seed(state_dir(config), {"since": time.time() - 600, "attempts": 8,
                             "last": time.time() - backoff(8) - 1})
    bsd.neighbour_gone("vtnet0", V6_IP)
    bsd.clear_calls()
    res = carphooks(bsd, config, "reconcile")
    assert res.code == 0, res.err
    assert mutating(bsd) == [REMOVE, ADD]
    assert v6_flags(bsd) == ()
    assert not (state_dir(config) / "dad.json").exists()  # held again: record dropped


def test_failed_remove_means_no_add(bsd, config):
    duplicated_master(bsd)
    bsd.neighbour_gone("vtnet0", V6_IP)
    bsd.fail_next(REMOVE, "ifconfig: ioctl (SIOCDIFADDR): Operation not permitted", 1)
    bsd.clear_calls()
    res = carphooks(bsd, config, "reconcile")
    assert res.code == 1
    assert mutating(bsd) == [REMOVE]  # an add now would clear ``duplicated`` without DAD
    assert "not added again: removing it failed" in res.out
    assert v6_flags(bsd) == ("duplicated",)


def test_stuck_tentative_is_readded(bsd, config):
    bsd.set_dad("manual")  # DAD of this address never finishes by itself
    bsd.set_carp_state("tap0", 1, "MASTER")
    bsd.add_address("vtnet0", V4)
    bsd.add_address("vtnet0", V6)
    assert v6_flags(bsd) == ("tentative",)
    bsd.clear_calls()
    res = carphooks(bsd, config, "reconcile")  # first sight: DAD may still be running
    assert res.code == 0, res.err
    assert mutating(bsd) == []
    seed(state_dir(config), {"since": time.time() - STUCK_AFTER - 5, "attempts": 0,
                             "last": 0})
    report = json.loads(carphooks(bsd, config, "status", "--json").out)
    assert report["groups"][0]["verdict"].startswith(f"{V6} tentative (tentative for ")
    res = carphooks(bsd, config, "reconcile")
    assert res.code == 0, res.err
    assert mutating(bsd) == [REMOVE, ADD]
    assert bsd.complete_dad("vtnet0") == 1  # the new address's DAD
    assert v6_flags(bsd) == ()


def test_tentative_on_a_down_interface_is_not_readded(bsd, config):
    bsd.set_carp_state("tap0", 1, "MASTER")
    bsd.add_address("vtnet0", V4)
    bsd.add_address("vtnet0", V6)
    bsd.set_up("vtnet0", False)  # nd6_timer marks it tentative; no DAD while down
    assert v6_flags(bsd) == ("tentative",)
    seed(state_dir(config), {"since": time.time() - 600, "attempts": 0, "last": 0})
    bsd.clear_calls()
    res = carphooks(bsd, config, "reconcile")
    assert mutating(bsd) == []
    assert "vtnet0 is down, DAD waits for it" in res.out


def test_dry_run_prints_the_readd_and_writes_nothing(bsd, config, syslog):
    duplicated_master(bsd)
    bsd.clear_calls()
    res = carphooks(bsd, config, "--dry-run", "reconcile")
    assert " ".join(REMOVE) in res.out and " ".join(ADD) in res.out
    assert mutating(bsd) == []
    assert not (state_dir(config) / "dad.json").exists()
    assert not any("Re-added" in t or "removing and adding" in t for t in syslog.texts())


def test_release_never_needs_the_dad_record(bsd, config):
    duplicated_master(bsd)
    assert carphooks(bsd, config, "reconcile").code == 1  # re-added, failed again: recorded
    record = state_dir(config) / "dad.json"
    before = record.read_text()
    os.chmod(record, 0o666)  # unsafe: would be refused on read
    bsd.set_carp_state("tap0", 1, "BACKUP")
    bsd.clear_calls()
    res = run_script("carp-event", "1@tap0", "BACKUP", env=bsd.env(), config=config)
    assert res.code == 0, res.err
    assert REMOVE in mutating(bsd)
    assert v6_flags(bsd) is None
    assert record.read_text() == before  # release neither reads nor writes it


# -- the MASTER event follows DAD in its detached child ------------------------------------

def test_failback_duplicate_is_taken_once_the_old_master_lets_go(bsd, config, syslog):
    bsd.neighbour("vtnet0", V6_IP)  # the old master has not dropped it yet
    bsd.set_carp_state("tap0", 1, "MASTER")
    res = run_script("carp-event", "1@tap0", "MASTER", env=bsd.env(), config=config)
    assert res.code == 1  # DAD failed at the take
    assert v6_flags(bsd) == ("duplicated",)
    bsd.neighbour_gone("vtnet0", V6_IP)  # ... and now it has
    deadline = time.monotonic() + 20
    while v6_flags(bsd) != () and time.monotonic() < deadline:
        time.sleep(0.2)
    assert v6_flags(bsd) == ()
    assert mutating(bsd)[-2:] == [REMOVE, ADD]
    assert f"Re-added {V6} on vtnet0." in [m.message for m in syslog.messages(settle=0.5)]


# -- status and monitoring ------------------------------------------------------------------

def test_status_shows_duplicated_as_not_held(bsd, config):
    duplicated_master(bsd)
    report = json.loads(carphooks(bsd, config, "status", "--json").out)
    group = report["groups"][0]
    assert group["addresses"] == {V4: "held", V6: "duplicated"}
    assert group["verdict"].startswith(f"{V6} duplicated (another host on the link answers")
    assert group["dad"][V6]["status"] == "duplicated"
    human = carphooks(bsd, config, "status").out
    assert f"  {V6} on vtnet0: duplicated" in human
    res = carphooks(bsd, config, "status", "--nagios")
    assert res.code == 2
    assert res.out.startswith("CARPHOOKS CRITICAL - web: ")
    assert "web MASTER 1/2 held" in res.out


def test_nagios_warns_on_fresh_tentative(bsd, config):
    bsd.set_dad("manual")
    bsd.set_carp_state("tap0", 1, "MASTER")
    bsd.add_address("vtnet0", V4)
    bsd.add_address("vtnet0", V6)
    res = carphooks(bsd, config, "status", "--nagios")
    assert res.code == 1, res.out
    assert "tentative address (DAD running)" in res.out
    assert "web MASTER 1/2 held" in res.out


# -- the repair schedule itself (clock injected) ----------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def repairs(tmp_path: Path) -> tuple[Repairs, Clock, Path]:
    clock = Clock()
    log = Log("test", str(tmp_path / "nosock"), mirror=False)
    return Repairs(StateDir(tmp_path / "st"), log, clock=clock), clock, tmp_path / "st"


ADDR = ipaddress.IPv6Interface(V6)


def test_schedule_doubles_then_caps(repairs) -> None:
    r, clock, _ = repairs
    times = []
    for _ in range(12):
        while not r.due("vtnet0", ADDR, "duplicated", True):
            clock.t += 0.5
        times.append(clock.t)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[:5] == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert max(gaps) == 300.0


def test_held_resets_and_state_round_trips(repairs) -> None:
    r, clock, path = repairs
    assert r.due("vtnet0", ADDR, "duplicated", True)
    r.save()
    again = Repairs(StateDir(path), r.log, clock=clock)
    assert not again.due("vtnet0", ADDR, "duplicated", True)  # 2 s not over
    again.held("vtnet0", ADDR)
    again.save()
    assert not (path / "dad.json").exists()
    assert Repairs(StateDir(path), r.log, clock=clock).due("vtnet0", ADDR, "duplicated", True)


def test_tentative_is_stuck_only_after_the_bound_and_up(repairs) -> None:
    r, clock, _ = repairs
    assert not r.due("vtnet0", ADDR, "tentative", True)  # first sight
    clock.t += STUCK_AFTER - 1
    assert not r.due("vtnet0", ADDR, "tentative", True)
    clock.t += 2
    assert not r.due("vtnet0", ADDR, "tentative", False)  # down: DAD waits anyway
    assert r.due("vtnet0", ADDR, "tentative", True)


def test_dry_run_and_corrupt_records(tmp_path: Path, syslog: SyslogServer) -> None:
    log = Log("test", str(syslog.path), mirror=False)
    state = StateDir(tmp_path / "st")
    dry = Repairs(state, log, dry_run=True)
    assert dry.due("vtnet0", ADDR, "duplicated", True)
    dry.save()
    assert not (tmp_path / "st" / "dad.json").exists()
    state.ensure()
    (tmp_path / "st" / "dad.json").write_text("{not json")
    os.chmod(tmp_path / "st" / "dad.json", 0o600)
    fresh = Repairs(state, log)
    assert fresh.due("vtnet0", ADDR, "duplicated", True)  # starts afresh
    assert any("not valid JSON" in t for t in syslog.texts())
