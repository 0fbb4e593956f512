"""The one place where carphooks runs external commands (built on ``sh``).

Argv lists only, never a shell. The runner finds the program on ``PATH`` plus the
system directories devd's environment lacks, bounds it with a timeout, logs it
(secrets redacted) and, with ``dry_run``, prints mutating commands instead of
running them.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from carphooks.errors import CommandError

EXTRA_PATH = ("/sbin", "/bin", "/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")
SECRET_FLAGS = frozenset({"pass"})
REDACTED = "********"
# Every exit status, and death by signal, is reported by us rather than raised by sh.
OK_CODES = [*range(256), *(-sig for sig in range(1, 65))]


def search_path(environ_path: str | None = None) -> str:
    """``$PATH`` with the system directories appended (devd lacks /usr/local)."""
    parts = [p for p in (environ_path if environ_path is not None
                         else os.environ.get("PATH", "")).split(os.pathsep) if p]
    for extra in EXTRA_PATH:
        if extra not in parts:
            parts.append(extra)
    return os.pathsep.join(parts)


def redact(argv: Sequence[str]) -> list[str]:
    """argv with the value after ``pass`` hidden."""
    out: list[str] = []
    hide = False
    for arg in argv:
        out.append(REDACTED if hide else arg)
        hide = arg in SECRET_FLAGS
    return out


@dataclass(frozen=True)
class Result:
    """What a command printed and how it exited."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Runner:
    """Runs argv lists through ``sh``; tests swap PATH, not this class."""

    def __init__(self, *, dry_run: bool = False, timeout: float = 10.0,
                 echo: Callable[[str], None] | None = None,
                 trace: Callable[[str], None] | None = None) -> None:
        self.dry_run = dry_run
        self.timeout = timeout
        self.echo = echo or print
        self.trace = trace
        self.path = search_path()
        self.count = 0  # commands actually run (for benchmarks and guards)
        self._found: dict[str, str] = {}

    def which(self, program: str) -> str | None:
        """Absolute path of ``program`` on the runner's PATH."""
        if program not in self._found:
            if "/" in program:
                candidates = [program]
            else:
                candidates = [os.path.join(d, program) for d in self.path.split(os.pathsep)]
            for candidate in candidates:
                if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                    self._found[program] = candidate
                    break
            else:
                return None
        return self._found[program]

    @staticmethod
    def preload() -> None:
        """Import ``sh`` now (it takes tens of ms), e.g. while waiting on the network."""
        import sh  # noqa: F401

    def run(self, argv: Sequence[str], *, mutating: bool, stdin: str | None = None,
            check: bool = True, timeout: float | None = None) -> Result:
        """Run ``argv``; raise CommandError on failure when ``check``."""
        argv = [str(a) for a in argv]
        shown = " ".join(redact(argv))
        if mutating and self.dry_run:
            self.echo(shown if stdin is None else f"{shown} <<EOF\n{stdin}EOF")
            return Result(tuple(argv), 0, "", "")
        program = self.which(argv[0])
        if program is None:
            raise CommandError(redact(argv), 127, f"{argv[0]}: command not found on {self.path}")
        if self.trace is not None:
            self.trace(f"run: {shown}")
        import sh  # deferred: only hooks that run a command pay for the import

        self.count += 1
        env = dict(os.environ)
        env["PATH"] = self.path
        env["LC_ALL"] = "C"
        limit = timeout or self.timeout
        # A timer kills the command at the limit while we block in wait(): sh's own
        # _timeout (and wait(timeout=...)) poll in 0.1 s steps, which added ~100 ms to
        # every command, and wait(timeout=...) may return before the output is read.
        try:
            proc = sh.Command(program)(
                *argv[1:], _in=stdin, _env=env, _ok_code=OK_CODES, _bg=True,
                _tty_out=False, _tty_in=False, _return_cmd=True, _decode_errors="replace",
            )
        except OSError as exc:
            raise CommandError(redact(argv), 126, str(exc)) from None
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            with contextlib.suppress(OSError):
                proc.kill()

        timer = threading.Timer(limit, expire)
        timer.daemon = True
        timer.start()
        try:
            proc.wait()
        finally:
            timer.cancel()
        if expired.is_set():
            raise CommandError(redact(argv), 124, f"timed out after {limit:g} s")
        if proc.exit_code < 0:
            raise CommandError(redact(argv), 128 - proc.exit_code,
                               f"killed by signal {-proc.exit_code}")
        result = Result(tuple(argv), int(proc.exit_code), str(proc), _text(proc.stderr))
        if check and result.returncode != 0:
            raise CommandError(redact(argv), result.returncode, result.stderr or result.stdout)
        return result


def _text(data: object) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data or "")
