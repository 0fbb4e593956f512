"""What each entry point does, as plain functions over a :class:`Context` (no click here)."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from carphooks import config as configmod
from carphooks import demotion, detach
from carphooks.backends.base import Interface
from carphooks.config import Group
from carphooks.context import Context as Context  # re-exported for the CLI
from carphooks.context import build_context as build_context
from carphooks.context import (
    current_peers,
    current_quorum,
    in_maintenance,
)
from carphooks.engine import Outcome, address_status, plan
from carphooks.errors import CarphooksError, StateError, UsageError
from carphooks.events import CarpEvent, CarpState, TincEnv
from carphooks.policy import Decision, Quorum, decide, quorum
from carphooks.state import Peers


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


def observe(ctx: Context, group: Group, reader: Reader, q: Quorum) -> GroupView:
    """Read the group's interfaces and decide."""
    carp_if = None
    if ctx.backend.reads_carp_interface:
        carp_if = reader.get(group.carp_interface)
        if carp_if is None:  # e.g. tincd stopped and took tap0 with it
            ctx.log.info(f"CARP interface {group.carp_interface} does not exist: "
                         f"vhid {group.vhid} counts as INIT")
    carp = ctx.backend.carp_state(group, carp_if)
    decision = decide(carp, q)
    external = reader.get(group.external_interface)
    return GroupView(group, carp, decision, external, carp_if)


def apply_views(ctx: Context, views: Sequence[GroupView], reader: Reader) -> list[Outcome]:
    """Converge observed groups together (one apply and one verification read per
    interface) and queue announcements for what was taken."""
    results: dict[int, Outcome] = {}
    todo: list[tuple[int, GroupView]] = []
    for i, view in enumerate(views):
        group = view.group
        if view.external is None:
            outcome = Outcome(group=group, hold=view.decision.hold)
            missing = f"interface {group.external_interface} does not exist"
            if view.decision.hold:
                outcome.errors.append(f"{missing}: cannot assign group {group.name}")
                ctx.log.error(outcome.errors[-1])
            else:
                ctx.log.info(f"{missing}: nothing of group {group.name} to remove")
            results[i] = outcome
        elif (view.decision.hold and group.probe and ctx.backend.supports_probe
              and not ctx.dry_run and any(c.op == "add" for c in plan(group, True,
                                                                        view.external))):
            outcome = Outcome(group=group, hold=True)
            if _probing(ctx, group):
                outcome.warnings.append(f"group {group.name}: a probe is already running")
            else:  # taken by the detached child once nobody answers
                ctx.to_probe.append(group)
                outcome.warnings.append(f"group {group.name}: probing before taking it")
            results[i] = outcome
        else:
            todo.append((i, view))
    if todo:
        cache = {name: iface for name, iface in reader.cache.items() if iface is not None}
        done = ctx.engine.converge_all([(v.group, v.decision.hold) for _, v in todo], cache)
        reader.cache.update(cache)
        for (i, _), outcome in zip(todo, done, strict=True):
            results[i] = outcome
            added = [c.address for c in outcome.done if c.op == "add"]
            if added and not ctx.dry_run:
                ctx.to_announce.append((outcome.group.external_interface, added))
    return [results[i] for i in range(len(views))]


def apply_view(ctx: Context, view: GroupView, reader: Reader) -> Outcome:
    """Converge one observed group."""
    return apply_views(ctx, [view], reader)[0]


def finish(ctx: Context) -> None:
    """Hand slow work (probes, announcements) to a detached child; the hook returns at once."""
    if (not ctx.to_announce and not ctx.to_probe) or ctx.dry_run:
        return
    jobs = list(ctx.to_announce)
    probes = list(ctx.to_probe)
    ctx.to_announce.clear()
    ctx.to_probe.clear()

    def work() -> None:
        for ifname, addresses in jobs:
            ctx.backend.announce(ifname, addresses)
        for group in probes:
            probe_then_take(ctx, group)
        for ifname, addresses in ctx.to_announce:
            ctx.backend.announce(ifname, addresses)

    detach.spawn(work, ctx.log)


PROBE_WINDOW = 30.0  # seconds to wait for another holder to let go
PROBE_LISTEN = 0.1  # seconds to listen for answers per round (a LAN answers in ms)


def _probing(ctx: Context, group: Group) -> bool:
    """Whether a detached probe for ``group`` is still running (else mark one as started).

    Called under the lock, so events and a frequent reconcile start one prober, not many.
    """
    name = f"probe-{group.name}.json"
    try:
        marker = ctx.state.read(name)
    except StateError:
        marker = None
    until = marker.get("until") if marker else None
    if isinstance(until, int | float) and until > time.time():
        return True
    ctx.state.write(name, {"until": time.time() + PROBE_WINDOW + 2})
    return False


def probe_then_take(ctx: Context, group: Group, window: float = PROBE_WINDOW) -> bool:
    """Take ``group``'s addresses once no other host answers ARP for them (bounded)."""
    try:
        return _probe_then_take(ctx, group, window)
    finally:
        ctx.state.remove(f"probe-{group.name}.json")


