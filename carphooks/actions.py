"""What each entry point does, as plain functions over a :class:`Context` (no click here)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from carphooks import config as configmod
from carphooks import detach
from carphooks.backends import get_backend
from carphooks.backends.base import Backend, Interface
from carphooks.config import Config, Group, IPInterface
from carphooks.engine import Engine, Outcome, address_status
from carphooks.errors import CarphooksError, StateError, UsageError
from carphooks.events import CarpEvent, CarpState, TincEnv
from carphooks.log import Log
from carphooks.policy import Decision, Quorum, decide, quorum
from carphooks.runner import Runner
from carphooks.state import Peers, StateDir

HOST_ENV = "CARPHOOKS_HOST"


@dataclass
class Context:
    """Everything an action needs, built once per process."""

    config: Config
    log: Log
    runner: Runner
    state: StateDir
    backend: Backend
    engine: Engine
    dry_run: bool = False
    host: str | None = None
    to_announce: list[tuple[str, list[IPInterface]]] = field(default_factory=list)


def build_context(config: Config, log: Log, *, dry_run: bool = False,
                  host: str | None = None, echo: Any = None) -> Context:
    """Wire config, runner, backend and engine together."""
    runner = Runner(dry_run=dry_run, echo=echo, trace=log.debug)
    state = StateDir(config.state_dir)
    backend = get_backend(config.backend, runner, state)
    engine = Engine(backend, log, dry_run=dry_run)
    ctx = Context(config=config, log=log, runner=runner, state=state, backend=backend,
                  engine=engine, dry_run=dry_run, host=host)
    return ctx


def resolve_host(ctx: Context, explicit: str | None = None) -> str | None:
    """This host's tinc node name: argument, $CARPHOOKS_HOST, tinc-up's record, hostname."""
    for candidate in (explicit, os.environ.get(HOST_ENV)):
        if candidate:
            if not configmod.NODE_RE.fullmatch(candidate):
                raise UsageError(f"bad host name {candidate!r}")
            return candidate
    try:
        data = ctx.state.read("self.json")
    except StateError as exc:
        ctx.log.warning(str(exc))
        data = None
    if data and isinstance(data.get("name"), str) and data["name"] in ctx.config.hosts:
        return str(data["name"])
    short = socket.gethostname().split(".")[0]
    return short if configmod.NODE_RE.fullmatch(short) else None


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
    """Quorum as the state directory says now."""
    if ctx.host is None:
        ctx.host = resolve_host(ctx)
    return quorum(ctx.config, ctx.host, current_peers(ctx))


@dataclass
class GroupView:
    """One group's observed and desired state."""

    group: Group
    carp: CarpState
    decision: Decision
    external: Interface | None
    carp_if: Interface | None


class Reader:
    """Reads each interface at most once per action."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.cache: dict[str, Interface | None] = {}

    def get(self, ifname: str) -> Interface | None:
        if ifname not in self.cache:
            self.cache[ifname] = self.ctx.engine.read(ifname)
        return self.cache[ifname]

    def forget(self, ifname: str) -> None:
        self.cache.pop(ifname, None)


def observe(ctx: Context, group: Group, reader: Reader, q: Quorum,
            maintenance: bool) -> GroupView:
    """Read the group's interfaces and decide."""
    carp_if = reader.get(group.carp_interface) if ctx.backend.reads_carp_interface else None
    carp = ctx.backend.carp_state(group, carp_if)
    decision = decide(carp, q, maintenance)
    external = reader.get(group.external_interface)
    return GroupView(group, carp, decision, external, carp_if)


def apply_view(ctx: Context, view: GroupView, reader: Reader) -> Outcome:
    """Converge one observed group and queue announcements for what it took."""
    if view.external is None:
        outcome = Outcome(group=view.group, hold=view.decision.hold)
        if view.decision.hold:
            outcome.errors.append(f"interface {view.group.external_interface} does not exist")
        return outcome
    outcome = ctx.engine.converge(view.group, view.decision.hold, view.external)
    if outcome.changes:
        reader.forget(view.group.external_interface)
    added = [c.address for c in outcome.done if c.op == "add"]
    if added and not ctx.dry_run:
        ctx.to_announce.append((view.group.external_interface, added))
    return outcome


