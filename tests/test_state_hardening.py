"""Root-safe state (issue 10, items 1-4, 10, 11): the hooks run as root, so the state
directory and its files are hostile input. Whatever sits there, a hook ends in bounded
time, writes nothing outside what carphooks created, and still releases; an event that
times out on the lock is not dropped; carphooks' demotion is never stranded.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BASE_CONFIG, BINDIR, FakeBSD, addrs, run_script, write_config
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from carphooks import config as configmod
from carphooks.errors import StateError
from carphooks.log import Log
from carphooks.runtime import actions, demotion
from carphooks.runtime.status import nagios
from carphooks.state import StateDir

V4 = "203.0.113.10/24"
V6 = "2001:db8:10::10/64"
TINC = {"NETNAME": "carp", "NAME": "hA", "DEVICE": "/dev/tap0", "INTERFACE": "tap0"}
HOOK_TIMEOUT = 30.0  # a hook that hangs on a planted FIFO fails the test instead


def config_for(path: Path, state: Path, sock: Path, *, majority: bool = False,
               lock_timeout: float = 5, extra: str = "") -> Path:
    text = BASE_CONFIG.format(state=state, sock=sock).replace(
        "lock_timeout = 5", f"lock_timeout = {lock_timeout}")
    if majority:
        text = text.replace('quorum = "none"', 'quorum = "majority"')
        text += '\n[tinc]\nnodes = ["hA", "hB", "hC"]\n'
    return write_config(path, text + extra)


def hold_stale(bsd: FakeBSD) -> None:
    """A BACKUP host that still holds the floating addresses (what a release must fix)."""
    bsd.set_carp_state("tap0", 1, "BACKUP")
    have = addrs(bsd, "vtnet0")
    for a in (V4, V6):
        if a not in have:
            bsd.add_address("vtnet0", a)


def hook(bsd: FakeBSD, cfg: Path, name: str, *args: str, node: str | None = None,
         timeout: float = HOOK_TIMEOUT):
    env = bsd.env()
    if name.startswith("tinc-"):
        env.update(TINC)
        if node:
            env.update(NODE=node, REMOTEADDRESS="203.0.113.99", REMOTEPORT="655")
    return run_script(name, *args, env=env, config=cfg, timeout=timeout)


def one_line(err: str) -> bool:
    return "Traceback" not in err and len(err.strip().splitlines()) <= 1


def snapshot(path: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """Every entry below ``path`` (not following links): mode, owner, content."""
    out: dict[str, tuple[int, int, bytes | None]] = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = Path(root) / name
            st = os.lstat(p)
            data = p.read_bytes() if p.is_file() and not p.is_symlink() else None
            out[str(p.relative_to(path))] = (st.st_mode, st.st_uid, data)
    st = os.lstat(path)
    out["."] = (st.st_mode, st.st_uid, None)
    return out


# -- item 1: a state_dir carphooks did not create is never taken over -------------------

def _shared(p: Path, outside: Path) -> None:
    p.mkdir(mode=0o755)
    os.chmod(p, 0o755)  # like / or /var/db
    (p / "someone-elses-file").write_text("keep\n")


def _group_writable(p: Path, outside: Path) -> None:
    p.mkdir()
    os.chmod(p, 0o770)


def _symlink(p: Path, outside: Path) -> None:
    outside.mkdir(mode=0o700)
    p.symlink_to(outside)


def _foreign(p: Path, outside: Path) -> None:
    p.mkdir(mode=0o700)
    os.chown(p, 12345, 12345)


def _regular_file(p: Path, outside: Path) -> None:
    p.write_text("not a directory\n")


STATE_DIR_KINDS = {"shared 0755": _shared, "group-writable": _group_writable,
                   "symlink": _symlink, "foreign owner": _foreign, "regular file": _regular_file}


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize("kind", list(STATE_DIR_KINDS))
def test_foreign_state_dir_is_refused_untouched_and_release_still_happens(
        bsd, tmp_path, syslog, kind, dry_run):
    area = tmp_path / "area"  # state_dir and whatever it points at
    area.mkdir()
    state = area / "state"
    STATE_DIR_KINDS[kind](state, area / "outside")
    cfg = config_for(tmp_path / "c.toml", state, syslog.path)
    hold_stale(bsd)
    before = snapshot(area)
    flags = ["--dry-run"] if dry_run else []
    res = hook(bsd, cfg, "carp-event", *flags, "1@tap0", "BACKUP")
    assert snapshot(area) == before  # no chmod, no lock, nothing written, links unfollowed
    assert res.code == 6, res.err
    assert one_line(res.err) and f"state_dir {state}" in res.err
    if dry_run:
        assert {V4, V6} <= addrs(bsd, "vtnet0")
        assert f"would run: ifconfig vtnet0 inet {V4.split('/')[0]} -alias" in res.out
    else:  # refused as state, but the release never depends on it
        assert not {V4, V6} & addrs(bsd, "vtnet0")


def test_master_event_with_a_foreign_state_dir_takes_nothing(bsd, tmp_path, syslog):
    state = tmp_path / "state"
    _shared(state, tmp_path / "outside")
    cfg = config_for(tmp_path / "c.toml", state, syslog.path)
    bsd.set_carp_state("tap0", 1, "MASTER")
    res = hook(bsd, cfg, "carp-event", "1@tap0", "MASTER")
    assert res.code == 6 and one_line(res.err)
    assert not {V4, V6} & addrs(bsd, "vtnet0")  # taking depends on a lock of our own


def test_dry_run_creates_no_state(bsd, tmp_path, syslog):
    state = tmp_path / "state"
    cfg = config_for(tmp_path / "c.toml", state, syslog.path)
    bsd.set_carp_state("tap0", 1, "MASTER")
    for name, args in (("carp-event", ("--dry-run", "1@tap0", "MASTER")),
                       ("tinc-up", ("--dry-run",)), ("tinc-host-down", ("--dry-run",)),
                       ("carphooks", ("--dry-run", "reconcile"))):
        res = hook(bsd, cfg, name, *args, node="hB")
        assert res.code == 0, (name, res.err)
        assert not state.exists(), name
    state.mkdir(mode=0o700)
    assert hook(bsd, cfg, "carp-event", "--dry-run", "1@tap0", "MASTER").code == 0
    assert list(state.iterdir()) == []  # not even the lock
    assert not any("Assigned" in t or "demoted" in t for t in syslog.texts())


# -- items 2 and 3: whatever is planted at a state file name --------------------------------

NAMES = ["peers.json", "self.json", "last-event.json", "demotion.json", "maintenance.json",
         "carp-1@tap0.json", "lock"]
KINDS = ["fifo", "directory", "socket", "symlink", "dangling symlink", "foreign owner",
         "group-writable", "huge", "corrupt", "deep json"]
HOOKS = ["carp-event BACKUP", "tinc-down", "reconcile"]


def plant(path: Path, kind: str, victim: Path, dangling: Path) -> None:
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "directory":
        path.mkdir(mode=0o700)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sock.close()
    elif kind == "symlink":
        path.symlink_to(victim)
    elif kind == "dangling symlink":
        path.symlink_to(dangling)
    else:
        content = {"huge": b"{" + b" " * (200 * 1024) + b"}", "corrupt": b"\x00{not json",
                   "deep json": b"[" * 100_000 + b"]" * 100_000}.get(
            kind, b'{"reachable": ["hB", "hC"], "tinc_up": true, "updated": 1}')
        path.write_bytes(content)
        os.chmod(path, 0o620 if kind == "group-writable" else 0o600)
        if kind == "foreign owner":
            os.chown(path, 12345, 12345)


@settings(max_examples=18, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(NAMES), kind=st.sampled_from(KINDS), which=st.sampled_from(HOOKS))
@example(name="peers.json", kind="fifo", which="carp-event BACKUP")
@example(name="self.json", kind="fifo", which="reconcile")
@example(name="lock", kind="dangling symlink", which="carp-event BACKUP")
@example(name="lock", kind="fifo", which="tinc-down")
@example(name="last-event.json", kind="directory", which="carp-event BACKUP")
@example(name="peers.json", kind="directory", which="tinc-down")
@example(name="peers.json", kind="huge", which="reconcile")
def test_planted_state_files_never_hang_escape_or_block_a_release(
        bsd, tmp_path, syslog, name, kind, which):
    base = Path(tempfile.mkdtemp(dir=tmp_path))
    state = base / "state"
    state.mkdir(mode=0o700)
    victim = base / "victim"
    victim.write_text("precious\n")
    dangling = base / "created-through-a-link"
    cfg = config_for(base / "c.toml", state, syslog.path)
    hold_stale(bsd)
    plant(state / name, kind, victim, dangling)
    if which == "carp-event BACKUP":
        res = hook(bsd, cfg, "carp-event", "1@tap0", "BACKUP")
    elif which == "tinc-down":
        res = hook(bsd, cfg, "tinc-down")
    else:
        res = hook(bsd, cfg, "carphooks", "reconcile")
    assert res.code in (0, 1, 6), res.err
    assert one_line(res.err), res.err
    assert not {V4, V6} & addrs(bsd, "vtnet0")  # released, whatever is planted
    assert victim.read_text() == "precious\n"
    assert not dangling.exists()
    assert os.lstat(state).st_mode & 0o777 == 0o700


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from([n for n in NAMES if n != "lock"] + ["pending-1-2.json"]),
       dangling=st.booleans())
def test_writes_never_follow_a_link_planted_at_the_temporary_name(
        tmp_path, monkeypatch, name, dangling):
    base = Path(tempfile.mkdtemp(dir=tmp_path))
    state = base / "state"
    state.mkdir(mode=0o700)
    victim = base / "victim"
    if not dangling:
        victim.write_text("precious\n")
    # every name a temporary file could get: the pid-based one and (forced) a random one
    monkeypatch.setattr("carphooks.state.os.urandom", lambda n: b"\xc0\xff\xee")
    for tmp in (f".{name}.{os.getpid()}.tmp", f".{name}.c0ffee.tmp"):
        (state / tmp).symlink_to(victim)
    with contextlib.suppress(StateError):  # refusing to write is fine; writing through is not
        StateDir(state).write(name, {"x": 1})
    if dangling:
        assert not victim.exists()
    else:
        assert victim.read_text() == "precious\n"
    final = state / name
    if final.exists():
        assert final.is_file() and not final.is_symlink()
        assert json.loads(final.read_text()) == {"x": 1}


def test_a_dangling_lock_link_creates_nothing(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    target = tmp_path / "target"
    (state / "lock").symlink_to(target)
    with pytest.raises(StateError, match="symbolic link"):
        StateDir(state).acquire(1)
    assert not target.exists()


# -- item 4: releasing never depends on writing state --------------------------------------

@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of our own (full disk, read-only), unmounted afterwards."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)],
            capture_output=True).returncode != 0:
        pytest.skip("needs root and tmpfs to simulate a full or read-only state_dir")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(fs: Path) -> None:
    with open(fs / "filler", "wb") as fh:
        with contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()


def break_state(how: str, state: Path, fs: Path) -> None:
    if how == "read-only":
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
    elif how == "full":
        fill(fs)
    elif how == "directory at last-event.json":
        (state / "last-event.json").unlink(missing_ok=True)
        (state / "last-event.json").mkdir()
    elif how == "directory at peers.json":
        (state / "peers.json").unlink(missing_ok=True)
        (state / "peers.json").mkdir()


BROKEN = ["read-only", "full", "directory at last-event.json", "directory at peers.json"]


@pytest.mark.parametrize(("which", "how"), [
    *(("carp-event BACKUP", how) for how in BROKEN[:3]),
    *(("tinc-host-down", how) for how in BROKEN),
    ("tinc-down", "read-only"), ("tinc-down", "directory at peers.json")])
def test_release_does_not_depend_on_bookkeeping(bsd, small_fs, syslog, how, which):
    state = small_fs / "state"
    cfg = config_for(small_fs.parent / "c.toml", state, syslog.path, majority=True)
    assert hook(bsd, cfg, "tinc-up").code == 0
    assert hook(bsd, cfg, "tinc-host-up", node="hB").code == 0
    bsd.set_carp_state("tap0", 1, "MASTER")
    assert hook(bsd, cfg, "carp-event", "1@tap0", "MASTER").code == 0
    assert {V4, V6} <= addrs(bsd, "vtnet0")
    break_state(how, state, small_fs)
    if which == "carp-event BACKUP":
        bsd.set_carp_state("tap0", 1, "BACKUP")
        res = hook(bsd, cfg, "carp-event", "1@tap0", "BACKUP")
    elif which == "tinc-host-down":  # hA alone of three: quorum lost
        res = hook(bsd, cfg, "tinc-host-down", node="hB")
    else:
        res = hook(bsd, cfg, "tinc-down")
    assert one_line(res.err), res.err
    assert "internal error" not in res.err
    assert not {V4, V6} & addrs(bsd, "vtnet0")
    if which == "tinc-host-down" and how != "directory at peers.json":
        # the lost peer is not forgotten: a later MASTER event must not take
        bsd.set_carp_state("tap0", 1, "MASTER")
        hook(bsd, cfg, "carp-event", "1@tap0", "MASTER")
        assert not {V4, V6} & addrs(bsd, "vtnet0")


def test_without_a_usable_lock_release_proceeds_and_take_is_refused(bsd, small_fs, syslog):
    state = small_fs / "state"
    state.mkdir(mode=0o700)
    cfg = config_for(small_fs.parent / "c.toml", state, syslog.path)
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)  # no lock file
    hold_stale(bsd)
    res = hook(bsd, cfg, "carp-event", "1@tap0", "BACKUP")
    assert not {V4, V6} & addrs(bsd, "vtnet0")
    assert res.code == 1 and one_line(res.err) and "lock" in res.err
    bsd.set_carp_state("tap0", 1, "MASTER")
    res = hook(bsd, cfg, "carp-event", "1@tap0", "MASTER")
    assert res.code == 1 and one_line(res.err)
    assert not {V4, V6} & addrs(bsd, "vtnet0")
    assert any("without the lock" in t for t in syslog.texts())


# -- item 10: an event that times out on the lock is not dropped ---------------------------

def slow_alias_shim(tmp_path: Path, started: Path, delay: float) -> Path:
    """A PATH entry whose ifconfig is the emulator's, slowed down when it adds an alias."""
    shim = tmp_path / "shim"
    shim.mkdir()
    real = Path(__file__).resolve().parent / "fakebsd" / "bin" / "ifconfig"
    (shim / "ifconfig").write_text(
        "#!/bin/sh\n"
        f'for a in "$@"; do last="$a"; done\n'
        f'if [ "$last" = alias ]; then : > "{started}"; sleep {delay}; fi\n'
        f'exec "{real}" "$@"\n')
    (shim / "ifconfig").chmod(0o755)
    return shim


