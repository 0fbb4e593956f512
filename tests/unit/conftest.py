"""Fixtures of the unit tests: a Context built by hand around the recording fake runner.

Nothing here forks or runs a program: the detached announcer is recorded instead of
spawned, and every command goes to :class:`~unit.fakerunner.FakeRunner`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from carphooks import config as configmod
from carphooks.backends.freebsd import FreeBSDBackend
from carphooks.log import Log
from carphooks.runtime import detach
from carphooks.runtime.context import Context
from carphooks.runtime.dad import Repairs
from carphooks.runtime.engine import Engine
from carphooks.state import StateDir

from .fakerunner import FakeFreeBSD, FakeRunner

# One group on tap0 (CARP) / vtnet0 (floating), three voters, no ARP probe.
CLUSTER = """\
log_tag = "carphooks-unit"
backend = "freebsd"
state_dir = "{state}"
syslog_socket = "{state}.sock"
quorum = "{quorum}"
lock_timeout = 1

[tinc]
netname = "carp"
nodes = ["hA", "hB", "hC"]

[hosts.hA]
vpn_address = "192.0.2.11/24"
mac = "02:00:00:00:00:11"

[hosts.hB]
vpn_address = "192.0.2.12/24"

[hosts.hC]
vpn_address = "192.0.2.13/24"

[[group]]
name = "web"
vhid = 1
carp_interface = "tap0"
external_interface = "vtnet0"
addresses = ["203.0.113.10/24", "2001:db8:10::10/64"]
probe = false

[group.carp]
address = "192.0.2.254/24"
advbase = 1
password = "s3cret"
{extra}"""


def load_config(path: Path, text: str) -> configmod.Config:
    """Validate a TOML text as carphooks.toml at ``path`` (nothing read from disk)."""
    return configmod.parse(tomllib.loads(text), path=path, check_permissions=False)


class RecordingLog(Log):
    """A Log that keeps (severity, message) instead of sending to syslog."""

    def __init__(self) -> None:
        super().__init__("carphooks-unit", "/nonexistent", mirror=False, verbose=True)
        self.records: list[tuple[int, str]] = []

    def log(self, severity: int, message: str) -> None:
        self.records.append((severity, message))

    def texts(self) -> list[str]:
        return [m for _, m in self.records]


@dataclass
class Rig:
    """A hand-built Context and the fakes behind it."""

    ctx: Context
    runner: FakeRunner
    bsd: FakeFreeBSD
    log: RecordingLog
    state: Path
    spawned: list[Callable[[], None]]


def standard_host(release: str = "14.1") -> FakeFreeBSD:
    """hA: vtnet0 with its own 203.0.113.11/24; tap0 (VPN) with vhid 1 BACKUP."""
    bsd = FakeFreeBSD(release=release)
    bsd.add_interface("vtnet0", "58:9c:fc:00:00:01", addresses=["203.0.113.11/24"])
    bsd.add_interface("tap0", "02:00:00:00:00:11", tap=True, addresses=["192.0.2.11/24"])
    bsd.add_vhid("tap0", 1, "192.0.2.254/24", "BACKUP")
    return bsd


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[Callable[[], None]]:
    """The work actions hand to the detached announcer (recorded, never run)."""
    jobs: list[Callable[[], None]] = []
    monkeypatch.setattr(detach, "spawn", lambda work, log: jobs.append(work))
    return jobs


@pytest.fixture
def rig(tmp_path: Path, spawned: list[Callable[[], None]]) -> Iterator[Callable[..., Rig]]:
    """Build a Rig: ``rig(bsd=..., dry_run=..., quorum=..., extra=..., host=...)``."""

    def build(bsd: FakeFreeBSD | None = None, *, dry_run: bool = False,
              quorum: str = "none", extra: str = "", host: str | None = "hA",
              text: str | None = None, **_: Any) -> Rig:
        bsd = bsd if bsd is not None else standard_host()
        state = tmp_path / "state"
        body = text if text is not None else CLUSTER.format(state=state, quorum=quorum,
                                                            extra=extra)
        config = load_config(tmp_path / "carphooks.toml", body)
        log = RecordingLog()
        runner = FakeRunner(bsd, dry_run=dry_run)
        statedir = StateDir(config.state_dir, dry_run=dry_run)
        backend = FreeBSDBackend(runner, statedir)
        config = configmod.resolve_probe(config, backend.probe_problem())
        engine = Engine(backend, log, repairs=Repairs(statedir, log, dry_run=dry_run))
        ctx = Context(config=config, log=log, runner=runner, state=statedir, backend=backend,
                      engine=engine, host=host)
        return Rig(ctx, runner, bsd, log, state, spawned)

    yield build
