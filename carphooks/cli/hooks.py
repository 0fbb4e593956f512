"""Hook entry points without click on the hot path.

devd, tinc and ucarp wait for their hooks, so ``carp-event`` and the tinc scripts
parse their few options here and import click only for ``--help`` or a usage
error (``carphooks.cli.admin`` defines the same commands with click; both paths call the
same functions below). Exit codes: 0 ok, 1 failed, 2 usage, 6 config, 7 lock,
128 + N stopped by signal N (SIGHUP 129, SIGINT 130, SIGTERM 143).

Every entry point first calls :func:`prepare_process`: devd and cron may start it
with stdin, stdout or stderr closed, and a signal must stop it cleanly.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from carphooks import config as configmod
from carphooks import runner
from carphooks.errors import CarphooksError, ConfigError, ExitCode, Interrupted, UsageError
from carphooks.log import Log

if TYPE_CHECKING:  # the hot path imports the context lazily
    from carphooks.runtime.context import Context

DEFAULT_TAG = "carphooks"
_STDIO = ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w"))


def prepare_process() -> None:
    """Open /dev/null on closed fds 0-2 (before any other file can take them), then
    make SIGTERM, SIGINT and SIGHUP stop the process cleanly."""
    for fd, name, mode in _STDIO:
        try:
            os.fstat(fd)
        except OSError:
            new = os.open(os.devnull, os.O_RDWR)  # the lowest free fd: this one
            if new != fd:
                os.dup2(new, fd)
                os.close(new)
            setattr(sys, name, open(fd, mode, encoding="utf-8",
                                    errors="backslashreplace", closefd=False))
    runner.install_interrupt_handlers()


def _stdout_gone() -> None:
    """The reader of stdout went away (``| head``): drop further output, carry on."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def echo(line: str, nl: bool = True) -> None:
    """Print on stdout (click-free); a closed pipe never changes what the command does."""
    try:
        sys.stdout.write(line + ("\n" if nl else ""))
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_gone()


def _stderr(line: str) -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def check_host(host: str | None) -> str | None:
    """A --host value must be a tinc node name (UsageError otherwise)."""
    if host is not None and not configmod.NODE_RE.fullmatch(host):
        raise UsageError(f"bad host name {host!r}: expected a tinc node name "
                         "(letters, digits, _)")
    return host


def check_config_path(path: str | None) -> str | None:
    """``--config ''`` names no file (UsageError); None means the default."""
    if path is not None and not path:
        raise UsageError("empty path: name a config file")
    return path


class Options:
    """Global options shared by every command."""

    def __init__(self, config: str | None, verbose: bool, dry_run: bool,
                 host: str | None = None) -> None:
        self.config_path = configmod.locate(config)
        self.verbose = verbose
        self.dry_run = dry_run
        self.host = host
        self.started = time.monotonic()
        self._log: Log | None = None

    def fallback_log(self) -> Log:
        """A logger for errors before (or without) a valid config: best effort."""
        if self._log is None:
            try:
                cfg = configmod.load(self.config_path)
                self._log = Log(cfg.log_tag, cfg.syslog_socket, facility=cfg.syslog_facility,
                                verbose=self.verbose)
            except Exception:  # any broken config still gets its error logged
                self._log = Log(DEFAULT_TAG, configmod.default_syslog_socket(),
                                verbose=self.verbose)
        return self._log

    def context(self, extra_time: float = 0.0) -> Context:
        """Load the config and build the action context (ConfigError on problems).

        Every command it runs must finish within the hook budget (plus ``extra_time``
        seconds, e.g. a wait) of the start.
        """
        from carphooks.runtime.context import build_context

        cfg = configmod.load(self.config_path)
        log = Log(cfg.log_tag, cfg.syslog_socket, facility=cfg.syslog_facility,
                  verbose=self.verbose)
        self._log = log
        ctx = build_context(cfg, log, dry_run=self.dry_run, host=self.host,
                            echo=lambda line: echo(f"would run: {line}"))
        budget = runner.hook_budget(sum(len(g.addresses) for g in cfg.groups))
        ctx.runner.deadline = self.started + budget + extra_time
        return ctx


def _error_line(opts: Options | None, message: str, prog: str, *,
                config_broken: bool = False) -> None:
    """One line on stderr and in syslog."""
    if opts is None:
        opts = Options(None, False, False)
    log = opts._log if opts._log is not None else (
        Log(DEFAULT_TAG, configmod.default_syslog_socket(), mirror=False)
        if config_broken else opts.fallback_log())
    mirror = log.mirror
    log.mirror = False
    log.error(f"{prog}: {message}")
    log.mirror = mirror
    _stderr(f"{prog}: error: {message}")


def fail(opts: Options | None, exc: CarphooksError, prog: str) -> NoReturn:
    """One line on stderr and in syslog, then the documented exit code."""
    _error_line(opts, str(exc), prog, config_broken=isinstance(exc, ConfigError))
    sys.exit(int(exc.code))


def stop(opts: Options | None, exc: Interrupted, prog: str) -> NoReturn:
    """Interrupted by a signal: one line, exit 128 + N (the command was killed)."""
    _error_line(opts, str(exc), prog)
    sys.exit(exc.code)


