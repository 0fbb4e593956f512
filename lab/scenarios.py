"""Scenarios, steady-state detection and the measurements.

Every scenario starts from the initial state (hA CARP master holding the floating
addresses, every daemon running, the client answered by hA), fires its fault right
after an advertisement of the master has reached a backup (so every run starts in the
same protocol phase, see ../shared/docs/lab-findings.md), observes, repairs, and
waits until exactly one live master holds the addresses and answers the client.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .topo import HOSTS, VENV_BIN, VIP4, VIP6, Lab, LabError, ip

MASTER_WINDOW = 1.6  # a host sent an advertisement within this many seconds: master
HOLD = 6.0  # seconds between the fault and its repair
SETTLE_MIN = 4.0  # observe at least this long after the last action
SETTLE_MAX = 25.0  # give up waiting for steady state after this long
DEMO_SETTLE_MAX = 10.0  # the short demo stops watching a run that has not recovered sooner
RECOVER_WAIT = 6.0  # after a run without steady state: try the cheap way back this long
OK_RUN = 10  # steady: this many consecutive good probes (0.5 s)
MESH_WAIT = 20.0  # longest wait for every direct tinc link before a fault


@dataclass
class View:
    """Incremental reader of the monitor's JSON lines."""

    path: str
    pos: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)
    probes: dict[int, list[dict[str, Any]]] = field(default_factory=lambda: {4: [], 6: []})
    # probes of the lab service (health-check scenarios), by address family
    svc: dict[int, list[dict[str, Any]]] = field(default_factory=lambda: {4: [], 6: []})
    adv: list[dict[str, Any]] = field(default_factory=list)
    syslog: list[dict[str, Any]] = field(default_factory=list)

    def poll(self) -> None:
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.pos += end
        for line in data[:end].splitlines():
            r = json.loads(line)
            k = r["k"]
            if k == "sample":
                self.samples.append(r)
            elif k == "probe":
                (self.svc if r.get("svc") else self.probes)[r["af"]].append(r)
            elif k == "adv":
                if r["dir"] == "out":
                    self.adv.append(r)
            elif k == "syslog":
                self.syslog.append(r)

    def masters(self, now: float | None = None) -> set[str]:
        now = now or time.time()
        out = set()
        for a in reversed(self.adv):
            if now - a["t"] > MASTER_WINDOW:
                break
            out.add(a["src"])
        return out


def holders(sample: dict[str, Any], af: int) -> set[str]:
    """Hosts holding the floating address of family af on a link that is up
    (IPv6: not tentative/dadfailed)."""
    key = f"v{af}"
    return {h for h, e in sample["h"].items() if e.get(key) is True and e.get("up")}


def steady(v: View, expect: str | None = None, svc: bool = False) -> str | None:
    """The single master if the lab is steady, else None. With svc, the lab service
    must answer from the master too."""
    v.poll()
    if not v.samples:
        return None
    m = v.masters()
    s = v.samples[-1]
    if len(m) != 1 or holders(s, 4) != m or holders(s, 6) != m:
        return None
    (who,) = m
    if expect and who != expect:
        return None
    for probes in (v.probes, v.svc) if svc else (v.probes,):
        for af in (4, 6):
            last = sorted(probes[af][-OK_RUN - 6 :], key=lambda p: p["t"])[-OK_RUN:]
            if len(last) < OK_RUN or not all(p["ok"] and p.get("who") == who for p in last):
                return None
    return who


def wait_steady(
    lab: Lab,
    v: View,
    expect: str | None,
    timeout: float,
    min_time: float = 0.0,
    fix_client: bool = False,
) -> str | None:
    """Wait until steady (see steady()). With fix_client (never while measuring): when
    masters and holders have been right for 2 s but the client still fails, flush the
    client's neighbour cache (a stale ARP entry left by an earlier phase)."""
    t0 = time.monotonic()
    time.sleep(min_time)
    good_since = None
    while time.monotonic() - t0 < timeout:
        lab.forget_dead()
        w = steady(v, expect, svc=bool(lab.st.get("checker")))
        if w:
            return w
        if fix_client and v.samples:
            m, s = v.masters(), v.samples[-1]
            ok = (
                len(m) == 1
                and holders(s, 4) == m
                and holders(s, 6) == m
                and (not expect or m == {expect})
            )
            if not ok:
                good_since = None
            elif good_since is None:
                good_since = time.monotonic()
            elif time.monotonic() - good_since > 2.0:
                lab.flush_client()
                good_since = None
        time.sleep(0.05)
    return None


