"""Per-event cost: ``carp-event 1@tap0 MASTER`` then ``BACKUP`` vs the original shell hook.

Both contenders run cold, side by side (alternating which goes first), against the
same fake FreeBSD: the Python emulator (``tests/fakebsd``, ~40 ms a call) and the
minimal sh fake (``bench/minifake.py``), which isolates the hook's own cost.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import importtime, procs
from bench.common import (
    BINDIR,
    ORIGINAL_SH,
    SH,
    Sample,
    Stats,
    SyslogSink,
    bench_host,
    measure,
    peak_rss_kb,
    stats,
    workdir,
    write_config,
)
from bench.minifake import MiniFake

ADDRESSES = ["203.0.113.10/24", "2001:db8:10::10/64"]
HELD = {a.split("/")[0] for a in ADDRESSES}


@dataclass
class Variant:
    """One fake FreeBSD: how to set CARP, what is held, the call log."""

    name: str
    env: dict[str, str]
    set_carp: Callable[[str], None]
    held: Callable[[], set[str]]
    calls: Callable[[], list[list[str]]]
    clear_calls: Callable[[], None]


def _emulator(work: Path) -> Variant:
    host = bench_host(work / "emu")
    return Variant(
        "emulator", host.env(),
        lambda state: host.set_carp_state("tap0", 1, state),
        lambda: {str(a[0].ip) for a in host.addresses("vtnet0")} & HELD,
        lambda: host.calls(), host.clear_calls)


def _minifake(work: Path) -> Variant:
    fake = MiniFake(work / "mini", ADDRESSES)
    return Variant("minifake", fake.env(), fake.set_carp, lambda: fake.held() & HELD,
                   fake.calls, fake.clear_calls)


def _contenders(config: Path) -> dict[str, Callable[[str], list[str]]]:
    return {
        "carphooks": lambda state: [str(BINDIR / "carp-event"), "1@tap0", state],
        "original.sh": lambda state: [SH, str(ORIGINAL_SH), "1@tap0", state],
    }


def _env(variant: Variant, config: Path) -> dict[str, str]:
    env = dict(variant.env)
    env["CARPHOOKS_CONFIG"] = str(config)
    env["ORIG_TAG"] = "carp-hook"
    return env


def _one(variant: Variant, env: dict[str, str], argv_for: Callable[[str], list[str]],
         ) -> tuple[Sample, Sample, dict[str, int]]:
    """MASTER then BACKUP; checks the outcome; returns both samples and call counts."""
    counts = {}
    out = []
    for state, want in (("MASTER", HELD), ("BACKUP", set())):
        variant.set_carp(state)
        variant.clear_calls()
        sample = measure(argv_for(state), env)
        counts[state] = len(variant.calls())
        if sample.code != 0 or variant.held() != want:
            raise RuntimeError(f"{variant.name}: {' '.join(argv_for(state))}: exit "
                               f"{sample.code}, held {sorted(variant.held())}: "
                               f"{sample.stderr.strip()[-500:]}")
        out.append(sample)
    return out[0], out[1], counts


def run(runs: int = 15, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The per-event figures for both variants, plus import times and process counts."""
    result: dict[str, Any] = {"runs": runs, "addresses": ADDRESSES, "variants": {}}
    with workdir() as work:
        sink = SyslogSink(work / "log.sock")
        try:
            config = write_config(work / "carphooks.toml", state=work / "state",
                                  sock=sink.path, groups=[{"name": "web", "vhid": 1,
                                                           "addresses": ADDRESSES}])
            contenders = _contenders(config)
            for make in (_minifake, _emulator):
                variant = make(work)
                env = _env(variant, config)
                log(f"per-event, {variant.name}: {runs} runs of each contender, alternating")
                result["variants"][variant.name] = _variant(variant, env, contenders, runs)
            mini = _minifake(work / "it")
            env = _env(mini, config)
            mini.set_carp("BACKUP")
            log("import times: python -X importtime carp-event 1@tap0 BACKUP (minifake)")
            result["importtime"] = importtime.run([str(BINDIR / "carp-event"), "1@tap0",
                                                  "BACKUP"], env, runs=5)
        finally:
            sink.close()
    return result


