"""The CARP demotion carphooks owns (quorum loss, maintenance).

``net.inet.carp.demotion`` is additive: carphooks records exactly what it added, per
reason, and subtracts only that (never more than the kernel holds: a reboot resets
the kernel's counter but not the record). The record is written before the kernel
changes, both ways: when it cannot be written nothing is added, and a demotion to be
removed stays (recorded, shown by status) rather than being subtracted twice later.

A record that cannot be read never counts as "nothing added" (that stranded the
demotion, and the next quorum loss doubled it): it is rebuilt from what carphooks
would be demoting for now (the maintenance flag, lost quorum), bounded by what the
kernel holds. ``status`` reports every mismatch; ``repair`` (reconcile) fixes them.

Health checks add their own reasons, ``check:NAME``, each by the check's ``weight``
while ``carphooks watch`` records the check failing (:mod:`carphooks.runtime.health`);
a check that is no longer configured, or whose record went stale, has its demotion
withdrawn by ``repair``. Demotion never takes an address from anyone: it only raises
the advskew a MASTER advertises (``DEMOTE_ADVSKEW`` in sys/netinet/ip_carp.c
``carp_send_ad_locked``, capped at 240), so a BACKUP with ``preempt=1`` advertising
strictly less takes over (``carp_input_c``); equal demotion everywhere changes no order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from carphooks.errors import CarphooksError, StateError
from carphooks.runtime.context import Context, current_quorum, in_maintenance

if TYPE_CHECKING:  # the hooks import this module, but never a check or the status model
    from carphooks.runtime.status import DemotionStatus

DEMOTION_OID = "net.inet.carp.demotion"
PREEMPT_OID = "net.inet.carp.preempt"
STEP = 240  # moves a master behind any advskew (what OPNsense adds for maintenance)
REASONS = ("maintenance", "quorum")
CHECK_PREFIX = "check:"  # + a check's name: its demotion (by its weight)


def _load(ctx: Context) -> tuple[dict[str, int] | None, str | None]:
    try:
        return ctx.state.demotion(), None
    except StateError as exc:
        return None, str(exc)


def _active(ctx: Context, reason: str) -> bool:
    """Whether carphooks should be demoting for ``reason`` now."""
    if reason == "maintenance":
        return in_maintenance(ctx)
    if reason == "quorum":
        return not current_quorum(ctx).ok
    if reason.startswith(CHECK_PREFIX):
        from carphooks.runtime import health  # only with a check's demotion recorded

        return health.failing(ctx.state, ctx.config, reason[len(CHECK_PREFIX):])
    return False


def _gone(reason: str) -> str:
    if reason.startswith(CHECK_PREFIX):
        return (f"check {reason[len(CHECK_PREFIX):]} is not failing (passing, no longer "
                "configured, or no carphooks watch records it)")
    return "maintenance is off" if reason == "maintenance" else "quorum holds"


def weight_of(ctx: Context, reason: str) -> int:
    """What carphooks adds for ``reason``: a check's weight, else STEP."""
    if reason.startswith(CHECK_PREFIX):
        name = reason[len(CHECK_PREFIX):]
        return next((c.weight for c in ctx.config.checks if c.name == name), STEP)
    return STEP


def _reasons(ctx: Context, added: dict[str, int] | None = None) -> list[str]:
    """Every reason carphooks may demote for: the fixed ones, each configured check's,
    and any check reason in the record (a check removed from the config)."""
    checks = [c.reason for c in ctx.config.checks]
    recorded = [r for r in (added or {}) if r.startswith(CHECK_PREFIX) and r not in checks]
    return [*REASONS, *checks, *recorded]


def _write(ctx: Context, added: dict[str, int]) -> None:
    if not ctx.dry_run:
        ctx.state.write_demotion(added)


def _rebuild(ctx: Context, problem: str, changing: str | None, on: bool) -> dict[str, int]:
    """A record for an unreadable one: STEP per reason in force before this change
    (``changing`` is turning ``on``), as far as the kernel's demotion covers it."""
    presumed = [r for r in _reasons(ctx) if (not on if r == changing else _active(ctx, r))]
    kernel = ctx.backend.sysctl(DEMOTION_OID)
    budget = kernel if kernel is not None else sum(weight_of(ctx, r) for r in presumed)
    added: dict[str, int] = {}
    for reason in presumed:
        if budget >= weight_of(ctx, reason):
            added[reason] = weight_of(ctx, reason)
            budget -= weight_of(ctx, reason)
    ctx.log.error(f"{problem}; carphooks' demotion rebuilt as "
                  f"{', '.join(f'{r} {v}' for r, v in added.items()) or 'none'} "
                  f"(kernel demotion {kernel}, maintenance flag and quorum now)")
    try:
        _write(ctx, added)
    except StateError as exc:
        ctx.log.error(f"cannot rewrite the demotion record: {exc}")
    return added


def recorded(ctx: Context, changing: str | None = None, on: bool = False) -> dict[str, int]:
    """carphooks' own demotion by reason; an unreadable record is rebuilt, never {}."""
    return _current(ctx, changing, on)[0]


def _current(ctx: Context, changing: str | None, on: bool) -> tuple[dict[str, int], bool]:
    """The record, and whether it was readable (else rebuilt)."""
    added, problem = _load(ctx)
    if added is None:
        return _rebuild(ctx, problem or "demotion record unreadable", changing, on), False
    return added, True


