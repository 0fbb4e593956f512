"""Quorum guard, demotion bookkeeping, maintenance mode, monitoring, hostile state files."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from conftest import BASE_CONFIG, FakeBSD, SyslogServer, addrs, run_script, write_config

V4 = "203.0.113.10/24"
TINC = {"NETNAME": "carp", "NAME": "hA", "DEVICE": "/dev/tap0", "INTERFACE": "tap0"}


def cluster(tmp_path: Path, syslog: SyslogServer) -> Path:
    text = BASE_CONFIG.format(state=tmp_path / "state", sock=syslog.path).replace(
        'quorum = "none"', 'quorum = "majority"') + """
[tinc]
nodes = ["hA", "hB", "hC"]
"""
    return write_config(tmp_path / "cluster.toml", text)


def tinc(bsd: FakeBSD, cfg: Path, script: str, node: str | None = None):
    env = bsd.env()
    env.update(TINC)
    if node:
        env.update(NODE=node, REMOTEADDRESS="203.0.113.99", REMOTEPORT="655")
    return run_script(script, env=env, config=cfg)


def carphooks(bsd: FakeBSD, cfg: Path, *args: str):
    return run_script("carphooks", "--host", "hA", *args, env=bsd.env(), config=cfg)


def test_quorum_loss_releases_then_demotes_and_regain_undoes_exactly(bsd, tmp_path, syslog):
    cfg = cluster(tmp_path, syslog)
    assert tinc(bsd, cfg, "tinc-up").code == 0
    bsd.set_sysctl("net.inet.carp.demotion", 10)  # someone else's demotion: never touched
    assert tinc(bsd, cfg, "tinc-host-up", "hB").code == 0
    bsd.set_carp_state("tap0", 1, "MASTER")
    assert run_script("carp-event", "1@tap0", "MASTER", env=bsd.env(), config=cfg).code == 0
    assert V4 in addrs(bsd, "vtnet0")
    bsd.clear_calls()
    assert tinc(bsd, cfg, "tinc-host-down", "hB").code == 0
    assert V4 not in addrs(bsd, "vtnet0")
    assert bsd.sysctl("net.inet.carp.demotion") == 250
    calls = [c for c in bsd.calls() if len(c) > 2 or "=" in c[-1]]
    first_remove = next(i for i, c in enumerate(calls) if c[-1] == "-alias")
    first_demote = next(i for i, c in enumerate(calls)
                        if c[0] == "sysctl" and c[-1].startswith("net.inet.carp.demotion="))
    assert first_remove < first_demote  # release at once, then demote
    # a second host-down of an already-down node changes nothing
    assert tinc(bsd, cfg, "tinc-host-down", "hC").code == 0
    assert bsd.sysctl("net.inet.carp.demotion") == 250
    assert tinc(bsd, cfg, "tinc-host-up", "hC").code == 0
    assert bsd.sysctl("net.inet.carp.demotion") == 10
    assert V4 in addrs(bsd, "vtnet0")  # still MASTER, quorum back: take again


def test_witness_counts_for_quorum(bsd, tmp_path, syslog):
    text = BASE_CONFIG.format(state=tmp_path / "state", sock=syslog.path).replace(
        'quorum = "none"', 'quorum = "majority"') + '[tinc]\nnodes = ["hA", "hB"]\n' \
        'witnesses = ["w"]\n'
    cfg = write_config(tmp_path / "w.toml", text)
    assert tinc(bsd, cfg, "tinc-up").code == 0
    bsd.set_carp_state("tap0", 1, "MASTER")
    assert tinc(bsd, cfg, "tinc-host-up", "w").code == 0
    assert V4 in addrs(bsd, "vtnet0")


def test_unknown_node_does_not_vote(bsd, tmp_path, syslog):
    cfg = cluster(tmp_path, syslog)
    assert tinc(bsd, cfg, "tinc-up").code == 0
    bsd.set_carp_state("tap0", 1, "MASTER")
    assert tinc(bsd, cfg, "tinc-host-up", "intruder").code == 0
    assert V4 not in addrs(bsd, "vtnet0")


@pytest.mark.parametrize("content", ["{not json", "[]", '{"reachable": "hB"}',
                                     '{"reachable": ["hB"], "tinc_up": 1, "updated": 0}'])
def test_corrupt_peers_file_releases(bsd, tmp_path, syslog, content):
    cfg = cluster(tmp_path, syslog)
    assert tinc(bsd, cfg, "tinc-up").code == 0
    assert tinc(bsd, cfg, "tinc-host-up", "hB").code == 0
    bsd.set_carp_state("tap0", 1, "MASTER")
    assert run_script("carp-event", "1@tap0", "MASTER", env=bsd.env(), config=cfg).code == 0
    assert V4 in addrs(bsd, "vtnet0")
    (tmp_path / "state" / "peers.json").write_text(content)
    res = run_script("carp-event", "1@tap0", "MASTER", env=bsd.env(), config=cfg)
    assert "Traceback" not in res.err
    assert V4 not in addrs(bsd, "vtnet0")  # the safe side: release, never take
    assert any("peers.json" in m.message and m.severity == 3 for m in syslog.messages())


def test_world_writable_state_file_is_not_trusted(bsd, tmp_path, syslog):
    cfg = cluster(tmp_path, syslog)
    assert tinc(bsd, cfg, "tinc-up").code == 0
    assert tinc(bsd, cfg, "tinc-host-up", "hB").code == 0
    os.chmod(tmp_path / "state" / "peers.json", 0o666)
    bsd.set_carp_state("tap0", 1, "MASTER")
    run_script("carp-event", "1@tap0", "MASTER", env=bsd.env(), config=cfg)
    assert V4 not in addrs(bsd, "vtnet0")


def test_state_dir_is_private(bsd, config, tmp_path):
    run_script("carp-event", "1@tap0", "BACKUP", env=bsd.env(), config=config)
    assert (os.stat(tmp_path / "state").st_mode & 0o777) == 0o700


def test_maintenance_on_waits_for_peer_then_off_removes_only_its_demotion(bsd, config):
    bsd.set_sysctl("net.inet.carp.preempt", 1)
    bsd.set_sysctl("net.inet.carp.demotion", 5)
    bsd.set_carp_state("tap0", 1, "MASTER")
    assert run_script("carp-event", "1@tap0", "MASTER", env=bsd.env(), config=config).code == 0

    def peer_takes_over() -> None:
        time.sleep(0.8)
        bsd.set_carp_state("tap0", 1, "BACKUP")

    thread = threading.Thread(target=peer_takes_over)
    thread.start()
    res = carphooks(bsd, config, "maintenance", "on", "--wait", "10")
    thread.join()
    assert res.code == 0, res.err
    assert bsd.sysctl("net.inet.carp.demotion") == 245
    assert V4 not in addrs(bsd, "vtnet0")
    assert json.loads((Path(config).parent / "state" / "maintenance.json").read_text())["on"]
    res = carphooks(bsd, config, "maintenance", "on", "--wait", "1")  # again: no double demotion
    assert bsd.sysctl("net.inet.carp.demotion") == 245
    res = carphooks(bsd, config, "maintenance", "off")
    assert res.code == 0, res.err
    assert bsd.sysctl("net.inet.carp.demotion") == 5
    res = carphooks(bsd, config, "maintenance", "off")
    assert bsd.sysctl("net.inet.carp.demotion") == 5


def test_maintenance_without_preempt_warns_and_keeps_serving(bsd, config):
    bsd.set_carp_state("tap0", 1, "MASTER")
    run_script("carp-event", "1@tap0", "MASTER", env=bsd.env(), config=config)
    res = carphooks(bsd, config, "maintenance", "on", "--wait", "0.5")
    assert res.code == 1
    assert "no peer took over" in res.err and "preempt" in res.err
    assert V4 in addrs(bsd, "vtnet0")  # never leave the address unheld


def test_maintenance_flag_survives_reboot(bsd, config, tmp_path, syslog):
    bsd.set_sysctl("net.inet.carp.preempt", 1)
    carphooks(bsd, config, "maintenance", "on", "--wait", "0")
    assert bsd.sysctl("net.inet.carp.demotion") == 240
    bsd.set_sysctl("net.inet.carp.demotion", 0)  # reboot: the kernel counter starts at 0
    env = bsd.env()
    env.update(TINC)
    assert run_script("tinc-up", env=env, config=config).code == 0
    assert bsd.sysctl("net.inet.carp.demotion") == 240
    assert carphooks(bsd, config, "maintenance", "off").code == 0
    assert bsd.sysctl("net.inet.carp.demotion") == 0


def test_maintenance_off_after_reboot_never_goes_negative(bsd, config):
    bsd.set_sysctl("net.inet.carp.preempt", 1)
    carphooks(bsd, config, "maintenance", "on", "--wait", "0")
    bsd.set_sysctl("net.inet.carp.demotion", 0)
    assert carphooks(bsd, config, "maintenance", "off").code == 0
    assert bsd.sysctl("net.inet.carp.demotion") == 0


def test_nagios(bsd, config):
    res = carphooks(bsd, config, "status", "--nagios")
    assert (res.code, res.out.split(" - ")[0]) == (0, "CARPHOOKS OK")
    bsd.set_carp_state("tap0", 1, "MASTER")  # MASTER without the address: drift
    res = carphooks(bsd, config, "status", "--nagios")
    assert res.code == 2 and res.out.startswith("CARPHOOKS CRITICAL")
    assert len(res.out.strip().splitlines()) == 1
    run_script("carp-event", "1@tap0", "MASTER", env=bsd.env(), config=config)
    bsd.set_sysctl("net.inet.carp.preempt", 1)
    carphooks(bsd, config, "maintenance", "on", "--wait", "0")
    res = carphooks(bsd, config, "status", "--nagios")
    assert res.code == 1 and "maintenance" in res.out
    os.chmod(config, 0o666)
    res = carphooks(bsd, config, "status", "--nagios")
    assert res.code == 3 and res.out.startswith("CARPHOOKS UNKNOWN")


def test_status_json_has_monitoring_fields(bsd, config):
    bsd.set_carp_state("tap0", 1, "MASTER")
    run_script("carp-event", "1@tap0", "MASTER", env=bsd.env(), config=config)
    report = json.loads(carphooks(bsd, config, "status", "--json").out)
    assert set(report) >= {"quorum", "maintenance", "last_event", "groups", "demotion"}
    assert report["last_event"]["detail"] == "1@tap0 MASTER"
    assert report["last_event"]["age"] >= 0