def finish(ctx: Context) -> None:
    """Hand slow work (announcements) to a detached child; the hook returns at once."""
    if not ctx.to_announce or ctx.dry_run:
        return
    jobs = list(ctx.to_announce)
    ctx.to_announce.clear()
    backend = ctx.backend

    def work() -> None:
        for ifname, addresses in jobs:
            backend.announce(ifname, addresses)

    detach.spawn(work, ctx.log)


# -- carp-event --------------------------------------------------------------------

def carp_event(ctx: Context, event: CarpEvent) -> list[Outcome]:
    """devd (or an adapter) reported a CARP state change: converge to the state NOW."""
    group = ctx.config.group_for(event.vhid, event.interface)
    if group is None:
        ctx.log.info(f"CARP event {event.subsystem} {event.state.value}: no group for vhid "
                     f"{event.vhid} on {event.interface} in {ctx.config.path}; ignored")
        return []
    with ctx.state.lock(ctx.config.lock_timeout):
        ctx.backend.record_event(event.subsystem, event.state)
        if not ctx.dry_run:
            ctx.state.write_last_event("carp-event", f"{event.subsystem} {event.state.value}")
        reader = Reader(ctx)
        view = observe(ctx, group, reader, current_quorum(ctx), in_maintenance(ctx))
        if view.carp is not event.state:
            ctx.log.info(f"event {event.subsystem} {event.state.value}, but CARP reports "
                         f"{view.carp.value} now: acting on {view.carp.value}")
        ctx.log.debug(f"group {group.name}: {'hold' if view.decision.hold else 'release'} "
                      f"({view.decision.reason})")
        if not view.decision.hold and view.carp is CarpState.MASTER:
            ctx.log.warning(f"group {group.name}: MASTER but releasing: {view.decision.reason}")
        outcome = apply_view(ctx, view, reader)
    finish(ctx)
    return [outcome]


# -- reconcile / hold / release -----------------------------------------------------

def reconcile(ctx: Context, groups: Sequence[Group] | None = None,
              why: str = "reconcile") -> list[Outcome]:
    """Converge every (or the given) group to CARP state, quorum and maintenance."""
    outcomes: list[Outcome] = []
    with ctx.state.lock(ctx.config.lock_timeout):
        outcomes = _reconcile_locked(ctx, groups or ctx.config.groups, why)
    finish(ctx)
    return outcomes


def _reconcile_locked(ctx: Context, groups: Iterable[Group], why: str) -> list[Outcome]:
    q = current_quorum(ctx)
    maint = in_maintenance(ctx)
    reader = Reader(ctx)
    outcomes = []
    for group in groups:
        view = observe(ctx, group, reader, q, maint)
        outcome = apply_view(ctx, view, reader)
        if outcome.done:
            ctx.log.notice(f"{why}: group {group.name} repaired "
                           f"({'held' if view.decision.hold else 'released'}: "
                           f"{view.decision.reason})")
        outcomes.append(outcome)
    return outcomes


def manual(ctx: Context, group: Group, hold: bool, force: bool) -> Outcome:
    """``carphooks hold|release GROUP``: by hand, until the next event or reconcile."""
    with ctx.state.lock(ctx.config.lock_timeout):
        reader = Reader(ctx)
        view = observe(ctx, group, reader, current_quorum(ctx), in_maintenance(ctx))
        if hold and not view.decision.hold and not force:
            raise UsageError(f"group {group.name}: refusing to hold ({view.decision.reason}); "
                             "another host may hold the address. Use --force to override")
        view.decision = Decision(hold, "by hand")
        ctx.log.notice(f"group {group.name}: {'hold' if hold else 'release'} requested by hand")
        outcome = apply_view(ctx, view, reader)
    finish(ctx)
    return outcome


