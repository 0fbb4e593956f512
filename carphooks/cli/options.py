"""The one definition of the global options, and the one map from errors to exit codes.

Click-free, so that the hooks (:mod:`carphooks.cli.hooks`) start fast: the admin CLI
(:mod:`carphooks.cli.admin`) builds its click options from :data:`GLOBAL_OPTIONS`, and
the hooks parse their argv with :func:`parse` over the same table.

Exit codes: 0 ok, 1 failed, 2 usage, 6 config, 7 lock, 128 + N stopped by signal N
(SIGHUP 129, SIGINT 130, SIGTERM 143).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from carphooks import config as configmod
from carphooks import runner
from carphooks.errors import CarphooksError, ConfigError, Interrupted, UsageError, describe
from carphooks.log import Log

if TYPE_CHECKING:  # the hot path imports the context lazily
    from carphooks.runtime.context import Context

DEFAULT_TAG = "carphooks"
EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 an operation failed; 2 bad arguments or environment; "
    "6 bad config; 7 lock not acquired in time; 128+N stopped by signal N."
)
_STDIO = ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w"))


# -- option values --------------------------------------------------------------------------

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


@dataclass(frozen=True)
class Opt:
    """One option: its spellings, where it goes, and (for a value) how it is checked."""

    flags: tuple[str, ...]  # long first: ("--config", "-c")
    dest: str
    help: str
    metavar: str | None = None  # None: a flag without a value
    envvar: str | None = None
    check: Callable[[str | None], str | None] | None = None


GLOBAL_OPTIONS = (
    Opt(("--config", "-c"), "config", "Config file (default /usr/local/etc/carphooks.toml; "
        "env CARPHOOKS_CONFIG).", metavar="PATH", envvar=configmod.CONFIG_ENV,
        check=check_config_path),
    Opt(("--verbose", "-v"), "verbose", "Mirror log lines to stderr."),
    Opt(("--dry-run", "-n"), "dry_run",
        "Print the exact commands that would change state; change nothing."),
)
HOST_OPTION = Opt(("--host",), "host", "This host's tinc node name (default: "
                  "$CARPHOOKS_HOST, the tinc NAME recorded by tinc-up, then the hostname).",
                  metavar="NAME", check=check_host)
HELP_FLAGS = ("-h", "--help")
VERSION_FLAGS = ("-V", "--version")


class HelpRequested(Exception):
    """``-h``/``--help`` on a hook's command line."""


class VersionRequested(Exception):
    """``-V``/``--version`` on a hook's command line."""


def version_text(prog: str) -> str:
    """``PROG VERSION``, the installed package's version (as ``carphooks --version``)."""
    from importlib.metadata import PackageNotFoundError, version  # only when asked

    try:
        return f"{prog} {version('carphooks')}"
    except PackageNotFoundError:
        return f"{prog} (version unknown: carphooks is not installed as a package)"


def parse(argv: Sequence[str], table: Sequence[Opt], positional: Sequence[str],
          ) -> tuple[dict[str, Any], list[str]]:
    """``[OPTIONS] POS...`` by ``table`` (values, positionals); UsageError or HelpRequested.

    Accepts what click accepts for these options: ``--config PATH``, ``--config=PATH``,
    ``-c PATH``, ``-cPATH``, bundled flags (``-vn``) and ``--`` before the positionals.
    """
    by_flag = {flag: opt for opt in table for flag in opt.flags}
    values: dict[str, Any] = {o.dest: (False if o.metavar is None else None) for o in table}
    args: list[str] = []
    i = 0

    def take(opt: Opt, flag: str, value: str | None) -> None:
        nonlocal i
        if opt.metavar is None:
            values[opt.dest] = True
            return
        if value is None:
            if i + 1 >= len(argv):
                raise UsageError(f"option {flag} requires an argument")
            i += 1
            value = argv[i]
        values[opt.dest] = opt.check(value) if opt.check else value

    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            args.extend(argv[i + 1:])
            break
        if arg in HELP_FLAGS:
            raise HelpRequested()
        if arg in VERSION_FLAGS:
            raise VersionRequested()
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if name not in by_flag or (eq and by_flag[name].metavar is None):
                raise UsageError(f"no such option: {name}")
            take(by_flag[name], name, value if eq else None)
        elif arg.startswith("-") and arg != "-":
            for pos in range(1, len(arg)):
                flag = "-" + arg[pos]
                if flag not in by_flag:
                    raise UsageError(f"no such option: {flag}")
                if by_flag[flag].metavar is not None:
                    take(by_flag[flag], flag, arg[pos + 1:] or None)
                    break
                take(by_flag[flag], flag, None)
        else:
            args.append(arg)
        i += 1
    if len(args) < len(positional):
        raise UsageError(f"missing argument {positional[len(args)]}")
    if len(args) > len(positional):
        raise UsageError(f"unexpected extra argument {args[len(positional)]!r}")
    return values, args


