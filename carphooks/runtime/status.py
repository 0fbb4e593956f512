"""What ``carphooks status`` reports: the typed model and its three renderings.

The model (:class:`Report` and its parts) is built once by ``actions.status``; the
JSON (``--json``), the text lines and the monitoring-plugin line (``--nagios``) are
all rendered from it here, so a state or a verdict is decided in one place.
:class:`AddressState` (what an address is on its interface) lives with the backend
types, so the hooks, which never build a report, do not import this module.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from carphooks.backends.base import AddressState as AddressState  # (re-exported)
from carphooks.backends.base import CarpState
from carphooks.config import IPInterface

if TYPE_CHECKING:
    from carphooks.mesh import Mesh


class Verdict(enum.IntEnum):
    """How healthy: the monitoring-plugin states, whose value is the plugin's exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass(frozen=True)
class DemotionStatus:
    """What carphooks added (None: the record is unreadable), what the kernel holds,
    and every mismatch between the record, the kernel and the reasons now."""

    added: dict[str, int] | None
    kernel: int | None
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DadStatus:
    """Why an address is tentative or duplicated, and carphooks' repair record."""

    detail: str  # what happens next, in words
    since: float | None = None  # seconds since the trouble (or the last re-add) began
    attempts: int | None = None  # re-adds so far
    last: float | None = None  # seconds since the last re-add (0: none)


@dataclass(frozen=True)
class AddressStatus:
    """One floating address of a group."""

    address: IPInterface
    state: AddressState
    dad: DadStatus | None = None  # only for a tentative or duplicated address


@dataclass(frozen=True)
class GroupStatus:
    """One group: CARP, the decision, each address, and what is wrong."""

    name: str
    vhid: int
    carp_interface: str
    external_interface: str
    carp: CarpState
    should_hold: bool
    reason: str
    addresses: tuple[AddressStatus, ...]
    problems: tuple[str, ...] = ()  # each is CRITICAL (drift, an unusable address)
    vhid_present: bool | None = None  # the vhid exists on carp_interface (None: not read)

    @property
    def held(self) -> int:
        """How many addresses are held (usable)."""
        return sum(1 for a in self.addresses if a.state is AddressState.HELD)

    @property
    def verdict(self) -> Verdict:
        """CRITICAL on a problem; WARNING on what :attr:`warnings` names."""
        if self.problems:
            return Verdict.CRITICAL
        return Verdict.WARNING if self._tentative or self.carp_warnings() else Verdict.OK

    @property
    def _tentative(self) -> bool:
        """DAD runs on an address this host should hold."""
        return self.should_hold and any(a.state is AddressState.TENTATIVE
                                        for a in self.addresses)

    def carp_warnings(self) -> list[str]:
        """Why this host cannot hold the group now although nothing is wrong with its
        addresses: no vhid, a vhid in INIT, MASTER while released."""
        out = []
        if self.vhid_present is False:
            # FreeBSD: no vhid, so never MASTER (tinc-up creates it from carp.address)
            out.append(f"{self.name}: no vhid {self.vhid} on {self.carp_interface}, so this "
                       "host can never hold the addresses (tinc-up creates it from "
                       "carp.address: is tincd running? carphooks check)")
        elif self.carp is CarpState.INIT:
            out.append(f"{self.name}: vhid {self.vhid} on {self.carp_interface} is INIT "
                       "(interface down, no link, or net.inet.carp.allow=0): this host "
                       "cannot take over")
        if self.carp is CarpState.MASTER and not self.should_hold:
            out.append(f"{self.name}: CARP is MASTER here but the addresses are released "
                       f"({self.reason}): nobody holds them until a peer takes over")
        return out

    @property
    def warnings(self) -> tuple[str, ...]:
        """What makes the group WARNING (when it is not CRITICAL)."""
        if self.verdict is not Verdict.WARNING:
            return ()
        dad = (f"{self.name}: tentative address (DAD running)",) if self._tentative else ()
        return dad + tuple(self.carp_warnings())


