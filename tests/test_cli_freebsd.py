"""The installed console scripts against the FreeBSD emulator, as devd and tinc run them."""

from __future__ import annotations

import concurrent.futures
import json
import os
import stat
from pathlib import Path

import pytest
from conftest import (
    BASE_CONFIG,
    FakeBSD,
    SyslogServer,
    addrs,
    mutating,
    run_script,
    write_config,
)

V4 = "203.0.113.10/24"
V6 = "2001:db8:10::10/64"
TINC_ENV = {"NETNAME": "carp", "NAME": "hA", "DEVICE": "/dev/tap0", "INTERFACE": "tap0"}


def event(bsd: FakeBSD, config: Path, *args: str, extra: dict[str, str] | None = None):
    env = bsd.env()
    env.update(extra or {})
    return run_script("carp-event", *args, env=env, config=config)


def test_master_assigns_both_addresses_with_exact_commands(bsd, config, syslog):
    bsd.set_carp_state("tap0", 1, "MASTER")
    bsd.clear_calls()
    res = event(bsd, config, "1@tap0", "MASTER")
    assert res.code == 0, res.err
    assert {V4, V6} <= addrs(bsd, "vtnet0")
    assert mutating(bsd) == [
        ["ifconfig", "vtnet0", "inet", V4, "alias"],
        ["ifconfig", "vtnet0", "inet6", V6, "alias"],
    ]
    texts = syslog.texts()
    assert f"Assigned {V4} on vtnet0." in texts
    assert f"Assigned {V6} on vtnet0." in texts


def test_same_event_twice_runs_no_second_change(bsd, config):
    bsd.set_carp_state("tap0", 1, "MASTER")
    assert event(bsd, config, "1@tap0", "MASTER").code == 0
    bsd.clear_calls()
    assert event(bsd, config, "1@tap0", "MASTER").code == 0
    assert mutating(bsd) == []
    assert bsd.readd_count("vtnet0") == 0  # never re-added (FreeBSD would bounce it)


@pytest.mark.parametrize("kind", ["BACKUP", "INIT", "backup", "Init"])
def test_backup_and_init_remove(bsd, config, syslog, kind):
    bsd.add_address("vtnet0", V4)
    bsd.add_address("vtnet0", V6)
    bsd.set_carp_state("tap0", 1, kind.upper())
    bsd.clear_calls()
    res = event(bsd, config, "1@tap0", kind)
    assert res.code == 0, res.err
    assert addrs(bsd, "vtnet0") == {"203.0.113.11/24"}
    assert mutating(bsd) == [
        ["ifconfig", "vtnet0", "inet", "203.0.113.10", "-alias"],
        ["ifconfig", "vtnet0", "inet6", "2001:db8:10::10", "-alias"],
    ]
    assert f"Removed {V4} from vtnet0." in syslog.texts()


def test_release_when_absent_runs_nothing(bsd, config):
    bsd.clear_calls()
    assert event(bsd, config, "1@tap0", "BACKUP").code == 0
    assert mutating(bsd) == []


def test_out_of_order_event_follows_the_kernel(bsd, config, syslog):
    # devd delivered MASTER late: the kernel is already BACKUP again.
    bsd.set_carp_state("tap0", 1, "BACKUP")
    res = event(bsd, config, "1@tap0", "MASTER")
    assert res.code == 0
    assert V4 not in addrs(bsd, "vtnet0")
    assert any("CARP reports BACKUP now" in t for t in syslog.texts())
    # and a stale BACKUP after becoming MASTER keeps the address
    bsd.set_carp_state("tap0", 1, "MASTER")
    assert event(bsd, config, "1@tap0", "MASTER").code == 0
    assert event(bsd, config, "1@tap0", "BACKUP").code == 0
    assert {V4, V6} <= addrs(bsd, "vtnet0")


def test_near_addresses_are_not_confused(bsd, config):
    # 203.0.113.100 contains "203.0.113.10" as a substring; grep would say "present".
    bsd.add_address("vtnet0", "203.0.113.100/24")
    bsd.set_carp_state("tap0", 1, "MASTER")
    assert event(bsd, config, "1@tap0", "MASTER").code == 0
    assert {V4, "203.0.113.100/24"} <= addrs(bsd, "vtnet0")
    bsd.set_carp_state("tap0", 1, "BACKUP")
    assert event(bsd, config, "1@tap0", "BACKUP").code == 0
    assert "203.0.113.100/24" in addrs(bsd, "vtnet0")
    assert V4 not in addrs(bsd, "vtnet0")


