"""hooks/ucarp-up, ucarp-down, keepalived-notify: argv mapping to carp-event."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

HOOKS = Path(__file__).resolve().parent.parent / "hooks"


@pytest.fixture
def bindir(tmp_path: Path) -> Path:
    fake = tmp_path / "carp-event"
    fake.write_text('#!/bin/sh\necho "$*"\n')
    fake.chmod(0o755)
    return tmp_path


def run(bindir: Path, hook: str, *args: str) -> tuple[int, str]:
    env = {"PATH": "/usr/bin:/bin", "CARPHOOKS_BINDIR": str(bindir)}
    p = subprocess.run([str(HOOKS / hook), *args], env=env, capture_output=True, text=True)
    return p.returncode, p.stdout.strip()


@pytest.mark.parametrize(("hook", "args", "want"), [
    ("ucarp-up", ("tap0", "192.0.2.254", "1"), "1@tap0 MASTER"),
    ("ucarp-down", ("tap0", "192.0.2.254", "7"), "7@tap0 BACKUP"),
    ("keepalived-notify", ("tap0", "INSTANCE", "VI_1", "MASTER", "100"), "1@tap0 MASTER"),
    ("keepalived-notify", ("tap0", "INSTANCE", "vhid12", "BACKUP", "100"), "12@tap0 BACKUP"),
    ("keepalived-notify", ("tap0", "INSTANCE", "VI_3", "FAULT", "0"), "3@tap0 BACKUP"),
    ("keepalived-notify", ("tap0", "INSTANCE", "web_2", "STOP", "0"), "2@tap0 BACKUP"),
])
def test_maps_to_carp_event(bindir: Path, hook: str, args: tuple[str, ...], want: str) -> None:
    assert run(bindir, hook, *args) == (0, want)


@pytest.mark.parametrize(("hook", "args"), [
    ("ucarp-up", ("tap0", "192.0.2.254")),            # no --xparam
    ("ucarp-down", ("tap0", "192.0.2.254", "x1")),
    ("keepalived-notify", ("tap0", "INSTANCE", "VI_", "MASTER", "1")),
    ("keepalived-notify", ("tap0", "INSTANCE", "VI_1", "WEIRD", "1")),
    ("keepalived-notify", ("tap0", "INSTANCE")),
])
def test_bad_arguments_exit_2(bindir: Path, hook: str, args: tuple[str, ...]) -> None:
    assert run(bindir, hook, *args)[0] == 2


def test_group_events_ignored(bindir: Path) -> None:
    assert run(bindir, "keepalived-notify", "tap0", "GROUP", "G1", "MASTER", "1") == (0, "")


def test_rendered_path_wins(bindir: Path, tmp_path: Path) -> None:
    text = (HOOKS / "ucarp-up").read_text().replace("@CARPHOOKS_BINDIR@", str(bindir))
    script = tmp_path / "rendered-up"
    script.write_text(text)
    script.chmod(0o755)
    p = subprocess.run([str(script), "tap0", "v", "1"], env={"PATH": "/usr/bin:/bin",
                       "CARPHOOKS_BINDIR": "/nonexistent"}, capture_output=True, text=True)
    assert (p.returncode, p.stdout.strip()) == (0, "1@tap0 MASTER")
    assert os.access(HOOKS / "ucarp-up", os.X_OK)
