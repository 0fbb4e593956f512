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
- ``dad.json``: IPv6 addresses re-added after failed DAD, and when (carphooks/runtime/dad.py).
- ``pending-*.json``: a hook event that timed out on the lock, left for the lock holder.
- ``checks.json``: each health check's state as ``carphooks watch`` last saw it.

Trust (the hooks run as root): the directory is carphooks' own. It is created 0700 when
absent; an existing one is used only when it is a real directory (not a link), owned by
this user and closed to group and others, and it is never chmod-ed. Every file is
reached through a descriptor of that checked directory, never through a link, opened
non-blocking, and used only when it is a small regular file owned by this user and
not writable by others. Files are written to a fresh exclusive temporary name and
renamed into place, so nothing outside the directory is ever written. With
``dry_run`` nothing is created or written at all.
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

from carphooks.errors import ExitCode, LockTimeout, StateError

FILE_MODE = 0o600
DIR_MODE = 0o700
MAX_STATE_BYTES = 64 * 1024
LOCK_NAME = "lock"
PENDING_PREFIX = "pending-"
TMP_ATTEMPTS = 8

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


class UnsafeStateDir(StateError):
    """``state_dir`` is not carphooks' own private directory (exit 6, like a bad config)."""

    code = ExitCode.CONFIG


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


@dataclass(frozen=True)
class CheckRecord:
    """The health check states ``carphooks watch`` recorded (raw, by check name), when,
    and by which process."""

    checks: dict[str, dict[str, Any]]
    updated: float
    pid: int


@dataclass
class Held:
    """The held state lock; ``fd`` None when there is nothing to lock (dry run, no state).

    ``writable`` is false when the lock file could only be opened read-only (read-only
    file system, full disk): nothing can be recorded under this lock."""

    fd: int | None
    writable: bool = True

    def release(self) -> None:
        """Let go (closing the descriptor drops the flock)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def kind(mode: int) -> str:
    """What a file is, in words."""
    for test, word in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISREG, "a regular file")):
        if test(mode):
            return word
    return "not a regular file"


def file_problem(st: os.stat_result, limit: int = MAX_STATE_BYTES) -> str | None:
    """Why a state file must not be trusted, or None."""
    if not stat.S_ISREG(st.st_mode):
        return f"is {kind(st.st_mode)}, not a regular file"
    if st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}, not {os.geteuid()}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    if st.st_size > limit:
        return f"is larger than {limit} bytes"
    return None


def dir_problem(st: os.stat_result) -> str | None:
    """Why an existing directory is not carphooks' private state directory, or None."""
    if not stat.S_ISDIR(st.st_mode):
        return f"is {kind(st.st_mode)}, not a directory"
    if st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}, not {os.geteuid()}"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return (f"has mode {mode:04o}, open to group or others: carphooks keeps its state "
                "in a 0700 directory of its own and takes over no other (name a new path; "
                "carphooks creates it)")
    return None


