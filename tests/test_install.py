"""``carphooks install`` into a --root tree, and ``carphooks check`` on the result."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from setupkit import write_cluster

from carphooks import config as configmod
from carphooks.cli import admin as cli
from carphooks.setup import check, install, render

try:
    from fakebsd import control as fakebsd_control
except ImportError:
    fakebsd_control = None

BINDIR = Path(sys.executable).parent  # where the console scripts of this venv are
TINC_FILES = {
    "usr/local/etc/devd/carphooks.conf": 0o644,
    "usr/local/etc/tinc/carp/tinc-up": 0o755,
    "usr/local/etc/tinc/carp/tinc-down": 0o755,
    "usr/local/etc/tinc/carp/host-up": 0o755,
    "usr/local/etc/tinc/carp/host-down": 0o755,
    "usr/local/etc/tinc/carp/tinc.conf": 0o644,
    "etc/sysctl.conf.local": 0o644,
    "usr/local/etc/cron.d/carphooks": 0o644,
    "usr/local/etc/rc.d/carphooks": 0o755,
    "usr/local/etc/syslog.d/carphooks.conf": 0o644,
    "usr/local/etc/newsyslog.conf.d/carphooks.conf": 0o644,
}
UNICAST_FILES = {
    "usr/local/etc/devd/carphooks.conf": 0o644,
    "etc/rc.conf.d/netif": 0o600,
    "etc/sysctl.conf.local": 0o644,
    "usr/local/etc/cron.d/carphooks": 0o644,
    "usr/local/etc/rc.d/carphooks": 0o755,
    "usr/local/etc/syslog.d/carphooks.conf": 0o644,
    "usr/local/etc/newsyslog.conf.d/carphooks.conf": 0o644,
}
GOOD_SYSCTL = {"net.inet.carp.preempt": 1, "net.link.ether.inet.garp_rexmit_count": 4}


def files_in(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
            for p in sorted(root.rglob("*")) if p.is_file()}


def do_install(cfg: Path, root: Path, host: str = "hA", force: bool = False,
               dry_run: bool = False) -> install.Report:
    tgt = render.target(configmod.load(cfg), host=host, bindir=BINDIR)
    return install.install(render.render_install_set(tgt), root, force=force, dry_run=dry_run)


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return write_cluster(tmp_path / "carphooks.toml", "tinc")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


# -- install --------------------------------------------------------------------------------

def test_install_twice_is_idempotent(cfg: Path, root: Path) -> None:
    first = do_install(cfg, root)
    assert {p.action for p in first.planned} == {"create"}
    assert files_in(root) == TINC_FILES
    before = {p: (root / p).read_bytes() for p in TINC_FILES}
    mtimes = {p: (root / p).stat().st_mtime_ns for p in TINC_FILES}
    second = do_install(cfg, root)
    assert {p.action for p in second.planned} == {"unchanged"}
    assert not second.changed
    assert files_in(root) == TINC_FILES  # no backups, no temporary files
    assert {p: (root / p).read_bytes() for p in TINC_FILES} == before
    assert {p: (root / p).stat().st_mtime_ns for p in TINC_FILES} == mtimes


def test_unicast_install_modes(tmp_path: Path, root: Path) -> None:
    cfg = write_cluster(tmp_path / "u.toml", "unicast")
    do_install(cfg, root)
    assert files_in(root) == UNICAST_FILES
    assert "pass s3cret" in (root / "etc/rc.conf.d/netif").read_text()


def test_update_keeps_backups_never_overwritten(cfg: Path, root: Path) -> None:
    do_install(cfg, root)
    script = root / "usr/local/etc/tinc/carp/tinc-up"
    script.write_text(script.read_text() + "# local edit 1\n")
    report = do_install(cfg, root)
    assert [p.action for p in report.changed] == ["update"]
    backup = script.with_name("tinc-up.carphooks-bak")
    assert report.changed[0].backup == backup
    assert backup.read_text().endswith("# local edit 1\n")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o700
    assert script.read_text() == render.render(
        render.target(configmod.load(cfg), host="hA", bindir=BINDIR), "tinc-up").text
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    script.write_text(script.read_text() + "# local edit 2\n")
    report = do_install(cfg, root)
    second = report.changed[0].backup
    assert second is not None and second.name.startswith("tinc-up.carphooks-bak.")
    assert second.read_text().endswith("# local edit 2\n")
    assert backup.read_text().endswith("# local edit 1\n")  # first backup intact


def test_cron_backup_is_hidden_from_cron(cfg: Path, root: Path) -> None:
    do_install(cfg, root)
    cron = root / "usr/local/etc/cron.d/carphooks"
    cron.write_text(cron.read_text() + "# edit\n")
    report = do_install(cfg, root)
    assert report.changed[0].backup == cron.with_name(".carphooks.carphooks-bak")
    assert sorted(p.name for p in cron.parent.iterdir()) == [".carphooks.carphooks-bak",
                                                             "carphooks"]


def test_mode_drift_is_repaired_without_backup(cfg: Path, root: Path) -> None:
    do_install(cfg, root)
    script = root / "usr/local/etc/tinc/carp/host-up"
    script.chmod(0o644)
    report = do_install(cfg, root)
    assert [(p.action, p.path) for p in report.changed] == [("chmod", script)]
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    assert not list(script.parent.glob("*carphooks-bak*"))


def test_refuses_foreign_files_and_writes_nothing(cfg: Path, root: Path) -> None:
    conf = root / "usr/local/etc/tinc/carp/tinc.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("Name = hA\nMode = router\n")
    with pytest.raises(install.InstallRefused, match="not written by carphooks"):
        do_install(cfg, root)
    assert files_in(root) == {"usr/local/etc/tinc/carp/tinc.conf": 0o644}
    assert conf.read_text() == "Name = hA\nMode = router\n"
    report = do_install(cfg, root, force=True)
    item = next(p for p in report.planned if p.path == conf)
    assert item.action == "update" and item.foreign
    assert conf.with_name("tinc.conf.carphooks-bak").read_text() == "Name = hA\nMode = router\n"
    assert "Mode = switch" in conf.read_text()


def test_refuses_symlinks(cfg: Path, root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("# carphooks-managed\n")
    link = root / "etc/sysctl.conf.local"
    link.parent.mkdir(parents=True)
    link.symlink_to(elsewhere)
    with pytest.raises(install.InstallRefused, match="not a regular file"):
        do_install(cfg, root, force=True)


def test_dry_run_writes_nothing_and_redacts(tmp_path: Path, root: Path) -> None:
    cfg = write_cluster(tmp_path / "u.toml", "unicast")
    report = do_install(cfg, root, dry_run=True)
    assert files_in(root) == {}
    lines = install.describe(report)
    assert any(line.startswith("would create ") and "rc.conf.d/netif (mode 0600" in line
               for line in lines)
    shown = "\n".join(lines)
    assert "+ifconfig_vtnet1_alias0=" in shown
    assert "s3cret" not in shown and "pass ********" in shown


def test_cli_install(cfg: Path, root: Path) -> None:
    runner = CliRunner()
    args = ["-c", str(cfg), "install", "--root", str(root), "--host", "hA",
            "--bindir", str(BINDIR)]
    result = runner.invoke(cli.cli, [*args, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would create" in result.output and files_in(root) == {}
    result = runner.invoke(cli.cli, args)
    assert result.exit_code == 0, result.output
    assert "service devd restart" in result.output
    assert "carphooks check" in result.output
    assert files_in(root) == TINC_FILES
    result = runner.invoke(cli.cli, args)
    assert result.exit_code == 0 and "nothing to do" in result.output
    (root / "usr/local/etc/devd/carphooks.conf").write_text("notify 1 { action \"x\"; };\n")
    result = runner.invoke(cli.cli, args)
    assert result.exit_code == 1
    assert "refusing to replace" in result.output + (result.stderr or "")
    result = runner.invoke(cli.cli, [*args, "--force"])
    assert result.exit_code == 0, result.output
    assert "carphooks.conf.carphooks-bak" in result.output


# -- check ---------------------------------------------------------------------------------

def invoke(args: list[str]) -> tuple[int, str, str]:
    """Run the click group like the console script does: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(cli.cli, args, standalone_mode=False)
    code = result.exit_code
    if code == 0 and isinstance(result.return_value, int):
        code = result.return_value
    return code, result.stdout, result.stderr


