"""The Linux backend's CARP state is the last event any hook recorded (ucarp/keepalived
adapters): a long-lived detached child (the ARP prober, up to 30 s) must see an event
that another hook process recorded after it was forked, not the one its parent saw."""

from __future__ import annotations

from pathlib import Path

import pytest

from carphooks.backends.base import CarpState
from carphooks.backends.linux import LinuxBackend
from carphooks.errors import StateError
from carphooks.runner import Runner
from carphooks.state import StateDir

from .conftest import CLUSTER, load_config


def backend(state: Path, *, dry_run: bool = False) -> LinuxBackend:
    return LinuxBackend(Runner(dry_run=dry_run), StateDir(state, dry_run=dry_run))


def test_a_later_event_recorded_by_another_hook_wins(tmp_path: Path) -> None:
    group = load_config(tmp_path / "c.toml", CLUSTER.format(
        state=tmp_path / "state", quorum="none", extra="")).groups[0]
    prober = backend(tmp_path / "state")  # the MASTER hook, later its detached prober
    prober.record_event(group.subsystem, CarpState.MASTER)
    assert prober.carp_state(group, None) is CarpState.MASTER
    backend(tmp_path / "state").record_event(group.subsystem, CarpState.BACKUP)  # next hook
    assert prober.carp_state(group, None) is CarpState.BACKUP


def test_an_unrecorded_event_is_still_acted_on_by_its_own_process(tmp_path: Path) -> None:
    group = load_config(tmp_path / "c.toml", CLUSTER.format(
        state=tmp_path / "state", quorum="none", extra="")).groups[0]
    dry = backend(tmp_path / "state", dry_run=True)
    dry.record_event(group.subsystem, CarpState.MASTER)
    assert dry.carp_state(group, None) is CarpState.MASTER
    assert not (tmp_path / "state").exists()  # a dry run records nothing
    (tmp_path / "state").write_text("not a directory")
    broken = backend(tmp_path / "state")
    with pytest.raises(StateError):
        broken.record_event(group.subsystem, CarpState.BACKUP)
    assert broken.carp_state(group, None) is CarpState.BACKUP
