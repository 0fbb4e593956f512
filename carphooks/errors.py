"""Exit codes and the exceptions that carry them."""

from __future__ import annotations

import enum
import signal


class ExitCode(enum.IntEnum):
    """Documented exit codes of every carphooks command."""

    OK = 0
    FAILED = 1  # an operation failed (a command exited non-zero, verification failed)
    USAGE = 2  # bad arguments or environment
    CONFIG = 6  # bad config (also: unsafe file permissions)
    LOCKED = 7  # the state lock was not acquired in time
    # 128 + N: stopped by signal N (SIGHUP 129, SIGINT 130, SIGTERM 143); see Interrupted


class CarphooksError(Exception):
    """Base error; ``code`` is the exit code the CLI returns."""

    code: ExitCode = ExitCode.FAILED


def describe(exc: BaseException) -> str:
    """One line for an error: its own text for ours, "internal error: TYPE: text" for a
    surprise (never a traceback)."""
    if isinstance(exc, CarphooksError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"


class UsageError(CarphooksError):
    """Bad command-line arguments or environment."""

    code = ExitCode.USAGE


class ConfigError(CarphooksError):
    """Bad or unsafe configuration."""

    code = ExitCode.CONFIG


class LockTimeout(CarphooksError):
    """The state-dir lock could not be acquired in time."""

    code = ExitCode.LOCKED


class CommandError(CarphooksError):
    """An external command failed."""

    code = ExitCode.FAILED

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr.strip()
        first = self.stderr.splitlines()[0] if self.stderr else f"exit status {returncode}"
        super().__init__(f"{' '.join(argv)}: {first}")


class StateError(CarphooksError):
    """A state file is corrupt or unsafe; callers choose the safe side (release)."""

    code = ExitCode.FAILED


class Interrupted(BaseException):
    """SIGTERM, SIGINT or SIGHUP arrived: stop now (exit code 128 + signal number).

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` (or
    ``except CarphooksError``) on the way up can swallow it and carry on.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.killed: str | None = None  # the command that was running, redacted
        super().__init__(signum)

    @property
    def code(self) -> int:
        """The exit code: 128 + the signal number, as a shell reports it."""
        return 128 + self.signum

    @property
    def signame(self) -> str:
        """``SIGTERM`` etc."""
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    def __str__(self) -> str:
        what = f"killed '{self.killed}'" if self.killed else "no command was running"
        return f"interrupted by {self.signame} ({what}); stopped, the next event or " \
               "reconcile converges"
