"""What each entry point does, as plain functions over a :class:`Context` (no click here)."""

from __future__ import annotations

import contextlib
import ipaddress
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from carphooks import config as configmod
from carphooks.backends.base import AddressState, CarpState, Interface
from carphooks.config import Group, IPInterface
from carphooks.errors import CarphooksError, LockTimeout, StateError, UsageError
from carphooks.runtime import demotion, detach
from carphooks.runtime.context import Context as Context  # re-exported for the CLI
from carphooks.runtime.context import build_context as build_context
from carphooks.runtime.context import (
    current_peers,
    current_quorum,
    in_maintenance,
)
from carphooks.runtime.dad import Repairs
from carphooks.runtime.engine import Outcome, address_status, readds
from carphooks.runtime.events import CarpEvent, TincEnv, parse_carp_event, parse_tinc_env
from carphooks.runtime.policy import Decision, Quorum, decide, quorum
from carphooks.state import Held, Peers

if TYPE_CHECKING:  # the status model and the checks: imported by ``status`` (never a hook)
    from carphooks.mesh import Mesh
    from carphooks.runtime import status as model


@dataclass
class ActionResult:
    """What one action did: every action returns one (entry points render it).

    ``outcomes``: the groups converged; ``lines``: what changed beyond floating
    addresses (VPN, CARP, demotion); ``warnings``; ``notes``: closing remarks.
    """

    outcomes: list[Outcome] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """Whether a group could not be converged (the exit code is then 1)."""
        return any(o.errors for o in self.outcomes)

    @property
    def changed(self) -> bool:
        """Whether anything was (or in a dry run would be) changed."""
        return bool(self.lines) or any(o.changes for o in self.outcomes)

    def text(self, dry_run: bool = False) -> list[str]:
        """Human-readable lines: changes, address changes and errors, warnings, notes
        (with ``dry_run``, worded as what would be done: nothing was)."""
        lines = [would(line) for line in self.lines] if dry_run else list(self.lines)
        return [*lines, *outcome_lines(self.outcomes, dry_run),
                *(f"warning: {w}" for w in self.warnings), *self.notes]


# The past tense an action line starts with, and its "would ..." form for a dry run.
_WOULD = {"assigned": "assign", "brought": "bring", "configured": "configure",
          "updated": "update", "set": "set", "demoted": "demote", "removed": "remove",
          "added": "add"}


def would(line: str) -> str:
    """A change line worded as what a dry run would do (``demoted CARP by 240`` ->
    ``would demote CARP by 240``)."""
    verb, _, rest = line.partition(" ")
    if verb in _WOULD:
        return f"would {_WOULD[verb]} {rest}"
    return f"would: {line}"


@dataclass
class GroupView:
    """One group's observed and desired state."""

    group: Group
    carp: CarpState
    decision: Decision
    external: Interface | None
    carp_if: Interface | None


class Reader:
    """Reads each interface at most once per action (``seed``: readings to start from)."""

    def __init__(self, ctx: Context, seed: Mapping[str, Interface | None] | None = None
                 ) -> None:
        self.ctx = ctx
        self.cache: dict[str, Interface | None] = dict(seed or {})

    def get(self, ifname: str) -> Interface | None:
        if ifname not in self.cache:
            self.cache[ifname] = self.ctx.engine.read(ifname)
        return self.cache[ifname]

    def prefetch(self, names: Iterable[str]) -> None:
        """Read the interfaces not read yet together (one command where the backend can)."""
        unread = [n for n in dict.fromkeys(names) if n not in self.cache]
        if unread:
            self.cache.update(self.ctx.engine.read_many(unread))

    def prefetch_groups(self, groups: Iterable[Group]) -> None:
        """Read what :func:`observe` reads of these groups, together."""
        carp = self.ctx.backend.reads_carp_interface
        self.prefetch(n for g in groups for n in ((g.carp_interface,) if carp else ())
                      + (g.external_interface,))

    def forget(self, ifname: str) -> None:
        self.cache.pop(ifname, None)


def observe(ctx: Context, group: Group, reader: Reader, q: Quorum) -> GroupView:
    """Read the group's interfaces and decide."""
    reader.prefetch_groups([group])
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
        if view.decision.hold and ctx.release_only is not None:  # keep, but take nothing
            outcome = Outcome(group=group, hold=True)
            outcome.errors.append(f"group {group.name}: not taken ({ctx.release_only})")
            ctx.log.error(outcome.errors[-1])
            results[i] = outcome
        elif view.external is None:
            outcome = Outcome(group=group, hold=view.decision.hold)
            missing = f"interface {group.external_interface} does not exist"
            if view.decision.hold:
                outcome.errors.append(f"{missing}: cannot assign group {group.name}")
                ctx.log.error(outcome.errors[-1])
            else:
                ctx.log.info(f"{missing}: nothing of group {group.name} to remove")
            results[i] = outcome
        else:
            todo.append((i, view))
    if todo:  # one plan per group: it decides on probing and is what the engine applies
        cache = {name: iface for name, iface in reader.cache.items() if iface is not None}
        planned = ctx.engine.plan_all([(v.group, v.decision.hold) for _, v in todo], cache)
        run: list[tuple[int, GroupView, Outcome]] = []
        for (i, view), outcome in zip(todo, planned, strict=True):
            if view.decision.hold and _takes(ctx, outcome):
                results[i] = _probe_instead(ctx, view.group)
            else:
                run.append((i, view, outcome))
        ctx.engine.apply_all([o for _, _, o in run], cache)
        reader.cache.update(cache)
        for i, view, outcome in run:
            results[i] = outcome
            added = [c.address for c in outcome.done if c.op == "add"]
            if added and not ctx.dry_run:
                ctx.to_announce.append((outcome.group.external_interface, added))
                ctx.took[outcome.group.name] = (outcome.group, view.carp)
    return [results[i] for i in range(len(views))]


