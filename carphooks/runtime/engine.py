"""The floating-IP engine: read once, compare exactly, change only what differs, verify.

Used by every entry point. Idempotent: with nothing to change it runs no
mutating command; one failing address does not stop the others.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from carphooks.backends.base import (
    AddressState,
    Backend,
    Change,
    Interface,
)
from carphooks.config import Group, IPInterface
from carphooks.errors import CarphooksError
from carphooks.log import Log
from carphooks.runtime.dad import Repairs


@dataclass
class Outcome:
    """What converging one group did."""

    group: Group
    hold: bool
    changes: list[Change] = field(default_factory=list)
    done: list[Change] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    held: dict[str, AddressState] = field(default_factory=dict)  # address -> its state after

    @property
    def ok(self) -> bool:
        """No failure."""
        return not self.errors


def address_status(iface: Interface | None, wanted: IPInterface) -> AddressState:
    """What ``wanted`` is on ``iface`` (exact address; the prefix must match too)."""
    if iface is None:
        return AddressState.ABSENT
    entry = iface.find(wanted)
    if entry is None:
        return AddressState.ABSENT
    if entry.iface != wanted:
        return AddressState.WRONG_PREFIX
    if "duplicated" in entry.flags:
        return AddressState.DUPLICATED
    if "tentative" in entry.flags:
        return AddressState.TENTATIVE
    return AddressState.HELD


def plan(group: Group, hold: bool, current: Interface,
         readd: Collection[IPInterface] = ()) -> list[Change]:
    """The changes that bring ``current`` to the desired state (exact comparison).

    ``readd``: held addresses to remove and add again (an IPv6 address that is
    duplicated or stuck tentative, see carphooks/runtime/dad.py); the add runs only after
    its remove succeeded.
    """
    changes: list[Change] = []
    ifname = group.external_interface
    for wanted in group.addresses:
        entry = current.find(wanted)
        if hold:
            if entry is None:
                changes.append(Change("add", ifname, wanted))
            elif entry.vhid is None and (entry.iface != wanted or wanted in readd):
                changes.append(Change("remove", ifname, entry.iface))
                changes.append(Change("add", ifname, wanted))
        elif entry is not None and entry.vhid is None:
            changes.append(Change("remove", ifname, entry.iface))
    return changes


def primary_address(current: Interface) -> IPInterface | None:
    """The interface's primary IPv4 address: the first one listed (None if CARP runs it).

    FreeBSD keeps an interface's addresses in order and treats the first IPv4 one as
    the primary: ``ifconfig IF inet A/P`` without ``alias`` replaces it
    (sbin/ifconfig/af_inet.c ``in_delete_first_nl``). rc.conf's ``ifconfig_IF`` puts the
    host's own address there at boot; floating aliases are appended after it."""
    first = next((e for e in current.addresses if e.iface.version == 4), None)
    return first.iface if first is not None and first.vhid is None else None


def keep_primary(changes: list[Change], current: Interface,
                 ) -> tuple[list[Change], list[str]]:
    """Drop the changes that would take the interface's last IPv4 address; say why.

    When the primary address would go and no other IPv4 address (of its own, not
    CARP's) would be left, it is the host's own address listed as floating by
    mistake: releasing it would cut the host off the interface. IPv6 is not
    guarded (the link-local address stays, and hosts often have no IPv6 of their own).
    """
    primary = primary_address(current)
    if primary is None or not any(c.op == "remove" and c.address.ip == primary.ip
                                  for c in changes):
        return changes, []
    removed = {c.address.ip for c in changes if c.op == "remove"}
    left = [e for e in current.addresses if e.iface.version == 4 and e.vhid is None
            and e.iface.ip not in removed]
    added = [c for c in changes if c.op == "add" and c.address.version == 4
             and c.address.ip != primary.ip]
    if left or added:
        return changes, []
    kept = [c for c in changes if c.address.ip != primary.ip]
    return kept, [f"refusing to remove {primary.with_prefixlen} from {current.name}: it is "
                  "the interface's primary IPv4 address and no other would be left (the "
                  "host's own address?); take it out of the group's addresses"]


