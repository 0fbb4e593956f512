"""The one place where carphooks runs external commands (``subprocess``, no shell).

Argv lists only, never a shell. The hooks run as root, so the runner:

- finds programs only in trusted directories: absolute ``PATH`` entries (plus the
  system directories devd's environment lacks) that, like every directory above
  them, belong to root (or us) and are not writable by group or others; a relative,
  missing or writable entry is skipped, and so is a program that is itself writable;
- gives commands a clean environment: ``PATH`` (trusted entries only) and
  ``LC_ALL=C``, nothing else. FreeBSD's ifconfig reads ``IFCONFIG_FORMAT``
  (``addr:host`` prints host names, ``inet:cidr`` changes the mask format), rtld
  reads ``LD_*`` (``LD_TRACE_LOADED_OBJECTS`` lists libraries and exits 0 without
  running the program), jemalloc reads ``MALLOC_CONF``; none of them may reach a
  command. ``CARPHOOKS_PASSENV`` (colon-separated names) passes more, for test
  harnesses and wrappers;
- runs each command in its own process group and kills the whole group when the
  command times out or the hook is interrupted, so nothing it started outlives it;
- bounds each command (``timeout``) and, when given a ``deadline``, the whole hook
  (:func:`hook_budget`): each command gets ``min(timeout, time left)``;
- logs each command (secrets redacted) and, with ``dry_run``, prints mutating
  commands instead of running them.

:func:`install_interrupt_handlers` makes SIGTERM, SIGINT and SIGHUP raise
:class:`~carphooks.errors.Interrupted` in the main thread; a command running at that
moment is killed (its process group) before the exception leaves :meth:`Runner.run`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

from carphooks.errors import CommandError, Interrupted

EXTRA_PATH = ("/sbin", "/bin", "/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")
SECRET_FLAGS = frozenset({"pass"})
REDACTED = "********"
PASSENV = "CARPHOOKS_PASSENV"
HOOK_BUDGET = 30.0  # seconds for all commands of one hook or command (see Runner.deadline)
PER_ADDRESS = 0.2  # more seconds per floating address in the config (one change each)
INTERRUPT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def search_path(environ_path: str | None = None) -> str:
    """``$PATH`` with the system directories appended (devd lacks /usr/local)."""
    parts = [p for p in (environ_path if environ_path is not None
                         else os.environ.get("PATH", "")).split(os.pathsep) if p]
    for extra in EXTRA_PATH:
        if extra not in parts:
            parts.append(extra)
    return os.pathsep.join(parts)


def _ancestors(path: str) -> list[str]:
    """``path`` and every directory above it, lexically."""
    out = [path]
    while True:
        parent = os.path.dirname(out[-1])
        if parent == out[-1]:
            return out
        out.append(parent)


def _owner_problem(st: os.stat_result) -> str | None:
    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid}"
    return None


def _write_problem(st: os.stat_result) -> str | None:
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def untrusted_dir(directory: str, checked: dict[str, str | None] | None = None) -> str | None:
    """Why ``directory`` must not be searched for programs run as root, or None.

    It must be absolute, exist, and it and every directory above it (both as
    written and after resolving links) must belong to root or us and not be
    writable by group or others; a root-owned sticky directory (``/tmp``) is
    accepted above it, since others cannot rename what is not theirs there.
    ``checked`` caches the verdict on directories above (PATH entries share them).
    """
    if not os.path.isabs(directory):
        return "relative entry"
    directory = os.path.normpath(directory)
    real = os.path.realpath(directory)
    checked = {} if checked is None else checked
    for path in dict.fromkeys([*_ancestors(directory), *_ancestors(real)]):
        if path in (directory, real):
            problem = _dir_problem(path, leaf=True)
        elif path in checked:
            problem = checked[path]
        else:
            problem = checked[path] = _dir_problem(path, leaf=False)
        if problem is not None:
            return problem
    return None


def _dir_problem(path: str, leaf: bool) -> str | None:
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path}: not a directory"
    problem = _owner_problem(st) or _write_problem(st)
    if problem is None:
        return None
    if not leaf and st.st_mode & stat.S_ISVTX and st.st_uid == 0:
        return None  # a root-owned sticky directory above: others cannot rename ours
    return f"{path}: {problem}"


def untrusted_program(path: str) -> str | None:
    """Why the file ``path`` (in a trusted directory) must not be run as root, or None."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if not os.access(path, os.X_OK):
        return "not executable"
    problem = _owner_problem(st) or _write_problem(st)
    if problem is not None:
        return problem
    real = os.path.realpath(path)
    if real != path:  # a link: its target's directory must be trusted as well
        return untrusted_dir(os.path.dirname(real))
    return None


