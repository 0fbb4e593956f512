"""Syslog: what reaches a real unix datagram socket, and what happens when it is gone."""

from __future__ import annotations

import os
import socket

from conftest import BASE_CONFIG, SyslogServer, addrs, run_script, write_config

from carphooks.log import Log

DAEMON, ERR, WARNING, NOTICE, INFO = 3, 3, 4, 5, 6


def test_levels_tag_facility_and_pid(syslog):
    log = Log("mytag", str(syslog.path), mirror=False)
    log.notice("Assigned 203.0.113.10/24 on vtnet0.")
    log.error("boom")
    log.info("fyi")
    log.debug("hidden without -v")
    msgs = syslog.messages()
    assert [(m.facility, m.severity, m.message) for m in msgs] == [
        (DAEMON, NOTICE, "Assigned 203.0.113.10/24 on vtnet0."),
        (DAEMON, ERR, "boom"),
        (DAEMON, INFO, "fyi"),
    ]
    assert {m.tag for m in msgs} == {"mytag"}
    assert {m.pid for m in msgs} == {os.getpid()}


def test_control_characters_cannot_forge_lines(syslog):
    Log("t", str(syslog.path), mirror=False).notice("a\nb\x00c")
    assert syslog.texts() == ["a b c"]


def test_socket_missing_still_works_and_warns(tmp_path, capsys):
    log = Log("t", str(tmp_path / "nope.sock"), mirror=False)
    log.notice("first")
    log.notice("second")
    err = capsys.readouterr().err
    assert err.count("syslog socket") == 1
    assert "first" in err and "second" in err


def test_full_socket_does_not_block(tmp_path, capsys):
    path = tmp_path / "full.sock"
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(path))  # never read: the queue fills up
    try:
        log = Log("t", str(path), mirror=False)
        for i in range(200):
            log.notice(f"message {i}")
    finally:
        sink.close()
    assert "unavailable" in capsys.readouterr().err


def test_hook_logs_with_config_tag(bsd, config, syslog):
    bsd.set_carp_state("tap0", 1, "MASTER")
    assert run_script("carp-event", "1@tap0", "MASTER", env=bsd.env(), config=config).code == 0
    changes = [m for m in syslog.messages() if m.severity == NOTICE]
    assert changes and all(m.tag == "carphooks-test" for m in changes)
    assert "203.0.113.10/24" in addrs(bsd, "vtnet0")


def test_hook_works_without_syslog(bsd, tmp_path):
    cfg = write_config(tmp_path / "c.toml", BASE_CONFIG.format(
        state=tmp_path / "state", sock=tmp_path / "absent.sock"))
    bsd.set_carp_state("tap0", 1, "MASTER")
    res = run_script("carp-event", "1@tap0", "MASTER", env=bsd.env(), config=cfg)
    assert res.code == 0
    assert "syslog socket" in res.err
    assert "Assigned 203.0.113.10/24 on vtnet0." in res.err
    assert "203.0.113.10/24" in addrs(bsd, "vtnet0")


def test_verbose_mirrors_to_stderr(bsd, config, syslog: SyslogServer):
    bsd.set_carp_state("tap0", 1, "MASTER")
    res = run_script("carp-event", "-v", "1@tap0", "MASTER", env=bsd.env(), config=config)
    assert "Assigned 203.0.113.10/24 on vtnet0." in res.err
    assert "Assigned 203.0.113.10/24 on vtnet0." in syslog.texts()
