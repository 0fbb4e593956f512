"""The runner as root: trusted PATH only, a clean environment, process groups, a deadline.

Issue 9 item 7 (FreeBSD's ifconfig reads IFCONFIG_FORMAT; hooks run as root) and
issue 10 item 5 (a hook's commands must not outlive it, N hung commands must not
cost N x 10 s). Interruption by signals is tested on the console scripts in
test_cli_hardening.py (installing handlers here would change pytest's own).
"""

from __future__ import annotations

import os
import stat
import tempfile
import time
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carphooks.errors import CommandError
from carphooks.runner import Runner

TOOL = "carphooks-probe-tool"  # a name no system directory has
NOBODY = 65534


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] not in ("Z", "X")


def gone_within(pid: int, seconds: float) -> bool:
    """Poll until ``pid`` is gone (an orphan needs a moment to be reaped by init)."""
    end = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def make_tool(directory: Path, mode: int = 0o755, uid: int = 0) -> Path:
    tool = directory / TOOL
    tool.write_text("#!/bin/sh\necho ran\n")
    os.chown(tool, uid, 0)
    os.chmod(tool, mode)
    return tool


def runs(path_value: str) -> bool:
    """Whether a runner with PATH=``path_value`` runs the probe tool."""
    with mock.patch.dict(os.environ, {"PATH": path_value}):
        runner = Runner()
        try:
            result = runner.run([TOOL], mutating=False)
        except CommandError as exc:
            assert exc.returncode == 127, exc
            return False
    assert result.stdout == "ran\n"
    return True


# -- a command run as root comes only from a trusted directory ----------------------

DIR_MODES = [0o755, 0o700, 0o775, 0o757, 0o777, 0o1777, 0o1755]
FILE_MODES = [0o755, 0o700, 0o775, 0o757, 0o777]


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parent_mode=st.sampled_from(DIR_MODES), parent_uid=st.sampled_from([0, NOBODY]),
       dir_mode=st.sampled_from(DIR_MODES), dir_uid=st.sampled_from([0, NOBODY]),
       file_mode=st.sampled_from(FILE_MODES), file_uid=st.sampled_from([0, NOBODY]))
def test_only_root_owned_unwritable_directories_and_programs_are_run(
        tmp_path: Path, parent_mode: int, parent_uid: int, dir_mode: int, dir_uid: int,
        file_mode: int, file_uid: int) -> None:
    parent = Path(tempfile.mkdtemp(dir=tmp_path))
    bindir = parent / "bin"
    bindir.mkdir()
    make_tool(bindir, file_mode, file_uid)
    os.chown(bindir, dir_uid, 0)
    os.chmod(bindir, dir_mode)
    os.chown(parent, parent_uid, 0)
    os.chmod(parent, parent_mode)
    writable = stat.S_IWGRP | stat.S_IWOTH
    # someone else could swap the program (or a directory on its way) for their own
    parent_ok = parent_uid == 0 and (not parent_mode & writable or parent_mode & stat.S_ISVTX)
    dir_ok = dir_uid == 0 and not dir_mode & writable
    file_ok = file_uid == 0 and not file_mode & writable
    assert runs(str(bindir)) == (parent_ok and dir_ok and file_ok)