def readds(changes: Sequence[Change]) -> set[Change]:
    """The adds of a remove + add of the very same address (a re-add)."""
    removed = {c.address for c in changes if c.op == "remove"}
    return {c for c in changes if c.op == "add" and c.address in removed}


class Engine:
    """Converge groups' floating addresses through one backend.

    The engine logs every address change it verified (and every failure); callers
    log their decisions, never the changes again. A dry run is the runner's.
    """

    def __init__(self, backend: Backend, log: Log, *, repairs: Repairs | None = None) -> None:
        self.backend = backend
        self.log = log
        self.repairs = repairs  # None: duplicated addresses are reported, never re-added
        self._last: tuple[int, dict[str, Interface | None]] = (-1, {})

    @property
    def dry_run(self) -> bool:
        """Whether mutating commands are only printed (the runner decides)."""
        return self.backend.runner.dry_run

    def read(self, ifname: str) -> Interface | None:
        """Read an interface; None when it does not exist (the caller says what that means)."""
        return self.read_many([ifname])[ifname]

    def read_many(self, names: Sequence[str]) -> dict[str, Interface | None]:
        """Read interfaces together (one command where the backend can); None for an
        absent one."""
        before = self.backend.runner.count
        found = self.backend.read_many(names)
        after = self.backend.runner.count
        # kept only when this read was the one command run meanwhile (no other thread's)
        self._last = (after, found) if after == before + 1 else (-1, {})
        return found

    def last_read(self) -> dict[str, Interface | None]:
        """What the latest read saw, if no command ran since (else nothing).

        Reading again now would be the very next command, so this is as fresh as a new
        read; no change of ours can have come in between."""
        count, found = self._last
        return dict(found) if count == self.backend.runner.count else {}

    def converge(self, group: Group, hold: bool, current: Interface | None = None) -> Outcome:
        """Bring one group's addresses to held or released; verify by re-reading."""
        cache = {group.external_interface: current} if current is not None else {}
        return self.converge_all([(group, hold)], cache)[0]

    def converge_all(self, wanted: Sequence[tuple[Group, bool]],
                     current: dict[str, Interface]) -> list[Outcome]:
        """Plan, then apply: per interface one plan, one apply, one verification read.

        ``current`` holds interfaces already read (missing ones are read here); it is
        updated with what the verification read saw.
        """
        outcomes = self.plan_all(wanted, current)
        self.apply_all(outcomes, current)
        return outcomes

    def plan_all(self, wanted: Sequence[tuple[Group, bool]],
                 current: dict[str, Interface]) -> list[Outcome]:
        """Each group's changes (``Outcome.changes``), reading an interface not in
        ``current`` once; changes nothing. Pass (some of) the outcomes to
        :meth:`apply_all` with the same ``current``."""
        outcomes = [Outcome(group=g, hold=h) for g, h in wanted]
        if self.repairs is not None:
            self.repairs.begin()  # read under the caller's lock, when first needed
        by_if = _by_interface(outcomes)
        unread = [ifname for ifname in by_if if ifname not in current]
        if unread:
            current.update({k: v for k, v in self.read_many(unread).items() if v is not None})
        for ifname, members in by_if.items():
            iface = current.get(ifname)
            if iface is None:
                for o in members:
                    if o.hold:
                        o.errors.append(f"interface {ifname} does not exist: cannot assign "
                                        f"{_addrs(o.group.addresses)}")
                    else:
                        o.warnings.append(f"interface {ifname} does not exist: nothing to "
                                          "remove")
                continue
            for o in members:
                self._plan(o, iface)
        return outcomes

    def _plan(self, o: Outcome, iface: Interface) -> None:
        for wanted in o.group.addresses:
            entry = iface.find(wanted)
            if entry is not None and entry.vhid is not None:
                o.warnings.append(f"{entry.iface.with_prefixlen} on {iface.name} belongs to "
                                  f"CARP vhid {entry.vhid}: left to the kernel")
        o.changes, refused = keep_primary(plan(o.group, o.hold, iface, self._readd(o, iface)),
                                          iface)
        for message in refused:
            o.errors.append(message)
            self.log.error(message)

    def apply_all(self, outcomes: Sequence[Outcome], current: dict[str, Interface]) -> None:
        """Run planned changes: per interface one apply, then one verification read of
        every changed interface (``current`` as :meth:`plan_all` left it; updated with
        what was read after).

        The verification read also reads the CARP interface of each group it took: the
        caller re-checks CARP from it before letting go of the lock
        (:meth:`last_read`), without another command."""
        applied: dict[str, tuple[list[Outcome], dict[Change, str]]] = {}
        for ifname, members in _by_interface(outcomes).items():
            if ifname in current:  # else missing when planned: the outcome says so
                failed = self._apply_interface(ifname, members, current[ifname])
                if failed is not None:
                    applied[ifname] = (members, failed)
        if applied and not self.dry_run:
            self._verify_all(applied, current)
        if self.repairs is not None:
            self.repairs.save()

    def _verify_all(self, applied: dict[str, tuple[list[Outcome], dict[Change, str]]],
                    current: dict[str, Interface]) -> None:
        names = list(applied)
        if self.backend.reads_carp_interface:
            names += [o.group.carp_interface for members, _ in applied.values()
                      for o in members if o.hold and any(c.op == "add" for c in o.changes)]
        problem = None
        try:
            seen = self.read_many(list(dict.fromkeys(names)))
        except CarphooksError as exc:
            seen, problem = {}, str(exc)
        for ifname, (members, failed) in applied.items():
            after = seen.get(ifname)
            if after is None:
                current.pop(ifname, None)
                why = problem or f"interface {ifname} does not exist"
                for o in members:
                    if o.changes:
                        o.errors.append(f"cannot verify {ifname}: {why}")
                continue
            current[ifname] = after
            self._verified(ifname, members, after, failed)

    def _readd(self, outcome: Outcome, iface: Interface) -> list[IPInterface]:
        """Held addresses of a group to hold that need a DAD repair now."""
        if not outcome.hold or self.repairs is None:
            return []
        due: list[IPInterface] = []
        for wanted in outcome.group.addresses:
            status = address_status(iface, wanted)
            entry = iface.find(wanted)
            if status is AddressState.HELD:
                self.repairs.held(iface.name, wanted)
            elif status.in_dad and entry is not None and entry.vhid is None and \
                    self.repairs.check(iface.name, wanted, status, iface.up):
                due.append(wanted)
        return due

    def repair_due(self, group: Group, iface: Interface) -> bool:
        """Whether converging ``group`` now would re-add an address (records nothing)."""
        if self.repairs is None:
            return False
        # a fresh reader: this runs without the lock, maybe beside a converge
        peek = Repairs(self.repairs.state, self.log, dry_run=True, clock=self.repairs.clock)
        for wanted in group.addresses:
            status = address_status(iface, wanted)
            entry = iface.find(wanted)
            if status.in_dad and entry is not None and entry.vhid is None:
                left = peek.wait(iface.name, wanted, status, iface.up)
                if left is not None and left <= 0:
                    return True
        return False

    def _apply_interface(self, ifname: str, members: list[Outcome],
                         iface: Interface) -> dict[Change, str] | None:
        """Run one interface's changes; the failed ones (None when there was nothing to
        change: ``held`` is then set from ``iface``)."""
        changes = [c for o in members for c in o.changes]
        if not changes:
            for o in members:
                o.held = {str(a): address_status(iface, a) for a in o.group.addresses}
                self._report_flags(o, iface)
            return None
        # A re-add's add waits for its remove: adding an address that is still there
        # would clear ``duplicated`` without DAD (in6_update_ifa_internal).
        second = readds(changes)
        for change in second:
            status = address_status(iface, change.address)
            if self.repairs is not None:
                self.repairs.attempt(ifname, change.address)
            if not self.dry_run:
                self.log.info(f"{change.address.with_prefixlen} on {ifname} is {status}: "
                              "removing and adding it again so DAD runs afresh")
        failed = dict(self.backend.apply([c for c in changes if c not in second]))
        for change in second:
            undone = Change("remove", change.interface, change.address)
            if undone in failed:
                failed[change] = "not added again: removing it failed"
        failed.update(self.backend.apply([c for c in changes
                                          if c in second and c not in failed]))
        if self.dry_run:
            for o in members:
                o.done = list(o.changes)
        return failed

    def _verified(self, ifname: str, members: list[Outcome], after: Interface,
                  failed: dict[Change, str]) -> None:
        """Judge each change against the verification read; record what is held."""
        for o in members:
            self._verify(o, ifname, after, failed)
            o.held = {str(a): address_status(after, a) for a in o.group.addresses}
            if o.hold and self.repairs is not None:
                for a in o.group.addresses:
                    if o.held[str(a)] is AddressState.HELD:
                        self.repairs.held(ifname, a)
            self._report_flags(o, after)

    def _verify(self, outcome: Outcome, ifname: str, after: Interface,
                failed: dict[Change, str]) -> None:
        again = readds(outcome.changes)
        for change in outcome.changes:
            now = after.find(change.address)
            if change.op == "add":
                ok = now is not None and now.iface == change.address and not (
                    change in again and change in failed)  # its remove failed: not new
                if ok:
                    self.log.notice(f"{'Re-added' if change in again else 'Assigned'} "
                                    f"{change.address.with_prefixlen} on {ifname}.")
            elif Change("add", change.interface, change.address) in again:
                ok = change not in failed  # verified by its add
            else:
                ok = now is None or (now.iface != change.address and any(
                    c.op == "add" and c.address.ip == change.address.ip
                    for c in outcome.changes))
                if ok:
                    self.log.notice(f"Removed {change.address.with_prefixlen} from {ifname}.")
            if ok:
                outcome.done.append(change)
                continue
            reason = failed.get(change) or "no error from the command, but the address is " + (
                "missing" if change.op == "add" else "still there")
            message = (f"failed to {'assign' if change.op == 'add' else 'remove'} "
                       f"{change.address.with_prefixlen} on {ifname}: {reason}")
            outcome.errors.append(message)
            self.log.error(message)

    def _report_flags(self, outcome: Outcome, iface: Interface) -> None:
        if not outcome.hold:
            return
        for wanted in outcome.group.addresses:
            status = outcome.held.get(str(wanted))
            if status is None or not status.in_dad:
                continue
            why = (self.repairs.describe(iface.name, wanted, status, iface.up)
                   if self.repairs is not None else
                   "another host on the link answers for it (DAD failed)"
                   if status is AddressState.DUPLICATED
                   else "duplicate address detection running")
            msg = f"{wanted} on {iface.name} is {status}: {why}"
            if status is AddressState.DUPLICATED:
                outcome.errors.append(msg)
                self.log.error(msg)
            elif self.repairs is not None and self.repairs.stuck(iface.name, wanted):
                outcome.warnings.append(msg)
                self.log.warning(msg)
            else:
                outcome.warnings.append(msg)
                self.log.info(msg)


def _addrs(addresses: Sequence[IPInterface]) -> str:
    return ", ".join(a.with_prefixlen for a in addresses)


def _by_interface(outcomes: Sequence[Outcome]) -> dict[str, list[Outcome]]:
    by_if: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        by_if.setdefault(outcome.group.external_interface, []).append(outcome)
    return by_if
