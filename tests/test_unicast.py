"""Unicast CARP (FreeBSD 14+): every vhid command names its peers; refused before 14.

14.x's ifconfig sends its multicast defaults with every SIOCSVH unless the command
names ``peer``/``peer6`` (sbin/ifconfig/carp.c: carp_ctor() calls setcarp_mcast()
and setcarp_mcast6(); setcarp_callback() copies them into the request), so
``ifconfig IF vhid N advskew S`` turned a unicast vhid back to multicast. The
emulator reproduces that for 14.x; 15.x models the later ifconfig that sends only
the peers a command names (FreeBSD's carp.sh: "remain in unicast when tweaking
settings").
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import BASE_CONFIG, Run, SyslogServer, mutating, run_script, write_config
from fakebsd.control import FakeBSD

from carphooks.backends import freebsd
from carphooks.setup import check

TINC_ENV = {"NETNAME": "carp", "NAME": "hA", "DEVICE": "/dev/tap0", "INTERFACE": "tap0"}
PEER = "192.0.2.12"


def cluster_config(tmp_path: Path, syslog: SyslogServer, *, peers: bool,
                   advskew: int = 0) -> Path:
    """Three hosts over tinc; hA's advskew and vhid 1's unicast peer as asked."""
    text = BASE_CONFIG.format(state=tmp_path / "state", sock=syslog.path).replace(
        'quorum = "none"', 'quorum = "majority"')
    if peers:  # hA sends to hB (its own 192.0.2.11 is left out)
        text = text.replace('password = "s3cret"',
                            f'password = "s3cret"\npeers = ["192.0.2.11", "{PEER}"]')
    text += f"""
[tinc]
netname = "carp"
nodes = ["hA", "hB", "hC"]