def test_vhid_10_is_not_vhid_1(bsd, config):
    bsd.add_vhid("tap0", 10)
    bsd.add_address("tap0", "192.0.2.253/24", vhid=10)
    bsd.set_carp_state("tap0", 10, "MASTER")
    bsd.set_carp_state("tap0", 1, "BACKUP")
    assert event(bsd, config, "1@tap0", "MASTER").code == 0
    assert V4 not in addrs(bsd, "vtnet0")


def test_twelve_concurrent_events_end_in_kernel_state(bsd, config):
    bsd.set_carp_state("tap0", 1, "MASTER")
    bsd.clear_calls()
    types = ["MASTER", "BACKUP", "INIT"] * 4
    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(lambda t: event(bsd, config, "1@tap0", t), types))
    # On a slow machine some events may time out on the lock: they exit 7 and leave the
    # event for the holder, which replays it; either way the end state is the kernel's.
    assert {r.code for r in results} <= {0, 7}, [r.err for r in results]
    assert all("left for the lock holder" in r.err for r in results if r.code == 7)
    assert {V4, V6} <= addrs(bsd, "vtnet0")
    adds = [c for c in mutating(bsd) if c[-1] == "alias"]
    assert len(adds) == 2  # each address added exactly once
    assert not [c for c in mutating(bsd) if c[-1] == "-alias"]
    assert bsd.readd_count("vtnet0") == 0


def test_unknown_vhid_is_logged_and_ignored(bsd, config, syslog):
    bsd.clear_calls()
    res = event(bsd, config, "7@tap0", "MASTER")
    assert res.code == 0
    assert mutating(bsd) == []
    assert any("no group for vhid 7 on tap0" in t for t in syslog.texts())
    res = event(bsd, config, "1@vtnet1", "MASTER")
    assert res.code == 0
    assert mutating(bsd) == []


@pytest.mark.parametrize("args", [
    ["1@tap0"], [], ["1@tap0", "MASTER", "extra"], ["tap0", "MASTER"], ["0@tap0", "MASTER"],
    ["256@tap0", "MASTER"], ["1@", "MASTER"], ["@tap0", "MASTER"], ["1@tap0", "MASTERS"],
    ["1@tap0", ""], ["1@tap 0", "MASTER"], ["1@-rf", "MASTER"], ["x@tap0", "BACKUP"],
    ["$'1@tap0'", "MASTER"], ["1@tap0", "LINK_UP"],
])
def test_malformed_arguments_exit_2_and_change_nothing(bsd, config, syslog, args):
    bsd.set_carp_state("tap0", 1, "MASTER")
    bsd.clear_calls()
    res = event(bsd, config, *args)
    assert res.code == 2, (res.out, res.err)
    assert bsd.calls() == []
    assert len([ln for ln in res.err.splitlines() if ln.strip()]) <= 3
    assert "Traceback" not in res.err
    assert any(m.severity == 3 for m in syslog.messages())


@pytest.mark.parametrize("body, needle", [
    ("log_tag = 'x'\n[[group]]\nvhid = 1\n", "group[0].carp_interface: missing"),
    ("quorum = 'none'\n[[group]]\nvhid = 300\ncarp_interface='tap0'\nexternal_interface='vtnet0'\n",
     "group[0].vhid: 300 is out of range 1-255"),
    ("quorum = 'none'\n[[group]]\nvhid = 1\ncarp_interface='tap0'\nexternal_interface='vtnet0'\n"
     "addresses = ['203.0.113.10/24', '2001:db8::1/129']\n",
     "group[0].addresses[1]: '2001:db8::1/129' is not an IPv6 interface address"),
    ("quorum = 'none'\nbackend = 'solaris'\n", "backend: 'solaris' is not one of"),
    ("this is not toml", "not valid TOML"),
    ("quorum = 'none'\nstray = 1\n", "stray: unknown key"),
])
def test_bad_config_exit_6_and_change_nothing(bsd, tmp_path, syslog, body, needle):
    cfg = write_config(tmp_path / "bad.toml", f"syslog_socket = '{syslog.path}'\n" + body
                       if "not toml" not in body else body)
    bsd.set_carp_state("tap0", 1, "MASTER")
    bsd.clear_calls()
    res = event(bsd, cfg, "1@tap0", "MASTER")
    assert res.code == 6, res.err
    assert needle in res.err
    assert str(cfg) in res.err
    assert bsd.calls() == []
    assert "Traceback" not in res.err