@pytest.mark.parametrize("entry", ["bin", "./bin", ".", "bin/../bin"])
def test_relative_path_entries_are_never_searched(tmp_path: Path, monkeypatch,
                                                  entry: str) -> None:
    (tmp_path / "bin").mkdir()
    make_tool(tmp_path / "bin")
    make_tool(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert not runs(entry)


def test_a_link_into_a_writable_directory_is_not_run(tmp_path: Path) -> None:
    unsafe = tmp_path / "unsafe"
    unsafe.mkdir(mode=0o777)
    os.chmod(unsafe, 0o777)
    target = make_tool(unsafe)
    safe = tmp_path / "safe"
    safe.mkdir(mode=0o755)
    (safe / TOOL).symlink_to(target)
    assert not runs(str(safe))


def test_a_program_named_by_path_must_be_trusted_too(tmp_path: Path) -> None:
    unsafe = tmp_path / "unsafe"
    unsafe.mkdir()
    os.chmod(unsafe, 0o777)
    tool = make_tool(unsafe)
    with pytest.raises(CommandError) as info:
        Runner().run([str(tool)], mutating=False)
    assert info.value.returncode == 127


def test_the_refusal_names_the_skipped_directory(tmp_path: Path) -> None:
    unsafe = tmp_path / "unsafe"
    unsafe.mkdir()
    os.chmod(unsafe, 0o777)
    make_tool(unsafe)
    with mock.patch.dict(os.environ, {"PATH": str(unsafe)}):
        with pytest.raises(CommandError) as info:
            Runner().run([TOOL], mutating=False)
    assert f"{unsafe} (" in str(info.value) and "writable" in str(info.value)


# -- commands get a clean environment ---------------------------------------------------

def environment_seen(runner: Runner) -> dict[str, str]:
    out = runner.run(["env", "-0"], mutating=False).stdout
    return dict(item.split("=", 1) for item in out.split("\0") if item)


def test_commands_see_only_path_and_the_c_locale() -> None:
    hostile = {
        "IFCONFIG_FORMAT": "addr:host,inet:cidr,inet6:cidr",  # ifconfig prints host names
        "LD_TRACE_LOADED_OBJECTS": "1",  # rtld lists libraries and exits 0, runs nothing
        "LD_PRELOAD": "/nonexistent/evil.so",
        "MALLOC_CONF": "stats_print:true",
        "LANG": "de_DE.UTF-8",
        "LC_MESSAGES": "de_DE.UTF-8",
        "TZ": "Europe/Berlin",
        "BLOCKSIZE": "1k",
    }
    with mock.patch.dict(os.environ, hostile):
        runner = Runner()
        seen = environment_seen(runner)
    assert seen == {"PATH": os.pathsep.join(runner.trusted_dirs()), "LC_ALL": "C"}


NAMES = st.from_regex(r"[A-Z][A-Z0-9_]{0,11}", fullmatch=True).filter(
    lambda n: n not in ("PATH", "LC_ALL", "CARPHOOKS_PASSENV"))
VALUES = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20)


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(NAMES, VALUES, max_size=6), st.data())
def test_only_path_lc_all_and_passenv_names_reach_a_command(extra: dict[str, str],
                                                            data: st.DataObject) -> None:
    passed = data.draw(st.sets(st.sampled_from(sorted(extra))) if extra else st.just(set()))
    env = dict(extra, CARPHOOKS_PASSENV=":".join(sorted(passed)))
    with mock.patch.dict(os.environ, env):
        runner = Runner()
        seen = environment_seen(runner)
    expected = {"PATH": os.pathsep.join(runner.trusted_dirs()), "LC_ALL": "C"}
    expected.update({name: extra[name] for name in passed})
    assert seen == expected


# -- nothing a command started outlives it; the hook as a whole is bounded ----------------

def test_a_timeout_kills_everything_the_command_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    with pytest.raises(CommandError) as info:
        Runner(timeout=0.5).run(["sh", "-c", f'sleep 60 & echo $! > "{pidfile}"; wait'],
                                mutating=False)
    assert info.value.returncode == 124
    pid = int(pidfile.read_text())
    try:
        assert gone_within(pid, 5), "the command's child outlived it"
    finally:
        if alive(pid):
            os.kill(pid, 9)


def test_a_deadline_bounds_all_commands_together() -> None:
    runner = Runner(timeout=10, deadline=time.monotonic() + 0.5)
    errors = []
    for _ in range(3):
        with pytest.raises(CommandError) as info:
            runner.run(["sleep", "5"], mutating=False)
        errors.append(info.value)
    assert errors[0].returncode == 124 and "timed out" in str(errors[0])
    assert all(e.returncode == 124 and "not run" in str(e) for e in errors[1:])
    assert runner.count == 1


def test_hooks_and_commands_get_a_deadline(config: Path) -> None:
    from carphooks.cli.hooks import Options
    from carphooks.runner import hook_budget

    before = time.monotonic()
    opts = Options(str(config), False, False)
    deadline = opts.context().runner.deadline  # the config has 2 floating addresses
    assert deadline is not None and before < deadline <= time.monotonic() + hook_budget(2)
