"""The ``carphooks`` admin command (click), kept thin over the runtime and setup/.

Its global options come from :data:`carphooks.cli.options.GLOBAL_OPTIONS` (the hooks
parse the same table without click); every command's errors leave through
:func:`carphooks.cli.options.exit_code`. Exit codes: 0 ok, 1 an operation failed,
2 bad arguments or environment, 6 bad config, 7 lock not acquired in time, 128 + N
stopped by signal N.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import click

from carphooks import config as configmod
from carphooks.cli.hooks import run_carp_event
from carphooks.cli.options import (
    EXIT_CODES_HELP,
    GLOBAL_OPTIONS,
    HOST_OPTION,
    Opt,
    Options,
    check_host,
    echo,
    exit_code,
    prepare_process,
    top_level,
)
from carphooks.errors import ExitCode, Interrupted, UsageError, describe
from carphooks.runtime import actions
from carphooks.runtime import status as model

__all__ = ["cli", "main"]


class Seconds(click.ParamType):  # type: ignore[type-arg]  # generic only in click 8.2+
    """A finite number of seconds within [low, high] (no nan, inf or negatives)."""

    name = "seconds"

    def __init__(self, low: float, high: float) -> None:
        self.low = low
        self.high = high

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(number) or not self.low <= number <= self.high:
            self.fail(f"{value!r} is not between {self.low:g} and {self.high:g} seconds",
                      param, ctx)
        return number


def _usage(check: Callable[[Any], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback from one of entry's checks (UsageError -> bad parameter)."""
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        try:
            return check(value)
        except UsageError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
    return callback


def click_option(opt: Opt) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A click option from an entry of the option table."""
    if opt.metavar is None:
        return click.option(*opt.flags, opt.dest, is_flag=True, help=opt.help)
    return click.option(*opt.flags, opt.dest, metavar=opt.metavar, envvar=opt.envvar,
                        callback=_usage(opt.check) if opt.check else None, help=opt.help)


def common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The global options (:data:`GLOBAL_OPTIONS`), in the table's order."""
    for opt in reversed(GLOBAL_OPTIONS):
        fn = click_option(opt)(fn)
    return fn


