"""The CARP demotion carphooks owns (quorum loss, maintenance).

``net.inet.carp.demotion`` is additive: carphooks records exactly what it added, per
reason, before writing it, and subtracts only that (never more than the kernel holds:
a reboot resets the kernel's counter but not the record).
"""

from __future__ import annotations

from dataclasses import dataclass

from carphooks.context import Context, in_maintenance
from carphooks.errors import CarphooksError, StateError

DEMOTION_OID = "net.inet.carp.demotion"
PREEMPT_OID = "net.inet.carp.preempt"
STEP = 240  # moves a master behind any advskew (what OPNsense adds for maintenance)


@dataclass(frozen=True)
class DemotionStatus:
    """What carphooks added, and what the kernel holds."""

    added: dict[str, int]
    kernel: int | None


def recorded(ctx: Context) -> dict[str, int]:
    """carphooks' own demotion by reason; a corrupt record counts as nothing."""
    try:
        return ctx.state.demotion()
    except StateError as exc:
        ctx.log.error(f"{exc}; assuming carphooks added no demotion")
        return {}


def set_reason(ctx: Context, reason: str, on: bool) -> bool:
    """Add (on) or remove (off) carphooks' demotion for ``reason``; True if it changed."""
    if not ctx.backend.supports_demotion:
        if on:
            ctx.log.info(f"{reason}: the {ctx.backend.name} backend has no CARP demotion")
        return False
    added = recorded(ctx)
    if on:
        if reason in added:
            return False
        added[reason] = STEP
        if not ctx.dry_run:
            ctx.state.write_demotion(added)  # record first: a crash never strands it
        try:
            ctx.backend.add_demotion(STEP)
        except CarphooksError:
            if not ctx.dry_run:
                added.pop(reason)
                ctx.state.write_demotion(added)
            raise
        ctx.log.notice(f"demoted CARP by {STEP} ({reason})")
        return True
    if reason not in added:
        return False
    amount = added.pop(reason)
    kernel = ctx.backend.sysctl(DEMOTION_OID)
    if kernel is not None:
        amount = max(0, min(amount, kernel))
    if amount:
        ctx.backend.add_demotion(-amount)
    if not ctx.dry_run:
        ctx.state.write_demotion(added)
    ctx.log.notice(f"removed carphooks' CARP demotion of {amount} ({reason})")
    return True


def resync(ctx: Context) -> None:
    """At tinc-up (maybe after a boot): drop records the kernel lost, re-apply maintenance."""
    if not ctx.backend.supports_demotion:
        return
    added = recorded(ctx)
    if added:
        kernel = ctx.backend.sysctl(DEMOTION_OID)
        if kernel is not None and kernel < sum(added.values()):
            ctx.log.info(f"kernel demotion is {kernel}, below the {sum(added.values())} "
                         "carphooks recorded: the counter was reset (reboot)")
            if not ctx.dry_run:
                ctx.state.write_demotion({})
    if in_maintenance(ctx):
        set_reason(ctx, "maintenance", True)


def status(ctx: Context) -> DemotionStatus:
    """Recorded and kernel demotion."""
    kernel = ctx.backend.sysctl(DEMOTION_OID) if ctx.backend.supports_demotion else None
    return DemotionStatus(added=recorded(ctx), kernel=kernel)