def _probe_then_take(ctx: Context, group: Group, window: float) -> bool:
    ifname = group.external_interface
    v4 = [a.ip for a in group.addresses if isinstance(a, ipaddress.IPv4Interface)]
    deadline = time.monotonic() + window
    reported: dict[str, str] = {}
    while True:
        answered = ctx.backend.probe(ifname, v4, PROBE_LISTEN) or {}
        if not answered:
            break
        for ip, mac in answered.items():
            if reported.get(str(ip)) != mac:
                reported[str(ip)] = mac
                ctx.log.warning(f"{ip} is answered by {mac} on {ifname}: not taking "
                                f"group {group.name} until it lets go")
        if time.monotonic() >= deadline:
            ctx.log.error(f"group {group.name}: another host kept answering for "
                          f"{', '.join(str(ip) for ip in answered)} for {window:g} s; "
                          "not taken (reconcile retries)")
            return False
        time.sleep(0.05)
    with ctx.state.lock(ctx.config.lock_timeout):
        reader = Reader(ctx)
        view = observe(ctx, group, reader, current_quorum(ctx))
        if not view.decision.hold:
            ctx.log.info(f"group {group.name}: no longer to hold ({view.decision.reason}); "
                         "not taking")
            return False
        if view.external is None:
            return False
        outcome = ctx.engine.converge(group, True, view.external)
    added = [c.address for c in outcome.done if c.op == "add"]
    if added:
        ctx.log.notice(f"group {group.name}: taken after a quiet ARP probe "
                       f"({view.decision.reason})")
        ctx.to_announce.append((ifname, added))
    return outcome.ok


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
        view = observe(ctx, group, reader, current_quorum(ctx))
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
    """Converge every (or the given) group to the CARP state and quorum now."""
    with ctx.state.lock(ctx.config.lock_timeout):
        outcomes = _reconcile_locked(ctx, groups or ctx.config.groups, why)
    finish(ctx)
    return outcomes


def _reconcile_locked(ctx: Context, groups: Iterable[Group], why: str) -> list[Outcome]:
    q = current_quorum(ctx)
    reader = Reader(ctx)
    views = [observe(ctx, group, reader, q) for group in groups]
    outcomes = apply_views(ctx, views, reader)
    for view, outcome in zip(views, outcomes, strict=True):
        if outcome.done:
            ctx.log.notice(f"{why}: group {view.group.name} repaired "
                           f"({'held' if view.decision.hold else 'released'}: "
                           f"{view.decision.reason})")
    return outcomes


def manual(ctx: Context, group: Group, hold: bool, force: bool) -> Outcome:
    """``carphooks hold|release GROUP``: by hand, until the next event or reconcile."""
    with ctx.state.lock(ctx.config.lock_timeout):
        reader = Reader(ctx)
        view = observe(ctx, group, reader, current_quorum(ctx))
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
        demotion.resync(ctx)
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
        views = []
        for group in ctx.config.groups_on(env.interface):
            ctx.backend.record_event(group.subsystem, CarpState.INIT)
            views.append(GroupView(group, CarpState.INIT, Decision(False, "tinc is going down"),
                                   reader.get(group.external_interface), None))
        outcomes = apply_views(ctx, views, reader)
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
            if q_after.ok:  # undo the demotion first, then take what CARP says
                _demote(ctx, "quorum", False)
                outcomes = _reconcile_locked(ctx, ctx.config.groups, why)
            else:  # release at once, then demote so a peer with quorum wins
                outcomes = _reconcile_locked(ctx, ctx.config.groups, why)
                _demote(ctx, "quorum", True)
    finish(ctx)
    return outcomes


def _demote(ctx: Context, reason: str, on: bool) -> None:
    """Change carphooks' demotion; a failure is logged, never stops a release."""
    try:
        demotion.set_reason(ctx, reason, on)
    except CarphooksError as exc:
        ctx.log.error(f"cannot {'add' if on else 'remove'} CARP demotion ({reason}): {exc}")


def _raise_if_failed(outcomes: Sequence[Outcome]) -> None:
    errors = [e for o in outcomes for e in o.errors]
    if errors:
        raise CarphooksError(errors[0] if len(errors) == 1
                             else f"{errors[0]} (and {len(errors) - 1} more)")


# -- maintenance -----------------------------------------------------------------------

