"""Health checks: the probes (command, TCP connect, HTTP GET), their hysteresis, and
the record ``carphooks watch`` keeps of them in the state directory.

A check *fails* after ``fall`` failed probes in a row and *passes* again after
``rise`` good ones in a row; only a failing check demotes CARP (by its ``weight``,
recorded as reason ``check:NAME`` in :mod:`carphooks.runtime.demotion`). A check
never changes what the host holds: a failing service moves the address only by
letting a healthier peer win the CARP election (see :mod:`carphooks.runtime.watch`).

Probes are bounded by the check's ``timeout``: a command runs through the one runner
(:class:`carphooks.runner.Runner`, its own process group, killed at the timeout);
sockets get the remaining time on every operation. Names are never looked up (the
config takes IP addresses only), so nothing here waits on DNS.
"""

from __future__ import annotations

import enum
import socket
import time
from dataclasses import dataclass, field, replace
from typing import Any

from carphooks.config import Check, Config
from carphooks.errors import CommandError, ConfigError, StateError
from carphooks.runner import REDACTED, Runner
from carphooks.runtime.status import CheckStatus
from carphooks.state import CheckRecord, StateDir

TAIL_BYTES = 200  # output kept per check (status shows it)
HTTP_READ = 4096  # bytes of a response body read (for the tail)


class Health(enum.StrEnum):
    """What a check says after hysteresis."""

    UNKNOWN = "unknown"  # no result yet
    PASSING = "passing"
    FAILING = "failing"


@dataclass(frozen=True)
class Probe:
    """One probe's result: good or not, why in a few words, and what it printed."""

    ok: bool
    detail: str
    output: str = ""


@dataclass(frozen=True)
class CheckState:
    """A check's state as the watch loop keeps (and records) it."""

    name: str
    health: Health = Health.UNKNOWN
    since: float | None = None  # wall time of the last change of ``health``
    fails: int = 0  # failed probes in a row
    passes: int = 0  # good probes in a row
    last_ok: bool | None = None
    last_time: float | None = None  # wall time of the last probe
    detail: str = ""
    output: str = ""
    kept: bool = False  # failing, yet still MASTER: no healthier peer took over

    def as_json(self) -> dict[str, Any]:
        """The record of this check (state file and ``status --json``)."""
        return {"health": self.health.value, "since": self.since, "fails": self.fails,
                "passes": self.passes, "last_ok": self.last_ok, "last_time": self.last_time,
                "detail": self.detail, "output": self.output, "kept": self.kept}

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> CheckState:
        """Read a recorded state back; a field of the wrong type is left at its default."""
        def num(key: str) -> float | None:
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
            return float(value)

        def count(key: str) -> int:
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return 0
            return value

        def text(key: str) -> str:
            value = data.get(key)
            return value[-4 * TAIL_BYTES:] if isinstance(value, str) else ""

        recorded = data.get("health")
        health = Health(recorded) if recorded in tuple(Health) else Health.UNKNOWN
        last_ok = data.get("last_ok")
        return cls(name=name, health=health, since=num("since"), fails=count("fails"),
                   passes=count("passes"),
                   last_ok=last_ok if isinstance(last_ok, bool) else None,
                   last_time=num("last_time"), detail=text("detail"), output=text("output"),
                   kept=data.get("kept") is True)


def step(state: CheckState, check: Check, probe: Probe, now: float) -> CheckState:
    """The state after one probe at wall time ``now`` (hysteresis: ``fall`` failures in a
    row to fail, ``rise`` successes in a row to pass again; the first result of an
    unknown check counts at once only when it is good)."""
    state = replace(state, last_ok=probe.ok, last_time=now, detail=probe.detail,
                    output=probe.output)
    if probe.ok:
        state = replace(state, passes=state.passes + 1, fails=0)
        if state.health is Health.UNKNOWN or (state.health is Health.FAILING
                                              and state.passes >= check.rise):
            state = replace(state, health=Health.PASSING, since=now, kept=False)
        return state
    state = replace(state, fails=state.fails + 1, passes=0)
    if state.health is not Health.FAILING and state.fails >= check.fall:
        state = replace(state, health=Health.FAILING, since=now, kept=False)
    return state


# -- probes -------------------------------------------------------------------------------

@dataclass
class Secrets:
    """Strings no output tail may show (the CARP passwords of the config)."""

    values: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, config: Config) -> Secrets:
        found: list[str] = []
        for group in config.groups:
            try:
                secret = group.carp.secret()
            except ConfigError:  # an unreadable password file hides nothing here
                secret = None
            if secret:
                found.append(secret)
        return cls(sorted(set(found), key=len, reverse=True))

    def hide(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, REDACTED)
        return text