# -- tinc ------------------------------------------------------------------------------

def _check_netname(ctx: Context, env: TincEnv) -> None:
    if env.netname is not None and env.netname != ctx.config.netname:
        ctx.log.warning(f"tinc network {env.netname!r} is not tinc.netname "
                        f"{ctx.config.netname!r} from {ctx.config.path}")


def tinc_up(ctx: Context, env: TincEnv) -> list[str]:
    """tincd attached its device: address it, configure CARP, release stale addresses."""
    _check_netname(ctx, env)
    ctx.host = env.name
    host = ctx.config.host(env.name)
    if host is None:
        ctx.log.warning(f"tinc node {env.name!r} has no [hosts.{env.name}] table in "
                        f"{ctx.config.path}")
    done: list[str] = []
    with ctx.state.lock(ctx.config.lock_timeout):
        if not ctx.dry_run:
            ctx.state.write("self.json", {"name": env.name, "time": time.time()})
            ctx.state.write_peers(frozenset(), tinc_up=True)
            ctx.state.write_last_event("tinc-up", f"{env.name} on {env.interface}")
        mac = host.mac if host is not None else configmod.derive_mac(env.name,
                                                                      ctx.config.netname)
        done += ctx.backend.setup_vpn(env.interface, mac,
                                      host.vpn_address if host is not None else None)
        groups = ctx.config.groups_on(env.interface)
        if ctx.config.topology == "tinc":
            reader = Reader(ctx)
            for group in groups:
                current = reader.get(group.carp_interface)
                if current is None:
                    continue
                secret = group.carp.secret()
                done += ctx.backend.configure_carp(
                    group, ctx.config.advskew_for(group, env.name), secret, current)
                reader.forget(group.carp_interface)
        outcomes = _reconcile_locked(ctx, groups, "tinc-up")
    for line in done:
        ctx.log.notice(f"tinc-up: {line}")
    finish(ctx)
    done += [f"{'assigned' if c.op == 'add' else 'removed'} {c.address}"
             for o in outcomes for c in o.done]
    _raise_if_failed(outcomes)
    return done


def tinc_down(ctx: Context, env: TincEnv) -> list[Outcome]:
    """tincd is stopping: CARP over this device ends, so release its groups' addresses."""
    _check_netname(ctx, env)
    ctx.host = env.name
    outcomes: list[Outcome] = []
    with ctx.state.lock(ctx.config.lock_timeout):
        if not ctx.dry_run:
            ctx.state.write_peers(frozenset(), tinc_up=False)
            ctx.state.write_last_event("tinc-down", f"{env.name} on {env.interface}")
        reader = Reader(ctx)
        for group in ctx.config.groups_on(env.interface):
            ctx.backend.record_event(group.subsystem, CarpState.INIT)
            view = GroupView(group, CarpState.INIT, Decision(False, "tinc is going down"),
                             reader.get(group.external_interface), None)
            outcomes.append(apply_view(ctx, view, reader))
    return outcomes


