"""The state directory: one lock, atomic JSON files, validated on every read.

Files (all 0600 in a 0700 directory):

- ``lock``: held with ``flock`` across read-decide-act.
- ``peers.json``: tinc peers reachable now (host-up/host-down).
- ``carp-VHID@IF.json``: the last CARP state an event reported (the CARP state on Linux).
- ``last-event.json``: the last event handled, for status/monitoring.
- ``maintenance.json``: maintenance flag.
- ``demotion.json``: exactly what carphooks added to ``net.inet.carp.demotion``, by reason.
- ``self.json``: this host's tinc node name, as tinc-up saw it.
- ``probe-GROUP.json``: a detached ARP prober is running for GROUP (until a deadline).
- ``dad.json``: IPv6 addresses re-added after failed DAD, and when (carphooks/dad.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carphooks.errors import LockTimeout, StateError

FILE_MODE = 0o600
DIR_MODE = 0o700
MAX_STATE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Peers:
    """Reachable tinc peers and when that was last written."""

    reachable: frozenset[str]
    tinc_up: bool
    updated: float


@dataclass(frozen=True)
class Maintenance:
    """The persistent maintenance flag."""

    on: bool
    since: float


class StateDir:
    """Access to carphooks' state directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    # -- directory and lock -------------------------------------------------
    def ensure(self) -> None:
        """Create the directory 0700 (and tighten a looser existing one we own)."""
        try:
            self.path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            st = self.path.stat()
        except OSError as exc:
            raise StateError(f"state_dir {self.path}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise StateError(f"state_dir {self.path}: not a directory")
        if st.st_uid not in (0, os.geteuid()):
            raise StateError(f"state_dir {self.path}: owned by uid {st.st_uid}, not root")
        if stat.S_IMODE(st.st_mode) != DIR_MODE:
            os.chmod(self.path, DIR_MODE)

    @contextlib.contextmanager
    def lock(self, timeout: float) -> Iterator[None]:
        """Hold the exclusive state lock; raise LockTimeout after ``timeout`` seconds."""
        self.ensure()
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            deadline = time.monotonic() + timeout
            delay = 0.002
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
                    if time.monotonic() >= deadline:
                        raise LockTimeout(
                            f"lock {self.path / 'lock'} not acquired within {timeout:g} s"
                        ) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    # -- generic JSON files ------------------------------------------------------
    def write(self, name: str, data: Mapping[str, Any]) -> None:
        """Write ``name`` atomically (temp file, fsync, rename), mode 0600."""
        self.ensure()
        final = self.path / name
        tmp = self.path / f".{name}.{os.getpid()}.tmp"
        payload = json.dumps(data, sort_keys=True).encode() + b"\n"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)

    def read(self, name: str) -> dict[str, Any] | None:
        """Read ``name``; None when absent; StateError when corrupt or unsafe."""
        path = self.path / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"state file {path}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise StateError(f"state file {path}: not a regular file")
            if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or st.st_uid not in (0, os.geteuid()):
                raise StateError(f"state file {path}: writable by others or not ours")
            raw = os.read(fd, MAX_STATE_BYTES + 1)
        finally:
            os.close(fd)
        if len(raw) > MAX_STATE_BYTES:
            raise StateError(f"state file {path}: larger than {MAX_STATE_BYTES} bytes")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise StateError(f"state file {path}: not valid JSON") from None
        if not isinstance(data, dict):
            raise StateError(f"state file {path}: not a JSON object")
        return data

    def remove(self, name: str) -> None:
        """Remove ``name`` if present."""
        with contextlib.suppress(FileNotFoundError):
            (self.path / name).unlink()

    # -- typed files -------------------------------------------------------------
    def peers(self, known: tuple[str, ...]) -> Peers:
        """Reachable peers; unknown names are dropped (they never count for quorum)."""
        data = self.read("peers.json")
        if data is None:
            return Peers(reachable=frozenset(), tinc_up=False, updated=0.0)
        reachable = data.get("reachable")
        tinc_up = data.get("tinc_up")
        updated = data.get("updated")
        if (not isinstance(reachable, list) or not all(isinstance(n, str) for n in reachable)
                or not isinstance(tinc_up, bool) or not isinstance(updated, int | float)):
            raise StateError(f"state file {self.path / 'peers.json'}: unexpected content")
        return Peers(reachable=frozenset(n for n in reachable if n in known),
                     tinc_up=tinc_up, updated=float(updated))

    def write_peers(self, reachable: frozenset[str], tinc_up: bool) -> None:
        """Record reachable peers."""
        self.write("peers.json", {"reachable": sorted(reachable), "tinc_up": tinc_up,
                                  "updated": time.time()})

    def carp_state(self, subsystem: str) -> tuple[str, float] | None:
        """The last recorded CARP state of ``subsystem`` and its time."""
        data = self.read(f"carp-{subsystem}.json")
        if data is None:
            return None
        state = data.get("state")
        when = data.get("time")
        if state not in ("MASTER", "BACKUP", "INIT") or not isinstance(when, int | float):
            raise StateError(f"state file {self.path / f'carp-{subsystem}.json'}: "
                             "unexpected content")
        return str(state), float(when)

    def write_carp_state(self, subsystem: str, state: str) -> None:
        """Record the CARP state an event reported."""
        self.write(f"carp-{subsystem}.json", {"state": state, "time": time.time()})

    def last_event(self) -> dict[str, Any] | None:
        """The last event handled (free-form, for display)."""
        return self.read("last-event.json")

    def write_last_event(self, source: str, detail: str) -> None:
        """Record the last event handled."""
        self.write("last-event.json", {"source": source, "detail": detail, "time": time.time()})

    def maintenance(self) -> Maintenance:
        """The maintenance flag (off when absent)."""
        data = self.read("maintenance.json")
        if data is None:
            return Maintenance(on=False, since=0.0)
        on = data.get("on")
        since = data.get("since")
        if not isinstance(on, bool) or not isinstance(since, int | float):
            raise StateError(f"state file {self.path / 'maintenance.json'}: unexpected content")
        return Maintenance(on=on, since=float(since))

    def write_maintenance(self, on: bool) -> None:
        """Persist the maintenance flag."""
        self.write("maintenance.json", {"on": on, "since": time.time()})

    def demotion(self) -> dict[str, int]:
        """What carphooks added to the kernel's demotion, by reason."""
        data = self.read("demotion.json")
        if data is None:
            return {}
        added = data.get("added")
        if not isinstance(added, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            and 0 <= v <= 10_000 for k, v in added.items()
        ):
            raise StateError(f"state file {self.path / 'demotion.json'}: unexpected content")
        return dict(added)

    def write_demotion(self, added: Mapping[str, int]) -> None:
        """Record what carphooks added to the kernel's demotion."""
        self.write("demotion.json", {"added": dict(added), "time": time.time()})