def _takes(ctx: Context, outcome: Outcome) -> bool:
    """Whether the plan takes an address another host may hold (an add that is not a
    DAD re-add), on a group and backend that probe first."""
    if not (outcome.group.probe and ctx.backend.supports_probe) or ctx.dry_run:
        return False
    again = readds(outcome.changes)
    return any(c.op == "add" and c not in again for c in outcome.changes)


def _probe_instead(ctx: Context, group: Group) -> Outcome:
    """Leave the take to a detached prober (one per group at a time)."""
    outcome = Outcome(group=group, hold=True)
    if _probing(ctx, group):
        outcome.warnings.append(f"group {group.name}: a probe is already running")
    else:  # taken by the detached child once nobody answers
        ctx.to_probe.append(group)
        outcome.warnings.append(f"group {group.name}: probing before taking it")
    return outcome


def apply_view(ctx: Context, view: GroupView, reader: Reader) -> Outcome:
    """Converge one observed group."""
    return apply_views(ctx, [view], reader)[0]


def finish(ctx: Context) -> None:
    """Hand slow work (probes, announcements, DAD follow-up) to a detached child; the
    hook returns at once."""
    if (not ctx.to_announce and not ctx.to_probe and not ctx.to_watch) or ctx.dry_run \
            or ctx.lock_depth:
        return  # (under the lock, e.g. a replayed event: the holder finishes after letting go)
    jobs = list(ctx.to_announce)
    probes = list(ctx.to_probe)
    watch = list(ctx.to_watch)
    ctx.to_announce.clear()
    ctx.to_probe.clear()
    ctx.to_watch.clear()

    def work() -> None:
        readded: list[tuple[str, list[IPInterface]]] = []
        watcher = None
        if watch:  # alongside the announcements: DAD ends within about a second
            watcher = threading.Thread(target=lambda: readded.extend(watch_dad(ctx, watch)))
            watcher.start()
        for ifname, addresses in jobs:
            ctx.backend.announce(ifname, addresses)
        for group in probes:
            probe_then_take(ctx, group)
        if watcher is not None:
            watcher.join()
        for ifname, addresses in [*ctx.to_announce, *readded]:
            ctx.backend.announce(ifname, addresses)

    detach.spawn(work, ctx.log)


DAD_WATCH = 10.0  # seconds the detached child follows the DAD of addresses it took
DAD_POLL = 0.5


def watch_dad(ctx: Context, groups: Sequence[Group],
              window: float = DAD_WATCH) -> list[tuple[str, list[IPInterface]]]:
    """Follow IPv6 DAD of groups just taken; re-add a duplicated address once due.

    FreeBSD does not retry DAD (carphooks/runtime/dad.py). At a failback the old master often
    still holds the address for a moment, so the new master's copy ends duplicated;
    once the old master let go, a remove + add runs DAD again and the address
    becomes usable. Attempts are spaced by the recorded backoff, so a host that keeps
    answering gets a few repairs here and then one per backoff from ``reconcile``.
    Returns what was added again (to announce).
    """
    deadline = time.monotonic() + window
    pending = list(groups)
    readded: list[tuple[str, list[IPInterface]]] = []
    while pending and time.monotonic() < deadline:
        time.sleep(DAD_POLL)
        still: list[Group] = []
        for group in pending:
            iface = ctx.engine.read(group.external_interface)
            if iface is None or not any(address_status(iface, a).in_dad
                                        for a in group.addresses):
                continue  # settled (or gone): nothing more to follow
            if not ctx.engine.repair_due(group, iface):
                still.append(group)
                continue
            try:
                with exclusive(ctx, state_ok=False):
                    reader = Reader(ctx)
                    view = observe(ctx, group, reader, current_quorum(ctx))
                    if not view.decision.hold or view.external is None:
                        continue  # no longer ours to hold: stop following it
                    outcome = ctx.engine.converge(group, True, view.external)
            except CarphooksError as exc:
                ctx.log.warning(f"group {group.name}: DAD follow-up: {exc}")
                still.append(group)
                continue
            still.append(group)
            added = [c.address for c in outcome.done if c.op == "add"]
            if added:
                readded.append((group.external_interface, added))
        pending = still
    return readded


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
    try:
        ctx.state.write(name, {"until": time.time() + PROBE_WINDOW + 2})
    except StateError as exc:  # a take may depend on bookkeeping; the others go on
        ctx.log.error(f"group {group.name}: {exc}; probing anyway")
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
        try:
            answered = ctx.backend.probe(ifname, v4, PROBE_LISTEN) or {}
        except (CarphooksError, OSError) as exc:
            # The guard is an extra: a MASTER that cannot probe takes the address as it
            # did before the guard existed, rather than leaving it unheld.
            ctx.log.warning(f"group {group.name}: ARP probe on {ifname} failed ({exc}); "
                            "taking without it")
            break
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
    with exclusive(ctx, state_ok=False):
        reader = Reader(ctx)
        view = observe(ctx, group, reader, current_quorum(ctx))
        if not view.decision.hold:
            ctx.log.info(f"group {group.name}: no longer to hold ({view.decision.reason}); "
                         "not taking")
            return False
        if view.external is None:
            return False
        outcome = ctx.engine.converge(group, True, view.external)
        if any(c.op == "add" for c in outcome.done):
            ctx.took[group.name] = (group, view.carp)
    added = [c.address for c in outcome.done if c.op == "add"]
    if added:
        ctx.log.notice(f"group {group.name}: taken after a quiet ARP probe "
                       f"({view.decision.reason})")
        ctx.to_announce.append((ifname, added))
    return outcome.ok