def daemons_ok(lab: Lab) -> bool:
    daemons = ("tincd", "ucarp", "svc") if lab.st.get("checker") else ("tincd", "ucarp")
    return all(lab.running(f"{d}-{h}") for d in daemons for h in HOSTS)


def reset(lab: Lab, v: View, note: list[str]) -> None:
    """Back to the initial state the hard way: restart every daemon."""
    note.append("reset: restarted all daemons")
    lab.stop_daemons()
    lab.flush_client()
    lab.start_all()
    if not wait_steady(lab, v, "hA", 30.0, fix_client=True):
        raise LabError("lab not steady with hA master 30 s after a reset")


def recover(lab: Lab, v: View, note: list[str]) -> None:
    """After a run that ended without steady state (the measuring is over): when hA is
    master and alone holds the addresses, a stale entry in the client's neighbour cache
    is all that is left, and flushing it is enough; anything else gets the hard reset."""
    lab.flush_client()
    if wait_steady(lab, v, "hA", RECOVER_WAIT, fix_client=True):
        note.append("back to the initial state without a restart")
        return
    reset(lab, v, note)


def ensure_initial(lab: Lab, v: View, note: list[str]) -> None:
    for h in HOSTS:  # no partition left over from a scenario that stopped half-way
        ip(lab.ns[h], "route", "flush", "type", "blackhole", check=False)
    if not daemons_ok(lab):
        for h in HOSTS:
            ip(lab.ns[h], "link", "set", "ext0", "up", check=False)
        lab.start_all()
    if not wait_steady(lab, v, "hA", 20.0, fix_client=True):
        reset(lab, v, note)


# ---------------------------------------------------------------- scenarios
def _restart_hA(lab: Lab) -> None:
    # ucarp exits by itself when tap0 disappears; make sure, then start both again
    if lab.running("ucarp-hA"):
        time.sleep(1.0)
    lab.stop("ucarp-hA")
    lab.stop("tincd-hA")
    lab.start_host("hA")


def _stop_hA(lab: Lab) -> None:
    lab.stop("ucarp-hA")
    lab.stop("tincd-hA")


@dataclass
class Scenario:
    name: str
    title: str
    fault: Callable[[Lab], None]
    repair: Callable[[Lab], None] | None
    setup: Callable[[Lab], None] | None = None
    adv_from: str = "hA"  # fire right after this host's advertisement
    setup_master: str = "hA"
    daemon: str = "ucarp"  # the CARP daemon the scenario needs
    checker: str | None = None  # who runs the health check of the lab service
    hold: float = HOLD  # seconds between the fault and its repair
    sets: tuple[str, ...] = ("bare", "carphooks")  # hook sets the scenario applies to
    final: str | None = None  # the master the scenario must end with (None: any)
    label: str = ""  # short name for tables and the picture (default: title)


def _maintenance(lab: Lab, on: bool) -> None:
    """carphooks: `carphooks maintenance on|off` on hA (keepalived follows the demotion
    file as FreeBSD's CARP follows net.inet.carp.demotion). The original set-up had no
    such thing: its planned maintenance was stopping hA's tincd (SIGTERM), and back.
    Only tincd is stopped: the CARP daemon stands for the kernel's CARP, which that way
    loses tap0 without a goodbye (keepalived's own priority-0 advertisement at SIGTERM
    raced tincd's exit and gave 0.25 s or 3.2 s at random)."""
    if lab.st["hookset"] == "carphooks":
        subprocess.run(["ip", "netns", "exec", lab.ns["hA"], str(VENV_BIN / "carphooks"),
                        "maintenance", "on" if on else "off", "--wait", "0"],
                       env=lab.env("hA"), capture_output=True, check=False)
    elif on:
        lab.send("tincd-hA", signal.SIGTERM)
    else:
        _restart_hA(lab)


