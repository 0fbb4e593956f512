"""The syslog facility: a config key (default daemon) that ends up in every datagram's PRI."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import BASE_CONFIG, SyslogServer, addrs, run_script, write_config

from carphooks import config as configmod
from carphooks.errors import ConfigError
from carphooks.log import Log

DAEMON, LOCAL3 = 3, 19
ERR, NOTICE = 3, 5


def hook_config(tmp_path: Path, sock: Path, extra: str = "") -> Path:
    """BASE_CONFIG with ``extra`` top-level lines."""
    text = extra + BASE_CONFIG.format(state=tmp_path / "state", sock=sock)
    return write_config(tmp_path / "carphooks.toml", text)


def test_hook_logs_at_daemon_by_default(bsd, syslog: SyslogServer, tmp_path: Path) -> None:
    cfg = hook_config(tmp_path, syslog.path)
    bsd.set_carp_state("tap0", 1, "MASTER")
    assert run_script("carp-event", "1@tap0", "MASTER", env=bsd.env(), config=cfg).code == 0
    msgs = syslog.messages()
    changes = [m for m in msgs if m.severity == NOTICE]
    assert changes and {m.facility for m in msgs} == {DAEMON}
    assert "Assigned 203.0.113.10/24 on vtnet0." in [m.message for m in changes]


def test_hook_logs_at_the_configured_facility(bsd, syslog: SyslogServer,
                                              tmp_path: Path) -> None:
    cfg = hook_config(tmp_path, syslog.path, 'syslog_facility = "local3"\n')
    bsd.set_carp_state("tap0", 1, "MASTER")
    assert run_script("carp-event", "1@tap0", "MASTER", env=bsd.env(), config=cfg).code == 0
    msgs = syslog.messages()
    assert any(m.severity == NOTICE for m in msgs)
    assert {m.facility for m in msgs} == {LOCAL3}
    # failures go out at err on the same facility
    res = run_script("carp-event", "1@tap0", "FROBNICATE", env=bsd.env(), config=cfg)
    assert res.code == 2
    errors = [m for m in syslog.messages() if m.severity == ERR]
    assert errors and {m.facility for m in errors} == {LOCAL3}


def test_bad_facility_is_one_line_exit_6_and_changes_nothing(bsd, syslog: SyslogServer,
                                                            tmp_path: Path) -> None:
    cfg = hook_config(tmp_path, syslog.path, 'syslog_facility = "local8"\n')
    bsd.set_carp_state("tap0", 1, "MASTER")
    res = run_script("carp-event", "1@tap0", "MASTER", env=bsd.env(), config=cfg)
    assert res.code == 6
    # (with no syslogd here, the syslog copy of the line is mirrored to stderr too)
    lines = [line for line in res.err.splitlines() if line.startswith("carp-event: ")]
    assert len(lines) == 1, res.err
    assert "syslog_facility: 'local8' is not one of " in lines[0]
    assert "daemon" in lines[0] and "local7" in lines[0]
    assert "Traceback" not in res.err
    assert "203.0.113.10/24" not in addrs(bsd, "vtnet0")


@pytest.mark.parametrize("name", ["daemon", "user", "local0", "local7", "auth", "security"])
def test_every_syslog_conf_facility_name_is_accepted(tmp_path: Path, name: str) -> None:
    path = write_config(tmp_path / "c.toml", f'syslog_facility = "{name}"\n')
    assert configmod.load(path).syslog_facility == name


@pytest.mark.parametrize("value", ["kern", "mark", "DAEMON", "local8", "", 3])
def test_other_facilities_are_refused(tmp_path: Path, value: object) -> None:
    text = f"syslog_facility = {value!r}\n".replace("'", '"')
    path = write_config(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError,
                       match=r"syslog_facility: (.* is not one of .*local7|expected a string)"):
        configmod.load(path)


def test_default_facility_in_the_config(tmp_path: Path) -> None:
    assert configmod.load(write_config(tmp_path / "c.toml", "")).syslog_facility == "daemon"


@pytest.mark.parametrize("tag", ["carp.hooks", "carp hooks", "carp/hooks", "x" * 33])
def test_tags_syslogd_cannot_match_are_refused(tmp_path: Path, tag: str) -> None:
    path = write_config(tmp_path / "c.toml", f'log_tag = "{tag}"\n')
    with pytest.raises(ConfigError, match=r"log_tag: .*letters, digits, _ or -"):
        configmod.load(path)


def test_facility_codes_match_freebsd_syslog_h(syslog: SyslogServer) -> None:
    # <sys/syslog.h>: LOG_USER (1<<3), LOG_DAEMON (3<<3), LOG_LOCAL0 (16<<3) ... (23<<3)
    for name in ("user", "daemon", *(f"local{i}" for i in range(8))):
        Log("t", str(syslog.path), facility=name, mirror=False).error(name)
    Log("t", str(syslog.path), mirror=False).notice("default")
    assert [(m.facility, m.severity) for m in syslog.messages()] == [
        (1, ERR), (DAEMON, ERR), *((code, ERR) for code in range(16, 24)), (DAEMON, NOTICE)]
    with pytest.raises(ValueError):
        Log("t", str(syslog.path), facility="kern")