def read_regular(path: Path, limit: int = MAX_STATE_BYTES,
                 dir_fd: int | None = None) -> bytes | None:
    """Read a small regular file without following a link or blocking on a FIFO.

    None when absent; StateError naming the problem when it is anything else than a
    regular file of ours, not writable by others, of at most ``limit`` bytes.
    """
    where = path if dir_fd is None else path.name
    try:
        before = os.stat(where, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"state file {path}: {exc.strerror}") from None
    problem = file_problem(before, limit)
    if problem:  # never open a FIFO, device or socket: opening alone can block or act
        raise StateError(f"state file {path} {problem}")
    try:
        fd = os.open(where, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"state file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        problem = file_problem(st, limit)
        if problem is None and (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            problem = "changed while being opened"
        if problem:
            raise StateError(f"state file {path} {problem}")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise StateError(f"state file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise StateError(f"state file {path} is larger than {limit} bytes")
    return b"".join(chunks)


def replace_file(directory: Path, name: str, payload: bytes, mode: int = FILE_MODE,
                 dir_fd: int | None = None) -> None:
    """Write ``directory/name`` atomically: a fresh exclusive temporary file, then rename.

    The temporary name is created with O_EXCL|O_NOFOLLOW (a planted link or file there
    makes it fail, never write elsewhere), and rename replaces a link at ``name`` rather
    than following it.
    """
    final = directory / name
    if dir_fd is None:
        try:
            dfd = os.open(directory, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
        except OSError as exc:
            raise StateError(f"cannot write {final}: {directory}: {exc.strerror}") from None
    else:
        dfd = dir_fd
    try:
        for attempt in range(TMP_ATTEMPTS):  # like mkstemp: a new name if one is taken
            tmp = f".{name}.{os.urandom(6).hex()}.tmp"  # secrets.token_hex(6), minus its imports
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC,
                             mode, dir_fd=dfd)
                break
            except FileExistsError:
                if attempt + 1 == TMP_ATTEMPTS:
                    raise StateError(f"cannot write {final}: every temporary name was "
                                     "taken") from None
            except OSError as exc:
                raise StateError(f"cannot write {final}: {exc.strerror}") from None
        try:
            try:
                os.fchmod(fd, mode)  # exactly ``mode``, whatever the umask
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise StateError(f"cannot write {final}: {exc.strerror}") from None
    finally:
        if dir_fd is None:
            os.close(dfd)


class StateDir:
    """Access to carphooks' state directory."""

    def __init__(self, path: Path, *, dry_run: bool = False) -> None:
        self.path = path
        self.dry_run = dry_run

    # -- directory ----------------------------------------------------------------
    def _open_dir(self, create: bool) -> int | None:
        """A descriptor of the checked directory; None when it does not exist (and
        ``create`` is false or this is a dry run). Raises UnsafeStateDir."""
        created = False
        if create and not self.dry_run:
            try:
                os.mkdir(self.path, DIR_MODE)
                created = True
            except FileExistsError:
                pass
            except OSError as exc:
                raise StateError(f"state_dir {self.path}: cannot create it: "
                                 f"{exc.strerror}") from None
        try:
            fd = os.open(self.path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC)
        except FileNotFoundError:
            if created:
                raise StateError(f"state_dir {self.path}: vanished after mkdir") from None
            return None
        except OSError as exc:
            try:
                mode = os.lstat(self.path).st_mode
            except OSError:
                mode = stat.S_IFDIR
            if stat.S_ISDIR(mode):
                raise StateError(f"state_dir {self.path}: {exc.strerror}") from None
            raise UnsafeStateDir(f"state_dir {self.path} is {kind(mode)}, not a directory "
                                 "(carphooks follows no links)") from None
        try:
            st = os.fstat(fd)
            problem = dir_problem(st)
            if problem:
                raise UnsafeStateDir(f"state_dir {self.path} {problem}")
            if created and stat.S_IMODE(st.st_mode) != DIR_MODE:
                os.fchmod(fd, DIR_MODE)  # only the directory made just now, umask aside
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def _dir(self, create: bool) -> Iterator[int | None]:
        fd = self._open_dir(create)
        try:
            yield fd
        finally:
            if fd is not None:
                os.close(fd)

    def ensure(self) -> None:
        """Create the directory 0700 if absent; check an existing one (never chmod it)."""
        with self._dir(create=True):
            pass

    # -- lock ---------------------------------------------------------------------
    def _open_lock(self, dfd: int) -> tuple[int, bool] | None:
        """Open (creating unless dry run) the lock file: its descriptor and whether the
        directory takes writes; None when absent in a dry run."""
        path = self.path / LOCK_NAME
        try:
            problem = file_problem(os.stat(LOCK_NAME, dir_fd=dfd, follow_symlinks=False))
        except FileNotFoundError:
            problem = None
        except OSError as exc:
            problem = f"cannot be checked: {exc.strerror}"
        if problem:  # never open a link, FIFO, device or socket
            raise StateError(f"lock {path} {problem}")
        flags = _NOFOLLOW | _NONBLOCK | _CLOEXEC
        writable = True
        try:
            if self.dry_run:
                fd = os.open(LOCK_NAME, os.O_RDONLY | flags, dir_fd=dfd)
            else:
                try:
                    fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | flags, FILE_MODE,
                                 dir_fd=dfd)
                except OSError as exc:
                    if exc.errno not in (errno.EROFS, errno.EACCES, errno.ENOSPC,
                                         errno.EDQUOT):
                        raise
                    # read-only or full: an existing lock still locks (flock needs no write)
                    fd = os.open(LOCK_NAME, os.O_RDONLY | flags, dir_fd=dfd)
                    writable = False
        except FileNotFoundError:
            if self.dry_run:
                return None
            raise StateError(f"lock {path} cannot be created") from None
        except OSError as exc:
            raise StateError(f"lock {path} cannot be opened: {exc.strerror}") from None
        problem = file_problem(os.fstat(fd))
        if problem:
            os.close(fd)
            raise StateError(f"lock {path} {problem}")
        return fd, writable

    def acquire(self, timeout: float) -> Held:
        """Take the exclusive state lock, waiting at most ``timeout`` seconds (0: try once).

        Raises LockTimeout when another process holds it, StateError when the lock file
        cannot be used (the caller decides whether to go on without it). In a dry run
        nothing is created: without a state directory or lock file there is nothing to lock.
        """
        with self._dir(create=True) as dfd:
            if dfd is None:
                return Held(None)
            opened = self._open_lock(dfd)
        if opened is None:
            return Held(None)
        fd, writable = opened
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return Held(fd, writable)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise StateError(f"lock {self.path / LOCK_NAME}: {exc.strerror}") from None
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockTimeout(f"lock {self.path / LOCK_NAME} not acquired within "
                                      f"{timeout:g} s") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)

    @contextlib.contextmanager
    def lock(self, timeout: float) -> Iterator[None]:
        """Hold the exclusive state lock; raise LockTimeout after ``timeout`` seconds."""
        held = self.acquire(timeout)
        try:
            yield
        finally:
            held.release()

    # -- generic JSON files ------------------------------------------------------
    def write(self, name: str, data: Mapping[str, Any]) -> None:
        """Write ``name`` atomically, mode 0600 (nothing in a dry run); StateError on failure."""
        if self.dry_run:
            return
        payload = json.dumps(data, sort_keys=True).encode() + b"\n"
        with self._dir(create=True) as dfd:
            replace_file(self.path, name, payload, FILE_MODE, dir_fd=dfd)

    def read(self, name: str) -> dict[str, Any] | None:
        """Read ``name``; None when absent; StateError when corrupt or unsafe."""
        path = self.path / name
        with self._dir(create=False) as dfd:
            if dfd is None:
                return None
            raw = read_regular(path, MAX_STATE_BYTES, dir_fd=dfd)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise StateError(f"state file {path}: not valid JSON") from None
        if not isinstance(data, dict):
            raise StateError(f"state file {path}: not a JSON object")
        return data

    def remove(self, name: str) -> None:
        """Remove ``name`` if present (a link is removed, never followed); nothing in a dry run."""
        if self.dry_run:
            return
        with self._dir(create=False) as dfd:
            if dfd is None:
                return
            try:
                os.unlink(name, dir_fd=dfd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StateError(f"cannot remove {self.path / name}: {exc.strerror}") from None

    # -- events left for the lock holder -----------------------------------------------
    def add_pending(self, data: Mapping[str, Any]) -> str:
        """Leave an event for whoever holds the lock; its file name."""
        name = f"{PENDING_PREFIX}{time.time_ns():020d}-{os.getpid()}.json"
        self.write(name, data)
        return name

    def pending(self) -> list[str]:
        """Names of events left for the lock holder, oldest first."""
        with self._dir(create=False) as dfd:
            if dfd is None:
                return []
            try:
                names = os.listdir(dfd)
            except OSError as exc:
                raise StateError(f"state_dir {self.path}: {exc.strerror}") from None
        return sorted(n for n in names if n.startswith(PENDING_PREFIX) and n.endswith(".json"))

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

    # -- health checks (carphooks watch) -------------------------------------------------
    def check_record(self) -> CheckRecord | None:
        """The health check states the watch loop recorded; None when absent."""
        name = "checks.json"
        data = self.read(name)
        if data is None:
            return None
        checks = data.get("checks")
        updated = data.get("updated")
        pid = data.get("pid")
        if (not isinstance(checks, dict)
                or not all(isinstance(k, str) and isinstance(v, dict) for k, v in checks.items())
                or isinstance(updated, bool) or not isinstance(updated, int | float)
                or isinstance(pid, bool) or not isinstance(pid, int)):
            raise StateError(f"state file {self.path / name}: unexpected content")
        return CheckRecord(checks=checks, updated=float(updated), pid=pid)

    def write_check_record(self, checks: Mapping[str, Mapping[str, Any]]) -> None:
        """Record the health check states (by check name) of this watch loop."""
        self.write("checks.json", {"checks": {k: dict(v) for k, v in checks.items()},
                                   "updated": time.time(), "pid": os.getpid()})