# keepalived's VRRP (the lab's CARP daemon for demotion) preempts a master whose
# priority fell only when its master-down timer runs out: 3 advertisement intervals +
# skew after the last advertisement it did not discard (keepalived vrrp.c
# vrrp_state_backup: "received lower priority advert - discarding"; VRRP_MS_DOWN_TIMER).
# FreeBSD's CARP preempts at the first slower advertisement (carp_input_c).
ADVERT = 1.0
MASTER_DOWN = 3 * ADVERT + (256 - 200) / 256 * ADVERT  # hB (priority 200) taking over
HEALTH_HOLD = 10.0  # > fall x interval + MASTER_DOWN + the address move


def _service(lab: Lab, broken: bool) -> None:
    """Stop (SIGTERM) or start again hA's service."""
    if broken:
        lab.stop("svc-hA")
    else:
        lab.start_service("hA")


def _hang(lab: Lab, broken: bool) -> None:
    """Freeze (SIGSTOP) or thaw (SIGCONT) hA's service: the kernel still accepts
    connections, nothing answers, so every check runs into its timeout."""
    lab.send("svc-hA", signal.SIGSTOP if broken else signal.SIGCONT)


def _services(lab: Lab, broken: bool) -> None:
    """Stop or start the service on every host at once: nobody is healthier, so the
    address must stay on hA (equal demotion everywhere changes no order)."""
    for h in HOSTS:
        if broken:
            lab.stop(f"svc-{h}")
        else:
            lab.start_service(h)


def _health(name: str, what: str, fault: Callable[[Lab, bool], None], checker: str,
            ) -> Scenario:
    by = "carphooks watch" if checker == "carphooks" else "keepalived track_script"
    return Scenario(
        name, f"hA's service {what}, back after {HEALTH_HOLD:.0f} s; checked by {by}",
        lambda lab: fault(lab, True),
        lambda lab: fault(lab, False),
        daemon="keepalived", checker=checker, hold=HEALTH_HOLD, sets=("carphooks",),
        final="hA",  # preemption: hA takes its address back once healthy
    )


def _cut(lab: Lab, host: str, peers: tuple[str, ...], on: bool) -> None:
    """Cut (or restore) host's tinc traffic to peers: blackhole routes to their public
    addresses inside host's namespace. The public link and the client stay reachable."""
    for p in peers:
        ip(
            lab.ns[host],
            "route",
            "add" if on else "del",
            "blackhole",
            f"198.51.100.{HOSTS[p]['n']}/32",
            check=False,
        )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "tincd-kill",
            "master's tincd SIGKILL",
            lambda lab: lab.send("tincd-hA", signal.SIGKILL),
            _restart_hA,
            label="master crash (tincd SIGKILL)",
        ),
        Scenario(
            "tincd-term",
            "master's tincd SIGTERM (tinc-down runs)",
            lambda lab: lab.send("tincd-hA", signal.SIGTERM),
            _restart_hA,
            label="master's tincd stopped (SIGTERM)",
        ),
        Scenario(
            "preempt",
            "old master returns (preemption)",
            lambda lab: lab.start_host("hA"),
            None,
            setup=_stop_hA,
            adv_from="hB",
            setup_master="hB",
            label="old master returns",
        ),
        Scenario(
            "ucarp-kill",
            "master's ucarp SIGKILL, restarted after 6 s",
            lambda lab: lab.send("ucarp-hA", signal.SIGKILL),
            lambda lab: lab.start_ucarp("hA"),
            label="master's ucarp SIGKILL",
        ),
        Scenario(
            "link-down",
            "master's public link down, up after 6 s",
            lambda lab: ip(lab.ns["hA"], "link", "set", "ext0", "down"),
            lambda lab: ip(lab.ns["hA"], "link", "set", "ext0", "up"),
            label="master's public link down",
        ),
        Scenario(
            "vpn-partition",
            "master cut off the VPN (public link up), healed after 6 s",
            lambda lab: _cut(lab, "hA", ("hB", "hC"), True),
            lambda lab: _cut(lab, "hA", ("hB", "hC"), False),
            label="master cut off the VPN",
        ),
        Scenario(
            "minority-partition",
            "a backup cut off the VPN: it must not take the address",
            lambda lab: _cut(lab, "hC", ("hA", "hB"), True),
            lambda lab: _cut(lab, "hC", ("hA", "hB"), False),
            label="a backup cut off the VPN",
        ),
        Scenario(
            "maintenance",
            "planned switchover: maintenance on for hA, off after 6 s",
            lambda lab: _maintenance(lab, True),
            lambda lab: _maintenance(lab, False),
            daemon="keepalived",
            label="planned switchover",
        ),
        _health("health", "stopped", _service, "carphooks"),
        _health("health-keepalived", "stopped", _service, "keepalived"),
        _health("health-hang", "frozen (SIGSTOP)", _hang, "carphooks"),
        _health("health-hang-keepalived", "frozen (SIGSTOP)", _hang, "keepalived"),
        _health("health-all", "and every peer's stopped", _services, "carphooks"),
        _health("health-all-keepalived", "and every peer's stopped", _services, "keepalived"),
        Scenario(
            "manual-del",
            "the floating address deleted by hand on the master",
            lambda lab: (
                (
                    ip(lab.ns["hA"], "addr", "del", VIP4, "dev", "ext0", check=False),
                    ip(lab.ns["hA"], "-6", "addr", "del", VIP6, "dev", "ext0", check=False),
                )
                and None
            ),
            None,
            label="address deleted by hand",
        ),
    ]
}