def doctor(cfg: Path, root: Path, *, sysctl: dict[str, int] | None = None,
           interfaces: tuple[str, ...] = ("lo0", "vtnet0", "tap0", "vtnet1", "vtnet1.100"),
           host: str = "hA", bindir: Path = BINDIR) -> check.Doctor:
    values = GOOD_SYSCTL if sysctl is None else sysctl
    return check.run(cfg, root=root, host=host, bindir=str(bindir),
                     interfaces=lambda: interfaces, sysctl=values.get)


def statuses(doc: check.Doctor) -> dict[str, str]:
    result: dict[str, str] = {}
    for c in doc.checks:
        # several lines may share a name; the worst one counts
        order = {check.OK: 0, check.WARN: 1, check.FAIL: 2}
        if order[c.status] >= order[result.get(c.name, check.OK)]:
            result[c.name] = c.status
    return result


def fails(doc: check.Doctor) -> set[str]:
    return {c.name for c in doc.checks if c.status == check.FAIL}


def test_check_all_ok_after_install(cfg: Path, root: Path) -> None:
    do_install(cfg, root)
    (root / "var/log").mkdir(parents=True)
    (root / "var/log/carphooks.log").touch()  # what "newsyslog -CN" does
    doc = doctor(cfg, root)
    assert not doc.failed, [c.line() for c in doc.checks]
    assert set(statuses(doc).values()) == {check.OK}, [c.line() for c in doc.checks]
    names = [c.name for c in doc.checks]
    for name in ("config", "config private", "quorum", "host", "binaries", "devd",
                 "devd shadowing", "tinc-up", "tinc-down", "host-up", "host-down", "tinc.conf",
                 "sysctl.conf", "cron", "interfaces", "net.inet.carp.preempt"):
        assert name in names
    assert all(c.line().startswith("OK   ") for c in doc.checks)