@dataclass(frozen=True)
class QuorumStatus:
    """Votes this host sees against what a majority of ``voters`` needs."""

    ok: bool
    have: int
    need: int
    mode: str  # "majority" or "none"
    reason: str
    voters: int = 0  # tinc.nodes


@dataclass(frozen=True)
class LastEvent:
    """The last event handled (from the state directory), or why it is unknown."""

    source: str | None = None
    detail: str | None = None
    time: float | None = None
    age: float | None = None  # seconds ago
    error: str | None = None


@dataclass(frozen=True)
class CheckStatus:
    """One health check as the watch loop last recorded it, and the demotion it adds."""

    name: str
    type: str
    target: str  # what it probes, in words
    health: str  # unknown | passing | failing (carphooks.runtime.health.Health)
    since: float | None  # wall time of the last change of health
    age: float | None  # seconds since then
    last_ok: bool | None
    last_age: float | None  # seconds since the last probe
    detail: str  # the last probe's result in words
    output: str  # the last probe's output tail (secrets hidden)
    fails: int  # failed probes in a row
    passes: int  # good probes in a row
    fall: int
    rise: int
    weight: int
    demotion: int  # what carphooks' record holds for it now
    groups: tuple[str, ...]
    kept: bool = False  # failing, still MASTER: no healthier peer took over
    stale: bool = False  # no watch loop has recorded it lately

    @property
    def warnings(self) -> tuple[str, ...]:
        """What makes this check WARNING, in words."""
        if self.stale:
            age = "" if self.last_age is None else f" for {self.last_age:.0f} s"
            return (f"check {self.name}: not run{age} (is carphooks watch running?)",)
        if self.health == "failing":
            kept = "; no healthier peer took over: keeping the address" if self.kept else ""
            return (f"check {self.name} failing ({self.detail}){kept}",)
        return ()


@dataclass(frozen=True)
class Report:
    """The whole status of this host."""

    host: str | None
    backend: str
    quorum: QuorumStatus
    maintenance: bool
    demotion: DemotionStatus
    last_event: LastEvent | None
    groups: tuple[GroupStatus, ...]
    mesh: Mesh | None = None  # how each other tinc voter is reached (topology "tinc")
    checks: tuple[CheckStatus, ...] = ()  # health checks (carphooks watch)
    checks_error: str | None = None  # why the checks' record cannot be read

    def problems(self, max_event_age: float | None = None) -> tuple[list[str], list[str]]:
        """What is CRITICAL and what is WARNING, in words."""
        crit = [f"{g.name}: {'; '.join(g.problems)}" for g in self.groups if g.problems]
        warn = [w for g in self.groups for w in g.warnings]
        if not self.quorum.ok:
            warn.append(self.quorum.reason)
        if self.maintenance:
            warn.append("maintenance mode on")
        warn.extend(f"demotion: {p}" for p in self.demotion.problems)
        warn.extend(w for c in self.checks for w in c.warnings)
        if self.checks_error is not None:
            warn.append(f"health checks: {self.checks_error}")
        age = self.last_event.age if self.last_event is not None else None
        if max_event_age is not None and age is not None and age > max_event_age:
            warn.append(f"last event {age:.0f} s ago")
        return crit, warn

    def verdict(self, max_event_age: float | None = None) -> Verdict:
        """The worst of the groups and the host-wide warnings."""
        crit, warn = self.problems(max_event_age)
        return Verdict.CRITICAL if crit else Verdict.WARNING if warn else Verdict.OK


# -- renderings ------------------------------------------------------------------------

def verdict_text(group: GroupStatus) -> str:
    """``ok`` or the group's problems joined (the JSON ``verdict``)."""
    return "; ".join(group.problems) or "ok"