def test_group_writable_config_is_refused(bsd, config):
    os.chmod(config, 0o664)
    bsd.set_carp_state("tap0", 1, "MASTER")
    res = event(bsd, config, "1@tap0", "MASTER")
    assert res.code == 6
    assert "writable by group or others" in res.err
    assert V4 not in addrs(bsd, "vtnet0")


def test_password_file_readable_by_others_is_refused(bsd, tmp_path, syslog):
    secret = tmp_path / "pass"
    secret.write_text("s3cret\n")
    os.chmod(secret, 0o644)
    text = BASE_CONFIG.format(state=tmp_path / "state", sock=syslog.path).replace(
        'password = "s3cret"', f'password_file = "{secret}"')
    cfg = write_config(tmp_path / "c.toml", text)
    res = event(bsd, cfg, "1@tap0", "MASTER")
    assert res.code == 6
    assert "readable by others" in res.err


def test_missing_config_exit_6(bsd, tmp_path):
    res = event(bsd, tmp_path / "nope.toml", "1@tap0", "MASTER")
    assert res.code == 6
    assert "nope.toml" in res.err


def test_one_failing_address_does_not_stop_the_other(bsd, config, syslog):
    bsd.set_carp_state("tap0", 1, "MASTER")
    bsd.fail_next(["ifconfig", "vtnet0", "inet", V4], stderr="ifconfig: ioctl (SIOCAIFADDR): "
                  "File exists", rc=1)
    res = event(bsd, config, "1@tap0", "MASTER")
    assert res.code == 1
    assert V6 in addrs(bsd, "vtnet0")
    assert V4 not in addrs(bsd, "vtnet0")
    errors = [m.message for m in syslog.messages() if m.severity == 3]
    assert any("failed to assign 203.0.113.10/24 on vtnet0" in e for e in errors)
    assert "Traceback" not in res.err


def test_missing_external_interface(bsd, tmp_path, syslog):
    text = BASE_CONFIG.format(state=tmp_path / "state", sock=syslog.path).replace(
        'external_interface = "vtnet0"', 'external_interface = "vtnet9"')
    cfg = write_config(tmp_path / "c.toml", text)
    bsd.set_carp_state("tap0", 1, "MASTER")
    res = event(bsd, cfg, "1@tap0", "MASTER")
    assert res.code == 1
    assert any("interface vtnet9 does not exist" in t for t in syslog.texts())


def test_dry_run_prints_argv_and_changes_nothing(bsd, config):
    bsd.set_carp_state("tap0", 1, "MASTER")
    bsd.clear_calls()
    res = event(bsd, config, "--dry-run", "1@tap0", "MASTER")
    assert res.code == 0, res.err
    assert f"would run: ifconfig vtnet0 inet {V4} alias" in res.out
    assert f"would run: ifconfig vtnet0 inet6 {V6} alias" in res.out
    assert mutating(bsd) == []
    assert V4 not in addrs(bsd, "vtnet0")