def help_text(prog: str, doc: str, table: Sequence[Opt], positional: Sequence[str]) -> str:
    """``--help`` of a hook, from the same table click uses for the admin CLI."""
    rows = [(", ".join(sorted(o.flags, key=len)) + (f" {o.metavar}" if o.metavar else ""),
             o.help) for o in table]
    rows.append((", ".join(VERSION_FLAGS), "Show the version and exit."))
    rows.append((", ".join(HELP_FLAGS), "Show this message and exit."))
    width = max(len(r[0]) for r in rows)
    usage = " ".join([prog, "[OPTIONS]", *positional])
    lines = [f"Usage: {usage}", "", f"  {doc}", "", "Options:"]
    lines += [f"  {left:<{width}}  {right}" for left, right in rows]
    return "\n".join([*lines, "", EXIT_CODES_HELP, ""])


# -- the process ----------------------------------------------------------------------------

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

    def context(self, extra_time: float = 0.0, host: str | None = None) -> Context:
        """Load the config and build the action context (ConfigError on problems).

        Every command it runs must finish within the hook budget (plus ``extra_time``
        seconds, e.g. a wait) of the start. ``host``: this host's name when the caller
        knows it (tinc's NAME), else ``--host`` or what ``resolve_host`` finds.
        """
        from carphooks.runtime.context import build_context

        cfg = configmod.load(self.config_path)
        log = Log(cfg.log_tag, cfg.syslog_socket, facility=cfg.syslog_facility,
                  verbose=self.verbose)
        self._log = log
        ctx = build_context(cfg, log, dry_run=self.dry_run, host=host or self.host,
                            echo=lambda line: echo(f"would run: {line}"))
        budget = runner.hook_budget(sum(len(g.addresses) for g in cfg.groups))
        ctx.runner.deadline = self.started + budget + extra_time
        return ctx


# -- errors -> exit codes (the one place) ---------------------------------------------------

def error_line(opts: Options | None, message: str, prog: str, *,
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


def internal_error(exc: BaseException) -> CarphooksError:
    """A surprise as one line (exit 1)."""
    return CarphooksError(describe(exc))


def exit_code(opts: Options | None, exc: BaseException, prog: str) -> int:
    """Say ``exc`` in one line (stderr and syslog) and return its documented exit code.

    A signal is 128 + N; a CarphooksError carries its code; any other Exception is an
    internal error (1). KeyboardInterrupt, SystemExit, click's own exceptions and, with
    --verbose, a surprise are not ours to map: they are raised again.
    """
    if isinstance(exc, Interrupted):
        error_line(opts, str(exc), prog)
        return exc.code
    if isinstance(exc, CarphooksError):
        error_line(opts, str(exc), prog, config_broken=isinstance(exc, ConfigError))
        return int(exc.code)
    if (isinstance(exc, Exception) and not type(exc).__module__.startswith("click")
            and not (opts is not None and opts.verbose)):
        error_line(opts, str(internal_error(exc)), prog)
        return int(internal_error(exc).code)
    raise exc


def guarded(prog: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run a command taking Options first; any error leaves through :func:`exit_code`."""
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(opts: Options, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(opts, *args, **kwargs)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # Interrupted is a BaseException
                sys.exit(exit_code(opts, exc, prog))
        return inner
    return wrap


def top_level(prog: str, body: Callable[[], int]) -> NoReturn:
    """Run a console script's body: whatever escapes it is one line, never a traceback."""
    try:
        code = body()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        if isinstance(exc, Exception) and not isinstance(exc, CarphooksError) and (
                "-v" in sys.argv[1:] or "--verbose" in sys.argv[1:]):
            import traceback

            traceback.print_exc()
        sys.exit(exit_code(None, exc, prog))
    sys.exit(code)