def run_scenario(
    lab: Lab, v: View, sc: Scenario, hookset: str, settle_max: float = SETTLE_MAX
) -> dict[str, Any]:
    """Run one scenario; settle_max: how long to wait for steady state after the last
    action before the run is recorded as not recovered."""
    note: list[str] = []
    ensure_initial(lab, v, note)
    t_begin = time.time()
    if sc.setup:
        sc.setup(lab)
        if not wait_steady(lab, v, sc.setup_master, 20.0, fix_client=True):
            note.append(f"setup: {sc.setup_master} not steady after 20 s")
    # quorum must not depend on tinc's graph: every running pair directly connected
    mesh_ok, mesh_wait, missing = lab.wait_mesh(MESH_WAIT)
    if not mesh_ok:
        note.append(f"tinc mesh incomplete after {MESH_WAIT:.0f} s (no direct link "
                    f"{', '.join(missing)}): fault fired anyway")
    watcher = next(h for h in ("hC", "hB") if h != sc.adv_from)
    if not lab.wait_adv(sc.adv_from, watcher):
        note.append(f"no advertisement from {sc.adv_from} seen in {watcher}: fault fired anyway")
    t_fault = time.time()
    sc.fault(lab)
    t_repair = None
    if sc.repair:
        time.sleep(max(0.0, t_fault + sc.hold - time.time()))
        t_repair = time.time()
        sc.repair(lab)
    final = wait_steady(lab, v, sc.final, max(settle_max, SETTLE_MIN), SETTLE_MIN)
    t_end = time.time()
    if not final:
        note.append(f"no steady state {settle_max:.0f} s after the last action")
    v.poll()
    res = analyze(lab, v, t_begin, t_fault, t_repair, t_end)
    until = res["repair_at"] if res["repair_at"] is not None else res["end_at"]
    res["quorum_lost"] = sorted({host for t, host, msg in res["timeline"]["syslog"]
                                 if 0 <= t < until and "quorum lost" in msg})
    res.update(scenario=sc.name, title=sc.title, label=sc.label or sc.title, set=hookset,
               final_master=final, notes=note, checker=sc.checker,
               mesh={"complete": mesh_ok, "waited_s": mesh_wait, "missing": missing})
    if not final:
        recover(lab, v, note)
    return res


# ---------------------------------------------------------------- measurements
def read_hooks(lab: Lab, t0: float, t1: float) -> list[dict[str, Any]]:
    out = []
    if lab.hook_log.exists():
        for line in lab.hook_log.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if t0 <= r["t0"] <= t1:
                out.append(r)
    return out


def longest_outage(probes: list[dict[str, Any]], t_end: float) -> tuple[float, float | None, bool]:
    """(ms, start, still_failing_at_end) of the longest run of failed probes, measured
    from the first failed probe to the next good one."""
    best, best_t, open_ = 0.0, None, False
    start = None
    for p in probes:
        if not p["ok"]:
            if start is None:
                start = p["t"]
        elif start is not None:
            if p["t"] - start > best:
                best, best_t, open_ = p["t"] - start, start, False
            start = None
    if start is not None and t_end - start > best:
        best, best_t, open_ = t_end - start, start, True
    return round(best * 1000), best_t, open_