def tinc_host(ctx: Context, env: TincEnv, up: bool) -> list[Outcome]:
    """A tinc node became reachable or unreachable: track peers, act on quorum changes."""
    _check_netname(ctx, env)
    ctx.host = env.name
    node = env.node or ""
    outcomes: list[Outcome] = []
    with ctx.state.lock(ctx.config.lock_timeout):
        before = current_peers(ctx)
        q_before = quorum(ctx.config, env.name, before)
        if node not in ctx.config.voters:
            ctx.log.info(f"tinc node {node} {'up' if up else 'down'}: not in tinc.nodes, "
                         "does not vote")
        reachable = set(before.reachable)
        if up:
            reachable.add(node)
        else:
            reachable.discard(node)
        after = Peers(reachable=frozenset(n for n in reachable if n in ctx.config.voters),
                      tinc_up=True, updated=time.time())
        if not ctx.dry_run:
            ctx.state.write_peers(after.reachable, tinc_up=True)
            ctx.state.write_last_event(f"tinc-host-{'up' if up else 'down'}", node)
        q_after = quorum(ctx.config, env.name, after)
        ctx.log.info(f"tinc node {node} {'up' if up else 'down'}"
                     f"{' (' + env.remote_address + ')' if env.remote_address else ''}: "
                     f"{q_after.reason}")
        if q_before.ok != q_after.ok:
            if q_after.ok:
                ctx.log.notice(f"quorum regained ({q_after.have}/{len(ctx.config.voters)})")
            else:
                ctx.log.warning(f"quorum lost ({q_after.have}/{len(ctx.config.voters)}): "
                                "releasing floating addresses")
            why = f"tinc-host-{'up' if up else 'down'}"
            outcomes = _reconcile_locked(ctx, ctx.config.groups, why)
    finish(ctx)
    return outcomes


def _raise_if_failed(outcomes: Sequence[Outcome]) -> None:
    errors = [e for o in outcomes for e in o.errors]
    if errors:
        raise CarphooksError(errors[0] if len(errors) == 1
                             else f"{errors[0]} (and {len(errors) - 1} more)")


# -- status ------------------------------------------------------------------------------

def status(ctx: Context) -> dict[str, Any]:
    """A read-only report of every group, for humans, JSON and monitoring."""
    q = current_quorum(ctx)
    maint = in_maintenance(ctx)
    reader = Reader(ctx)
    groups = []
    for group in ctx.config.groups:
        view = observe(ctx, group, reader, q, maint)
        addrs = {a.with_prefixlen: address_status(view.external, a) for a in group.addresses}
        held = [a for a, s in addrs.items() if s in ("held", "tentative", "duplicated")]
        if view.decision.hold and len(held) < len(addrs):
            verdict = "drift: should hold, missing " + ", ".join(
                a for a, s in addrs.items() if s not in ("held", "tentative", "duplicated"))
        elif not view.decision.hold and held:
            verdict = "drift: should release, holds " + ", ".join(held)
        elif any(s == "duplicated" for s in addrs.values()):
            verdict = "duplicated address"
        else:
            verdict = "ok"
        groups.append({
            "name": group.name, "vhid": group.vhid, "carp_interface": group.carp_interface,
            "external_interface": group.external_interface, "carp": view.carp.value,
            "should_hold": view.decision.hold, "reason": view.decision.reason,
            "addresses": addrs, "verdict": verdict,
        })
    try:
        last = ctx.state.last_event()
    except StateError as exc:
        last = {"error": str(exc)}
    if last and isinstance(last.get("time"), int | float):
        last = dict(last, age=round(time.time() - float(last["time"]), 1))
    return {
        "host": ctx.host, "backend": ctx.backend.name,
        "quorum": {"ok": q.ok, "have": q.have, "need": q.need, "mode": q.mode,
                   "reason": q.reason},
        "maintenance": maint, "last_event": last, "groups": groups,
    }


def outcome_lines(outcomes: Iterable[Outcome]) -> list[str]:
    """Human-readable lines for what outcomes did."""
    lines = []
    for o in outcomes:
        for c in o.done:
            lines.append(f"{'assigned' if c.op == 'add' else 'removed'} {c.address} "
                         f"on {c.interface}")
        lines.extend(f"error: {e}" for e in o.errors)
        lines.extend(f"warning: {w}" for w in o.warnings)
    return lines


def env_snapshot(environ: Mapping[str, str]) -> dict[str, str]:
    """The tinc variables of ``environ`` (for logs and tests)."""
    keys = ("NETNAME", "NAME", "DEVICE", "INTERFACE", "NODE", "REMOTEADDRESS", "REMOTEPORT")
    return {k: environ[k] for k in keys if k in environ}