# -- the lock, bookkeeping, events left for the lock holder -------------------------------

PENDING_MAX_AGE = 60.0  # seconds; an older pending event is stale (e.g. from before a reboot)
PENDING_BATCH = 32  # pending events replayed per round
SETTLE_ROUNDS = 3  # re-check/replay rounds before letting go of the lock


@contextlib.contextmanager
def exclusive(ctx: Context, event: Mapping[str, Any] | None = None, *,
              state_ok: bool = True) -> Iterator[None]:
    """Hold the state lock around read-decide-act (re-entrant within one process).

    - A hook passes its ``event``: when the lock times out, the event is left for the
      holder (a ``pending-*.json`` file), which replays it before letting go; the hook
      exits 7 saying so.
    - When the lock cannot be used (state_dir unsafe or unwritable, something planted at
      ``lock``; or it timed out and the event could not be left), the action goes on
      without it; when nothing can be recorded (the lock opens read-only), it goes on
      under it. Either way it only releases, never takes: removing an address is
      idempotent, and a holder that took addresses re-reads CARP before letting go. The
      problem is raised (one line, its exit code) after the release. Actions that need
      the state (``state_ok=False``: takes, maintenance) raise it at once.
    - Before letting go: re-read the CARP state of groups just taken and converge again
      if it changed, and replay pending events; after letting go, pick up an event left
      in between.
    """
    if ctx.lock_depth:
        yield
        return
    problem: CarphooksError | None = None
    held: Held | None = None
    try:
        held = ctx.state.acquire(ctx.config.lock_timeout)
    except LockTimeout as exc:
        if event is None or ctx.dry_run:
            raise
        held = _leave_pending(ctx, event, exc)
        problem = None if held is not None else exc
    except StateError as exc:
        problem = exc
    if held is not None and not held.writable:
        problem = StateError(f"state_dir {ctx.state.path} takes no writes (read-only or "
                             "full): nothing can be recorded")
    if problem is not None:
        if not state_ok:
            if held is not None:
                held.release()
            raise problem
        ctx.log.error(f"{problem}; releasing only{'' if held else ', without the lock'}")
        ctx.release_only = str(problem)
    if held is None:
        try:
            yield
        finally:
            ctx.release_only = None
        raise problem or StateError("no lock")
    ctx.lock_depth = 1
    try:
        _replay_pending(ctx)
        yield
        _settle(ctx)
    finally:
        ctx.lock_depth = 0
        ctx.took.clear()
        ctx.release_only = None
        held.release()
    if problem is not None:
        raise problem
    _pick_up_pending(ctx)


def _leave_pending(ctx: Context, event: Mapping[str, Any], exc: LockTimeout) -> Held | None:
    """Leave ``event`` for the lock holder, then try the lock once more (it may have let
    go before looking). The lock when got; None when the event could not be left."""
    try:
        name = ctx.state.add_pending({**event, "time": time.time()})
    except StateError as err:
        ctx.log.error(f"{exc}, and the event cannot be left for the holder: {err}")
        return None
    try:
        held = ctx.state.acquire(0)
    except CarphooksError:
        raise LockTimeout(f"{exc}; the event is left for the lock holder") from None
    with contextlib.suppress(StateError):
        ctx.state.remove(name)  # handled here after all
    return held