def tail(text: str, secrets: Secrets | None = None, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of ``text``, secrets hidden, control characters shown
    as ``?`` and white space folded (one line)."""
    if secrets is not None:
        text = secrets.hide(text)
    text = "".join(c if c.isprintable() or c in " \t\n" else "?" for c in text)
    text = " ".join(text.split())
    raw = text.encode("utf-8", "replace")
    if len(raw) > limit:
        text = raw[-limit:].decode("utf-8", "ignore")
    return text


def probe(check: Check, runner: Runner, secrets: Secrets | None = None) -> Probe:
    """Run ``check`` once, bounded by its timeout."""
    if check.type == "command":
        return _command(check, runner, secrets)
    if check.type == "tcp":
        return _tcp(check)
    return _http(check, secrets)


def _command(check: Check, runner: Runner, secrets: Secrets | None) -> Probe:
    try:
        result = runner.run(check.command, mutating=False, check=False, timeout=check.timeout)
    except CommandError as exc:  # not found, not runnable, timed out, killed by a signal
        what = exc.stderr.splitlines()[0] if exc.stderr else f"exit {exc.returncode}"
        if exc.returncode == 124:
            what = f"timed out after {check.timeout:g} s (killed)"
        return Probe(False, tail(what, secrets), "")
    output = tail("\n".join(p for p in (result.stdout, result.stderr) if p), secrets)
    return Probe(result.returncode == 0, f"exit {result.returncode}", output)


def _why(exc: OSError, timeout: float) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"timed out after {timeout:g} s"
    return exc.strerror or str(exc) or type(exc).__name__


def _tcp(check: Check) -> Probe:
    assert check.address is not None and check.port is not None
    family = socket.AF_INET6 if check.address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(check.timeout)
            sock.connect((str(check.address), check.port))
    except OSError as exc:
        return Probe(False, f"connect to {check.target()[4:]}: {_why(exc, check.timeout)}")
    return Probe(True, "connected")


def _http(check: Check, secrets: Secrets | None) -> Probe:
    import http.client  # here: the hooks import this module and never need it
    from urllib.parse import urlsplit

    assert check.url is not None
    parts = urlsplit(check.url)
    host = parts.hostname or "127.0.0.1"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    deadline = time.monotonic() + check.timeout

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")
        return remaining

    conn = http.client.HTTPConnection(host, parts.port or 80, timeout=check.timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "carphooks-check",
                                           "Connection": "close"})
        if conn.sock is not None:
            conn.sock.settimeout(left())
        response = conn.getresponse()
        if conn.sock is not None:
            conn.sock.settimeout(left())
        body = response.read(HTTP_READ).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as exc:
        why = _why(exc, check.timeout) if isinstance(exc, OSError) else \
            f"bad HTTP response ({type(exc).__name__})"
        return Probe(False, f"GET {check.url}: {why}")
    finally:
        conn.close()
    detail = f"HTTP {response.status}"
    if response.status != check.expect_status:
        detail += f", expected {check.expect_status}"
    return Probe(response.status == check.expect_status, detail, tail(body, secrets))


# -- the record -----------------------------------------------------------------------------

def load(state: StateDir) -> CheckRecord | None:
    """The record (StateError when it is unsafe or corrupt)."""
    return state.check_record()


def restore(record: CheckRecord | None, checks: tuple[Check, ...]) -> dict[str, CheckState]:
    """The states to start a loop with: the recorded ones of configured checks, so a
    restart neither doubles nor drops a demotion; the rest unknown."""
    recorded = record.checks if record is not None else {}
    return {c.name: CheckState.from_json(c.name, recorded[c.name]) if c.name in recorded
            else CheckState(c.name) for c in checks}


def failing(state: StateDir, config: Config, name: str, now: float | None = None) -> bool:
    """Whether the recorded check ``name`` is configured and failing now (a record that
    is unreadable, stale or lacks it counts as not failing: no demotion without a loop)."""
    check = next((c for c in config.checks if c.name == name), None)
    if check is None:
        return False
    try:
        record = state.check_record()
    except StateError:
        return False
    if record is None or name not in record.checks:
        return False
    now = time.time() if now is None else now
    if now - record.updated > check.stale_after(config.lock_timeout):
        return False
    return CheckState.from_json(name, record.checks[name]).health is Health.FAILING


def report(state: StateDir, config: Config, added: dict[str, int] | None,
           now: float | None = None) -> tuple[tuple[CheckStatus, ...], str | None]:
    """Each configured check for ``status``, from the record (read-only), with the
    demotion carphooks' record holds for it; and why the record is unreadable, if so."""
    if not config.checks:
        return (), None
    now = time.time() if now is None else now
    try:
        record = state.check_record()
        problem = None
    except StateError as exc:
        record, problem = None, str(exc)
    if record is None and problem is None:
        problem = "no carphooks watch has recorded the checks yet (is it running?)"
    out = []
    for check in config.checks:
        raw = record.checks.get(check.name) if record is not None else None
        st = CheckState.from_json(check.name, raw) if raw is not None else CheckState(check.name)
        stale = record is not None and now - record.updated > check.stale_after(config.lock_timeout)
        out.append(CheckStatus(
            name=check.name, type=check.type, target=check.target(), health=st.health.value,
            since=st.since, age=_ago(now, st.since), last_ok=st.last_ok,
            last_age=_ago(now, st.last_time), detail=st.detail, output=st.output,
            fails=st.fails, passes=st.passes, fall=check.fall, rise=check.rise,
            weight=check.weight, demotion=(added or {}).get(check.reason, 0),
            groups=check.groups, kept=st.kept and st.health is Health.FAILING, stale=stale))
    return tuple(out), problem


def _ago(now: float, when: float | None) -> float | None:
    return None if when is None else round(max(0.0, now - when), 1)
