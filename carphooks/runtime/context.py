"""The per-process context every action works in: config, log, runner, backend, engine."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

from carphooks import config as configmod
from carphooks.backends import get_backend
from carphooks.backends.base import Backend, CarpState
from carphooks.config import Config, Group, IPInterface
from carphooks.errors import StateError, UsageError
from carphooks.log import Log
from carphooks.runner import Runner
from carphooks.runtime.dad import Repairs
from carphooks.runtime.engine import Engine
from carphooks.runtime.policy import Quorum, quorum
from carphooks.state import Peers, StateDir


@dataclass
class Context:
    """Everything an action needs, built once per process.

    ``host`` is this host's tinc node name, resolved once when the context is built
    (a tinc script sets tinc's NAME); ``dry_run`` is the runner's.
    """

    config: Config
    log: Log
    runner: Runner
    state: StateDir
    backend: Backend
    engine: Engine
    host: str | None = None
    to_announce: list[tuple[str, list[IPInterface]]] = field(default_factory=list)
    to_probe: list[Group] = field(default_factory=list)
    to_watch: list[Group] = field(default_factory=list)  # IPv6 DAD to follow (dad.py)
    lock_depth: int = 0  # > 0 while this process holds the state lock
    release_only: str | None = None  # why this action may not take (no lock, no state)
    took: dict[str, tuple[Group, CarpState]] = field(default_factory=dict)  # taken, on what

    @property
    def dry_run(self) -> bool:
        """Print what would change; change nothing (one flag: the runner's)."""
        return self.runner.dry_run


def build_context(config: Config, log: Log, *, dry_run: bool = False,
                  host: str | None = None, echo: Any = None) -> Context:
    """Wire config, runner, backend and engine together; resolve this host's name once
    (``host`` first, see :func:`resolve_host`)."""
    runner = Runner(dry_run=dry_run, echo=echo, trace=log.debug)
    state = StateDir(config.state_dir, dry_run=runner.dry_run)  # files: the same flag
    backend = get_backend(config.backend, runner, state, config.demotion_file)
    config = configmod.resolve_probe(config, backend.probe_problem())
    engine = Engine(backend, log, repairs=Repairs(state, log))
    ctx = Context(config=config, log=log, runner=runner, state=state, backend=backend,
                  engine=engine)
    ctx.host = resolve_host(ctx, host)
    return ctx


def resolve_host(ctx: Context, explicit: str | None = None) -> str | None:
    """This host's tinc node name, in :func:`config.host_candidates`' order (tinc's NAME
    as tinc-up recorded it); None when no name fits (a hook never fails on it)."""
    def recorded() -> str | None:
        try:
            data = ctx.state.read("self.json")
        except StateError as exc:
            ctx.log.warning(str(exc))
            return None
        name = data.get("name") if data else None
        return name if isinstance(name, str) and name in ctx.config.hosts else None

    for source, name in configmod.host_candidates(explicit, os.environ, recorded,
                                                  socket.gethostname()):
        if source in ("--host", configmod.HOST_ENV) and not configmod.NODE_RE.fullmatch(name):
            raise UsageError(f"bad host name {name!r}")
        return name if configmod.NODE_RE.fullmatch(name) else None
    return None


def current_peers(ctx: Context) -> Peers:
    """Reachable peers; a corrupt file counts as nobody reachable (the safe side)."""
    try:
        return ctx.state.peers(ctx.config.voters)
    except StateError as exc:
        ctx.log.error(f"{exc}; treating every peer as unreachable")
        return Peers(reachable=frozenset(), tinc_up=False, updated=0.0)


def in_maintenance(ctx: Context) -> bool:
    """The maintenance flag; a corrupt file counts as on (release, never take)."""
    try:
        return ctx.state.maintenance().on
    except StateError as exc:
        ctx.log.error(f"{exc}; treating maintenance as on")
        return True


def current_quorum(ctx: Context) -> Quorum:
    """Quorum as the state directory says now, for ``ctx.host`` (changes nothing)."""
    return quorum(ctx.config, ctx.host, current_peers(ctx))