def set_reason(ctx: Context, reason: str, on: bool) -> bool:
    """Add (on) or remove (off) carphooks' demotion for ``reason``; True if it changed.

    Raises StateError when the record cannot be written (the kernel is then untouched)
    and CarphooksError when the kernel change fails (the record is restored)."""
    if not ctx.backend.supports_demotion:
        if on:
            ctx.log.info(f"{reason}: the {ctx.backend.name} backend has no CARP demotion")
        return False
    added, readable = _current(ctx, reason, on)
    # Record first, both ways: a crash never strands the demotion, and a removal that
    # is not recorded would be subtracted again later. An unreadable record (rebuilt
    # from the kernel on every read) is no such source of truth: then go on anyway.
    write = _write if readable else _try_write
    if on:
        if reason in added:
            return False
        step = weight_of(ctx, reason)
        write(ctx, {**added, reason: step})
        _add_or_restore(ctx, step, added)
        if not ctx.dry_run:
            ctx.log.notice(f"demoted CARP by {step} ({reason})")
        return True
    if reason not in added:
        return False
    rest = {r: v for r, v in added.items() if r != reason}
    amount = added[reason]
    kernel = ctx.backend.sysctl(DEMOTION_OID)
    if kernel is not None:
        amount = max(0, min(amount, kernel))
    write(ctx, rest)
    if amount:
        _add_or_restore(ctx, -amount, added)
    if not ctx.dry_run:
        ctx.log.notice(f"removed carphooks' CARP demotion of {amount} ({reason})")
    return True


def _try_write(ctx: Context, added: dict[str, int]) -> None:
    try:
        _write(ctx, added)
    except StateError as exc:
        ctx.log.error(f"cannot write the demotion record: {exc}")


def _add_or_restore(ctx: Context, delta: int, before: dict[str, int]) -> None:
    """Add ``delta`` to the kernel's demotion; if that fails, put the record (already
    written for the new total) back to ``before`` and re-raise."""
    try:
        ctx.backend.add_demotion(delta)
    except CarphooksError:
        try:
            _write(ctx, before)
        except StateError as exc:
            ctx.log.error(f"cannot restore the demotion record: {exc}")
        raise


def resync(ctx: Context) -> None:
    """At tinc-up (maybe after a boot): drop records the kernel lost, re-apply maintenance.

    Failures are logged, never raised: tinc-up goes on to release stale addresses."""
    if not ctx.backend.supports_demotion:
        return
    added, problem = _load(ctx)
    if added is None:
        _rebuild(ctx, problem or "demotion record unreadable", None, False)
    elif added:
        kernel = ctx.backend.sysctl(DEMOTION_OID)
        if kernel is not None and kernel < sum(added.values()):
            ctx.log.info(f"kernel demotion is {kernel}, below the {sum(added.values())} "
                         "carphooks recorded: the counter was reset (reboot)")
            try:
                _write(ctx, {})
            except StateError as exc:
                ctx.log.error(f"cannot reset the demotion record: {exc}")
    if in_maintenance(ctx):
        try:
            set_reason(ctx, "maintenance", True)
        except CarphooksError as exc:  # never in the way of tinc-up's release
            ctx.log.error(f"cannot re-apply the maintenance demotion: {exc}")


def repair(ctx: Context) -> None:
    """Never strand carphooks' demotion: rebuild an unreadable record, and remove what
    is recorded for a reason that no longer holds (quorum back, maintenance off)."""
    if not ctx.backend.supports_demotion:
        return
    added = recorded(ctx)
    for reason in _reasons(ctx, added):
        if reason in added and not _active(ctx, reason):
            ctx.log.warning(f"carphooks' {reason} demotion is recorded, but "
                            f"{_gone(reason)}: removing it")
            try:
                set_reason(ctx, reason, False)
            except CarphooksError as exc:
                ctx.log.error(f"cannot remove the stranded {reason} demotion: {exc}")


def status(ctx: Context) -> DemotionStatus:
    """Recorded and kernel demotion, and any mismatch (read-only)."""
    from carphooks.runtime.status import DemotionStatus  # ``carphooks status`` only

    if not ctx.backend.supports_demotion:
        return DemotionStatus(added={}, kernel=None)
    kernel = ctx.backend.sysctl(DEMOTION_OID)
    added, problem = _load(ctx)
    if added is None:
        return DemotionStatus(added=None, kernel=kernel, problems=[
            f"{problem}: carphooks' share of the kernel demotion {kernel} is unknown "
            "(reconcile rebuilds the record)"])
    problems = []
    total = sum(added.values())
    if kernel is not None and kernel < total:
        problems.append(f"kernel demotion {kernel} is below the {total} carphooks recorded")
    for reason in _reasons(ctx, added):
        active = _active(ctx, reason)
        if reason in added and not active:
            problems.append(f"{reason} demotion {added[reason]} is recorded but "
                            f"{_gone(reason)}")
        elif reason == "maintenance" and active and reason not in added:
            problems.append("maintenance is on but carphooks' maintenance demotion is missing")
        elif reason.startswith(CHECK_PREFIX) and active and reason not in added:
            problems.append(f"check {reason[len(CHECK_PREFIX):]} is failing but its "
                            "demotion is missing")
    return DemotionStatus(added=added, kernel=kernel, problems=problems)