def run_standalone(cmd: click.Command, prog: str, args: Sequence[str] | None = None) -> NoReturn:
    """Run a click command; usage errors also go to syslog, and exit 2."""
    argv = list(sys.argv[1:] if args is None else args)
    try:
        rv = cmd.main(args=argv, prog_name=prog, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
        sys.exit(int(ExitCode.USAGE))
    except click.UsageError as exc:
        with contextlib.suppress(OSError, ValueError):
            exc.show()
        opts = Options(None, False, False)
        log = opts.fallback_log()
        log.mirror = False
        log.error(f"{prog}: {exc.format_message()}")
        sys.exit(int(ExitCode.USAGE))
    except click.ClickException as exc:
        with contextlib.suppress(OSError, ValueError):
            exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    sys.exit(int(rv) if isinstance(rv, int) else 0)


# -- carphooks ---------------------------------------------------------------------------

class _Group(click.Group):
    """Every subcommand's errors leave through :func:`exit_code` (one line, one code)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # Interrupted is a BaseException
            opts = ctx.obj if isinstance(ctx.obj, Options) else None
            prog = " ".join(filter(None, [ctx.command_path, ctx.invoked_subcommand]))
            sys.exit(exit_code(opts, exc, prog))


@click.group(cls=_Group, epilog=EXIT_CODES_HELP,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(None, "--version", "-V", package_name="carphooks",
                      message="carphooks %(version)s")
@common_options
@click_option(HOST_OPTION)
@click.pass_context
def cli(ctx: click.Context, config: str | None, verbose: bool, dry_run: bool,
        host: str | None) -> None:
    """carphooks: move floating IP addresses with the CARP master."""
    ctx.obj = Options(config, verbose, dry_run, host)


def _group(ctx: actions.Context, name: str) -> configmod.Group:
    group = ctx.config.group_named(name)
    if group is None:
        names = ", ".join(g.name for g in ctx.config.groups) or "none"
        raise UsageError(f"no group {name!r} in {ctx.config.path} (groups: {names})")
    return group


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--nagios", is_flag=True, help="One monitoring-plugin line; exit 0 OK, "
              "1 WARNING, 2 CRITICAL, 3 UNKNOWN.")
@click.pass_obj
def status(opts: Options, as_json: bool, nagios: bool) -> int:
    """Show CARP state, quorum and each floating address per group."""
    if nagios:
        try:
            code, line = model.nagios(actions.status(opts.context()))
        except Interrupted:
            raise
        except Exception as exc:  # a plugin answers UNKNOWN, never a traceback
            code, line = model.unknown(describe(exc))
        echo(line)
        return code
    return int(_status(opts, as_json))


def _status(opts: Options, as_json: bool) -> int:
    report = actions.status(opts.context())
    if as_json:
        echo(json.dumps(model.to_json(report), indent=2, sort_keys=True))
    else:
        for line in model.text_lines(report):
            echo(line)
    return 0


@cli.command()
@click.argument("groups", nargs=-1)
@click.option("--every", type=Seconds(0.5, 86400), metavar="SECONDS",
              help="Repeat forever at this interval (the watch loop without health "
                   "checks; cron runs it once a minute without this).")
@click.pass_obj
def reconcile(opts: Options, groups: tuple[str, ...], every: float | None) -> int:
    """Converge groups (default: all) to the CARP state now; for cron."""
    if every is None:
        return int(_reconcile(opts, groups))
    return _watch(opts, groups, checks=False, interval=every)


@cli.command()
@click.pass_obj
def watch(opts: Options) -> int:
    """Run the health checks and reconcile periodically until stopped (rc.d/carphooks
    runs it under daemon(8)); a failing check demotes CARP by its weight."""
    return _watch(opts, (), checks=True, interval=None)


def _watch(opts: Options, names: tuple[str, ...], *, checks: bool,
           interval: float | None) -> int:
    from carphooks.runtime import watch as loop

    ctx = opts.context()
    selected = [_group(ctx, n) for n in names] or None
    try:
        return loop.run(ctx, checks=checks, interval=interval, groups=selected,
                        show=None if checks else echo)
    except Interrupted as exc:  # the loop logged why it stopped
        return exc.code


def _reconcile(opts: Options, names: tuple[str, ...]) -> int:
    ctx = opts.context()
    selected = [_group(ctx, n) for n in names] or None
    return _show(actions.reconcile(ctx, selected), opts.dry_run)


def _show(result: actions.ActionResult, dry_run: bool) -> int:
    """Print what an action did (or, in a dry run, would do); its exit code."""
    for line in result.text(dry_run):
        echo(line)
    return int(ExitCode.FAILED) if result.failed else 0


@cli.command()
@click.argument("group")
@click.option("--force", is_flag=True, help="Hold even when not MASTER with quorum.")
@click.pass_obj
def hold(opts: Options, group: str, force: bool) -> int:
    """Assign GROUP's floating addresses now (until the next event or reconcile)."""
    return int(_manual(opts, group, True, force))


@cli.command()
@click.argument("group")
@click.pass_obj
def release(opts: Options, group: str) -> int:
    """Remove GROUP's floating addresses now (until the next event or reconcile)."""
    return int(_manual(opts, group, False, False))


def _manual(opts: Options, name: str, want: bool, force: bool) -> int:
    ctx = opts.context()
    group = _group(ctx, name)
    result = actions.manual(ctx, group, want, force)
    if not result.changed:
        result.notes.append(f"group {group.name}: nothing to do")
    return _show(result, opts.dry_run)


@cli.command()
@click.argument("action", type=click.Choice(["on", "off", "status"]))
@click.option("--wait", default=15.0, show_default=True, metavar="SECONDS",
              type=Seconds(0, 3600),
              help="With 'on': how long to wait for a peer to become master.")
@click.pass_obj
def maintenance(opts: Options, action: str, wait: float) -> int:
    """Maintenance mode: 'on' persists a flag, demotes CARP and waits for a peer to take over;
    'off' removes only the demotion carphooks added. The flag survives reboots (tinc-up)."""
    return int(_maintenance(opts, action, wait))


def _maintenance(opts: Options, action: str, wait: float) -> int:
    ctx = opts.context(extra_time=wait)
    if action == "on":
        return _show(actions.maintenance_on(ctx, wait), opts.dry_run)
    if action == "off":
        return _show(actions.maintenance_off(ctx), opts.dry_run)
    echo(model.maintenance_line(actions.status(ctx)))
    return 0


@cli.command("event")
@click.argument("subsystem")
@click.argument("type_", metavar="TYPE")
@click.pass_obj
def event_cmd(opts: Options, subsystem: str, type_: str) -> int:
    """Same as carp-event SUBSYSTEM TYPE."""
    return int(run_carp_event(opts, subsystem, type_))


def main(args: Sequence[str] | None = None) -> NoReturn:
    """Console script ``carphooks`` and ``python -m carphooks``."""
    prepare_process()
    top_level("carphooks", lambda: run_standalone(cli, "carphooks", args))




# -- set-up commands (render, install, check): below this line ----------------------------

HIDDEN_NOTE = ("CARP passwords are shown as ********; --show-secrets prints them "
               "(carphooks install writes the real file, mode 0600)")
PREFIX_HELP = ("Install prefix of the devd, cron and syslog drop-ins (PREFIX/etc/devd, ...; "
               "default: the directory above bindir, or /usr/local for a virtualenv).")


def _render_kinds() -> tuple[str, ...]:
    from carphooks.setup.render import KINDS

    return tuple(KINDS)


def _setup_config(opts: Options) -> configmod.Config:
    return configmod.load(opts.config_path)


@cli.command("render")
@click.argument("kind", type=click.Choice(list(_render_kinds()), case_sensitive=True),
                metavar="KIND")
@click.option("--host", "host", metavar="NAME", callback=_usage(check_host),
              help="Render for this tinc node name.")
@click.option("--bindir", metavar="DIR", help="Directory of the installed console scripts "
              "(default: config bindir, then the running interpreter's directory).")
@click.option("--prefix", metavar="DIR", help=PREFIX_HELP)
@click.option("--show-secrets", is_flag=True,
              help="Print CARP passwords (rc.conf); they are shown as ******** otherwise.")
@click.pass_obj
def render_cmd(opts: Options, kind: str, host: str | None, bindir: str | None,
               prefix: str | None, show_secrets: bool) -> int:
    """Print template KIND filled in for a host.

    KIND is one of: devd, tinc-up, tinc-down, host-up, host-down, tinc.conf,
    rc.conf, sysctl.conf, cron, rc.d, syslog.conf, newsyslog.conf, ucarp-up, ucarp-down,
    keepalived-notify.
    """
    from carphooks.setup import install, render

    tgt = render.target(_setup_config(opts), host=host or opts.host, bindir=bindir,
                        prefix=prefix)
    text = render.render(tgt, kind).text
    shown = text if show_secrets else install.redact(text)
    if shown != text:  # a redirected copy says it is not the real file (check FAILs it too)
        shown = f"# {HIDDEN_NOTE}: not usable as is\n{shown}"
        with contextlib.suppress(OSError, ValueError):
            click.echo(f"note: {HIDDEN_NOTE}", err=True)
    echo(shown, nl=False)
    return 0


@cli.command("install")
@click.option("--dry-run", "-n", "dry", is_flag=True,
              help="Print what would be written (with a diff); write nothing.")
@click.option("--root", metavar="DIR", default="/", show_default=True,
              type=click.Path(file_okay=False), help="Install into this directory tree.")
@click.option("--force", is_flag=True,
              help="Replace files carphooks did not write (a backup is kept).")
@click.option("--host", "host", metavar="NAME", callback=_usage(check_host),
              help="Install for this tinc node name.")
@click.option("--bindir", metavar="DIR", help="Directory of the installed console scripts.")
@click.option("--prefix", metavar="DIR", help=PREFIX_HELP)
@click.pass_obj
def install_cmd(opts: Options, dry: bool, root: str, force: bool, host: str | None,
                bindir: str | None, prefix: str | None) -> int:
    """Write the devd rule, tinc scripts (or rc.conf lines), sysctl, cron and syslog files."""
    from pathlib import Path

    from carphooks.setup import install, render

    config = _setup_config(opts)
    tgt = render.target(config, host=host or opts.host, bindir=bindir, prefix=prefix)
    dry = dry or opts.dry_run
    report = install.install(render.render_install_set(tgt), Path(root), force=force,
                             dry_run=dry)
    echo(f"host {tgt.host}, topology {config.topology}, binaries in {tgt.bindir}, "
         f"prefix {tgt.prefix}:")
    for line in install.describe(report):
        echo(line)
    if report.changed or dry:
        echo("next steps:" if not dry else "then (after a real install):")
        interfaces = sorted({g.carp_interface for g in config.groups})
        for step in install.next_steps(report, config.netname, config.topology, interfaces):
            echo(f"  {step}")
    else:
        echo("nothing to do: every file is up to date")
    return 0


@cli.command("check")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--root", metavar="DIR", default="/", show_default=True,
              type=click.Path(file_okay=False), help="Look for installed files in this tree.")
@click.option("--host", "host", metavar="NAME", callback=_usage(check_host),
              help="Check as this tinc node name.")
@click.option("--bindir", metavar="DIR", help="Directory of the installed console scripts.")
@click.option("--prefix", metavar="DIR", help=PREFIX_HELP)
@click.pass_obj
def check_cmd(opts: Options, as_json: bool, root: str, host: str | None,
              bindir: str | None, prefix: str | None) -> int:
    """Check config, devd rule, tinc or rc.conf files, interfaces and sysctls.

    One line per check (OK, WARN or FAIL with the fix); exit 1 on any FAIL.
    """
    from pathlib import Path

    from carphooks.setup import check

    doctor = check.run(opts.config_path, root=Path(root), host=host or opts.host,
                       bindir=bindir, prefix=prefix)
    if as_json:
        echo(json.dumps(doctor.as_json(), indent=2))
    else:
        for item in doctor.checks:
            echo(item.line())
    return int(ExitCode.FAILED) if doctor.failed else 0