def test_check_unicast_ok_after_install(tmp_path: Path, root: Path) -> None:
    cfg = write_cluster(tmp_path / "u.toml", "unicast",
                       replace=('peers = ["10.0.0.11", "10.0.0.12", "10.0.0.13"]',
                                'peers = ["10.0.0.11", "10.0.0.12"]'))
    do_install(cfg, root)
    doc = doctor(cfg, root)
    assert fails(doc) == set(), [c.line() for c in doc.checks]


def test_check_missing_devd_rule(cfg: Path, root: Path) -> None:
    do_install(cfg, root)
    (root / "usr/local/etc/devd/carphooks.conf").unlink()
    doc = doctor(cfg, root)
    assert fails(doc) == {"devd", "devd shadowing"}
    line = next(c.line() for c in doc.checks if c.name == "devd")
    assert "is missing" in line and "carphooks install, then service devd restart" in line


def test_check_changed_devd_rule(cfg: Path, root: Path) -> None:
    do_install(cfg, root)
    rule = root / "usr/local/etc/devd/carphooks.conf"
    rule.write_text(rule.read_text().replace("|INIT", ""))
    doc = doctor(cfg, root)
    assert fails(doc) == {"devd", "devd shadowing"}
    assert any("no devd rule matches" in c.message and "type=INIT" in c.message
               for c in doc.checks)


def test_check_shadowing_rule(cfg: Path, root: Path) -> None:
    do_install(cfg, root)
    other = root / "etc/devd/mine.conf"
    other.parent.mkdir(parents=True)
    other.write_text('notify 200 {\n\tmatch "system" "CARP";\n\tmatch "type" "BACKUP";\n'
                     '\taction "/root/carp.sh $subsystem $type";\n};\n')
    doc = doctor(cfg, root)
    assert fails(doc) == {"devd shadowing"}
    line = next(c.line() for c in doc.checks if c.name == "devd shadowing")
    assert "/etc/devd/mine.conf:1 (notify 200)" in line and "type=BACKUP" in line
    assert "lower its priority below 200" in line
    other.write_text(other.read_text().replace("notify 200", "notify 150"))
    assert fails(doctor(cfg, root)) == set()


def test_check_devd_syntax_error(cfg: Path, root: Path) -> None:
    do_install(cfg, root)
    bad = root / "usr/local/etc/devd/broken.conf"
    bad.write_text("notify 5 { match \"system\" \"CARP\" };\n")
    assert "devd rules" in fails(doctor(cfg, root))


def test_check_interface_without_devd_match(tmp_path: Path, root: Path) -> None:
    cfg = write_cluster(tmp_path / "dash.toml", "tinc",
                       replace=('carp_interface = "tap0"', 'carp_interface = "tap-0"'))
    do_install(cfg, root)
    doc = doctor(cfg, root, interfaces=("vtnet0", "tap-0"))
    assert "devd shadowing" in fails(doc)