def to_json(report: Report) -> dict[str, Any]:
    """Plain data for ``status --json`` (keys are stable; addresses with their prefix)."""
    groups = []
    for g in report.groups:
        entry: dict[str, Any] = {
            "name": g.name, "vhid": g.vhid, "carp_interface": g.carp_interface,
            "external_interface": g.external_interface, "carp": g.carp.value,
            "should_hold": g.should_hold, "reason": g.reason,
            "addresses": {a.address.with_prefixlen: a.state.value for a in g.addresses},
            "verdict": verdict_text(g), "level": g.verdict.name,
        }
        if g.warnings:  # (what makes the level WARNING)
            entry["warnings"] = [w.split(": ", 1)[1] for w in g.warnings]
        dad = {a.address.with_prefixlen: _dad_json(a) for a in g.addresses if a.dad is not None}
        if dad:
            entry["dad"] = dad
        groups.append(entry)
    q, dem = report.quorum, report.demotion
    return {
        "host": report.host, "backend": report.backend,
        "demotion": {"carphooks": dem.added, "kernel": dem.kernel,
                     "problems": list(dem.problems)},
        "quorum": {"ok": q.ok, "have": q.have, "need": q.need, "mode": q.mode,
                   "reason": q.reason, "voters": q.voters},
        "maintenance": report.maintenance,
        "last_event": _last_event_json(report.last_event),
        "groups": groups, "level": report.verdict().name,
        "mesh": report.mesh.as_json() if report.mesh is not None else None,
        **_checks_json(report),
    }


def _checks_json(report: Report) -> dict[str, Any]:
    """``checks`` and ``checks_error``, only when health checks are configured."""
    if not report.checks and report.checks_error is None:
        return {}
    return {"checks": [check_json(c) for c in report.checks],
            "checks_error": report.checks_error}


def check_json(c: CheckStatus) -> dict[str, Any]:
    """One check for ``status --json``."""
    return {"name": c.name, "type": c.type, "target": c.target, "health": c.health,
            "since": c.since, "age": c.age, "last_ok": c.last_ok, "last_age": c.last_age,
            "detail": c.detail, "output": c.output, "fails": c.fails, "passes": c.passes,
            "fall": c.fall, "rise": c.rise, "weight": c.weight, "demotion": c.demotion,
            "groups": list(c.groups), "kept": c.kept, "stale": c.stale}


def check_line(c: CheckStatus) -> str:
    """One check for the text ``status``."""
    since = "" if c.age is None else f" for {c.age:.0f} s"
    if c.stale:
        idle = "" if c.last_age is None else f" for {c.last_age:.0f} s"
        state = f"{c.health}, stale (not run{idle}; is carphooks watch running?)"
    elif c.health == "failing":
        state = f"FAILING{since} ({c.fails} failed in a row, {c.rise} good ones to pass)"
    elif c.health == "passing":
        state = f"passing{since}" + (f" ({c.fails} of {c.fall} failures)" if c.fails else "")
    else:
        state = "not run yet"
    last = f"; last: {c.detail}" if c.detail else ""
    if c.output:
        last += f": {c.output!r}"
    demote = f"; demotes CARP by {c.demotion}" if c.demotion else ""
    kept = "; no healthier peer took over: keeping the address" if c.kept else ""
    return f"check {c.name} ({c.target}): {state}{last}{demote}{kept}"


def _dad_json(a: AddressStatus) -> dict[str, Any]:
    assert a.dad is not None
    out: dict[str, Any] = {"status": a.state.value, "detail": a.dad.detail}
    if a.dad.since is not None:
        out.update(since=a.dad.since, attempts=a.dad.attempts, last=a.dad.last)
    return out


def _last_event_json(last: LastEvent | None) -> dict[str, Any] | None:
    if last is None:
        return None
    if last.error is not None:
        return {"error": last.error}
    pairs = (("source", last.source), ("detail", last.detail), ("time", last.time),
             ("age", last.age))
    return {k: v for k, v in pairs if v is not None}