def _settle(ctx: Context) -> None:
    """Before letting go of the lock: nothing taken may outlive a CARP change, no event
    left for the holder may be dropped."""
    for _ in range(SETTLE_ROUNDS):
        try:
            moved = _recheck_taken(ctx)
        except CarphooksError as exc:
            ctx.log.error(f"re-check after taking: {exc}")
            moved = False
        if not _replay_pending(ctx) and not moved:
            return


def _recheck_taken(ctx: Context) -> bool:
    """Re-read CARP for the groups taken under this lock; converge again those whose
    state changed since (their BACKUP event may have timed out on the lock meanwhile)."""
    taken = list(ctx.took.values())
    ctx.took.clear()
    if not taken:
        return False
    # The engine's verification read after the take read the CARP interface too: when
    # no command ran since, it is what reading again now would return.
    reader = Reader(ctx, ctx.engine.last_read())
    changed = [g for g, carp in taken if _carp_read(ctx, g, reader) is not carp]
    if not changed:
        return False
    q = current_quorum(ctx)
    views = [observe(ctx, g, reader, q) for g in changed]
    for view in views:
        ctx.log.warning(f"group {view.group.name}: CARP is {view.carp.value} now, it changed "
                        f"while the group was being taken: converging again")
    apply_views(ctx, views, reader)
    return True


def _carp_read(ctx: Context, group: Group, reader: Reader) -> CarpState:
    carp_if = reader.get(group.carp_interface) if ctx.backend.reads_carp_interface else None
    return ctx.backend.carp_state(group, carp_if)


def _replay_pending(ctx: Context) -> bool:
    """Replay the events hooks left when the lock timed out, oldest first."""
    if ctx.dry_run:
        return False
    try:
        names = ctx.state.pending()[:PENDING_BATCH]
    except StateError as exc:
        ctx.log.error(f"pending events: {exc}")
        return False
    for name in names:
        try:
            data = ctx.state.read(name)
        except StateError as exc:
            data = None
            ctx.log.error(f"{exc}; dropped")
        try:
            ctx.state.remove(name)
        except StateError as exc:
            ctx.log.error(f"{exc}; not replaying it")
            continue
        if data is not None:
            _replay(ctx, name, data)
    return bool(names)


def _replay(ctx: Context, name: str, data: Mapping[str, Any]) -> None:
    when = data.get("time")
    hook = data.get("hook")
    try:
        if not isinstance(when, int | float) or not 0 <= time.time() - when <= PENDING_MAX_AGE:
            raise StateError(f"pending event {name} is stale or undated")
        if hook == "carp-event":
            event = parse_carp_event(str(data.get("subsystem")), str(data.get("type")))
            ctx.log.info(f"replaying carp-event {event.subsystem} {event.state.value}, "
                         "which timed out on the lock")
            carp_event(ctx, event)
            return
        run = TINC_REPLAY.get(str(hook))
        env = data.get("env")
        if run is None or not isinstance(env, dict):
            raise StateError(f"pending event {name}: unknown content")
        parsed = parse_tinc_env({str(k): v for k, v in env.items() if isinstance(v, str)},
                                need_node=str(hook).startswith("tinc-host-"))
        ctx.log.info(f"replaying {hook} ({parsed.node or parsed.name}), "
                     "which timed out on the lock")
        run(ctx, parsed)
    except CarphooksError as exc:
        ctx.log.error(f"pending {hook or 'event'}: {exc}")


def _pick_up_pending(ctx: Context) -> None:
    """After letting go: an event left just after the last look is replayed here, unless
    another process holds the lock now (then it replays it)."""
    if ctx.dry_run:
        return
    for _ in range(SETTLE_ROUNDS):
        try:
            if not ctx.state.pending():
                return
            held = ctx.state.acquire(0)
        except CarphooksError:
            return
        ctx.lock_depth = 1
        try:
            _settle(ctx)
        finally:
            ctx.lock_depth = 0
            ctx.took.clear()
            held.release()


def _tinc_marker(env: TincEnv) -> dict[str, str]:
    """tinc's environment for a pending event (parsed again when replayed)."""
    pairs = (("NETNAME", env.netname), ("NAME", env.name), ("INTERFACE", env.interface),
             ("DEVICE", env.device), ("NODE", env.node), ("REMOTEADDRESS", env.remote_address),
             ("REMOTEPORT", env.remote_port))
    return {k: v for k, v in pairs if v is not None}


def _record(ctx: Context, what: str, write: Callable[[], None]) -> bool:
    """Bookkeeping: a failed write is logged and never stops a release."""
    if ctx.dry_run:
        return True
    try:
        write()
    except StateError as exc:
        ctx.log.error(f"cannot record {what}: {exc}")
        return False
    return True


def _record_peers(ctx: Context, reachable: frozenset[str], tinc_up: bool,
                  drop: bool = True) -> bool:
    """Record reachable peers; if that fails and ``drop``, remove the stale record, which
    may count peers that are gone (absent means nobody reachable: the safe side)."""
    if _record(ctx, "reachable peers", lambda: ctx.state.write_peers(reachable, tinc_up)):
        return True
    if drop:
        try:
            ctx.state.remove("peers.json")
        except StateError as exc:
            ctx.log.error(f"stale peers record kept: {exc}")
    return False