[hosts.hA]
vpn_address = "192.0.2.11/24"
advskew = {advskew}
[hosts.hB]
vpn_address = "{PEER}/24"
advskew = 100
[hosts.hC]
vpn_address = "192.0.2.13/24"
advskew = 200
"""
    return write_config(tmp_path / "cluster.toml", text)


def fresh_host(tmp_path: Path, release: str) -> FakeBSD:
    """tincd has just created tap0: no address, no vhid."""
    host = FakeBSD(tmp_path / f"bsd{release}", release=release)
    host.add_interface("vtnet0", mac="58:9c:fc:00:00:01")
    host.add_address("vtnet0", "203.0.113.11/24")
    host.add_interface("tap0", mac="58:9c:fc:aa:bb:cc", kind="tap", up=False)
    return host


def tinc_up(host: FakeBSD, config: Path, *args: str) -> Run:
    env = host.env()
    env.update(TINC_ENV)
    return run_script("tinc-up", *args, env=env, config=config)


def vhid_commands(host: FakeBSD) -> list[list[str]]:
    return [c[1:] for c in host.calls("ifconfig") if "vhid" in c]


# -- the 14.x reset, in the emulator --------------------------------------------------


def test_emulator_resets_the_peer_on_14_only(tmp_path: Path) -> None:
    """14.x: `vhid 1 advskew 2` sends the multicast defaults; 15.x keeps the peer."""
    for release, after in (("14.1", "224.0.0.18"), ("15.0", PEER)):
        host = fresh_host(tmp_path, release)
        host.set_up("tap0", True)
        host.ifconfig("tap0", "inet", "192.0.2.254/24", "vhid", "1", "peer", PEER, "alias")
        assert host.carp("tap0")[1]["peer"] == PEER
        host.ifconfig("tap0", "vhid", "1", "advskew", "2")
        assert host.carp("tap0")[1]["peer"] == after, release
        host.ifconfig("tap0", "vhid", "1", "advskew", "3", "peer", PEER)
        assert host.carp("tap0")[1]["peer"] == PEER


# -- tinc-up ---------------------------------------------------------------------------


def test_advskew_change_keeps_the_unicast_peer(tmp_path: Path, syslog: SyslogServer) -> None:
    host = fresh_host(tmp_path, "14.1")
    config = cluster_config(tmp_path, syslog, peers=True)
    res = tinc_up(host, config)
    assert res.code == 0, res.err
    assert host.carp("tap0")[1]["peer"] == PEER
    assert vhid_commands(host)[0][-4:] == ["peer", PEER, "mcast6", "alias"]
    # the host's advskew changes in the config: tinc-up updates the vhid in place
    config = cluster_config(tmp_path, syslog, peers=True, advskew=50)
    host.clear_calls()
    res = tinc_up(host, config)
    assert res.code == 0, res.err
    assert vhid_commands(host) == [["tap0", "vhid", "1", "advbase", "1", "advskew", "50",
                                    "peer", PEER, "mcast6"]]
    carp = host.carp("tap0")[1]
    assert (carp["advskew"], carp["peer"], carp["peer6"]) == (50, PEER, "ff02::12")


def test_multicast_is_named_too_from_14_on(tmp_path: Path, syslog: SyslogServer) -> None:
    """On 14+ create and update name `mcast mcast6`; 13.x has no such words."""
    for release, words in (("13.2", []), ("14.1", ["mcast", "mcast6"]),
                           ("15.0", ["mcast", "mcast6"])):
        host = fresh_host(tmp_path, release)
        res = tinc_up(host, cluster_config(tmp_path, syslog, peers=False))
        assert res.code == 0, (release, res.err)
        create = vhid_commands(host)[0]
        assert create[:3] == ["tap0", "inet", "192.0.2.254/24"] and create[-1] == "alias"
        assert [w for w in create if w.startswith("mcast")] == words, release
        host.clear_calls()
        res = tinc_up(host, cluster_config(tmp_path, syslog, peers=False, advskew=50))
        assert res.code == 0, (release, res.err)
        assert vhid_commands(host) == [["tap0", "vhid", "1", "advbase", "1", "advskew", "50",
                                        *words]], release
        assert host.carp("tap0")[1]["advskew"] == 50


def test_a_peer_reset_to_multicast_is_repaired(tmp_path: Path, syslog: SyslogServer) -> None:
    """The vhid exists with the right timers but sends to 224.0.0.18 (an earlier
    `vhid 1 advskew 0` on 14.x, or a hand-made change): tinc-up converges the peer."""
    host = fresh_host(tmp_path, "14.1")
    config = cluster_config(tmp_path, syslog, peers=True)
    assert tinc_up(host, config).code == 0
    host.ifconfig("tap0", "vhid", "1", "peer", "224.0.0.18")
    assert host.carp("tap0")[1]["peer"] == "224.0.0.18"
    host.clear_calls()
    res = tinc_up(host, config)
    assert res.code == 0, res.err
    assert host.carp("tap0")[1]["peer"] == PEER
    assert any("peer" in c for c in vhid_commands(host))
    host.clear_calls()
    assert tinc_up(host, config).code == 0
    assert mutating(host) == []  # converged: nothing more to do


def test_unicast_is_refused_before_14(tmp_path: Path, syslog: SyslogServer) -> None:
    host = fresh_host(tmp_path, "13.2")
    config = cluster_config(tmp_path, syslog, peers=True)
    host.clear_calls()
    res = tinc_up(host, config)
    assert res.code == 6, (res.out, res.err)
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.err
    assert "FreeBSD 14.0 or later" in lines[0] and "13.2-RELEASE" in lines[0]
    assert "group web" in lines[0]
    assert mutating(host) == []  # nothing changed: not even tap0's MAC or address
    assert host.addresses("tap0") == []
    assert any("FreeBSD 14.0 or later" in m.message and m.severity == 3
               for m in syslog.messages())


# -- check -----------------------------------------------------------------------------


def test_release_major() -> None:
    assert freebsd.release_major("14.1-RELEASE-p3") == 14
    assert freebsd.release_major("13.2-STABLE") == 13
    assert freebsd.release_major("15.0-CURRENT") == 15
    assert freebsd.release_major("") is None
    assert freebsd.release_major(None) is None
    assert freebsd.release_major("RELEASE") is None


def _doctor(config: Path, release: str | None) -> check.Doctor:
    doc = check.Doctor(config_path=config, host="hA",
                       osrelease=(lambda: release), sysctl={}.get)
    config_obj = doc.check_config()
    assert config_obj is not None
    doc.check_unicast_release(config_obj)
    return doc


def test_check_refuses_unicast_before_14(tmp_path: Path, syslog: SyslogServer) -> None:
    config = cluster_config(tmp_path, syslog, peers=True)
    lines = {c.name: c for c in _doctor(config, "13.2-RELEASE").checks}
    assert lines["unicast CARP"].status == check.FAIL
    assert "13.2-RELEASE" in lines["unicast CARP"].message
    assert "FreeBSD 14" in lines["unicast CARP"].fix
    assert {c.name: c.status for c in _doctor(config, "14.1-RELEASE").checks}[
        "unicast CARP"] == check.OK
    assert {c.name: c.status for c in _doctor(config, None).checks}["unicast CARP"] == \
        check.WARN
    multicast = cluster_config(tmp_path, syslog, peers=False)
    assert "unicast CARP" not in {c.name for c in _doctor(multicast, "13.2-RELEASE").checks}


def test_check_reads_the_release_through_the_backend(tmp_path: Path, syslog: SyslogServer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    host = fresh_host(tmp_path, "13.2")
    for name, value in host.env().items():
        monkeypatch.setenv(name, value)
    config = cluster_config(tmp_path, syslog, peers=True)
    doc = check.Doctor(config_path=config, host="hA")
    cfg = doc.check_config()
    assert cfg is not None
    doc.check_unicast_release(cfg)
    assert [c.status for c in doc.checks if c.name == "unicast CARP"] == [check.FAIL]
    assert ["sysctl", "-n", "kern.osrelease"] in host.calls("sysctl")
