"""Hook entry points without click on the hot path.

devd, tinc and ucarp wait for their hooks, so ``carp-event`` and the tinc scripts
parse their few options here and import click only for ``--help`` or a usage
error (``carphooks.cli`` defines the same commands with click; both paths call the
same functions below). Exit codes: 0 ok, 1 failed, 2 usage, 6 config, 7 lock.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from carphooks import config as configmod
from carphooks.errors import CarphooksError, ConfigError, ExitCode
from carphooks.log import Log

if TYPE_CHECKING:  # the hot path imports the context lazily
    from carphooks.context import Context

DEFAULT_TAG = "carphooks"


def echo(line: str) -> None:
    """Print a line on stdout (click-free)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Options:
    """Global options shared by every command."""

    def __init__(self, config: str | None, verbose: bool, dry_run: bool,
                 host: str | None = None) -> None:
        self.config_path = configmod.locate(config)
        self.verbose = verbose
        self.dry_run = dry_run
        self.host = host
        self._log: Log | None = None

    def fallback_log(self) -> Log:
        """A logger for errors before (or without) a valid config: best effort."""
        if self._log is None:
            try:
                cfg = configmod.load(self.config_path)
                self._log = Log(cfg.log_tag, cfg.syslog_socket, facility=cfg.syslog_facility,
                                verbose=self.verbose)
            except CarphooksError:
                self._log = Log(DEFAULT_TAG, configmod.default_syslog_socket(),
                                verbose=self.verbose)
        return self._log

    def context(self) -> Context:
        """Load the config and build the action context (ConfigError on problems)."""
        from carphooks.context import build_context

        cfg = configmod.load(self.config_path)
        log = Log(cfg.log_tag, cfg.syslog_socket, facility=cfg.syslog_facility,
                  verbose=self.verbose)
        self._log = log
        return build_context(cfg, log, dry_run=self.dry_run, host=self.host,
                             echo=lambda line: echo(f"would run: {line}"))


def fail(opts: Options, exc: CarphooksError, prog: str) -> NoReturn:
    """One line on stderr and in syslog, then the documented exit code."""
    message = str(exc)
    log = opts._log if opts._log is not None else (
        Log(DEFAULT_TAG, configmod.default_syslog_socket(), mirror=False)
        if isinstance(exc, ConfigError) else opts.fallback_log())
    mirror = log.mirror
    log.mirror = False
    log.error(f"{prog}: {message}")
    log.mirror = mirror
    sys.stderr.write(f"{prog}: error: {message}\n")
    sys.stderr.flush()
    sys.exit(int(exc.code))


def guarded(prog: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Turn CarphooksError (and any surprise) into one line and an exit code."""
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def inner(opts: Options, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(opts, *args, **kwargs)
            except CarphooksError as exc:
                fail(opts, exc, prog)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # never a traceback from a hook
                if type(exc).__module__.startswith("click") or opts.verbose:
                    raise
                fail(opts, CarphooksError(f"internal error: {type(exc).__name__}: {exc}"), prog)
        return inner
    return wrap


def print_outcomes(opts: Options, outcomes: Sequence[Any]) -> int:
    """Show what changed (dry-run or a terminal); the exit code for the outcomes."""
    from carphooks.actions import outcome_lines

    if opts.dry_run or sys.stdout.isatty():
        for line in outcome_lines(outcomes):
            echo(line)
    return int(ExitCode.FAILED) if any(o.errors for o in outcomes) else 0


# -- the hooks ------------------------------------------------------------------------

@guarded("carp-event")
def run_carp_event(opts: Options, subsystem: str, type_: str) -> int:
    """``carp-event SUBSYSTEM TYPE``."""
    from carphooks import actions, events

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
    from carphooks import actions, events

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
        elif arg in ("-c", "--config") and i + 1 < len(argv):
            config = argv[i + 1]
            i += 1
        elif arg.startswith("--config="):
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
    argv = list(sys.argv[1:] if args is None else args)
    parsed = quick_parse(argv, 2)
    if parsed is None:
        from carphooks.cli import carp_event_cmd, run_standalone

        run_standalone(carp_event_cmd, "carp-event", argv)
    opts, (subsystem, type_) = parsed
    sys.exit(run_carp_event(opts, subsystem, type_))


def _tinc_main(name: str, args: Sequence[str] | None) -> NoReturn:
    argv = list(sys.argv[1:] if args is None else args)
    parsed = quick_parse(argv, 0)
    if parsed is None:
        from carphooks import cli

        cli.run_standalone(cli.TINC_COMMANDS[name], name, argv)
    sys.exit(run_tinc(parsed[0], name))


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