def _record_carp(ctx: Context, subsystem: str, state: CarpState) -> None:
    """Remember an event's CARP state (Linux); this process acts on it even unrecorded."""
    try:
        ctx.backend.record_event(subsystem, state)
    except StateError as exc:
        ctx.log.error(f"cannot record CARP state {subsystem} {state.value}: {exc}")


# -- carp-event --------------------------------------------------------------------

def carp_event(ctx: Context, event: CarpEvent) -> ActionResult:
    """devd (or an adapter) reported a CARP state change: converge to the state NOW."""
    group = ctx.config.group_for(event.vhid, event.interface)
    if group is None:
        ctx.log.info(f"CARP event {event.subsystem} {event.state.value}: no group for vhid "
                     f"{event.vhid} on {event.interface} in {ctx.config.path}; ignored")
        return ActionResult()
    with exclusive(ctx, {"hook": "carp-event", "subsystem": event.subsystem,
                         "type": event.state.value}):
        _record_carp(ctx, event.subsystem, event.state)
        _record(ctx, "the last event", lambda: ctx.state.write_last_event(
            "carp-event", f"{event.subsystem} {event.state.value}"))
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
        if outcome.hold and not ctx.dry_run and any(s.in_dad for s in outcome.held.values()):
            ctx.to_watch.append(group)  # DAD still running, or it failed: follow it
    finish(ctx)
    return ActionResult([outcome])


# -- reconcile / hold / release -----------------------------------------------------

def reconcile(ctx: Context, groups: Sequence[Group] | None = None,
              why: str = "reconcile") -> ActionResult:
    """Converge every (or the given) group to the CARP state and quorum now.

    A group named twice (``web web``, or ``web 1@tap0``) is converged once: applying
    its changes twice would re-add an IPv4 address, which FreeBSD bounces.
    """
    unique = list({g.subsystem: g for g in groups or ctx.config.groups}.values())
    with exclusive(ctx):
        outcomes = _reconcile_locked(ctx, unique, why)
        if ctx.release_only is None:
            demotion.repair(ctx)
    finish(ctx)
    return ActionResult(outcomes)


def _reconcile_locked(ctx: Context, groups: Iterable[Group], why: str,
                      q: Quorum | None = None, reader: Reader | None = None) -> list[Outcome]:
    """Observe and converge ``groups``; log which ones needed a repair (and why)."""
    q = q or current_quorum(ctx)
    reader = reader or Reader(ctx)
    groups = list(groups)
    reader.prefetch_groups(groups)
    views = [observe(ctx, group, reader, q) for group in groups]
    outcomes = apply_views(ctx, views, reader)
    for view, outcome in zip(views, outcomes, strict=True):
        if outcome.done and not ctx.dry_run:  # a dry run claims no change in syslog
            ctx.log.notice(f"{why}: group {view.group.name} repaired "
                           f"({'held' if view.decision.hold else 'released'}: "
                           f"{view.decision.reason})")
    return outcomes


def manual(ctx: Context, group: Group, hold: bool, force: bool) -> ActionResult:
    """``carphooks hold|release GROUP``: by hand, until the next event or reconcile."""
    with exclusive(ctx):
        reader = Reader(ctx)
        view = observe(ctx, group, reader, current_quorum(ctx))
        if hold and not view.decision.hold and not force:
            raise UsageError(f"group {group.name}: refusing to hold ({view.decision.reason}); "
                             "another host may hold the address. Use --force to override")
        view.decision = Decision(hold, "by hand")
        if not ctx.dry_run:
            ctx.log.notice(f"group {group.name}: {'hold' if hold else 'release'} "
                           "requested by hand")
        outcome = apply_view(ctx, view, reader)
    finish(ctx)
    return ActionResult([outcome])


# -- tinc ------------------------------------------------------------------------------

def _foreign(ctx: Context, env: TincEnv, hook: str) -> bool:
    """Whether a tinc script runs for a network or interface carphooks does not manage
    (logged; the caller then changes nothing: another VPN's events say nothing about
    this cluster's peers or addresses)."""
    if env.netname is not None and env.netname != ctx.config.netname:
        why = f"tinc network {env.netname!r} is not tinc.netname {ctx.config.netname!r}"
    elif not ctx.config.groups_on(env.interface):
        why = f"no group has carp_interface {env.interface}"
    else:
        return False
    ctx.log.info(f"{hook} for {env.interface}: {why} in {ctx.config.path}; ignored")
    return True


