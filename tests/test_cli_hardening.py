"""The console scripts under hostile conditions (issue 10 items 5, 6, 9, 12-15).

Signals during a hook, tinc scripts of another network, a group named twice, bad
option values and config files, closed stdio (devd, cron), a FIFO where a file
should be, and a reader that goes away (``| head``): each ends in one clear line
and a documented exit code, and never in a change nobody asked for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from unittest import mock

import pytest
from click.testing import CliRunner
from conftest import (
    BASE_CONFIG,
    BINDIR,
    FakeBSD,
    SyslogServer,
    addrs,
    mutating,
    run_script,
    write_config,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_runner_hardening import alive, gone_within

from carphooks.cli import admin as cli
from carphooks.cli.hooks import Options
from carphooks.config import IFNAME_RE, NODE_RE
from carphooks.runtime import actions
from carphooks.runtime.events import parse_tinc_env
from carphooks.state import StateDir

V4 = "203.0.113.10/24"
V6 = "2001:db8:10::10/64"
REAL_IFCONFIG = Path(__file__).resolve().parent / "fakebsd" / "bin" / "ifconfig"
ERR = 3  # syslog severity


def error_lines(syslog: SyslogServer) -> list[str]:
    return [m.message for m in syslog.messages() if m.severity <= ERR]


def hook_env(bsd: FakeBSD, config: Path, **extra: str) -> dict[str, str]:
    env = bsd.env()
    env["CARPHOOKS_CONFIG"] = str(config)
    env.update(extra)
    return env


# -- item 5: a signal stops the hook and everything it started ----------------------------

SLOW_IFCONFIG = """#!/bin/sh
# ifconfig whose address changes hang (a busy kernel); reads answer at once
for word in "$@"; do
    if [ "$word" = alias ]; then
        echo $$ > "{pidfile}"
        sleep 60
        break
    fi