def test_check_non_executable_script(cfg: Path, root: Path) -> None:
    do_install(cfg, root)
    (root / "usr/local/etc/tinc/carp/tinc-down").chmod(0o644)
    doc = doctor(cfg, root)
    assert fails(doc) == {"tinc-down"}
    assert "chmod 0755" in next(c.fix for c in doc.checks if c.name == "tinc-down")


def test_check_script_pointing_elsewhere(cfg: Path, root: Path) -> None:
    do_install(cfg, root)
    script = root / "usr/local/etc/tinc/carp/host-up"
    script.write_text("#!/bin/sh\nexec /nonexistent/bin/tinc-host-up\n")
    assert fails(doctor(cfg, root)) == {"host-up"}
    script.write_text(f"#!/bin/sh\nlogger hi\nexec {BINDIR}/tinc-host-up\n")
    doc = doctor(cfg, root)
    assert fails(doc) == set() and statuses(doc)["host-up"] == check.WARN


def test_check_tinc_mode_router(cfg: Path, root: Path) -> None:
    do_install(cfg, root)
    conf = root / "usr/local/etc/tinc/carp/tinc.conf"
    conf.write_text(conf.read_text().replace("Mode = switch", "Mode = router"))
    doc = doctor(cfg, root)
    assert fails(doc) == {"tinc.conf"}
    assert "Mode = router" in next(c.message for c in doc.checks if c.name == "tinc.conf")
    conf.write_text("Name = hA\n")  # no Mode: tinc's default is router
    assert fails(doctor(cfg, root)) == {"tinc.conf"}
    conf.write_text("Name = hA\nMode = switch\n")
    doc = doctor(cfg, root)
    assert fails(doc) == set() and statuses(doc)["tinc.conf"] == check.WARN  # TCPOnly


def test_check_preempt_zero_and_carp_missing(cfg: Path, root: Path) -> None:
    do_install(cfg, root)
    doc = doctor(cfg, root, sysctl={"net.inet.carp.preempt": 0,
                                    "net.link.ether.inet.garp_rexmit_count": 0})
    assert fails(doc) == {"net.inet.carp.preempt"}
    assert statuses(doc)["garp_rexmit_count"] == check.WARN
    doc = doctor(cfg, root, sysctl={})
    assert fails(doc) == {"net.inet.carp.preempt"}
    assert "kldload carp" in next(c.fix for c in doc.checks
                                  if c.name == "net.inet.carp.preempt")