def test_lock_timeout_exit_7(bsd, tmp_path, syslog):
    import fcntl

    text = BASE_CONFIG.format(state=tmp_path / "state", sock=syslog.path).replace(
        "lock_timeout = 5", "lock_timeout = 0.3")
    cfg = write_config(tmp_path / "c.toml", text)
    (tmp_path / "state").mkdir(mode=0o700)
    with open(tmp_path / "state" / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        bsd.set_carp_state("tap0", 1, "MASTER")
        res = event(bsd, cfg, "1@tap0", "MASTER")
    assert res.code == 7
    assert "lock" in res.err
    assert V4 not in addrs(bsd, "vtnet0")


def test_tentative_and_duplicated_are_reported(bsd, config, syslog):
    bsd.set_carp_state("tap0", 1, "MASTER")
    bsd.set_dad("duplicated")
    res = event(bsd, config, "1@tap0", "MASTER")
    assert res.code == 1
    assert any("duplicated" in m.message and m.severity == 3 for m in syslog.messages())


def test_status_json(bsd, config):
    bsd.set_carp_state("tap0", 1, "MASTER")
    event(bsd, config, "1@tap0", "MASTER")
    res = run_script("carphooks", "status", "--json", env=bsd.env(), config=config)
    assert res.code == 0, res.err
    report = json.loads(res.out)
    group = report["groups"][0]
    assert group["carp"] == "MASTER"
    assert group["addresses"] == {V4: "held", V6: "held"}
    assert group["verdict"] == "ok"


def test_status_reports_drift(bsd, config):
    bsd.add_address("vtnet0", V4)
    res = run_script("carphooks", "status", "--json", env=bsd.env(), config=config)
    group = json.loads(res.out)["groups"][0]
    assert group["verdict"].startswith("drift: should release")


def test_reconcile_repairs_manual_removal(bsd, config, syslog):
    bsd.set_carp_state("tap0", 1, "MASTER")
    event(bsd, config, "1@tap0", "MASTER")
    bsd.remove_address("vtnet0", V4)
    res = run_script("carphooks", "reconcile", env=bsd.env(), config=config)
    assert res.code == 0, res.err
    assert V4 in addrs(bsd, "vtnet0")
    assert any("reconcile: group web repaired" in t for t in syslog.texts())


def test_hold_refused_when_backup_unless_forced(bsd, config):
    res = run_script("carphooks", "hold", "web", env=bsd.env(), config=config)
    assert res.code == 2
    assert "refusing to hold" in res.err
    res = run_script("carphooks", "hold", "--force", "web", env=bsd.env(), config=config)
    assert res.code == 0, res.err
    assert V4 in addrs(bsd, "vtnet0")
    res = run_script("carphooks", "release", "web", env=bsd.env(), config=config)
    assert res.code == 0
    assert V4 not in addrs(bsd, "vtnet0")


def test_unknown_group(bsd, config):
    res = run_script("carphooks", "release", "nope", env=bsd.env(), config=config)
    assert res.code == 2
    assert "no group 'nope'" in res.err


# -- tinc scripts ---------------------------------------------------------------------


def tinc_config(tmp_path: Path, syslog: SyslogServer) -> Path:
    text = BASE_CONFIG.format(state=tmp_path / "state", sock=syslog.path).replace(
        'quorum = "none"', 'quorum = "majority"') + """
[tinc]
netname = "carp"
nodes = ["hA", "hB", "hC"]

[hosts.hA]
vpn_address = "192.0.2.11/24"
[hosts.hB]
vpn_address = "192.0.2.12/24"
[hosts.hC]
vpn_address = "192.0.2.13/24"
"""
    return write_config(tmp_path / "cluster.toml", text)


@pytest.fixture
def fresh(tmp_path: Path) -> FakeBSD:
    """A host whose tap0 tincd has just created (no address, no vhid)."""
    host = FakeBSD(tmp_path / "fresh", release="14.1")
    host.add_interface("vtnet0", mac="58:9c:fc:00:00:01")
    host.add_address("vtnet0", "203.0.113.11/24")
    host.add_interface("tap0", mac="58:9c:fc:aa:bb:cc", kind="tap", up=False)
    return host


def test_tinc_up_configures_interface_and_carp_idempotently(fresh, tmp_path, syslog):
    cfg = tinc_config(tmp_path, syslog)
    env = fresh.env()
    env.update(TINC_ENV)
    res = run_script("tinc-up", env=env, config=cfg)
    assert res.code == 0, res.err
    tap = fresh.interface("tap0")
    assert tap["mac"].startswith(("02", "06", "0a", "0e")) or int(tap["mac"][:2], 16) & 2
    assert "192.0.2.11/24" in addrs(fresh, "tap0")
    assert fresh.carp_state("tap0", 1) in ("BACKUP", "INIT")
    carp_add = [c for c in fresh.calls("ifconfig") if "vhid" in c]
    assert carp_add and "pass" in carp_add[0] and "advskew" in carp_add[0]
    assert not any("s3cret" in t for t in syslog.texts())  # the password stays out of logs
    fresh.clear_calls()
    res = run_script("tinc-up", env=env, config=cfg)
    assert res.code == 0, res.err
    assert mutating(fresh) == []
    # same MAC on every run: derived from the node name
    res2 = run_script("carphooks", "--host", "hA", "status", "--json", env=env, config=cfg)
    assert res2.code == 0


def test_tinc_up_releases_stale_addresses(fresh, tmp_path, syslog):
    cfg = tinc_config(tmp_path, syslog)
    fresh.add_address("vtnet0", V4)  # left over from before a crash
    env = fresh.env()
    env.update(TINC_ENV)
    assert run_script("tinc-up", env=env, config=cfg).code == 0
    assert V4 not in addrs(fresh, "vtnet0")


def test_tinc_down_releases(bsd, tmp_path, syslog):
    cfg = tinc_config(tmp_path, syslog)
    bsd.add_address("vtnet0", V4)
    bsd.add_address("vtnet0", V6)
    env = bsd.env()
    env.update(TINC_ENV)
    res = run_script("tinc-down", env=env, config=cfg)
    assert res.code == 0, res.err
    assert addrs(bsd, "vtnet0") == {"203.0.113.11/24"}


def test_host_up_down_track_peers_and_quorum(bsd, tmp_path, syslog):
    cfg = tinc_config(tmp_path, syslog)
    env = bsd.env()
    env.update(TINC_ENV)
    assert run_script("tinc-up", env=env, config=cfg).code == 0
    bsd.set_carp_state("tap0", 1, "MASTER")
    # MASTER but alone in a 3-node cluster: no quorum, no address
    assert event(bsd, cfg, "1@tap0", "MASTER").code == 0
    assert V4 not in addrs(bsd, "vtnet0")
    up = dict(env, NODE="hB", REMOTEADDRESS="203.0.113.12", REMOTEPORT="655")
    assert run_script("tinc-host-up", env=up, config=cfg).code == 0
    peers = json.loads((tmp_path / "state" / "peers.json").read_text())
    assert peers["reachable"] == ["hB"]
    mode = stat.S_IMODE((tmp_path / "state" / "peers.json").stat().st_mode)
    assert mode == 0o600
    assert V4 in addrs(bsd, "vtnet0")  # quorum regained while MASTER: take
    assert run_script("tinc-host-down", env=up, config=cfg).code == 0
    assert V4 not in addrs(bsd, "vtnet0")  # quorum lost: release at once


@pytest.mark.parametrize("env_change", [
    {"NAME": ""}, {"NAME": "bad name"}, {"INTERFACE": ""}, {"INTERFACE": "-x"},
    {"NETNAME": "../etc"},
])
def test_tinc_bad_environment_exit_2(bsd, tmp_path, syslog, env_change):
    cfg = tinc_config(tmp_path, syslog)
    env = bsd.env()
    env.update(TINC_ENV)
    env.update(env_change)
    bsd.clear_calls()
    res = run_script("tinc-up", env=env, config=cfg)
    assert res.code == 2, res.err
    assert bsd.calls() == []


def test_host_up_without_node_exit_2(bsd, tmp_path, syslog):
    cfg = tinc_config(tmp_path, syslog)
    env = bsd.env()
    env.update(TINC_ENV)
    res = run_script("tinc-host-up", env=env, config=cfg)
    assert res.code == 2
    assert "NODE" in res.err


@pytest.mark.parametrize("release", ["13.2", "14.1", "15.0"])
def test_every_release_format(tmp_path, syslog, release):
    host = FakeBSD(tmp_path / f"r{release}", release=release)
    host.add_interface("vtnet0")
    host.add_address("vtnet0", "203.0.113.11/24")  # its own (primary) address comes first
    host.add_interface("tap0", kind="tap")
    host.add_address("tap0", "192.0.2.11/24")
    host.add_vhid("tap0", 1)
    host.add_address("tap0", "192.0.2.254/24", vhid=1)
    host.set_carp_state("tap0", 1, "MASTER")
    cfg = write_config(tmp_path / "c.toml",
                       BASE_CONFIG.format(state=tmp_path / "state", sock=syslog.path))
    assert event(host, cfg, "1@tap0", "MASTER").code == 0
    assert V4 in addrs(host, "vtnet0")
    host.set_carp_state("tap0", 1, "BACKUP")
    assert event(host, cfg, "1@tap0", "BACKUP").code == 0
    assert V4 not in addrs(host, "vtnet0")


def test_tinc_up_dry_run_hides_the_password(fresh, tmp_path, syslog):
    cfg = tinc_config(tmp_path, syslog)
    env = fresh.env()
    env.update(TINC_ENV)
    res = run_script("tinc-up", "--dry-run", "-v", env=env, config=cfg)
    assert res.code == 0, res.err
    carp_line = next(ln for ln in res.out.splitlines() if " vhid 1 " in ln)
    assert carp_line.startswith("would run: ifconfig tap0 inet 192.0.2.254/24 vhid 1 ")
    assert "pass ********" in carp_line
    assert "s3cret" not in res.out + res.err
    assert "s3cret" not in " ".join(syslog.texts())
    assert mutating(fresh) == []


def test_init_after_tap0_is_gone_releases_quietly(bsd, config, syslog):
    # tincd stopped: tap0 (and its vhid) vanished, devd reports INIT
    bsd.add_address("vtnet0", V4)
    bsd.remove_interface("tap0")
    res = event(bsd, config, "1@tap0", "INIT")
    assert res.code == 0, res.err
    assert V4 not in addrs(bsd, "vtnet0")
    msgs = syslog.messages()
    assert any("tap0 does not exist: vhid 1 counts as INIT" in m.message and m.severity == 6
               for m in msgs)
    assert not [m for m in msgs if m.severity <= 3]
