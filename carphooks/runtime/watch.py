"""The long-running loop: health checks, each at its interval, and the periodic
reconcile, in one process (``carphooks watch``; ``carphooks reconcile --every N`` is
the same loop without checks). On FreeBSD daemon(8) supervises it (rc.d/carphooks).

What a check changes, and what it never changes:

- A check that fails (``fall`` bad probes in a row) adds its ``weight`` to CARP's
  demotion, recorded as ``check:NAME``; once it passes again (``rise`` good probes in
  a row) exactly that is removed. The check's state is recorded (``checks.json``)
  before the demotion changes, both ways, and a restarted loop starts from the record:
  no double demotion, none left behind; a check gone from the config loses its
  demotion at the next start (``demotion.repair``).
- It never removes an address or touches quorum: the address moves only when a
  healthier peer wins the CARP election (with ``net.inet.carp.preempt=1``). Demotion
  changes only the advskew a MASTER advertises; a BACKUP takes over only from a
  master advertising strictly worse (sys/netinet/ip_carp.c ``carp_input_c``), and a
  dead master is still replaced on the master-down timer, which uses the configured
  advskew (``carp_setrun``). So when every node's check fails, the equal demotion
  changes no order and the master keeps serving. When this host is still MASTER a
  while after its check failed, the loop says so (syslog, status): "check NAME
  failing; no healthier peer took over: keeping the address".

Checks run one after the other in the main thread, each bounded by its timeout
(a command's process group is killed then), so SIGTERM/SIGINT/SIGHUP stop the loop
at once and leave no child (:mod:`carphooks.runner`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from carphooks import runner as runnermod
from carphooks.backends.base import CarpState
from carphooks.config import Check, Group
from carphooks.errors import CarphooksError, Interrupted, StateError, describe
from carphooks.runtime import actions, demotion, health
from carphooks.runtime.context import Context
from carphooks.runtime.health import CheckState, Health, Probe

GRACE = 1.0  # seconds beyond the master-down time before saying no peer took over


@dataclass
class Clock:
    """Where the loop gets its time and how it waits (tests pass fakes)."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep


@dataclass
class Watch:
    """One loop: its checks' states and schedule, and the next reconcile."""

    ctx: Context
    checks: tuple[Check, ...]
    interval: float  # seconds between reconciles
    groups: Sequence[Group] | None = None  # reconcile only these (default all)
    clock: Clock = field(default_factory=Clock)
    probe: Callable[[Check], Probe] | None = None  # default: health.probe
    show: Callable[[str], None] | None = None  # prints what each reconcile changed
    states: dict[str, CheckState] = field(default_factory=dict)
    due: dict[str, float] = field(default_factory=dict)  # monotonic time of each next probe
    verdict_due: dict[str, float] = field(default_factory=dict)  # when to say "kept"
    next_reconcile: float = 0.0
    next_record: float = 0.0
    passes: int = 0  # reconcile passes done (for tests and the log)

    def __post_init__(self) -> None:
        # Checks get a runner of their own: read-only, no hook deadline (each probe is
        # bounded by its timeout), the same trusted PATH and clean environment.
        self.runner = runnermod.Runner(dry_run=self.ctx.dry_run, trace=self.ctx.log.debug)
        self.secrets = health.Secrets.of(self.ctx.config)
        self.budget = runnermod.hook_budget(sum(len(g.addresses)
                                                for g in self.ctx.config.groups))

    # -- start ----------------------------------------------------------------------
    def start(self) -> None:
        """Restore the recorded check states, schedule everything now, and bring the
        demotion record in line (a check removed from the config loses its demotion)."""
        now = self.clock.monotonic()
        record = None
        try:
            record = health.load(self.ctx.state)
        except StateError as exc:
            self.ctx.log.error(f"{exc}; health checks start from unknown")
        self.states = health.restore(record, self.checks)
        self.due = {c.name: now for c in self.checks}
        self.next_reconcile = now
        self.next_record = now
        for check in self.checks:
            if self.states[check.name].health is Health.FAILING:
                self.verdict_due[check.name] = now + self._grace(check)
        names = ", ".join(f"{c.name} ({c.type}, every {c.interval:g} s)" for c in self.checks)
        self.ctx.log.info(f"watch: started; reconcile every {self.interval:g} s"
                          + (f"; checks {names}" if names else "; no health checks"))
        if self.checks and not self.ctx.backend.supports_demotion:
            self.ctx.log.warning(f"watch: the {self.ctx.backend.name} backend has no CARP "
                                 "demotion (on Linux: set demotion_file): the checks are "
                                 "reported, nothing moves for them")
        self._record()
        self._sync()

    # -- one round ------------------------------------------------------------------
    def run_once(self) -> float:
        """Do what is due now; the seconds until the next thing is due."""
        now = self.clock.monotonic()
        changed: list[str] = []
        probed = False
        for check in self.checks:
            if self.due[check.name] <= now:
                probed = True
                if self._probe(check):
                    changed.append(check.name)
                self.due[check.name] += check.interval
                now = self.clock.monotonic()
                if self.due[check.name] <= now:  # fell behind: no burst of probes
                    self.due[check.name] = now + check.interval
        if probed or now >= self.next_record:  # status (another process) reads it
            self._record()
        if changed:
            self._apply(*changed)
        for check in self.checks:
            if self.verdict_due.get(check.name, float("inf")) <= now:
                del self.verdict_due[check.name]
                self._verdict(check)
        if now >= self.next_reconcile:
            self._reconcile()
            now = self.clock.monotonic()
            self.next_reconcile = now + self.interval
        upcoming = [self.next_reconcile, *self.due.values(), *self.verdict_due.values()]
        return max(0.0, min(upcoming) - self.clock.monotonic())

    def _probe(self, check: Check) -> bool:
        """Probe ``check`` once; whether its health changed."""
        try:
            result = (self.probe or self._default_probe)(check)
        except Exception as exc:  # a probe's surprise fails it; a signal is no Exception
            result = Probe(False, health.tail(describe(exc), self.secrets))
        before = self.states[check.name]
        after = health.step(before, check, result, self.clock.wall())
        self.states[check.name] = after
        if after.health is before.health:
            if before.last_ok is not None and result.ok is not before.last_ok:
                self.ctx.log.info(f"check {check.name}: {'ok' if result.ok else 'failed'} "
                                  f"({result.detail}); {after.health.value}")
            return False
        dry = self.ctx.dry_run
        if after.health is Health.FAILING:
            self.ctx.log.warning(f"check {check.name} failing ({result.detail}, {check.fall} "
                                 f"in a row): " + ("dry run, CARP demotion unchanged" if dry
                                                   else f"demoting CARP by {check.weight}"))
            self.verdict_due[check.name] = self.clock.monotonic() + self._grace(check)
        elif before.health is Health.FAILING:
            self.ctx.log.notice(f"check {check.name} passing again ({check.rise} in a row)"
                                + ("" if dry else ": removing its demotion"))
            self.verdict_due.pop(check.name, None)
        else:
            self.ctx.log.info(f"check {check.name}: {after.health.value} ({result.detail})")
        return True

    def _default_probe(self, check: Check) -> Probe:
        return health.probe(check, self.runner, self.secrets)

    # -- record and demotion --------------------------------------------------------
    def _record(self) -> None:
        """Write every check's state (before any demotion changes: the record is what
        ``demotion`` consults)."""
        self.next_record = self.clock.monotonic() + self.interval
        if not self.checks:
            return
        try:
            self.ctx.state.write_check_record({n: s.as_json() for n, s in self.states.items()})
        except StateError as exc:
            self.ctx.log.error(f"cannot record the health checks: {exc}")

    def _apply(self, *names: str, repair: bool = False) -> None:
        """Add or remove each named check's demotion to match its health, under the state
        lock (and with ``repair``, withdraw what a check gone from the config left); a
        failure is logged and retried at the next reconcile."""
        if not self.ctx.backend.supports_demotion:
            return
        try:
            with actions.exclusive(self.ctx, state_ok=False):
                for name in names:
                    self._set(name)
                if repair:
                    demotion.repair(self.ctx)
        except CarphooksError as exc:
            self.ctx.log.error(f"cannot change carphooks' CARP demotion for the health "
                               f"checks: {exc} (retried at the next reconcile)")

    def _set(self, name: str) -> None:
        check = next(c for c in self.checks if c.name == name)
        on = self.states[name].health is Health.FAILING
        try:
            demotion.set_reason(self.ctx, check.reason, on)
        except CarphooksError as exc:
            self.ctx.log.error(f"check {name}: cannot {'add' if on else 'remove'} its CARP "
                               f"demotion: {exc} (retried at the next reconcile)")

    def _sync(self) -> None:
        """Every check's demotion as its health says; one left by a check gone from the
        config removed (``demotion.repair``)."""
        self._apply(*(c.name for c in self.checks), repair=True)

    # -- "no healthier peer took over" ------------------------------------------------
    def _guarded(self, check: Check) -> list[Group]:
        return [g for g in self.ctx.config.groups if g.name in check.groups]

    def _grace(self, check: Check) -> float:
        """How long a peer may take to preempt: its master-down time at most (three
        advertisement intervals plus the advskew, ip_carp.c ``carp_setrun``) and a bit."""
        advbase = max((g.carp.advbase for g in self._guarded(check)), default=1)
        return 3 * advbase + 1 + GRACE

    def _verdict(self, check: Check) -> None:
        """Still MASTER of a guarded group while the check fails: say so (once per
        failure), record it for status; never release for it."""
        state = self.states[check.name]
        if state.health is not Health.FAILING:
            return
        reader = actions.Reader(self.ctx)
        try:
            masters = [g.name for g in self._guarded(check)
                       if actions._carp_read(self.ctx, g, reader) is CarpState.MASTER]
        except CarphooksError as exc:
            self.ctx.log.error(f"check {check.name}: cannot read the CARP state: {exc}")
            return
        kept = bool(masters)
        if kept and not state.kept:
            self.ctx.log.warning(f"check {check.name} failing; no healthier peer took over: "
                                 f"keeping the address ({', '.join(masters)} still MASTER "
                                 "here)")
        elif not kept and state.kept:
            self.ctx.log.notice(f"check {check.name} failing; a peer took over")
        if kept != state.kept:
            self.states[check.name] = replace(state, kept=kept)
            self._record()

    # -- reconcile ---------------------------------------------------------------------
    def _reconcile(self) -> None:
        """One reconcile pass (its own time budget); then re-assert the checks'
        demotion and re-evaluate "kept" (a peer may have taken over since)."""
        self.ctx.runner.deadline = self.clock.monotonic() + self.budget
        try:
            result = actions.reconcile(self.ctx, self.groups)
            for line in result.text(self.ctx.dry_run):
                if self.show is not None:
                    self.show(line)
        except Exception as exc:  # logged; the next pass tries again (a signal is no Exception)
            self.ctx.log.error(f"reconcile: {describe(exc)}")
        self.passes += 1
        if self.checks:
            self._sync()
            for check in self.checks:
                if check.name not in self.verdict_due:
                    self._verdict(check)


def run(ctx: Context, *, checks: bool = True, interval: float | None = None,
        groups: Sequence[Group] | None = None, clock: Clock | None = None,
        probe: Callable[[Check], Probe] | None = None, rounds: int | None = None,
        show: Callable[[str], None] | None = None) -> int:
    """Run the loop until a signal (Interrupted, raised after the record is written);
    ``rounds`` bounds it (tests). Exit code 0 when ``rounds`` ran out."""
    loop = Watch(ctx, ctx.config.checks if checks else (),
                 interval if interval is not None else ctx.config.reconcile_interval,
                 groups=groups, clock=clock or Clock(), probe=probe, show=show)
    try:
        loop.start()
        done = 0
        while rounds is None or done < rounds:
            wait = loop.run_once()
            done += 1
            if rounds is None or done < rounds:
                loop.clock.sleep(wait)
    except Interrupted as exc:
        ctx.log.notice(f"watch: stopped by {exc.signame}")
        raise
    return 0