@pytest.mark.skipif(fakebsd_control is None, reason="the FreeBSD emulator is absent")
def test_check_preempt_through_the_backend_runner(tmp_path: Path, root: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    assert fakebsd_control is not None
    bsd = fakebsd_control.FakeBSD(tmp_path / "bsd", release="14.1")
    for name, value in bsd.env().items():
        monkeypatch.setenv(name, value)
    cfg = write_cluster(tmp_path / "c.toml", "tinc", backend="freebsd")
    do_install(cfg, root)
    bsd.set_sysctl("net.inet.carp.preempt", 0)
    doc = check.run(cfg, root=root, host="hA", bindir=str(BINDIR),
                    interfaces=lambda: ["vtnet0", "tap0"])
    assert fails(doc) == {"net.inet.carp.preempt"}
    assert ["sysctl", "-n", "net.inet.carp.preempt"] in bsd.calls("sysctl")
    bsd.set_sysctl("net.inet.carp.preempt", 1)
    doc = check.run(cfg, root=root, host="hA", bindir=str(BINDIR),
                    interfaces=lambda: ["vtnet0", "tap0"])
    assert fails(doc) == set(), [c.line() for c in doc.checks]


def test_check_world_writable_config(cfg: Path, root: Path) -> None:
    do_install(cfg, root)
    cfg.chmod(0o666)
    doc = doctor(cfg, root)
    assert fails(doc) == {"config private"}
    assert "chmod" in next(c.fix for c in doc.checks if c.name == "config private")
    cfg.chmod(0o644)  # inline password readable by others
    assert fails(doctor(cfg, root)) == {"config private"}


def test_check_password_file(tmp_path: Path, root: Path) -> None:
    secret = tmp_path / "carp.pass"
    secret.write_text("pw\n")
    secret.chmod(0o600)
    cfg = write_cluster(tmp_path / "c.toml", "tinc",
                       replace=('password = "s3cret"', f'password_file = "{secret}"'))
    do_install(cfg, root)
    assert fails(doctor(cfg, root)) == set()
    secret.chmod(0o644)
    doc = doctor(cfg, root)
    assert "password file web" in fails(doc)
    assert "config" in {c.name for c in doc.checks if c.status == check.OK}


def test_check_bad_config_stops_early(tmp_path: Path, root: Path) -> None:
    cfg = write_cluster(tmp_path / "c.toml", "tinc", replace=('vhid = 1', 'vhid = 256'))
    doc = doctor(cfg, root)
    assert [c.name for c in doc.checks] == ["config"] and doc.failed
    assert "group[0].vhid" in doc.checks[0].message


def test_check_quorum_rules(tmp_path: Path, root: Path) -> None:
    two = write_cluster(tmp_path / "two.toml", "tinc",
                       replace=('nodes = ["hA", "hB", "hC"]', 'nodes = ["hA", "hB"]'))
    two.write_text(two.read_text().replace('quorum = "majority"', 'quorum = "none"'))
    doc = doctor(two, root)
    assert statuses(doc)["quorum"] == check.WARN
    assert "2-node" in next(c.message for c in doc.checks if c.name == "quorum")
    uni = write_cluster(tmp_path / "u.toml", "unicast",
                       replace=('quorum = "none"', 'quorum = "majority"'))
    doc = doctor(uni, root)
    assert fails(doc) == {"config"}
    assert "has no tinc host-up/host-down" in next(c.message for c in doc.checks
                                                    if c.name == "config")


def test_check_unicast_failures(tmp_path: Path, root: Path) -> None:
    cfg = write_cluster(tmp_path / "u.toml", "unicast")
    do_install(cfg, root)
    netif = root / "etc/rc.conf.d/netif"
    netif.chmod(0o644)
    doc = doctor(cfg, root)
    assert fails(doc) == {"rc.conf private", "peers web"}  # 3 hosts: one peer is not enough
    netif.unlink()
    assert "rc.conf" in fails(doctor(cfg, root))


def test_check_missing_interfaces_and_binaries(cfg: Path, root: Path, tmp_path: Path) -> None:
    do_install(cfg, root)
    doc = doctor(cfg, root, interfaces=("lo0",))
    assert fails(doc) == {"interfaces"}  # vtnet0 missing: FAIL; tap0 missing: WARN only
    assert [c.status for c in doc.checks if c.name == "interfaces"] == [check.FAIL, check.WARN]
    empty = tmp_path / "bin"
    empty.mkdir()
    doc = doctor(cfg, root, bindir=empty)
    assert "binaries" in fails(doc)


def test_check_unknown_host(cfg: Path, root: Path) -> None:
    doc = check.run(cfg, root=root, host="nobody", bindir=str(BINDIR),
                    interfaces=lambda: ["vtnet0"], sysctl=GOOD_SYSCTL.get)
    assert "host" in fails(doc)


def test_cli_check_json_and_exit_code(cfg: Path, root: Path) -> None:
    do_install(cfg, root)
    (root / "usr/local/etc/devd/carphooks.conf").unlink()
    args = ["-c", str(cfg), "check", "--root", str(root), "--host", "hA", "--bindir",
            str(BINDIR)]
    code, out, _ = invoke([*args, "--json"])
    assert code == 1
    data = json.loads(out)
    assert data["ok"] is False
    devd_rows = [c for c in data["checks"] if c["name"] == "devd"]
    assert devd_rows[0]["status"] == "FAIL" and devd_rows[0]["fix"]
    code, out, _ = invoke(args)
    assert code == 1
    for line in out.splitlines():
        assert line.split()[0] in ("OK", "WARN", "FAIL"), line
    assert any(line.startswith("FAIL devd: ") and "; fix: " in line
               for line in out.splitlines())


def test_check_as_subprocess_of_the_console_script(cfg: Path, root: Path) -> None:
    import subprocess

    do_install(cfg, root)
    env = dict(os.environ)
    env.pop("CARPHOOKS_CONFIG", None)
    proc = subprocess.run([str(BINDIR / "carphooks"), "-c", str(cfg), "check", "--root",
                           str(root), "--host", "hA", "--json"], capture_output=True,
                          text=True, env=env, timeout=60)
    data = json.loads(proc.stdout)
    assert proc.returncode == (1 if not data["ok"] else 0), proc.stderr
    assert {c["name"] for c in data["checks"]} >= {"devd", "devd shadowing", "tinc.conf"}