def command_environment(environ: Mapping[str, str], path: str) -> dict[str, str]:
    """The whole environment of a command: PATH, LC_ALL=C and ``$CARPHOOKS_PASSENV``."""
    env = {"PATH": path, "LC_ALL": "C"}
    for name in environ.get(PASSENV, "").split(":"):
        if name and name not in env and name in environ:
            env[name] = environ[name]
    return env


def hook_budget(addresses: int) -> float:
    """Seconds all commands of one hook may take together: 30 s plus 0.2 s per floating
    address (a real ifconfig takes milliseconds; this only stops hung commands from
    adding up, 10 s each, while the hook holds the lock)."""
    return HOOK_BUDGET + PER_ADDRESS * addresses


def redact(argv: Sequence[str]) -> list[str]:
    """argv with the value after ``pass`` hidden."""
    out: list[str] = []
    hide = False
    for arg in argv:
        out.append(REDACTED if hide else arg)
        hide = arg in SECRET_FLAGS
    return out


# -- interruption ------------------------------------------------------------------------

class _Interrupts:
    """Process-wide: the signal received, and how many spawns are shielded from it."""

    received: int | None = None
    shield = 0


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _Interrupts.received is not None:
        return  # already stopping: let the clean-up run undisturbed
    _Interrupts.received = signum
    if _Interrupts.shield == 0:
        raise Interrupted(signum)


def install_interrupt_handlers() -> None:
    """SIGTERM, SIGINT and SIGHUP raise Interrupted (main thread only)."""
    for sig in INTERRUPT_SIGNALS:
        signal.signal(sig, _on_signal)


def interrupted() -> int | None:
    """The interrupting signal, once one arrived."""
    return _Interrupts.received


def _raise_if_interrupted() -> None:
    """No command starts, and none is waited for, once a signal arrived."""
    if _Interrupts.received is not None:
        raise Interrupted(_Interrupts.received)


@contextlib.contextmanager
def _shielded() -> Iterator[None]:
    """Hold a signal back while a child is being started (the caller raises it after)."""
    _Interrupts.shield += 1
    try:
        yield
    finally:
        _Interrupts.shield -= 1


