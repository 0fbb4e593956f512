"""The one command runner: argv only, bounded, secrets redacted, dry-run honest."""

from __future__ import annotations

import os
import time

import pytest

from carphooks.errors import CommandError
from carphooks.runner import Runner, redact, search_path


def test_runs_argv_without_a_shell(tmp_path):
    runner = Runner()
    res = runner.run(["printf", "%s|", "a b", "$(id)", ";reboot"], mutating=False)
    assert res.stdout == "a b|$(id)|;reboot|"
    assert runner.count == 1


def test_exit_status_and_stderr():
    runner = Runner()
    res = runner.run(["sh", "-c", "echo out; echo err >&2; exit 3"], mutating=False, check=False)
    assert (res.returncode, res.stdout, res.stderr) == (3, "out\n", "err\n")
    with pytest.raises(CommandError) as info:
        runner.run(["sh", "-c", "echo boom >&2; exit 1"], mutating=False)
    assert info.value.returncode == 1 and "boom" in str(info.value)


def test_timeout_kills_the_command_and_is_prompt():
    runner = Runner(timeout=0.3)
    start = time.monotonic()
    with pytest.raises(CommandError) as info:
        runner.run(["sleep", "5"], mutating=False)
    assert info.value.returncode == 124
    assert time.monotonic() - start < 2


def test_per_command_overhead_has_no_polling_step():
    # sh's own _timeout polls every 0.1 s; the runner must not pay that per command
    runner = Runner()
    start = time.monotonic()
    for _ in range(5):
        runner.run(["true"], mutating=False)
    assert time.monotonic() - start < 0.45


def test_killed_by_signal():
    with pytest.raises(CommandError) as info:
        Runner().run(["sh", "-c", "kill -TERM $$"], mutating=False)
    assert "signal 15" in str(info.value)


def test_missing_program():
    with pytest.raises(CommandError) as info:
        Runner().run(["no-such-program-xyz"], mutating=False)
    assert info.value.returncode == 127


def test_dry_run_echoes_mutations_only_and_redacts():
    lines: list[str] = []
    runner = Runner(dry_run=True, echo=lines.append)
    assert runner.run(["echo", "read"], mutating=False).stdout == "read\n"
    runner.run(["ifconfig", "tap0", "vhid", "1", "pass", "s3cret", "alias"], mutating=True)
    assert lines == ["ifconfig tap0 vhid 1 pass ******** alias"]
    assert runner.count == 1


def test_secret_is_redacted_in_errors():
    with pytest.raises(CommandError) as info:
        Runner().run(["sh", "-c", "exit 1", "pass", "s3cret"], mutating=False)
    assert "s3cret" not in str(info.value)
    assert redact(["a", "pass", "x", "pass"]) == ["a", "pass", "********", "pass"]


def test_search_path_appends_system_dirs(monkeypatch):
    path = search_path("/opt/fake/bin")
    parts = path.split(os.pathsep)
    assert parts[0] == "/opt/fake/bin"
    assert {"/sbin", "/usr/local/bin", "/usr/local/sbin"} <= set(parts)


def test_output_is_complete_every_time():
    # sh's wait(timeout=...) could return before its reader threads finished (empty
    # stdout about 30% of the time); the runner must always return the whole output
    runner = Runner()
    outputs = {runner.run(["echo", "read"], mutating=False).stdout for _ in range(60)}
    assert outputs == {"read\n"}