def tinc_up(ctx: Context, env: TincEnv) -> ActionResult:
    """tincd attached its device: address it, configure CARP, release stale addresses."""
    if _foreign(ctx, env, "tinc-up"):
        return ActionResult()
    ctx.host = env.name
    host = ctx.config.host(env.name)
    if host is None:
        ctx.log.warning(f"tinc node {env.name!r} has no [hosts.{env.name}] table in "
                        f"{ctx.config.path}")
    done: list[str] = []
    groups = ctx.config.groups_on(env.interface)
    secrets: dict[str, str | None] = {}
    if ctx.config.topology == "tinc":  # refuse before any change (ConfigError, exit 6)
        ctx.backend.check_carp_features(groups)  # e.g. unicast CARP before FreeBSD 14.0
        secrets = {g.name: g.carp.secret() for g in groups}
    with exclusive(ctx, {"hook": "tinc-up", "env": _tinc_marker(env)}):
        _record(ctx, "this host's name", lambda: ctx.state.write(
            "self.json", {"name": env.name, "time": time.time()}))
        _record_peers(ctx, frozenset(), tinc_up=True)
        _record(ctx, "the last event", lambda: ctx.state.write_last_event(
            "tinc-up", f"{env.name} on {env.interface}"))
        mac = host.mac if host is not None else configmod.derive_mac(env.name,
                                                                      ctx.config.netname)
        done += ctx.backend.setup_vpn(env.interface, mac,
                                      host.vpn_address if host is not None else None)
        reader = Reader(ctx)
        if ctx.config.topology == "tinc":
            for group in groups:
                current = reader.get(group.carp_interface)
                if current is None:
                    continue
                secret = secrets[group.name]
                v4, v6 = ctx.config.peers_for(group, env.name)
                done += ctx.backend.configure_carp(
                    group, ctx.config.advskew_for(group, env.name), secret, current,
                    peer=v4[0] if v4 else None, peer6=v6[0] if v6 else None)
                reader.forget(group.carp_interface)
        demotion.resync(ctx)
        outcomes = _reconcile_locked(ctx, groups, "tinc-up", quorum(
            ctx.config, env.name, Peers(reachable=frozenset(), tinc_up=True, updated=0.0)),
            reader)
    if not ctx.dry_run:  # (a dry run changed nothing: no line may claim it did)
        for line in done:
            ctx.log.notice(f"tinc-up: {line}")
    finish(ctx)
    return ActionResult(outcomes, lines=done)


def tinc_down(ctx: Context, env: TincEnv) -> ActionResult:
    """tincd is stopping: CARP over this device ends, so release its groups' addresses."""
    if _foreign(ctx, env, "tinc-down"):
        return ActionResult()
    ctx.host = env.name
    outcomes: list[Outcome] = []
    with exclusive(ctx, {"hook": "tinc-down", "env": _tinc_marker(env)}):
        _record_peers(ctx, frozenset(), tinc_up=False)
        _record(ctx, "the last event", lambda: ctx.state.write_last_event(
            "tinc-down", f"{env.name} on {env.interface}"))
        reader = Reader(ctx)
        views = []
        for group in ctx.config.groups_on(env.interface):
            _record_carp(ctx, group.subsystem, CarpState.INIT)
            views.append(GroupView(group, CarpState.INIT, Decision(False, "tinc is going down"),
                                   reader.get(group.external_interface), None))
        outcomes = apply_views(ctx, views, reader)
    return ActionResult(outcomes)


def tinc_host(ctx: Context, env: TincEnv, up: bool) -> ActionResult:
    """A tinc node became reachable or unreachable: track peers, act on quorum changes."""
    if _foreign(ctx, env, f"tinc-host-{'up' if up else 'down'}"):
        return ActionResult()
    ctx.host = env.name
    node = env.node or ""
    outcomes: list[Outcome] = []
    notes: list[str] = []
    hook = f"tinc-host-{'up' if up else 'down'}"
    with exclusive(ctx, {"hook": hook, "env": _tinc_marker(env)}):
        try:
            before, unknown = ctx.state.peers(ctx.config.voters), False
        except StateError as exc:  # what held before is unknown: act as on a change
            ctx.log.error(f"{exc}; treating every peer as unreachable")
            before, unknown = Peers(reachable=frozenset(), tinc_up=False, updated=0.0), True
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
        # A peer going away must be recorded or its stale record dropped; a peer coming
        # back that cannot be recorded is not acted on (only taking may need bookkeeping).
        recorded = _record_peers(ctx, after.reachable, tinc_up=True, drop=not up)
        _record(ctx, "the last event", lambda: ctx.state.write_last_event(hook, node))
        q_after = quorum(ctx.config, env.name, after)
        ctx.log.info(f"tinc node {node} {'up' if up else 'down'}"
                     f"{' (' + env.remote_address + ')' if env.remote_address else ''}: "
                     f"{q_after.reason}")
        if q_before.ok != q_after.ok or unknown:
            votes = f"{q_after.have}/{len(ctx.config.voters)}"
            if ctx.dry_run:  # (nothing changes: no syslog line may say it does)
                notes.append(f"quorum would be {'regained' if q_after.ok else 'lost'} "
                             f"({votes})")
            elif q_after.ok:
                ctx.log.notice(f"quorum regained ({votes})")
            else:
                ctx.log.warning(f"quorum lost ({votes}): releasing floating addresses")
            why = hook
            if q_after.ok and not recorded:
                ctx.log.error(f"quorum regained but not recorded: not taking ({why} or "
                              "reconcile retries once the state directory is writable)")
            elif q_after.ok:  # undo the demotion first, then take what CARP says
                _demote(ctx, "quorum", False)
                outcomes = _reconcile_locked(ctx, ctx.config.groups, why, q_after)
            else:  # release at once (on what this event knows), then demote
                outcomes = _reconcile_locked(ctx, ctx.config.groups, why, q_after)
                _demote(ctx, "quorum", True)
    finish(ctx)
    return ActionResult(outcomes, notes=notes)


