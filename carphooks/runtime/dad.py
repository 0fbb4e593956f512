"""IPv6 duplicate address detection (DAD): when to take a floating address again.

FreeBSD runs DAD once for each new inet6 address and does not retry while the
interface stays up: an address another host answered for stays ``duplicated``
and unusable (``nd6_dad_duplicated``; ``nd6_ns_input`` ignores solicitations for
it). Adding the same address again only clears the flag, without DAD
(``in6_update_ifa_internal``), which would put it on two hosts. So the repair is
remove + add: the new address runs DAD afresh, and while the other host still
holds it, it ends ``duplicated`` again and nobody has it twice.

Repairs of one address are spaced 2, 4, 8 ... up to 300 s apart; the record lives
in ``state_dir/dad.json`` and is only a brake: release never reads it, and when it
cannot be written the next repair may simply come sooner.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from carphooks.backends.base import AddressState
from carphooks.config import IPInterface
from carphooks.errors import StateError
from carphooks.log import Log
from carphooks.state import StateDir

FILE = "dad.json"
FIRST_RETRY = 2.0  # seconds after the first re-add before the next one
MAX_RETRY = 300.0
STUCK_AFTER = 30.0  # tentative this long: DAD is not finishing (kernel DAD takes ~1 s)
FORGET_AFTER = 3600.0  # a record this old starts afresh


@dataclass
class Record:
    """One address's DAD trouble."""

    since: float  # start of the current tentative/duplicated spell, or of our last re-add
    attempts: int  # re-adds since the address was last seen held
    last: float  # time of the last re-add (0: none)