def test_backup_event_timing_out_behind_a_slow_take_is_not_dropped(bsd, tmp_path, syslog):
    cfg = config_for(tmp_path / "c.toml", tmp_path / "state", syslog.path, lock_timeout=0.5)
    started = tmp_path / "adding"
    env = bsd.env()
    env["PATH"] = f"{slow_alias_shim(tmp_path, started, 1.5)}:{env['PATH']}"
    bsd.set_carp_state("tap0", 1, "MASTER")
    master = subprocess.Popen([str(BINDIR / "carp-event"), "1@tap0", "MASTER"],
                              env={**env, "CARPHOOKS_CONFIG": str(cfg)},
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not started.exists():
            assert time.monotonic() < deadline and master.poll() is None
            time.sleep(0.02)
        bsd.set_carp_state("tap0", 1, "BACKUP")  # a peer took over while we were adding
        res = hook(bsd, cfg, "carp-event", "1@tap0", "BACKUP")
        assert res.code in (0, 7), res.err
        assert one_line(res.err)
    finally:
        master.communicate(timeout=60)
    assert not {V4, V6} & addrs(bsd, "vtnet0")  # the BACKUP host holds nothing


@contextlib.contextmanager
def holding_lock(state: Path) -> Iterator[None]:
    """Another process holds carphooks' lock (a slow reconcile, say)."""
    state.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def test_a_timed_out_peer_loss_is_replayed_by_the_next_lock_holder(bsd, tmp_path, syslog):
    state = tmp_path / "state"
    cfg = config_for(tmp_path / "c.toml", state, syslog.path, majority=True, lock_timeout=0.3)
    assert hook(bsd, cfg, "tinc-up").code == 0
    assert hook(bsd, cfg, "tinc-host-up", node="hB").code == 0
    bsd.set_carp_state("tap0", 1, "MASTER")
    assert hook(bsd, cfg, "carp-event", "1@tap0", "MASTER").code == 0
    assert V4 in addrs(bsd, "vtnet0")
    with holding_lock(state):
        res = hook(bsd, cfg, "tinc-host-down", node="hB")  # quorum lost, but locked out
    assert res.code == 7 and one_line(res.err) and "left for the lock holder" in res.err
    assert hook(bsd, cfg, "carp-event", "1@tap0", "MASTER").code == 0  # still MASTER
    assert not {V4, V6} & addrs(bsd, "vtnet0")  # hB's loss was replayed first
    assert bsd.sysctl("net.inet.carp.demotion") == 240
    assert not list(state.glob("pending-*"))


def test_a_timed_out_event_of_another_group_is_replayed(bsd, tmp_path, syslog):
    bsd.add_vhid("tap0", 2)
    bsd.add_address("tap0", "192.0.2.253/24", vhid=2)
    bsd.set_carp_state("tap0", 2, "BACKUP")
    mail = '\n[[group]]\nname = "mail"\nvhid = 2\ncarp_interface = "tap0"\n' \
           'external_interface = "vtnet0"\naddresses = ["203.0.113.20/24"]\n' \
           '[group.carp]\naddress = "192.0.2.253/24"\npassword = "x"\n'
    state = tmp_path / "state"
    cfg = config_for(tmp_path / "c.toml", state, syslog.path, lock_timeout=0.3, extra=mail)
    hold_stale(bsd)
    with holding_lock(state):
        res = hook(bsd, cfg, "carp-event", "1@tap0", "BACKUP")
    assert res.code == 7
    assert {V4, V6} <= addrs(bsd, "vtnet0")
    assert hook(bsd, cfg, "carp-event", "2@tap0", "BACKUP").code == 0
    assert not {V4, V6} & addrs(bsd, "vtnet0")


def test_stale_pending_events_are_dropped(bsd, tmp_path, syslog):
    state = tmp_path / "state"
    cfg = config_for(tmp_path / "c.toml", state, syslog.path)
    StateDir(state).write("pending-00000000000000000001-1.json", {
        "hook": "carp-event", "subsystem": "1@tap0", "type": "MASTER", "time": 1.0})
    bsd.set_carp_state("tap0", 1, "BACKUP")
    assert hook(bsd, cfg, "carp-event", "1@tap0", "BACKUP").code == 0
    assert not list(state.glob("pending-*"))
    assert any("stale" in t for t in syslog.texts())


# -- item 11: carphooks' demotion is never stranded -----------------------------------------

def in_process(bsd: FakeBSD, cfg: Path, monkeypatch: pytest.MonkeyPatch) -> actions.Context:
    """A fresh per-"process" context running the emulator's commands."""
    for key, value in bsd.env().items():
        monkeypatch.setenv(key, value)
    config = configmod.load(cfg)
    return actions.build_context(config, Log("t", config.syslog_socket, mirror=False),
                                 host="hA")


def env_of(node: str | None = None) -> actions.TincEnv:
    return actions.TincEnv(netname="carp", name="hA", interface="tap0", device="/dev/tap0",
                           node=node)


def corrupt(path: Path, how: str) -> None:
    path.unlink()
    if how == "fifo":
        os.mkfifo(path, 0o600)
    elif how == "directory":
        path.mkdir()
    elif how == "symlink":
        path.symlink_to("/etc/hostname")
    else:
        path.write_bytes(how.encode())
        os.chmod(path, 0o600)


CORRUPTIONS = ["fifo", "directory", "symlink", "", "{", '{"added": {"quorum": "240"}}',
               '{"added": [240]}', "[]", '{"added": {"quorum": -5}}', "\x00\x01"]


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(how=st.one_of(st.sampled_from(CORRUPTIONS),
                     st.text(max_size=30).filter(lambda t: "\x00" not in t)))
@example(how="{")
def test_corrupt_demotion_record_neither_strands_nor_doubles_the_demotion(
        bsd, tmp_path, syslog, monkeypatch, how):
    base = Path(tempfile.mkdtemp(dir=tmp_path))
    cfg = config_for(base / "c.toml", base / "state", syslog.path, majority=True)
    bsd.set_sysctl("net.inet.carp.demotion", 10)  # someone else's: never touched
    actions.tinc_up(in_process(bsd, cfg, monkeypatch), env_of())
    actions.tinc_host(in_process(bsd, cfg, monkeypatch), env_of("hB"), True)
    actions.tinc_host(in_process(bsd, cfg, monkeypatch), env_of("hB"), False)
    assert bsd.sysctl("net.inet.carp.demotion") == 250
    corrupt(base / "state" / "demotion.json", how)
    report = actions.status(in_process(bsd, cfg, monkeypatch))
    if report.demotion.added != {"quorum": 240}:
        # whatever the record says now, status says it does not add up
        assert report.demotion.problems
        code, line = nagios(report)
        assert code >= 1 and "demotion" in line
    actions.tinc_host(in_process(bsd, cfg, monkeypatch), env_of("hB"), True)
    assert bsd.sysctl("net.inet.carp.demotion") == 10  # not stranded
    actions.tinc_host(in_process(bsd, cfg, monkeypatch), env_of("hB"), False)
    assert bsd.sysctl("net.inet.carp.demotion") == 250  # not doubled
    actions.tinc_host(in_process(bsd, cfg, monkeypatch), env_of("hB"), True)
    assert bsd.sysctl("net.inet.carp.demotion") == 10
    if how != "directory":  # (a directory cannot be replaced by the record: still reported)
        assert actions.status(in_process(bsd, cfg, monkeypatch)).demotion.problems == []


def test_stranded_demotion_is_reported_and_reconcile_removes_it(
        bsd, tmp_path, syslog, monkeypatch):
    cfg = config_for(tmp_path / "c.toml", tmp_path / "state", syslog.path, majority=True)
    actions.tinc_up(in_process(bsd, cfg, monkeypatch), env_of())
    actions.tinc_host(in_process(bsd, cfg, monkeypatch), env_of("hB"), True)
    actions.tinc_host(in_process(bsd, cfg, monkeypatch), env_of("hB"), False)
    assert bsd.sysctl("net.inet.carp.demotion") == 240
    # quorum came back while the regain could not be acted on (say, a sysctl failure)
    StateDir(tmp_path / "state").write_peers(frozenset({"hB"}), tinc_up=True)
    report = actions.status(in_process(bsd, cfg, monkeypatch))
    assert any("quorum holds" in p for p in report.demotion.problems)
    assert nagios(report)[0] == 1
    actions.reconcile(in_process(bsd, cfg, monkeypatch))
    assert bsd.sysctl("net.inet.carp.demotion") == 0
    assert actions.status(in_process(bsd, cfg, monkeypatch)).demotion.problems == []


def test_a_removal_that_cannot_be_recorded_leaves_the_demotion(
        bsd, small_fs, syslog, monkeypatch):
    state = small_fs / "state"
    cfg = config_for(small_fs.parent / "c.toml", state, syslog.path, majority=True)
    actions.tinc_up(in_process(bsd, cfg, monkeypatch), env_of())
    actions.tinc_host(in_process(bsd, cfg, monkeypatch), env_of("hB"), True)
    actions.tinc_host(in_process(bsd, cfg, monkeypatch), env_of("hB"), False)
    assert bsd.sysctl("net.inet.carp.demotion") == 240
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    with pytest.raises(StateError):
        demotion.set_reason(in_process(bsd, cfg, monkeypatch), "quorum", False)
    # the readable record still says 240: subtracting now would subtract it twice later
    assert bsd.sysctl("net.inet.carp.demotion") == 240
    subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    actions.tinc_host(in_process(bsd, cfg, monkeypatch), env_of("hB"), True)
    assert bsd.sysctl("net.inet.carp.demotion") == 0


def test_linux_acts_on_the_event_when_its_carp_record_cannot_be_written(
        small_fs, syslog):
    """On Linux the recorded event is the CARP state: a BACKUP that cannot be recorded
    must not leave the old MASTER record in charge of this event."""
    state = small_fs / "state"
    cfg = config_for(small_fs.parent / "c.toml", state, syslog.path)
    cfg.write_text(cfg.read_text().replace('backend = "freebsd"', 'backend = "linux"'))
    config = configmod.load(cfg)
    StateDir(state).write_carp_state("1@tap0", "MASTER")
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    ctx = actions.build_context(config, Log("t", config.syslog_socket, mirror=False))
    group = config.groups[0]
    with pytest.raises(StateError):
        ctx.backend.record_event(group.subsystem, actions.CarpState.BACKUP)
    assert ctx.backend.carp_state(group, None) is actions.CarpState.BACKUP


def test_state_file_reads_are_bounded(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.mkfifo(state / "peers.json", 0o600)
    done = threading.Event()
    error: list[str] = []

    def read() -> None:
        try:
            StateDir(state).peers(("hA", "hB"))
        except StateError as exc:
            error.append(str(exc))
        done.set()

    threading.Thread(target=read, daemon=True).start()
    if not done.wait(5):
        with open(os.open(state / "peers.json", os.O_WRONLY | os.O_NONBLOCK), "w"):
            pass  # let the stuck reader go before failing
        pytest.fail("reading a FIFO at peers.json blocked")
    assert error and "FIFO" in error[0]