def _demote(ctx: Context, reason: str, on: bool) -> None:
    """Change carphooks' demotion; a failure is logged, never stops a release."""
    try:
        demotion.set_reason(ctx, reason, on)
    except CarphooksError as exc:
        ctx.log.error(f"cannot {'add' if on else 'remove'} CARP demotion ({reason}): {exc}")


# -- maintenance -----------------------------------------------------------------------

def maintenance_on(ctx: Context, wait: float) -> ActionResult:
    """Persist the flag, demote, and wait (bounded) until a peer is master everywhere."""
    if not ctx.backend.supports_demotion:
        raise CarphooksError(f"maintenance needs CARP demotion, which the {ctx.backend.name} "
                             "backend lacks: stop the CARP daemon (ucarp/keepalived) instead")
    result = ActionResult()
    with exclusive(ctx, state_ok=False):
        if ctx.dry_run:
            result.lines.append("set the maintenance flag (kept across reboots)")
        else:
            ctx.state.write_maintenance(True)  # the flag first: a reboot re-applies it
        if demotion.set_reason(ctx, "maintenance", True):
            result.lines.append(f"demoted CARP by {demotion.STEP}")
        preempt = ctx.backend.sysctl(demotion.PREEMPT_OID)
    if preempt == 0:
        msg = ("net.inet.carp.preempt is 0 on this host; the peers need "
               "net.inet.carp.preempt=1 or nothing moves")
        if not ctx.dry_run:
            ctx.log.warning(msg)
        result.warnings.append(msg)
    if ctx.dry_run:
        result.notes.append(f"then it would wait up to {wait:g} s for a peer to take over")
        return result
    masters = [g for g in ctx.config.groups if _carp_now(ctx, g) is CarpState.MASTER]
    deadline = time.monotonic() + wait
    while masters and time.monotonic() < deadline:
        time.sleep(0.2)
        masters = [g for g in masters if _carp_now(ctx, g) is CarpState.MASTER]
    result.outcomes = reconcile(ctx, why="maintenance on").outcomes
    if masters:
        names = ", ".join(g.name for g in masters)
        hint = " (net.inet.carp.preempt is 0: peers need preempt=1)" if preempt == 0 else ""
        raise CarphooksError(f"maintenance is on and CARP demoted, but no peer took over "
                             f"{names} within {wait:g} s{hint}; this host keeps serving")
    result.notes.append("maintenance on: every group has moved to a peer")
    return result


def maintenance_off(ctx: Context) -> ActionResult:
    """Remove only the demotion carphooks added for maintenance, then clear the flag."""
    result = ActionResult()
    with exclusive(ctx, state_ok=False):
        if demotion.set_reason(ctx, "maintenance", False):
            result.lines.append("removed the maintenance demotion")
        if ctx.dry_run:
            result.lines.append("set maintenance off")
        else:
            ctx.state.write_maintenance(False)
    if not ctx.dry_run:
        result.notes.append("maintenance off")
    return result


def _carp_now(ctx: Context, group: Group) -> CarpState:
    current = ctx.engine.read(group.carp_interface) if ctx.backend.reads_carp_interface else None
    return ctx.backend.carp_state(group, current)


# -- status ------------------------------------------------------------------------------

def status(ctx: Context) -> model.Report:
    """A read-only report of every group, for humans, JSON and monitoring (rendered by
    :mod:`carphooks.runtime.status`, imported here: the hooks never build one)."""
    from carphooks.runtime import health
    from carphooks.runtime import status as model

    q = current_quorum(ctx)
    maint = in_maintenance(ctx)
    reader = Reader(ctx)
    repairs = Repairs(ctx.state, ctx.log, dry_run=True)  # read-only
    groups = tuple(replace(_group_status(view, repairs), vhid_present=(
        view.carp_if is not None and view.group.vhid in view.carp_if.carp
        if ctx.backend.reads_carp_interface else None))
        for view in (observe(ctx, g, reader, q) for g in ctx.config.groups))
    dem = demotion.status(ctx)
    checks, checks_error = health.report(ctx.state, ctx.config, dem.added)
    return model.Report(
        host=ctx.host, backend=ctx.backend.name,
        quorum=model.QuorumStatus(ok=q.ok, have=q.have, need=q.need, mode=q.mode,
                                  reason=q.reason, voters=len(ctx.config.voters)),
        maintenance=maint, demotion=dem, last_event=_last_event(ctx),
        groups=groups, mesh=_mesh(ctx), checks=checks, checks_error=checks_error)