def maintenance_on(ctx: Context, wait: float) -> list[str]:
    """Persist the flag, demote, and wait (bounded) until a peer is master everywhere."""
    if not ctx.backend.supports_demotion:
        raise CarphooksError(f"maintenance needs CARP demotion, which the {ctx.backend.name} "
                             "backend lacks: stop the CARP daemon (ucarp/keepalived) instead")
    lines: list[str] = []
    with ctx.state.lock(ctx.config.lock_timeout):
        if not ctx.dry_run:
            ctx.state.write_maintenance(True)  # the flag first: a reboot re-applies it
        if demotion.set_reason(ctx, "maintenance", True):
            lines.append(f"demoted CARP by {demotion.STEP}")
        preempt = ctx.backend.sysctl(demotion.PREEMPT_OID)
    if preempt == 0:
        msg = ("net.inet.carp.preempt is 0 on this host; the peers need "
               "net.inet.carp.preempt=1 or nothing moves")
        ctx.log.warning(msg)
        lines.append(f"warning: {msg}")
    if ctx.dry_run:
        return lines
    masters = [g for g in ctx.config.groups if _carp_now(ctx, g) is CarpState.MASTER]
    deadline = time.monotonic() + wait
    while masters and time.monotonic() < deadline:
        time.sleep(0.2)
        masters = [g for g in masters if _carp_now(ctx, g) is CarpState.MASTER]
    lines += outcome_lines(reconcile(ctx, why="maintenance on"))
    if masters:
        names = ", ".join(g.name for g in masters)
        hint = " (net.inet.carp.preempt is 0: peers need preempt=1)" if preempt == 0 else ""
        raise CarphooksError(f"maintenance is on and CARP demoted, but no peer took over "
                             f"{names} within {wait:g} s{hint}; this host keeps serving")
    lines.append("maintenance on: every group has moved to a peer")
    return lines


def maintenance_off(ctx: Context) -> list[str]:
    """Remove only the demotion carphooks added for maintenance, then clear the flag."""
    lines: list[str] = []
    with ctx.state.lock(ctx.config.lock_timeout):
        if demotion.set_reason(ctx, "maintenance", False):
            lines.append("removed the maintenance demotion")
        if not ctx.dry_run:
            ctx.state.write_maintenance(False)
    lines.append("maintenance off")
    return lines


def _carp_now(ctx: Context, group: Group) -> CarpState:
    current = ctx.engine.read(group.carp_interface) if ctx.backend.reads_carp_interface else None
    return ctx.backend.carp_state(group, current)


# -- status ------------------------------------------------------------------------------

def status(ctx: Context) -> dict[str, Any]:
    """A read-only report of every group, for humans, JSON and monitoring."""
    q = current_quorum(ctx)
    maint = in_maintenance(ctx)
    reader = Reader(ctx)
    groups = []
    for group in ctx.config.groups:
        view = observe(ctx, group, reader, q)
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
    dem = demotion.status(ctx)
    return {
        "host": ctx.host, "backend": ctx.backend.name,
        "demotion": {"carphooks": dem.added, "kernel": dem.kernel},
        "quorum": {"ok": q.ok, "have": q.have, "need": q.need, "mode": q.mode,
                   "reason": q.reason},
        "maintenance": maint, "last_event": last, "groups": groups,
        "mesh": _mesh(ctx),
    }


def _mesh(ctx: Context) -> dict[str, Any] | None:
    """How each other voter is reached over tinc (imported here: hooks never need it)."""
    if ctx.config.topology != "tinc":
        return None
    from carphooks import mesh

    return mesh.observe(ctx).as_json()


def nagios(report: Mapping[str, Any], max_event_age: float | None = None) -> tuple[int, str]:
    """One monitoring-plugin line and its code: 0 OK, 1 WARNING, 2 CRITICAL."""
    crit: list[str] = []
    warn: list[str] = []
    parts: list[str] = []
    for g in report["groups"]:
        addrs = g["addresses"]
        held = sum(1 for v in addrs.values() if v in ("held", "tentative", "duplicated"))
        parts.append(f"{g['name']} {g['carp']} {held}/{len(addrs)} held")
        if g["verdict"] != "ok":
            crit.append(f"{g['name']}: {g['verdict']}")
        if any(v == "tentative" for v in addrs.values()):
            warn.append(f"{g['name']}: tentative address")
    q = report["quorum"]
    if not q["ok"]:
        warn.append(q["reason"])
    if report["maintenance"]:
        warn.append("maintenance mode on")
    last = report.get("last_event") or {}
    if max_event_age is not None and isinstance(last.get("age"), int | float) and \
            last["age"] > max_event_age:
        warn.append(f"last event {last['age']:.0f} s ago")
    summary = "; ".join(parts) or "no groups"
    if crit:
        return 2, f"CARPHOOKS CRITICAL - {'; '.join(crit + warn)} | {summary}"
    if warn:
        return 1, f"CARPHOOKS WARNING - {'; '.join(warn)} | {summary}"
    return 0, f"CARPHOOKS OK - {summary}; {q['reason']}"


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


def tinc_host_up(ctx: Context, env: TincEnv) -> list[Outcome]:
    """tinc ``host-up``."""
    return tinc_host(ctx, env, True)


def tinc_host_down(ctx: Context, env: TincEnv) -> list[Outcome]:
    """tinc ``host-down``."""
    return tinc_host(ctx, env, False)