def text_lines(report: Report) -> list[str]:
    """The human ``status`` output."""
    q = report.quorum
    lines = [f"host {report.host or '?'} ({report.backend}): {q.reason}"
             f"{'; MAINTENANCE' if report.maintenance else ''}"]
    for g in report.groups:
        lines.append(f"group {g.name} (vhid {g.vhid} on {g.carp_interface}): CARP "
                     f"{g.carp.value}, should {'hold' if g.should_hold else 'release'} "
                     f"({g.reason}): {verdict_text(g)}")
        lines.extend(f"  warning: {w.split(': ', 1)[1]}" for w in g.carp_warnings())
        for a in g.addresses:
            note = f" ({a.dad.detail})" if a.dad is not None else ""
            lines.append(f"  {a.address.with_prefixlen} on {g.external_interface}: "
                         f"{a.state.value}{note}")
    lines.extend(f"demotion: {p}" for p in report.demotion.problems)
    if report.mesh is not None:
        from carphooks.mesh import describe

        lines.append(describe(report.mesh.as_json()))
    lines.extend(check_line(c) for c in report.checks)
    if report.checks_error is not None:
        lines.append(f"health checks: {report.checks_error}")
    last = report.last_event
    if last is not None and last.error is not None:
        lines.append(f"last event: unknown ({last.error})")
    elif last is not None:
        age = "?" if last.age is None else f"{last.age:g}"
        lines.append(f"last event: {last.source} {last.detail} ({age} s ago)")
    return lines


def maintenance_line(report: Report) -> str:
    """``maintenance status``: the flag and the demotion."""
    added = report.demotion.added
    mine = ("unknown (record unreadable)" if added is None
            else ", ".join(f"{r} {v}" for r, v in sorted(added.items())) or "none")
    kernel = "n/a" if report.demotion.kernel is None else str(report.demotion.kernel)
    return (f"maintenance {'on' if report.maintenance else 'off'}; carphooks demotion {mine}; "
            f"kernel demotion {kernel}")


def perfdata(report: Report) -> str:
    """Performance data per the monitoring-plugin guidelines: ``label=value;warn;crit;min;max``.

    Per group, the held addresses (CRITICAL outside the range: all of them when it
    should hold, none when it should release); the quorum votes (WARNING below
    the majority) unless quorum is off.
    """
    items = []
    for g in report.groups:
        n = len(g.addresses)
        crit = f"{n}:" if g.should_hold else "0"
        items.append(f"{_label(g.name + '_held')}={g.held};;{crit};0;{n}")
    q = report.quorum
    if q.mode != "none":
        items.append(f"quorum_votes={q.have};{q.need}:;;0;{q.voters}")
    return " ".join(items)


def _label(name: str) -> str:
    """A perfdata label, quoted when it holds anything but letters, digits, ``_.-``."""
    if all(c.isascii() and (c.isalnum() or c in "_.-") for c in name):
        return name
    return "'" + name.replace("'", "").replace("=", "") + "'"


def _plain(text: str) -> str:
    """Plugin text: one line, no ``|`` (which starts the performance data)."""
    return " ".join(text.replace("|", "/").split())


def nagios(report: Report, max_event_age: float | None = None) -> tuple[int, str]:
    """One monitoring-plugin line and its exit code: 0 OK, 1 WARNING, 2 CRITICAL."""
    crit, warn = report.problems(max_event_age)
    verdict = report.verdict(max_event_age)
    summary = "; ".join(f"{g.name} {g.carp.value} {g.held}/{len(g.addresses)} held"
                        for g in report.groups) or "no groups"
    if verdict is Verdict.OK:
        text = f"{summary}; {report.quorum.reason}"
    else:
        text = f"{'; '.join(crit + warn)} ({summary})"
    perf = perfdata(report)
    line = f"CARPHOOKS {verdict.name} - {_plain(text)}"
    return int(verdict), f"{line} | {perf}" if perf else line


def unknown(message: str) -> tuple[int, str]:
    """The plugin line when no report could be made (exit 3)."""
    return int(Verdict.UNKNOWN), f"CARPHOOKS UNKNOWN - {_plain(message)}"