def segments(items: list[tuple[float, Any]], t_end: float) -> list[list[Any]]:
    """[(t, value)] -> [[t0, t1, value]] merging equal consecutive values."""
    out: list[list[Any]] = []
    for t, val in items:
        if out and out[-1][2] == val:
            continue
        if out:
            out[-1][1] = t
        out.append([t, t_end, val])
    return out


def analyze(
    lab: Lab, v: View, t_begin: float, t_fault: float, t_repair: float | None, t_end: float
) -> dict[str, Any]:
    w0 = t_fault - 1.0
    samples = [s for s in v.samples if w0 <= s["t"] <= t_end]
    # probes are logged when they finish: order them by start time
    probes = {
        af: sorted((p for p in v.probes[af] if w0 <= p["t"] <= t_end), key=lambda p: p["t"])
        for af in (4, 6)
    }
    adv = [a for a in v.adv if w0 - MASTER_WINDOW <= a["t"] <= t_end]
    hooks = read_hooks(lab, t_begin, t_end)
    syslog = [s for s in v.syslog if t_begin <= s["t"] <= t_end]

    two = [s for s in samples if len(holders(s, 4)) > 1 or len(holders(s, 6)) > 1]
    phases: dict[str, Any] = {}
    bounds = [("failover", t_fault, t_repair or t_end)]
    if t_repair:
        bounds.append(("repair", t_repair, t_end))
    for name, a, b in bounds:
        ph: dict[str, Any] = {}
        for af in (4, 6):
            pp = [p for p in probes[af] if a <= p["t"] < b]
            ms, at, open_ = longest_outage(pp, b)
            ph[f"outage{af}_ms"] = ms
            ph[f"outage{af}_open"] = open_
            ph[f"outage{af}_at"] = round(at - t_fault, 3) if at else None
        ph["two_holder_samples"] = sum(1 for s in two if a <= s["t"] < b)
        phases[name] = ph

    # master segments from advertisements
    ticks = sorted({round(s["t"], 3) for s in samples})
    mseg_items = []
    ai = 0
    recent: dict[str, float] = {}
    for t in ticks:
        while ai < len(adv) and adv[ai]["t"] <= t:
            recent[adv[ai]["src"]] = adv[ai]["t"]
            ai += 1
        mseg_items.append(
            (t, ",".join(sorted(h for h, ta in recent.items() if t - ta <= MASTER_WINDOW)))
        )
    hseg4 = segments([(s["t"], ",".join(sorted(holders(s, 4)))) for s in samples], t_end)
    hseg6 = segments([(s["t"], ",".join(sorted(holders(s, 6)))) for s in samples], t_end)
    cseg = {
        af: segments(
            [(p["t"], p.get("who", "-") if p["ok"] else "FAIL") for p in probes[af]], t_end
        )
        for af in (4, 6)
    }
    blocks: dict[str, list[float]] = {}
    for hk in hooks:
        if hk["t0"] >= t_fault - 0.5:
            blocks.setdefault(hk["hook"], []).append(round((hk["t1"] - hk["t0"]) * 1000, 1))
    dts = [s["dt"] for s in samples[1:]]
    last_fail = max((p["t"] for p in probes[4] if not p["ok"] and p["t"] >= t_fault), default=None)
    first_ok_after = None
    if last_fail is not None:
        first_ok_after = next((p["t"] for p in probes[4] if p["ok"] and p["t"] > last_fail), None)
    rel = lambda x: None if x is None else round(x - t_fault, 3)  # noqa: E731
    svc = service_view(v, w0, t_fault, t_repair, t_end) if lab.st.get("checker") else None
    return {
        "svc": svc,
        "t_begin": t_begin,
        "t_fault": t_fault,
        "t_repair": t_repair,
        "t_end": t_end,
        "repair_at": rel(t_repair),
        "end_at": rel(t_end),
        "outage4_ms": max(p["outage4_ms"] for p in phases.values()),
        "outage6_ms": max(p["outage6_ms"] for p in phases.values()),
        "two_holder_samples": len(two),
        "two_holder_ms": round(sum(s["dt"] for s in two)),
        "recovered_at": rel(first_ok_after) if last_fail else 0.0,
        "phases": phases,
        "hook_block_ms": {
            k: {"n": len(x), "max": max(x), "median": sorted(x)[len(x) // 2]}
            for k, x in blocks.items()
        },
        "sampler_period_ms": {
            "median": sorted(dts)[len(dts) // 2] if dts else None,
            "max": max(dts) if dts else None,
        },
        "timeline": {
            "holders4": [[rel(a), rel(b), x] for a, b, x in hseg4],
            "holders6": [[rel(a), rel(b), x] for a, b, x in hseg6],
            "masters": [[rel(a), rel(b), x] for a, b, x in segments(mseg_items, t_end)],
            "client4": [[rel(a), rel(b), x] for a, b, x in cseg[4]],
            "client6": [[rel(a), rel(b), x] for a, b, x in cseg[6]],
            "hooks": [
                [rel(h["t0"]), round((h["t1"] - h["t0"]) * 1000, 1), h["host"], h["hook"], h["rc"]]
                for h in hooks
            ],
            "syslog": [[rel(s["t"]), s["host"], s["msg"]] for s in syslog],
            **({f"svc{af}": svc["timeline"][af] for af in (4, 6)} if svc else {}),
        },
        "hook_env": [
            {"host": h["host"], "hook": h["hook"], "env": h["env"], "argv": h["argv"]}
            for h in hooks
            if h["hook"] in ("tinc-up", "tinc-down", "host-up", "host-down")
        ],
    }


def service_view(v: View, w0: float, t_fault: float, t_repair: float | None,
                 t_end: float, master: str = "hA") -> dict[str, Any]:
    """The lab service as the client saw it (health-check scenarios), seconds from the
    fault: per phase the longest outage; when a peer first served the client after the
    fault (`peer_at`), and when ``master`` served it again for good after the repair
    (`back_at`, seconds from the repair)."""
    out: dict[str, Any] = {"phases": {}, "timeline": {}}
    bounds = [("failover", t_fault, t_repair or t_end)]
    if t_repair:
        bounds.append(("repair", t_repair, t_end))
    for af in (4, 6):
        pp = sorted((p for p in v.svc[af] if w0 <= p["t"] <= t_end), key=lambda p: p["t"])
        for name, a, b in bounds:
            ms, at, open_ = longest_outage([p for p in pp if a <= p["t"] < b], b)
            ph = out["phases"].setdefault(name, {})
            ph[f"outage{af}_ms"] = ms
            ph[f"outage{af}_open"] = open_
            ph[f"outage{af}_at"] = round(at - t_fault, 3) if at else None
        first_fail = next((p["t"] for p in pp if p["t"] >= t_fault and not p["ok"]), None)
        peer = next((p for p in pp if p["t"] >= t_fault and p["ok"] and p.get("who") != master
                     and (t_repair is None or p["t"] < t_repair)), None)
        out[f"down_at{af}"] = None if first_fail is None else round(first_fail - t_fault, 3)
        out[f"peer_at{af}"] = None if peer is None else round(peer["t"] - t_fault, 3)
        out[f"peer{af}"] = None if peer is None else peer["who"]
        back = None
        if t_repair:
            for p in pp:  # start of the last run of answers from the master
                if p["t"] < t_repair:
                    continue
                if p["ok"] and p.get("who") == master:
                    back = back if back is not None else p["t"]
                else:
                    back = None
        out[f"back_at{af}"] = None if back is None else round(back - t_repair, 3)
        out["timeline"][af] = [
            [round(a - t_fault, 3), round(b - t_fault, 3), x] for a, b, x in
            segments([(p["t"], p.get("who", "-") if p["ok"] else "FAIL") for p in pp], t_end)
        ]
    # the first advertisement of the master with a changed priority (VRRP priority /
    # CARP advskew, byte 2 of either header) after the fault: the demotion on the wire,
    # where FreeBSD's CARP would have its preempting backup take over (carp_input_c)
    mine = [a for a in v.adv if a["src"] == master]
    base = next((a["skew"] for a in reversed(mine) if a["t"] < t_fault), None)
    dem = next((a for a in mine if t_fault <= a["t"] < (t_repair or t_end)
                and a["skew"] != base), None)
    out["demoted_adv_at"] = None if dem is None else round(dem["t"] - t_fault, 3)
    out["priority"] = [base, None if dem is None else dem["skew"]]
    out["outage4_ms"] = max(ph["outage4_ms"] for ph in out["phases"].values())
    out["outage6_ms"] = max(ph["outage6_ms"] for ph in out["phases"].values())
    return out
