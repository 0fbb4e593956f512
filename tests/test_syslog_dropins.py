"""The syslogd drop-in and newsyslog entry that ``carphooks install`` ships.

The readers below follow FreeBSD's: syslogd's readconfigfile() treats a line
starting with '#' as a comment unless the next character is one of ``!+-:``
(then it is a program, host or property block), and reads only ``*.conf`` files
not starting with '.' from an include directory; newsyslog's <include> globs
(``[!.]*.conf``, older releases ``*``) never match a name starting with '.'.
"""

from __future__ import annotations

import fnmatch
import stat
import sys
from pathlib import Path

import pytest
from setupkit import write_cluster

from carphooks import config as configmod
from carphooks.setup import check, install, render

BINDIR = Path(sys.executable).parent
SYSLOG_D = "usr/local/etc/syslog.d/carphooks.conf"
NEWSYSLOG_D = "usr/local/etc/newsyslog.conf.d/carphooks.conf"
LOGFILE = "/var/log/carphooks.log"


def syslogd_directives(text: str) -> list[list[str]]:
    """Non-comment lines as syslogd sees them, split on whitespace."""
    out = []
    for raw in text.splitlines():
        line = raw.lstrip()
        if not line or (line.startswith("#") and line[1:2] not in ("!", "+", "-", ":")):
            continue
        out.append(line.split())
    return out


def newsyslog_entries(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line and not line.startswith("#")]


def syslogd_reads(name: str) -> bool:
    """syslogd's configfiles(): not a dot file, ends in .conf."""
    return not name.startswith(".") and len(name) > 5 and name.endswith(".conf")


def newsyslog_includes(name: str) -> bool:
    """Either include glob of /etc/newsyslog.conf (glob(3) skips leading dots)."""
    if name.startswith("."):
        return False
    return fnmatch.fnmatch(name, "[!.]*.conf") or fnmatch.fnmatch(name, "*")


def rendered(tmp_path: Path, kind: str, topology: str = "tinc", **kw: object) -> str:
    cfg = configmod.load(write_cluster(tmp_path / "c.toml", topology, **kw))  # type: ignore[arg-type]
    tgt = render.target(cfg, host="hA", bindir=BINDIR)
    return render.render(tgt, kind).text


@pytest.mark.parametrize("topology", ["tinc", "unicast"])
def test_syslog_dropin_sends_every_line_of_the_tag_to_the_log(tmp_path: Path,
                                                             topology: str) -> None:
    text = rendered(tmp_path, "syslog.conf", topology)
    assert syslogd_directives(text) == [["!carphooks"], ["*.*", LOGFILE], ["!*"]]
    assert render.has_marker(text)


def test_syslog_dropin_follows_log_tag(tmp_path: Path) -> None:
    text = rendered(tmp_path, "syslog.conf",
                    replace=('log_tag = "carphooks"', 'log_tag = "ch-web_1"'))
    assert syslogd_directives(text)[0] == ["!ch-web_1"]


def test_newsyslog_entry_creates_and_rotates_the_log(tmp_path: Path) -> None:
    [entry] = newsyslog_entries(rendered(tmp_path, "newsyslog.conf"))
    path, mode, count, size, when, flags = entry  # no pid file: SIGHUP goes to syslogd
    assert path == LOGFILE
    assert int(mode, 8) == 0o644 and int(count) >= 1 and int(size) > 0 and when == "*"
    assert "C" in flags and "J" in flags


def test_install_writes_both_where_freebsd_reads_them(tmp_path: Path) -> None:
    cfg = write_cluster(tmp_path / "c.toml", "tinc")
    root = tmp_path / "root"
    tgt = render.target(configmod.load(cfg), host="hA", bindir=BINDIR)
    report = install.install(render.render_install_set(tgt), root)
    for rel in (SYSLOG_D, NEWSYSLOG_D):
        path = root / rel
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert syslogd_reads(path.name) and newsyslog_includes(path.name)
    steps = install.next_steps(report, "carp", "tinc", ["tap0"])
    create = next(i for i, s in enumerate(steps) if s.startswith(f"newsyslog -CN {LOGFILE}"))
    reload = next(i for i, s in enumerate(steps) if s.startswith("service syslogd reload"))
    assert create < reload
    again = install.install(render.render_install_set(tgt), root)
    assert not any("syslog" in s for s in install.next_steps(again, "carp", "tinc", ["tap0"]))


def test_backups_are_invisible_to_syslogd_and_newsyslog(tmp_path: Path) -> None:
    cfg = write_cluster(tmp_path / "c.toml", "tinc")
    root = tmp_path / "root"
    tgt = render.target(configmod.load(cfg), host="hA", bindir=BINDIR)
    install.install(render.render_install_set(tgt), root)
    for rel in (SYSLOG_D, NEWSYSLOG_D):
        path = root / rel
        path.write_text(path.read_text() + "# local edit\n")
    report = install.install(render.render_install_set(tgt), root)
    backups = [p.backup for p in report.changed]
    assert len(backups) == 2
    for backup in backups:
        assert backup is not None and backup.exists()
        assert not syslogd_reads(backup.name) and not newsyslog_includes(backup.name)


def test_check_wants_the_log_file_that_syslogd_cannot_create(tmp_path: Path) -> None:
    cfg = write_cluster(tmp_path / "c.toml", "tinc")
    root = tmp_path / "root"
    tgt = render.target(configmod.load(cfg), host="hA", bindir=BINDIR)

    def lines() -> dict[str, check.Check]:
        doc = check.run(cfg, root=root, host="hA", bindir=str(BINDIR),
                        interfaces=lambda: ("vtnet0", "tap0"), sysctl=lambda _name: 1)
        return {c.name: c for c in doc.checks
                if c.name in ("syslog.conf", "newsyslog.conf", "syslog file")}

    found = lines()
    assert found["syslog.conf"].status == check.WARN
    assert "is missing" in found["syslog.conf"].message
    assert "syslog file" not in found
    install.install(render.render_install_set(tgt), root)
    found = lines()
    assert found["syslog.conf"].status == check.OK
    assert found["newsyslog.conf"].status == check.OK
    assert found["syslog file"].status == check.WARN
    assert f"newsyslog -CN {LOGFILE}" in found["syslog file"].fix
    (root / "var/log").mkdir(parents=True)
    (root / "var/log/carphooks.log").touch()
    assert "syslog file" not in lines()
