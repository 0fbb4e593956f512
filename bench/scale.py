"""Scale: ``carphooks reconcile`` from nothing held to all held and back.

Cases: one group with 1, 16, 64, 256 and 1024 floating addresses, and 64 groups of 4.
FreeBSD backend against the minimal sh fake (timings; every case) and the Python
emulator (command counts of the small cases); Linux backend on a veth in a private
network namespace (one ``ip -batch`` per change set), when ``ip netns`` works.
Cases alternate run by run (the order rotates), so the time ratios are side by side.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    BINDIR,
    SyslogSink,
    bench_host,
    floating_addresses,
    measure,
    stats,
    workdir,
    write_config,
)
from bench.minifake import MiniFake

SINGLE = (1, 16, 64, 256, 1024)
GROUPS_OF_4 = 64
IP = shutil.which("ip")


@dataclass
class Case:
    """One configuration and the callables to drive and inspect it."""

    name: str
    n: int
    groups: list[dict[str, Any]]
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    set_carp: Callable[[str], None] = lambda s: None
    held: Callable[[], set[str]] = set
    calls: Callable[[], list[list[str]]] = list
    clear_calls: Callable[[], None] = lambda: None
    times: dict[str, list[float]] = field(default_factory=lambda: {"take": [], "release": []})
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: str | None = None


def case_groups(n: int, groups: int = 1) -> list[dict[str, Any]]:
    addrs = floating_addresses(n * groups)
    if groups == 1:
        return [{"name": "g1", "vhid": 1, "addresses": addrs}]
    return [{"name": f"g{i + 1}", "vhid": i + 1, "addresses": addrs[i * n:(i + 1) * n]}
            for i in range(groups)]


def all_cases() -> list[tuple[str, int, list[dict[str, Any]]]]:
    out = [(f"1 group x {n}", n, case_groups(n)) for n in SINGLE]
    out.append((f"{GROUPS_OF_4} groups x 4", 4 * GROUPS_OF_4, case_groups(4, GROUPS_OF_4)))
    return out


def classify(calls: list[list[str]], tool: str = "ifconfig") -> dict[str, int]:
    """{"reads": n, "reads_per_if": max reads of one interface, "changes": n, ...}"""
    reads: Counter[str] = Counter()
    changes = 0
    other = 0
    for argv in calls:
        if not argv:
            continue
        if Path(argv[0]).name == tool and len(argv) == 2:
            reads["all" if argv[1] == "-a" else argv[1]] += 1  # -a: every interface at once
        elif Path(argv[0]).name == tool:
            changes += 1
        else:
            other += 1
    out = {"commands": len(calls), "reads": sum(reads.values()),
           "reads_max_per_if": max(reads.values(), default=0), "changes": changes}
    out.update({f"reads_{k}": v for k, v in sorted(reads.items())})
    if other:
        out["other"] = other
    return out


def _drive(case: Case) -> None:
    """One take (all MASTER) and one release (all BACKUP), checked and counted."""
    want_all = {a.split("/")[0] for g in case.groups for a in g["addresses"]}
    for phase, state, want in (("take", "MASTER", want_all), ("release", "BACKUP", set())):
        case.set_carp(state)
        case.clear_calls()
        sample = measure(case.argv, case.env)
        held = case.held()
        if sample.code != 0 or held != want:
            missing = sorted(want - held)[:5]
            extra = sorted(held - want)[:5]
            raise RuntimeError(f"{case.name} {phase}: exit {sample.code}, missing {missing}, "
                               f"extra {extra}: {sample.stderr.strip()[-400:]}")
        case.times[phase].append(sample.wall)
        case.counts[phase] = classify(case.calls(), "ip" if case.name.startswith("linux")
                                      else "ifconfig")


def _loop(cases: list[Case], repeats: int, budget: float, log: Callable[[str], None]) -> None:
    """Alternate the cases run by run until ``repeats`` or the time budget is used."""
    start = time.monotonic()
    per_addr = 0.0
    for rep in range(repeats):
        order = cases[rep % len(cases):] + cases[:rep % len(cases)]
        if rep:
            used = time.monotonic() - start
            if used / rep * (rep + 1) > budget:
                log(f"  stop after {rep} run(s): the budget is {budget:.0f} s")
                break
        for case in sorted(order, key=lambda c: c.n) if rep == 0 else order:
            if case.skipped:
                continue
            projected = per_addr * case.n * 2
            remaining = budget - (time.monotonic() - start)
            if rep == 0 and projected > remaining:
                case.skipped = (f"projected {projected:.0f} s > remaining budget "
                                f"{remaining:.0f} s (python -m bench --full runs it)")
                log(f"  {case.name}: skipped, {case.skipped}")
                continue
            t0 = time.monotonic()
            _drive(case)
            if case.n >= 16 and len(case.groups) == 1:
                per_addr = max(per_addr, (time.monotonic() - t0) / (2 * case.n))
            log(f"  {case.name}: take {case.times['take'][-1] * 1e3:.0f} ms, release "
                f"{case.times['release'][-1] * 1e3:.0f} ms, {case.counts['take']}")


def _freebsd_cases(work: Path, sock: Path) -> list[Case]:
    cases = []
    for i, (name, n, groups) in enumerate(all_cases()):
        d = work / f"bsd{i}"
        vhids = [int(g["vhid"]) for g in groups]
        fake = MiniFake(d, [a for g in groups for a in g["addresses"]], vhids=vhids)
        config = write_config(d / "carphooks.toml", state=d / "state", sock=sock,
                              groups=groups)
        env = fake.env()
        env["CARPHOOKS_CONFIG"] = str(config)
        cases.append(Case(name, n, groups, env, [str(BINDIR / "carphooks"), "reconcile"],
                          fake.set_carp, fake.held, fake.calls, fake.clear_calls))
    return cases


def _emulator_cases(work: Path, sock: Path) -> list[Case]:
    """The Python emulator, for exact command counts (small cases: ~40 ms a call)."""
    cases = []
    for i, (name, n, groups) in enumerate([("1 group x 16", 16, case_groups(16)),
                                           ("8 groups x 4", 32, case_groups(4, 8))]):
        d = work / f"emu{i}"
        vhids = [int(g["vhid"]) for g in groups]
        host = bench_host(d, vhids=vhids)
        config = write_config(d / "carphooks.toml", state=d / "state", sock=sock,
                              groups=groups)
        env = host.env()
        env["CARPHOOKS_CONFIG"] = str(config)

        def set_carp(state: str, host: Any = host, vhids: list[int] = vhids) -> None:
            for vhid in vhids:
                host.set_carp_state("tap0", vhid, state)

        def held(host: Any = host) -> set[str]:
            return {str(a[0].ip) for a in host.addresses("vtnet0")} - {"203.0.113.11"}

        cases.append(Case(name, n, groups, env, [str(BINDIR / "carphooks"), "reconcile"],
                          set_carp, held, host.calls, host.clear_calls))
    return cases


# -- Linux in a network namespace ------------------------------------------------------

def netns_usable() -> str | None:
    """None when namespaces work here, else the reason they do not."""
    if IP is None:
        return "iproute2 (ip) is not installed"
    if os.geteuid() != 0:
        return "not root: ip netns needs CAP_SYS_ADMIN"
    return None


@contextmanager
def namespace() -> Iterator[str]:
    """A private network namespace with veth0 <-> veth1, both up; deleted afterwards."""
    assert IP is not None
    name = f"chbench-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run([IP, "netns", "add", name], check=True, capture_output=True)
    try:
        for argv in (["link", "set", "lo", "up"],
                     ["link", "add", "veth0", "type", "veth", "peer", "name", "veth1"],
                     ["link", "set", "veth0", "up"], ["link", "set", "veth1", "up"]):
            subprocess.run([IP, "-n", name, *argv], check=True, capture_output=True)
        yield name
    finally:
        subprocess.run([IP, "netns", "del", name], check=False, capture_output=True)


def ip_wrapper(directory: Path) -> Path:
    """A PATH directory whose ``ip`` logs its argv, then execs the real ip."""
    assert IP is not None
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "ip"
    path.write_text("#!/bin/sh\n"
                    'printf "%s\\n" "ip $*" >> "${IPLOG:?IPLOG is not set}"\n'
                    f'exec {IP} "$@"\n')
    path.chmod(0o755)
    return directory


def linux_addresses(ns: str, ifname: str = "veth0") -> set[str]:
    assert IP is not None
    out = subprocess.run([IP, "-n", ns, "-o", "addr", "show", "dev", ifname],
                         capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        words = line.split()
        if len(words) > 3 and words[2] in ("inet", "inet6"):
            found.add(words[3].split("/")[0])
    return found


def _linux_cases(work: Path, sock: Path, ns: str) -> list[Case]:
    from carphooks.state import StateDir

    wrap = ip_wrapper(work / "ipwrap")
    assert IP is not None
    for own in ("198.51.100.254/24", "203.0.113.11/24"):  # the host's own addresses
        subprocess.run([IP, "-n", ns, "addr", "add", own, "dev", "veth0"], check=True,
                       capture_output=True)
    base = linux_addresses(ns)
    cases = []
    for i, (name, n, groups) in enumerate(all_cases()):
        d = work / f"linux{i}"
        d.mkdir()
        for g in groups:
            g["external_interface"] = "veth0"
        config = write_config(d / "carphooks.toml", state=d / "state", sock=sock,
                              groups=groups, backend="linux")
        log = d / "ip.log"
        log.write_text("")
        env = dict(os.environ)
        env["PATH"] = f"{wrap}:{env.get('PATH', '')}"
        env["CARPHOOKS_CONFIG"] = str(config)
        env["IPLOG"] = str(log)
        env["CARPHOOKS_PASSENV"] = "IPLOG"  # the runner passes nothing else
        state = StateDir(d / "state")
        subsystems = [f"{g['vhid']}@tap0" for g in groups]

        def set_carp(value: str, state: Any = state, subsystems: list[str] = subsystems) -> None:
            for sub in subsystems:
                state.write_carp_state(sub, value)

        def calls(log: Path = log) -> list[list[str]]:
            return [line.split() for line in log.read_text().splitlines() if line.strip()]

        def clear(log: Path = log) -> None:
            log.write_text("")

        cases.append(Case(f"linux {name}", n, groups, env,
                          [IP or "ip", "netns", "exec", ns, str(BINDIR / "carphooks"),
                           "reconcile"],
                          set_carp, lambda: linux_addresses(ns) - base, calls, clear))
    return cases


# -- summary ----------------------------------------------------------------------------

def linearity(cases: list[Case], phase: str) -> dict[str, Any]:
    """Least-squares t = a + b*N over the single-group cases, and t(1024)/t(64)."""
    pts = [(c.n, stats(c.times[phase]).median) for c in cases
           if not c.skipped and c.times[phase] and "groups x" not in c.name
           and " x " in c.name]
    out: dict[str, Any] = {}
    if len(pts) >= 2:
        n = len(pts)
        mx = sum(p[0] for p in pts) / n
        my = sum(p[1] for p in pts) / n
        sxx = sum((p[0] - mx) ** 2 for p in pts)
        b = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
        a = my - b * mx
        ss_tot = sum((p[1] - my) ** 2 for p in pts)
        ss_res = sum((p[1] - a - b * p[0]) ** 2 for p in pts)
        out.update(fixed_ms=a * 1e3, per_address_ms=b * 1e3,
                   r2=1 - ss_res / ss_tot if ss_tot else 1.0)
    by_n = {c.n: c for c in cases if not c.skipped and "groups x" not in c.name}
    if 1024 in by_n and 64 in by_n:
        pairs = list(zip(by_n[1024].times[phase], by_n[64].times[phase], strict=False))
        out["ratio_1024_64"] = stats([x / y for x, y in pairs]).as_dict()
        out["ideal_linear_ratio_1024_64"] = ((out.get("fixed_ms", 0) + 1024 * out.get(
            "per_address_ms", 0)) / (out.get("fixed_ms", 0) + 64 * out.get(
                "per_address_ms", 0))) if "per_address_ms" in out else None
    return out


def _summarise(cases: list[Case]) -> dict[str, Any]:
    rows = {}
    for c in cases:
        rows[c.name] = {
            "addresses": c.n, "groups": len(c.groups), "skipped": c.skipped,
            "runs": len(c.times["take"]),
            "take": stats(c.times["take"]).as_dict() if c.times["take"] else None,
            "release": stats(c.times["release"]).as_dict() if c.times["release"] else None,
            "counts": c.counts,
        }
    return {"cases": rows, "linear_take": linearity(cases, "take"),
            "linear_release": linearity(cases, "release")}


def run(repeats: int = 3, budget: float = 150.0, full: bool = False,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """All scale figures (FreeBSD minifake, FreeBSD emulator counts, Linux namespace)."""
    if full:
        budget = 1e9
    result: dict[str, Any] = {"repeats": repeats, "budget_s": budget}
    with workdir() as work:
        sink = SyslogSink(work / "log.sock")
        try:
            log("scale, FreeBSD backend, minimal sh fake")
            cases = _freebsd_cases(work, sink.path)
            _loop(cases, repeats, budget * 0.6, log)
            result["freebsd_minifake"] = _summarise(cases)
            log("scale, FreeBSD backend, Python emulator (counts; one run)")
            emu = _emulator_cases(work, sink.path)
            _loop(emu, 1, 1e9, log)
            result["freebsd_emulator"] = _summarise(emu)
            reason = netns_usable()
            if reason is None:
                log("scale, Linux backend, veth in a private network namespace")
                with namespace() as ns:
                    lcases = _linux_cases(work, sink.path, ns)
                    _loop(lcases, repeats, budget * 0.4, log)
                    result["linux_netns"] = _summarise(lcases)
            else:
                log(f"scale, Linux backend: skipped ({reason})")
                result["linux_netns"] = {"skipped": reason}
        finally:
            sink.close()
    return result
