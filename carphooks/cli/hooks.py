"""The hook entry points: ``carp-event`` and the tinc scripts, without click.

devd, tinc and ucarp wait for their hooks, so this module imports only the
click-free option table (:mod:`carphooks.cli.options`) and loads the runtime
lazily, once the arguments are known. ``carphooks event`` runs the same function.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from carphooks.cli.options import (
    GLOBAL_OPTIONS,
    HelpRequested,
    Options,
    VersionRequested,
    echo,
    guarded,
    help_text,
    parse,
    prepare_process,
    top_level,
    version_text,
)
from carphooks.errors import ExitCode, UsageError

if TYPE_CHECKING:  # the hot path imports the runtime lazily
    from carphooks.runtime.actions import ActionResult
    from carphooks.runtime.context import Context


def print_result(opts: Options, result: ActionResult) -> int:
    """Show what a hook changed (dry-run or a terminal); its exit code."""
    if opts.dry_run or sys.stdout.isatty():
        for line in result.text(opts.dry_run):
            echo(line)
    return int(ExitCode.FAILED) if result.failed else 0


@guarded("carp-event")
def run_carp_event(opts: Options, subsystem: str, type_: str) -> int:
    """``carp-event SUBSYSTEM TYPE``."""
    from carphooks.runtime import actions, events

    event = events.parse_carp_event(subsystem, type_)
    ctx = opts.context()
    return print_result(opts, actions.carp_event(ctx, event))


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
    ctx = opts.context(host=env.name)
    ctx.log.debug(f"{name}: {actions.env_snapshot(os.environ)}")
    hook: Callable[[Context, events.TincEnv], ActionResult] = getattr(actions, func)
    return print_result(opts, hook(ctx, env))


@dataclass(frozen=True)
class Hook:
    """One console script: its positional arguments, help and body."""

    name: str
    doc: str
    positional: tuple[str, ...]
    run: Callable[..., int]


HOOKS = {hook.name: hook for hook in (
    Hook("carp-event", "Handle a devd CARP event: SUBSYSTEM is VHID@IFNAME, TYPE is MASTER, "
         "BACKUP or INIT.\n\n  The event is a hint: carphooks reads the CARP state the kernel "
         "reports now and\n  converges the group's floating addresses to it.",
         ("SUBSYSTEM", "TYPE"), run_carp_event),
    Hook("tinc-up", "tinc-up: address $INTERFACE, configure CARP, release stale addresses.",
         (), lambda opts: run_tinc(opts, "tinc-up")),
    Hook("tinc-down", "tinc-down: release the floating addresses of groups on $INTERFACE.",
         (), lambda opts: run_tinc(opts, "tinc-down")),
    Hook("tinc-host-up", "host-up: record $NODE as reachable; reconcile when quorum changes.",
         (), lambda opts: run_tinc(opts, "tinc-host-up")),
    Hook("tinc-host-down", "host-down: record $NODE as unreachable; release on quorum loss.",
         (), lambda opts: run_tinc(opts, "tinc-host-down")),
)}


def run_hook(name: str, args: Sequence[str] | None = None) -> NoReturn:
    """Parse a hook's argv with the global option table, then run it."""
    prepare_process()
    hook = HOOKS[name]
    argv = list(sys.argv[1:] if args is None else args)

    def body() -> int:
        try:
            values, positional = parse(argv, GLOBAL_OPTIONS, hook.positional)
        except HelpRequested:
            echo(help_text(name, hook.doc, GLOBAL_OPTIONS, hook.positional), nl=False)
            return 0
        except VersionRequested:
            echo(version_text(name))
            return 0
        except UsageError as exc:
            usage = " ".join([name, "[OPTIONS]", *hook.positional])
            raise UsageError(f"{exc} (usage: {usage}; {name} --help)") from None
        return int(hook.run(Options(**values), *positional))

    top_level(name, body)


def carp_event_main(args: Sequence[str] | None = None) -> NoReturn:
    """Console script ``carp-event``."""
    run_hook("carp-event", args)


def tinc_up_main(args: Sequence[str] | None = None) -> NoReturn:
    """Console script ``tinc-up``."""
    run_hook("tinc-up", args)


def tinc_down_main(args: Sequence[str] | None = None) -> NoReturn:
    """Console script ``tinc-down``."""
    run_hook("tinc-down", args)


def tinc_host_up_main(args: Sequence[str] | None = None) -> NoReturn:
    """Console script ``tinc-host-up``."""
    run_hook("tinc-host-up", args)


def tinc_host_down_main(args: Sequence[str] | None = None) -> NoReturn:
    """Console script ``tinc-host-down``."""
    run_hook("tinc-host-down", args)