done
exec "{real}" "$@"
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_kills_the_running_command_and_exits_128_plus_n(
        bsd: FakeBSD, config: Path, syslog: SyslogServer, tmp_path: Path,
        sig: signal.Signals) -> None:
    slow = tmp_path / "slow"
    slow.mkdir()
    pidfile = tmp_path / "ifconfig.pid"
    (slow / "ifconfig").write_text(SLOW_IFCONFIG.format(pidfile=pidfile, real=REAL_IFCONFIG))
    (slow / "ifconfig").chmod(0o755)
    env = hook_env(bsd, config)
    env["PATH"] = f"{slow}:{env['PATH']}"
    bsd.set_carp_state("tap0", 1, "MASTER")
    proc = subprocess.Popen([str(BINDIR / "carp-event"), "1@tap0", "MASTER"], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    pid = None
    try:
        end = time.monotonic() + 30
        while not pidfile.exists() or not pidfile.read_text().strip():
            assert proc.poll() is None and time.monotonic() < end, "the add never started"
            time.sleep(0.02)
        pid = int(pidfile.read_text())
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 128 + sig
        assert gone_within(pid, 5), "the hook's ifconfig outlived it"
        # devd's next event: BACKUP; nothing may add the address afterwards
        bsd.set_carp_state("tap0", 1, "BACKUP")
        assert run_script("carp-event", "1@tap0", "BACKUP", env=bsd.env(),
                          config=config).code == 0
        assert V4 not in addrs(bsd, "vtnet0")
        assert "Traceback" not in err
        assert err.count("\n") == 1 and sig.name in err
        lines = [t for t in error_lines(syslog) if "interrupted" in t]
        assert len(lines) == 1 and sig.name in lines[0]
        assert "ifconfig vtnet0 inet 203.0.113.10/24 alias" in lines[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if pid is not None and alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_ctrl_c_while_waiting_for_the_lock_is_one_line(bsd: FakeBSD, config: Path,
                                                       syslog: SyslogServer,
                                                       tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    with state.lock(5):
        proc = subprocess.Popen([str(BINDIR / "carp-event"), "1@tap0", "MASTER"],
                                env=hook_env(bsd, config), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            lock = str(tmp_path / "state" / "lock")
            end = time.monotonic() + 30
            while not any(os.path.realpath(f"/proc/{proc.pid}/fd/{fd}") == lock
                          for fd in _fds(proc.pid)):
                assert proc.poll() is None and time.monotonic() < end, proc.communicate()
                time.sleep(0.01)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130
    assert "Traceback" not in err and err.count("\n") == 1 and "SIGINT" in err
    assert [t for t in error_lines(syslog) if "interrupted" in t]
    assert mutating(bsd) == []


def _fds(pid: int) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []


# -- item 6: tinc scripts of another network or interface change nothing -------------------

CLUSTER = BASE_CONFIG.replace('quorum = "none"', 'quorum = "majority"') + """
[tinc]
netname = "carp"
nodes = ["hA", "hB", "hC"]
"""
HOOKS = {"tinc-up": actions.tinc_up, "tinc-down": actions.tinc_down,
         "tinc-host-up": actions.tinc_host_up, "tinc-host-down": actions.tinc_host_down}
OTHER_NET = st.from_regex(NODE_RE, fullmatch=True).filter(lambda n: n != "carp")
OTHER_IF = st.from_regex(IFNAME_RE, fullmatch=True).filter(lambda n: n != "tap0")


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hook=st.sampled_from(sorted(HOOKS)),
       foreign=st.one_of(st.tuples(OTHER_NET, st.just("tap0")),
                         st.tuples(OTHER_NET, OTHER_IF),
                         st.tuples(st.sampled_from(["carp", ""]), OTHER_IF)))
def test_a_foreign_tinc_network_or_interface_changes_nothing(
        tmp_path: Path, syslog: SyslogServer, hook: str, foreign: tuple[str, str]) -> None:
    netname, interface = foreign
    base = Path(tempfile.mkdtemp(dir=tmp_path))
    bsd = FakeBSD(base / "bsd", release="14.1")
    bsd.add_interface("vtnet0", mac="58:9c:fc:00:00:01")
    bsd.add_interface("tap0", mac="02:00:00:00:00:11", kind="tap")
    bsd.add_vhid("tap0", 1)
    bsd.add_address("tap0", "192.0.2.254/24", vhid=1)
    bsd.set_carp_state("tap0", 1, "MASTER")
    bsd.add_address("vtnet0", V4)
    bsd.add_address("vtnet0", V6)
    cfg = write_config(base / "c.toml", CLUSTER.format(state=base / "state", sock=syslog.path))
    state = StateDir(base / "state")
    state.write_peers(frozenset({"hB"}), tinc_up=True)  # hA + hB of 3: quorum, holding
    before = {p.name: p.read_bytes() for p in (base / "state").iterdir()}
    tinc = {"NETNAME": netname, "NAME": "hA", "DEVICE": f"/dev/{interface}",
            "INTERFACE": interface, "NODE": "hB"}
    with mock.patch.dict(os.environ, bsd.env()):
        ctx = Options(str(cfg), False, False, host="hA").context()
        bsd.clear_calls()
        env = parse_tinc_env(tinc, need_node=hook.startswith("tinc-host"))
        assert HOOKS[hook](ctx, env) == actions.ActionResult()
        assert bsd.calls() == []
        assert {p.name: p.read_bytes() for p in (base / "state").iterdir()} == before
        actions.reconcile(ctx)  # cron's next run: this cluster is unchanged
    assert {V4, V6} <= addrs(bsd, "vtnet0")


def test_a_foreign_tinc_down_from_the_console_script(bsd: FakeBSD, tmp_path: Path,
                                                     syslog: SyslogServer) -> None:
    cfg = write_config(tmp_path / "c.toml",
                       CLUSTER.format(state=tmp_path / "state", sock=syslog.path))
    StateDir(tmp_path / "state").write_peers(frozenset({"hB"}), tinc_up=True)
    bsd.set_carp_state("tap0", 1, "MASTER")
    assert run_script("carphooks", "--host", "hA", "reconcile", env=bsd.env(),
                      config=cfg).code == 0
    assert V4 in addrs(bsd, "vtnet0")
    res = run_script("tinc-down", env=hook_env(bsd, cfg, NETNAME="other", NAME="hA",
                                               INTERFACE="tap9", DEVICE="/dev/tap9"))
    assert res.code == 0, res.err
    assert run_script("carphooks", "--host", "hA", "reconcile", env=bsd.env(),
                      config=cfg).code == 0
    assert V4 in addrs(bsd, "vtnet0")
    assert any("tinc-down for tap9" in t and "ignored" in t for t in syslog.texts())


# -- item 9: a group named twice is converged once ------------------------------------------

TWO_GROUPS = BASE_CONFIG + """
[[group]]
name = "mail"
vhid = 2
carp_interface = "tap0"
external_interface = "vtnet0"
addresses = ["203.0.113.20/24"]

[group.carp]
address = "192.0.2.253/24"
password = "s3cret"
"""
NAMES_OF = {"web": ("web", "1@tap0", "1"), "mail": ("mail", "2@tap0", "2")}
FLOATING = {"web": (V4, V6), "mail": ("203.0.113.20/24",)}


def test_reconcile_web_web_applies_each_change_once(bsd: FakeBSD, config: Path) -> None:
    bsd.set_carp_state("tap0", 1, "MASTER")
    res = run_script("carphooks", "reconcile", "web", "web", "1@tap0", env=bsd.env(),
                     config=config)
    assert res.code == 0, res.err
    assert [c for c in mutating(bsd) if c[0] == "ifconfig"] == [
        ["ifconfig", "vtnet0", "inet", V4, "alias"],
        ["ifconfig", "vtnet0", "inet6", V6, "alias"],
    ]
    assert bsd.readd_count() == 0


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.sampled_from([n for ns in NAMES_OF.values() for n in ns]),
                      min_size=1, max_size=6))
def test_any_selection_converges_each_group_once(bsd: FakeBSD, tmp_path: Path,
                                                 syslog: SyslogServer,
                                                 names: list[str]) -> None:
    cfg = write_config(tmp_path / "two.toml",
                       TWO_GROUPS.format(state=tmp_path / "state", sock=syslog.path))
    if 2 not in bsd.carp("tap0"):
        bsd.add_vhid("tap0", 2)
        bsd.add_address("tap0", "192.0.2.253/24", vhid=2)
    for vhid in (1, 2):
        bsd.set_carp_state("tap0", vhid, "MASTER")
    for text in (*FLOATING["web"], *FLOATING["mail"]):
        if text in addrs(bsd, "vtnet0"):
            bsd.remove_address("vtnet0", text)
    bsd.clear_calls()
    with mock.patch.dict(os.environ, bsd.env()):
        result = CliRunner().invoke(cli.cli, ["--config", str(cfg), "reconcile", *names])
    assert result.exit_code == 0, result.output
    added = [c[3] for c in mutating(bsd) if c[-1] == "alias"]
    selected = {g for g, ns in NAMES_OF.items() if set(ns) & set(names)}
    assert sorted(added) == sorted(a for g in selected for a in FLOATING[g])


# -- item 12: bad values and files are one line and a documented code -----------------------

def _one_error_line(err: str, names: str) -> None:
    """No traceback; exactly one line says what is wrong (click adds its usage hint)."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "Error" in line or "error:" in line]
    assert len(errors) == 1 and names in errors[0], err


@pytest.mark.parametrize("args", [
    ["reconcile", "--every", "nan"],
    ["reconcile", "--every", "inf"],
    ["maintenance", "on", "--wait", "inf"],
    ["maintenance", "on", "--wait", "-5"],
    ["maintenance", "on", "--wait", "nan"],
    ["--config", "", "reconcile"],
    ["--config=", "reconcile"],
    ["--host", "x;y", "reconcile"],
    ["render", "--host", "x;y", "devd"],
])
def test_bad_values_are_usage_errors_that_change_nothing(bsd: FakeBSD, config: Path,
                                                         args: list[str]) -> None:
    bsd.set_carp_state("tap0", 1, "MASTER")
    bsd.clear_calls()
    res = run_script("carphooks", *args, env=bsd.env(), config=config, timeout=30)
    assert res.code == 2, (res.code, res.err)
    option = next(a for a in args if a.startswith("--")).split("=")[0]
    _one_error_line(res.err, option)
    assert mutating(bsd) == []
    assert not (config.parent / "state" / "maintenance.json").exists()


@pytest.mark.parametrize("args,code", [(["status"], 6), (["status", "--nagios"], 3),
                                       (["reconcile"], 6)])
def test_a_deeply_nested_config_is_a_config_error(bsd: FakeBSD, tmp_path: Path,
                                                  args: list[str], code: int) -> None:
    deep = write_config(tmp_path / "deep.toml", "a = " + "[" * 5000 + "]" * 5000 + "\n")
    res = run_script("carphooks", *args, env=bsd.env(), config=deep, timeout=30)
    assert res.code == code, (res.code, res.out, res.err)
    assert "Traceback" not in res.err
    if code == 3:  # a monitoring plugin: one line on stdout
        assert res.out.startswith("CARPHOOKS UNKNOWN") and len(res.out.splitlines()) == 1
    assert "nested too deeply" in (res.out if code == 3 else res.err)


def test_a_password_file_that_is_not_utf8_is_a_config_error(bsd: FakeBSD, tmp_path: Path,
                                                            syslog: SyslogServer) -> None:
    pw = tmp_path / "carp.pass"
    pw.write_bytes(b"\xff\xfe secret\n")
    pw.chmod(0o600)
    text = BASE_CONFIG.format(state=tmp_path / "state", sock=syslog.path).replace(
        'password = "s3cret"', f'password_file = "{pw}"')
    cfg = write_config(tmp_path / "c.toml", text)
    res = run_script("tinc-up", env=hook_env(bsd, cfg, NETNAME="carp", NAME="hA",
                                             INTERFACE="tap0", DEVICE="/dev/tap0"))
    assert res.code == 6, (res.code, res.err)
    assert "Traceback" not in res.err and "not valid UTF-8" in res.err
    assert mutating(bsd) == []  # refused at load, before any change


# -- item 13: closed stdin, stdout or stderr (devd, cron) ----------------------------------

@pytest.mark.parametrize("closed", [(1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)])
def test_a_hook_with_closed_stdio_still_acts_and_logs(bsd: FakeBSD, config: Path,
                                                      syslog: SyslogServer,
                                                      closed: tuple[int, ...]) -> None:
    bsd.set_carp_state("tap0", 1, "MASTER")
    redirect = " ".join(f"{fd}<&-" if fd == 0 else f"{fd}>&-" for fd in closed)
    script = f'exec "$0" "$@" {redirect}'
    proc = subprocess.run(["/bin/sh", "-c", script, str(BINDIR / "carp-event"), "1@tap0",
                           "MASTER"],
                          env=hook_env(bsd, config), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert {V4, V6} <= addrs(bsd, "vtnet0")
    assert any(V4 in t for t in syslog.texts())
    assert b"Traceback" not in proc.stderr


def test_dry_run_with_stdout_closed_prints_into_nothing(bsd: FakeBSD, config: Path) -> None:
    bsd.set_carp_state("tap0", 1, "MASTER")
    proc = subprocess.run(["/bin/sh", "-c", 'exec "$0" "$@" >&-', str(BINDIR / "carp-event"),
                           "--dry-run", "1@tap0", "MASTER"],
                          env=hook_env(bsd, config), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert b"Traceback" not in proc.stderr and b"rror" not in proc.stderr
    assert mutating(bsd) == []


# -- item 14: check never blocks on a FIFO ------------------------------------------------

@pytest.mark.parametrize("relpath", [
    "usr/local/etc/tinc/carp/tinc-up",
    "usr/local/etc/tinc/carp/host-down",
    "usr/local/etc/tinc/carp/tinc.conf",
    "usr/local/etc/devd/carphooks.conf",
    "etc/sysctl.conf.local",
])
def test_check_refuses_a_fifo_instead_of_hanging(bsd: FakeBSD, tmp_path: Path,
                                                 relpath: str) -> None:
    from setupkit import write_cluster

    cfg = write_cluster(tmp_path / "cluster.toml", "tinc")
    root = tmp_path / "root"
    env = bsd.env()
    res = run_script("carphooks", "install", "--root", str(root), "--host", "hA",
                     "--bindir", str(BINDIR), env=env, config=cfg)
    assert res.code == 0, res.err
    fifo = root / relpath
    fifo.unlink()
    os.mkfifo(fifo, 0o644)
    res = run_script("carphooks", "check", "--root", str(root), "--host", "hA",
                     "--bindir", str(BINDIR), env=env, config=cfg, timeout=20)
    assert res.code == 1, (res.code, res.out, res.err)
    assert any(line.startswith(("FAIL", "WARN")) and f"{fifo} is a FIFO" in line
               for line in res.out.splitlines()), res.out
    assert "Traceback" not in res.err


# -- item 15: a reader that goes away (| head) ----------------------------------------------

@pytest.mark.parametrize("args", [["status"], ["status", "--json"], ["reconcile"],
                                  ["--dry-run", "reconcile"]])
def test_a_closed_pipe_on_stdout_is_not_an_error(bsd: FakeBSD, config: Path,
                                                 syslog: SyslogServer,
                                                 args: list[str]) -> None:
    bsd.set_carp_state("tap0", 1, "MASTER")
    read, write = os.pipe()
    os.close(read)  # like `| head -0`: every write to stdout fails with EPIPE
    try:
        proc = subprocess.run([str(BINDIR / "carphooks"), *args], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=60,
                              env=hook_env(bsd, config), stdin=subprocess.DEVNULL)
    finally:
        os.close(write)
    assert "BrokenPipe" not in proc.stderr and "internal error" not in proc.stderr
    assert not [t for t in error_lines(syslog) if "BrokenPipe" in t or "internal" in t]
    if args[-1] == "reconcile" and "--dry-run" not in args:
        assert proc.returncode == 0 and V4 in addrs(bsd, "vtnet0")  # the work was done