def _last_event(ctx: Context) -> model.LastEvent | None:
    from carphooks.runtime import status as model

    try:
        last = ctx.state.last_event()
    except StateError as exc:
        return model.LastEvent(error=str(exc))
    if not last:
        return None
    when = last.get("time")
    when = float(when) if isinstance(when, int | float) and not isinstance(when, bool) \
        else None
    return model.LastEvent(
        source=_text(last.get("source")), detail=_text(last.get("detail")), time=when,
        age=round(time.time() - when, 1) if when is not None else None)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _group_status(view: GroupView, repairs: Repairs) -> model.GroupStatus:
    """A group's addresses (with DAD details of tentative/duplicated ones) and problems.

    Only ``held`` counts as held: a duplicated address is unusable (another host on
    the link answers for it) and so is one stuck tentative.
    """
    from carphooks.runtime import status as model

    group, hold = view.group, view.decision.hold
    ifname = group.external_interface
    up = view.external.up if view.external is not None else False
    addresses: list[model.AddressStatus] = []
    problems: list[str] = []
    for address in group.addresses:
        state = address_status(view.external, address)
        dad = None
        if state.in_dad:
            note = repairs.describe(ifname, address, state, up)
            info = repairs.info(ifname, address)
            dad = model.DadStatus(
                detail=note, since=info["since"] if info else None,
                attempts=int(info["attempts"]) if info else None,
                last=info["last"] if info else None)
            if hold and (state is AddressState.DUPLICATED or repairs.stuck(ifname, address)):
                problems.append(f"{address.with_prefixlen} {state} ({note})")
        addresses.append(model.AddressStatus(address, state, dad))
    if hold:
        missing = [a.address.with_prefixlen for a in addresses if not a.state.present]
        if missing:
            problems.insert(0, "drift: should hold, missing " + ", ".join(missing))
    else:
        present = [a.address.with_prefixlen for a in addresses if a.state.present]
        if present:
            problems.insert(0, "drift: should release, holds " + ", ".join(present))
    return model.GroupStatus(
        name=group.name, vhid=group.vhid, carp_interface=group.carp_interface,
        external_interface=ifname, carp=view.carp, should_hold=hold,
        reason=view.decision.reason, addresses=tuple(addresses), problems=tuple(problems))


def _mesh(ctx: Context) -> Mesh | None:
    """How each other voter is reached over tinc: direct links from tincd's TCP sockets
    (read-only: one listing command; imported here, hooks never need it)."""
    if ctx.config.topology != "tinc":
        return None
    from carphooks import mesh

    if not [v for v in ctx.config.voters if v != ctx.host]:
        return mesh.Mesh(host=ctx.host)
    peers = current_peers(ctx)
    reachable = peers.reachable if peers.tinc_up else frozenset()
    conns: list[mesh.TcpConn] | None
    error = None
    try:
        conns = mesh.list_connections(ctx.runner, ctx.backend.name)
    except mesh.MeshError as exc:
        conns, error = None, str(exc)
    return mesh.mesh(ctx.config.tinc_dir, ctx.host, ctx.config.voters, reachable, conns, error)


def outcome_lines(outcomes: Iterable[Outcome], dry_run: bool = False) -> list[str]:
    """Human-readable lines for what outcomes did (or, in a dry run, would do)."""
    lines = []
    for o in outcomes:
        for c in o.done:
            if dry_run:
                lines.append(f"would {c.op} {c.address} "
                             f"{'on' if c.op == 'add' else 'from'} {c.interface}")
            else:
                lines.append(f"{'assigned' if c.op == 'add' else 'removed'} {c.address} "
                             f"on {c.interface}")
        lines.extend(f"error: {e}" for e in o.errors)
        lines.extend(f"warning: {w}" for w in o.warnings)
    return lines


def env_snapshot(environ: Mapping[str, str]) -> dict[str, str]:
    """The tinc variables of ``environ`` (for logs and tests)."""
    keys = ("NETNAME", "NAME", "DEVICE", "INTERFACE", "NODE", "REMOTEADDRESS", "REMOTEPORT")
    return {k: environ[k] for k in keys if k in environ}


def tinc_host_up(ctx: Context, env: TincEnv) -> ActionResult:
    """tinc ``host-up``."""
    return tinc_host(ctx, env, True)


def tinc_host_down(ctx: Context, env: TincEnv) -> ActionResult:
    """tinc ``host-down``."""
    return tinc_host(ctx, env, False)


TINC_REPLAY: dict[str, Callable[[Context, TincEnv], ActionResult]] = {
    "tinc-up": tinc_up, "tinc-down": tinc_down,
    "tinc-host-up": tinc_host_up, "tinc-host-down": tinc_host_down,
}