def backoff(attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th re-add."""
    return float(min(FIRST_RETRY * 2.0 ** max(attempts - 1, 0), MAX_RETRY))


class Repairs:
    """Decides, per address, whether a duplicated or stuck tentative one is re-added now."""

    def __init__(self, state: StateDir, log: Log, *, dry_run: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.log = log
        self.read_only = dry_run  # a reader's own choice; the state's dry run counts too
        self.clock = clock
        self._records: dict[str, Record] | None = None
        self._changed = False

    @property
    def dry_run(self) -> bool:
        """Whether nothing is written: read-only by choice, or the state directory's dry run."""
        return self.read_only or self.state.dry_run

    @staticmethod
    def key(ifname: str, address: IPInterface) -> str:
        """``IF ADDRESS`` (the address without prefix, canonical)."""
        return f"{ifname} {address.ip}"

    # -- the file ------------------------------------------------------------------
    def begin(self) -> None:
        """Forget what was read: the next question reads the file again (lazily)."""
        self._records = None
        self._changed = False

    def load(self) -> None:
        """(Re)read the records; a missing or unreadable file counts as none."""
        self._changed = False
        self._records = {}
        try:
            data = self.state.read(FILE)
        except StateError as exc:
            self.log.warning(f"{exc}; DAD repairs start afresh")
            return
        entries = (data or {}).get("addresses", {})
        if not isinstance(entries, dict):
            self.log.warning(f"state file {self.state.path / FILE}: unexpected content; "
                             "DAD repairs start afresh")
            return
        for key, value in entries.items():
            rec = _record(value)
            if isinstance(key, str) and rec is not None:
                self._records[key] = rec

    def save(self) -> None:
        """Write the records when they changed (never in a dry run; failures are logged)."""
        if not self._changed or self.dry_run or self._records is None:
            return
        payload = {k: {"since": r.since, "attempts": r.attempts, "last": r.last}
                   for k, r in self._records.items()}
        try:
            if payload:
                self.state.write(FILE, {"addresses": payload})
            else:
                self.state.remove(FILE)
            self._changed = False
        except (OSError, StateError) as exc:
            self.log.warning(f"cannot record DAD repairs in {self.state.path / FILE}: {exc}")

    def _get(self) -> dict[str, Record]:
        if self._records is None:
            self.load()
        assert self._records is not None
        return self._records

    def _record(self, ifname: str, address: IPInterface, now: float) -> Record:
        records = self._get()
        rec = records.get(self.key(ifname, address))
        if rec is None or now - max(rec.since, rec.last) > FORGET_AFTER:
            rec = Record(since=now, attempts=0, last=0.0)
            records[self.key(ifname, address)] = rec
            self._changed = True
        return rec

    # -- decisions -----------------------------------------------------------------
    def wait(self, ifname: str, address: IPInterface, status: str, up: bool) -> float | None:
        """Seconds until a re-add is due (0: now); None when it is not for us to repair.

        Does not record anything.
        """
        now = self.clock()
        rec = self._get().get(self.key(ifname, address))
        if rec is None or now - max(rec.since, rec.last) > FORGET_AFTER:
            rec = Record(since=now, attempts=0, last=0.0)
        return _wait(rec, status, up, now)

    def check(self, ifname: str, address: IPInterface, status: str, up: bool) -> bool:
        """Whether a re-add is due now; starts the address's record (its trouble is seen
        from now) but records no attempt: :meth:`attempt` does, when it runs."""
        now = self.clock()
        left = _wait(self._record(ifname, address, now), status, up, now)
        return left is not None and left <= 0

    def attempt(self, ifname: str, address: IPInterface) -> None:
        """Record a re-add of the address, now."""
        now = self.clock()
        rec = self._record(ifname, address, now)
        rec.attempts += 1
        rec.last = now
        rec.since = now
        self._changed = True

    def due(self, ifname: str, address: IPInterface, status: str, up: bool) -> bool:
        """Whether to re-add now; when so, the attempt is recorded."""
        if not self.check(ifname, address, status, up):
            return False
        self.attempt(ifname, address)
        return True

    def held(self, ifname: str, address: IPInterface) -> None:
        """The address is usable: forget its trouble."""
        if self._get().pop(self.key(ifname, address), None) is not None:
            self._changed = True

    def describe(self, ifname: str, address: IPInterface, status: str, up: bool) -> str:
        """Human words on what happens next, for logs and status."""
        now = self.clock()
        rec = self._get().get(self.key(ifname, address))
        tries = f"re-added {rec.attempts} time{'s' if rec.attempts != 1 else ''}; " \
            if rec is not None and rec.attempts else ""
        left = self.wait(ifname, address, status, up)
        if status == AddressState.TENTATIVE:
            age = now - rec.since if rec is not None else 0.0
            if left is None and not up:
                return f"{tries}tentative for {age:.0f} s; {ifname} is down, DAD waits for it"
            if rec is None or age < STUCK_AFTER:
                return f"{tries}duplicate address detection running"
            prefix = f"{tries}tentative for {age:.0f} s: DAD is not finishing; "
        else:
            prefix = f"{tries}another host on the link answers for it (DAD failed); "
        if left is None:
            return prefix + "not repairable now"
        return prefix + ("re-add due now" if left <= 0
                         else f"next re-add in {math.ceil(left)} s")

    def stuck(self, ifname: str, address: IPInterface) -> bool:
        """Whether a tentative address has been so for longer than STUCK_AFTER."""
        rec = self._get().get(self.key(ifname, address))
        return rec is not None and self.clock() - rec.since >= STUCK_AFTER

    def info(self, ifname: str, address: IPInterface) -> dict[str, float | int] | None:
        """The record as plain data (for status --json)."""
        rec = self._get().get(self.key(ifname, address))
        if rec is None:
            return None
        now = self.clock()
        return {"since": round(now - rec.since, 1), "attempts": rec.attempts,
                "last": round(now - rec.last, 1) if rec.last else 0}


def _wait(rec: Record, status: str, up: bool, now: float) -> float | None:
    if status == AddressState.TENTATIVE:
        if not up:
            return None  # a down interface runs no DAD; a re-add would not either
        if now - rec.since < STUCK_AFTER:
            return STUCK_AFTER - (now - rec.since)
    elif status != AddressState.DUPLICATED:
        return None
    if rec.attempts == 0:
        return 0.0
    return max(rec.last + backoff(rec.attempts) - now, 0.0)


def _record(value: object) -> Record | None:
    if not isinstance(value, dict):
        return None
    since, attempts, last = value.get("since"), value.get("attempts"), value.get("last")
    if (not isinstance(since, int | float) or isinstance(attempts, bool)
            or not isinstance(attempts, int) or not isinstance(last, int | float)
            or attempts < 0):
        return None
    return Record(since=float(since), attempts=attempts, last=float(last))