def _variant(variant: Variant, env: dict[str, str],
             contenders: dict[str, Callable[[str], list[str]]], runs: int) -> dict[str, Any]:
    names = list(contenders)
    samples: dict[str, list[tuple[Sample, Sample]]] = {n: [] for n in names}
    calls: dict[str, dict[str, int]] = {}
    floor: dict[str, list[float]] = {"python -c pass": [], "python -I -S -c pass": []}
    fake_cost: list[float] = []
    for i in range(runs):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            master, backup, counts = _one(variant, env, contenders[name])
            samples[name].append((master, backup))
            calls[name] = counts
        floor["python -c pass"].append(measure([sys.executable, "-c", "pass"], env).wall)
        floor["python -I -S -c pass"].append(
            measure([sys.executable, "-I", "-S", "-c", "pass"], env).wall)
        fake_cost.append(measure(["ifconfig", "vtnet0"], env).wall)
    out: dict[str, Any] = {"contenders": {}}
    for name in names:
        pairs = samples[name]
        out["contenders"][name] = {
            "wall": stats([m.wall + b.wall for m, b in pairs]).as_dict(),
            "wall_master": stats([m.wall for m, _ in pairs]).as_dict(),
            "wall_backup": stats([b.wall for _, b in pairs]).as_dict(),
            "cpu": stats([m.cpu + b.cpu for m, b in pairs]).as_dict(),
            "maxrss_kb": stats([max(m.maxrss_kb, b.maxrss_kb) for m, b in pairs]).as_dict(),
            "fake_calls": calls[name],
        }
    a, b = names
    pa, pb = samples[a], samples[b]
    out["ratio_wall"] = stats([(x[0].wall + x[1].wall) / (y[0].wall + y[1].wall)
                               for x, y in zip(pa, pb, strict=True)]).as_dict()
    out["ratio_cpu"] = stats([(x[0].cpu + x[1].cpu) / max(1e-9, y[0].cpu + y[1].cpu)
                              for x, y in zip(pa, pb, strict=True)]).as_dict()
    out["ratio_maxrss"] = stats([max(x[0].maxrss_kb, x[1].maxrss_kb) /
                                 max(y[0].maxrss_kb, y[1].maxrss_kb)
                                 for x, y in zip(pa, pb, strict=True)]).as_dict()
    out["floor"] = {k: stats(v).as_dict() for k, v in floor.items()}
    fc = stats(fake_cost)
    out["fake_call"] = fc.as_dict()
    # The fakes' own cost subtracted (estimate): calls per event x median cost of one call.
    adj = {}
    for name in names:
        n = sum(calls[name].values())
        adj[name] = out["contenders"][name]["wall"]["median"] - n * fc.median
    out["minus_fakes_ms"] = {k: v * 1e3 for k, v in adj.items()}
    out["ratio_minus_fakes"] = adj[a] / adj[b] if adj[b] > 0 else None
    out["processes"] = {}
    for name in names:
        counted = {}
        for state in ("MASTER", "BACKUP"):
            variant.set_carp(state)
            counted[state] = procs.count_processes(contenders[name](state), env)
        out["processes"][name] = counted
    for name in names:  # peak memory without the fork-from-Python inflation
        peaks = []
        for _ in range(3):
            per_run = []
            for state in ("MASTER", "BACKUP"):
                variant.set_carp(state)
                per_run.append(peak_rss_kb(contenders[name](state), env))
            if None not in per_run:
                peaks.append(max(p for p in per_run if p is not None))
        c = out["contenders"][name]
        c["maxrss_wait4_kb"] = c["maxrss_kb"]
        c["maxrss_kb"] = stats(peaks).as_dict() if peaks else c["maxrss_kb"]
        c["maxrss_tool"] = "GNU time %M" if peaks else "os.wait4 (inflated by the fork)"
    if all("GNU" in out["contenders"][n]["maxrss_tool"] for n in names):
        out["ratio_maxrss"] = stats([out["contenders"][a]["maxrss_kb"]["median"] /
                                     out["contenders"][b]["maxrss_kb"]["median"]]).as_dict()
    variant.set_carp("BACKUP")
    return out


def summary(stat: dict[str, float]) -> Stats:
    return Stats(stat["median"], stat["min"], stat["max"], stat["q1"], stat["q3"],
                 int(stat["n"]))