@dataclass(frozen=True)
class Result:
    """What a command printed and how it exited."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Runner:
    """Runs argv lists (never through a shell); tests swap PATH, not this class."""

    def __init__(self, *, dry_run: bool = False, timeout: float = 10.0,
                 echo: Callable[[str], None] | None = None,
                 trace: Callable[[str], None] | None = None,
                 deadline: float | None = None) -> None:
        self.dry_run = dry_run
        self.timeout = timeout
        self.deadline = deadline  # time.monotonic() after which no command may run
        self.echo = echo or print
        self.trace = trace
        self.path = search_path()
        self.count = 0  # commands actually run (for benchmarks and guards)
        self._found: dict[str, str] = {}
        self._dirs: list[str] | None = None
        self.skipped: dict[str, str] = {}  # PATH entries and programs refused, and why

    def trusted_dirs(self) -> list[str]:
        """The PATH entries that are safe to search (computed once)."""
        if self._dirs is None:
            self._dirs = []
            checked: dict[str, str | None] = {}
            for entry in dict.fromkeys(self.path.split(os.pathsep)):
                problem = untrusted_dir(entry, checked)
                if problem is None:
                    self._dirs.append(entry)
                else:
                    self.skipped[entry] = problem
        return self._dirs

    def which(self, program: str) -> str | None:
        """Absolute path of ``program`` in a trusted PATH directory."""
        if program not in self._found:
            if "/" in program:
                candidates = [program] if untrusted_dir(os.path.dirname(program)) is None \
                    else []
            else:
                candidates = [os.path.join(d, program) for d in self.trusted_dirs()]
            for candidate in candidates:
                problem = untrusted_program(candidate)
                if problem is None:
                    self._found[program] = candidate
                    break
                if os.path.lexists(candidate):
                    self.skipped[candidate] = problem
            else:
                return None
        return self._found[program]

    def limit(self, timeout: float | None = None) -> float:
        """Seconds the next command may take: its timeout, capped by the deadline."""
        limit = timeout or self.timeout
        if self.deadline is not None:
            limit = min(limit, self.deadline - time.monotonic())
        return limit

    def run(self, argv: Sequence[str], *, mutating: bool, stdin: str | None = None,
            check: bool = True, timeout: float | None = None) -> Result:
        """Run ``argv``; raise CommandError on failure when ``check``."""
        argv = [str(a) for a in argv]
        shown = " ".join(redact(argv))
        if mutating and self.dry_run:
            self.echo(shown if stdin is None else f"{shown} <<EOF\n{stdin}EOF")
            return Result(tuple(argv), 0, "", "")
        _raise_if_interrupted()
        program = self.which(argv[0])
        if program is None:
            raise CommandError(redact(argv), 127, self._not_found(argv[0]))
        limit = self.limit(timeout)
        if limit <= 0:
            raise CommandError(redact(argv), 124, "not run: the time limit of the whole "
                               "hook was reached")
        if self.trace is not None:
            self.trace(f"run: {shown}")
        import subprocess  # deferred: only hooks that run a command pay for the import

        self.count += 1
        env = command_environment(os.environ, os.pathsep.join(self.trusted_dirs()))
        expired = threading.Event()
        # The child gets its own session (so its own process group): a timeout or an
        # interruption kills everything it started. A signal arriving while we fork is
        # held back until the child's pid is known, then raised here.
        with _shielded():
            try:
                proc = subprocess.Popen(
                    [program, *argv[1:]], env=env, close_fds=True,
                    start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE)
            except OSError as exc:
                raise CommandError(redact(argv), 126, str(exc)) from None

            def expire() -> None:
                expired.set()
                _kill_group(proc.pid)

            # A timer kills the command at the limit while we read its output: a poll
            # loop would add its step to every command.
            timer = threading.Timer(limit, expire)
            timer.daemon = True
            timer.start()
        try:
            _raise_if_interrupted()  # a signal held back while we forked
            out, err = proc.communicate(None if stdin is None else stdin.encode())
        except BaseException as exc:  # Interrupted, or anything else: leave no child
            _kill_group(proc.pid)
            with contextlib.suppress(Exception):
                proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
            if isinstance(exc, Interrupted):
                exc.killed = shown
            raise
        finally:
            timer.cancel()
        if expired.is_set():
            raise CommandError(redact(argv), 124, f"timed out after {limit:g} s")
        if proc.returncode < 0:
            raise CommandError(redact(argv), 128 - proc.returncode,
                               f"killed by signal {-proc.returncode}")
        result = Result(tuple(argv), proc.returncode, _text(out), _text(err))
        if check and result.returncode != 0:
            raise CommandError(redact(argv), result.returncode, result.stderr or result.stdout)
        return result

    def _not_found(self, program: str) -> str:
        dirs = os.pathsep.join(self.trusted_dirs()) or "(none)"
        skipped = [f"{path} ({why})" for path, why in self.skipped.items()
                   if os.path.basename(path) == program
                   or os.path.lexists(os.path.join(path, program))]
        text = f"{program}: command not found in the trusted PATH {dirs}"
        return text + (f"; skipped {', '.join(skipped)}" if skipped else "")


def _kill_group(pgid: int) -> None:
    """SIGKILL the process group the runner started (gone already is fine)."""
    with contextlib.suppress(OSError):
        os.killpg(pgid, signal.SIGKILL)


def _text(data: object) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data or "")