def guarded(prog: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Turn CarphooksError, a signal (and any surprise) into one line and an exit code."""
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def inner(opts: Options, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(opts, *args, **kwargs)
            except CarphooksError as exc:
                fail(opts, exc, prog)
            except Interrupted as exc:
                stop(opts, exc, prog)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # never a traceback from a hook
                if type(exc).__module__.startswith("click") or opts.verbose:
                    raise
                fail(opts, internal_error(exc), prog)
        return inner
    return wrap


def internal_error(exc: BaseException) -> CarphooksError:
    """A surprise as one line (exit 1)."""
    return CarphooksError(f"internal error: {type(exc).__name__}: {exc}")


def top_level(prog: str, body: Callable[[], int]) -> NoReturn:
    """Run a console script's body: whatever escapes it is one line, never a traceback."""
    try:
        code = body()
    except CarphooksError as exc:
        fail(None, exc, prog)
    except Interrupted as exc:
        stop(None, exc, prog)
    except Exception as exc:
        if "-v" in sys.argv[1:] or "--verbose" in sys.argv[1:]:
            import traceback

            traceback.print_exc()
        fail(None, internal_error(exc), prog)
    sys.exit(code)


def print_outcomes(opts: Options, outcomes: Sequence[Any]) -> int:
    """Show what changed (dry-run or a terminal); the exit code for the outcomes."""
    from carphooks.runtime.actions import outcome_lines

    if opts.dry_run or sys.stdout.isatty():
        for line in outcome_lines(outcomes):
            echo(line)
    return int(ExitCode.FAILED) if any(o.errors for o in outcomes) else 0


# -- the hooks ------------------------------------------------------------------------

@guarded("carp-event")
def run_carp_event(opts: Options, subsystem: str, type_: str) -> int:
    """``carp-event SUBSYSTEM TYPE``."""
    from carphooks.runtime import actions, events

    event = events.parse_carp_event(subsystem, type_)
    ctx = opts.context()
    return print_outcomes(opts, actions.carp_event(ctx, event))


TINC_HOOKS = {
    "tinc-up": (False, "tinc_up"),
    "tinc-down": (False, "tinc_down"),
    "tinc-host-up": (True, "tinc_host_up"),
    "tinc-host-down": (True, "tinc_host_down"),
}


def run_tinc(opts: Options, name: str) -> int:
    """One of the tinc scripts, with tinc's environment."""
    return int(guarded(name)(_run_tinc)(opts, name))


def _run_tinc(opts: Options, name: str) -> int:
    from carphooks.runtime import actions, events

    need_node, func = TINC_HOOKS[name]
    env = events.parse_tinc_env(os.environ, need_node=need_node)
    ctx = opts.context()
    ctx.log.debug(f"{name}: {actions.env_snapshot(os.environ)}")
    result = getattr(actions, func)(ctx, env)
    if result and not isinstance(result[0], str):
        return print_outcomes(opts, result)
    if opts.dry_run or sys.stdout.isatty():
        for line in result or []:
            echo(line)
    return 0


# -- fast argv parsing -----------------------------------------------------------------

def quick_parse(argv: Sequence[str], npos: int) -> tuple[Options, list[str]] | None:
    """Parse ``[-v] [-n] [-c PATH] POS...``; None when click must handle it (help, errors)."""
    config: str | None = None
    verbose = dry_run = False
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            positional.extend(argv[i + 1:])
            break
        if arg in ("-v", "--verbose"):
            verbose = True
        elif arg in ("-n", "--dry-run"):
            dry_run = True
        elif arg in ("-c", "--config") and i + 1 < len(argv) and argv[i + 1]:
            config = argv[i + 1]
            i += 1
        elif arg.startswith("--config=") and arg != "--config=":
            config = arg.partition("=")[2]
        elif arg.startswith("-") and arg != "-":
            return None
        else:
            positional.append(arg)
        i += 1
    if len(positional) != npos:
        return None
    return Options(config, verbose, dry_run), positional


def carp_event_main(args: Sequence[str] | None = None) -> NoReturn:
    """Console script ``carp-event``."""
    prepare_process()
    argv = list(sys.argv[1:] if args is None else args)

    def body() -> int:
        parsed = quick_parse(argv, 2)
        if parsed is None:
            from carphooks.cli.admin import carp_event_cmd, run_standalone

            run_standalone(carp_event_cmd, "carp-event", argv)
        opts, (subsystem, type_) = parsed
        return int(run_carp_event(opts, subsystem, type_))

    top_level("carp-event", body)


def _tinc_main(name: str, args: Sequence[str] | None) -> NoReturn:
    prepare_process()
    argv = list(sys.argv[1:] if args is None else args)

    def body() -> int:
        parsed = quick_parse(argv, 0)
        if parsed is None:
            from carphooks.cli import admin as cli

            cli.run_standalone(cli.TINC_COMMANDS[name], name, argv)
        return run_tinc(parsed[0], name)

    top_level(name, body)


def tinc_up_main(args: Sequence[str] | None = None) -> NoReturn:
    """Console script ``tinc-up``."""
    _tinc_main("tinc-up", args)


def tinc_down_main(args: Sequence[str] | None = None) -> NoReturn:
    """Console script ``tinc-down``."""
    _tinc_main("tinc-down", args)


def tinc_host_up_main(args: Sequence[str] | None = None) -> NoReturn:
    """Console script ``tinc-host-up``."""
    _tinc_main("tinc-host-up", args)


def tinc_host_down_main(args: Sequence[str] | None = None) -> NoReturn:
    """Console script ``tinc-host-down``."""
    _tinc_main("tinc-host-down", args)
