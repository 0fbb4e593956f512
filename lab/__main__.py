"""python -m lab up|down|run|demo  (see docs/lab.md)"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import sys
import time
from typing import Any

from . import report
from .nsutil import alive
from .scenarios import DEMO_SETTLE_MAX, SCENARIOS, SETTLE_MAX, View, run_scenario, wait_steady
from .topo import Lab, LabError, all_labs, carphooks_missing

# The short demo: the failovers that tell the story, each with both hook sets.
DEMO_SCENARIOS = ("tincd-kill", "vpn-partition", "maintenance")


class Console:
    """Where the lab's messages go. say(): the terminal (stderr) and the log file;
    detail(): the log file only, or stderr when there is no log file."""

    def __init__(self, log_path: str | None = None) -> None:
        if log_path:
            os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        self.log = open(log_path, "w", buffering=1) if log_path else None

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)
        self._file(text)

    def detail(self, text: str) -> None:
        if self.log:
            self._file(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def _file(self, text: str) -> None:
        if self.log:
            self.log.write(f"{time.strftime('%H:%M:%S')} {text}\n")


QUIET = Console()  # no log file: everything on stderr (run, up, the tests)


def _guard(lab: Lab, keep: bool, out: Console = QUIET) -> None:
    """Tear the lab down on exit, SIGINT, SIGTERM, SIGHUP."""
    done = [False]

    def cleanup() -> None:
        if not done[0]:
            done[0] = True
            removed = lab.down(keep=keep)
            out.say(f"lab {lab.id} down: removed {len(removed)} processes/namespaces")

    def on_signal(sig: int, _frm: Any) -> None:
        cleanup()
        os._exit(128 + sig)

    atexit.register(cleanup)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)


def bring_up(lab: Lab, hookset: str, out: Console = QUIET) -> View:
    t = time.time()
    lab.up(hookset)
    v = View(str(lab.monitor_log))
    w = wait_steady(lab, v, "hA", 30.0, fix_client=True)
    if not w:
        raise LabError("lab not steady (hA master, holding, answering) 30 s after up")
    out.say(f"lab {lab.id} up in {time.time() - t:.1f} s (hooks: {hookset})")
    out.detail(f"lab {lab.id}: work files in {lab.tmp}")
    return v


def switch_hooks(lab: Lab, v: View, hookset: str, daemon: str = "ucarp",
                 checker: str | None = None, out: Console = QUIET) -> None:
    """Restart the lab's daemons with another hook set, CARP daemon and/or health
    checker (carphooks' [[check]] run by `carphooks watch`, or keepalived's
    track_script; None: no service, no check). With the same hook set tincd keeps
    running (its links and the hooks' peer records stay)."""
    t = time.time()
    if hookset == lab.st["hookset"]:
        lab.stop_daemons(("cron", "svc", "ucarp"))
    else:
        lab.stop_daemons()
    lab.reset_carphooks_state()
    lab.st["daemon"] = daemon
    lab.st["checker"] = checker
    lab.write_hooks(hookset)
    lab.flush_client()
    lab.start_all()
    if not wait_steady(lab, v, "hA", 30.0, fix_client=True):
        raise LabError(f"lab not steady 30 s after switching to hooks {hookset} ({daemon})")
    out.detail(f"[{hookset}] now with {daemon}, steady after {time.time() - t:.1f} s")


def run(
    lab: Lab,
    v: View,
    sets: list[str],
    names: list[str],
    verbose: bool,
    repeat: int = 1,
    out: Console = QUIET,
    settle_max: float = SETTLE_MAX,
) -> list[dict[str, Any]]:
    """Run the scenarios with each hook set in turn. One short line per run through
    out.say; the per-step detail (and with verbose the timelines) through out.detail."""
    results: list[dict[str, Any]] = []
    names = names * repeat  # the whole list again, N times
    # scenarios needing another CARP daemon (keepalived) or a health checker run last
    # in each set, grouped so that each switch happens once
    names = sorted(names, key=lambda n: (SCENARIOS[n].daemon != "ucarp",
                                         SCENARIOS[n].checker or ""))
    for hs in sets:
        if (lab.st["hookset"] != hs or lab.st.get("daemon", "ucarp") != "ucarp"
                or lab.st.get("checker")):
            switch_hooks(lab, v, hs, out=out)
        for n in names:
            sc = SCENARIOS[n]
            if hs not in sc.sets:
                out.say(f"[{hs}] {n}: skipped, it needs the hook set {'/'.join(sc.sets)}")
                continue
            if shutil.which(sc.daemon) is None:
                out.say(f"[{hs}] {n}: skipped, {sc.daemon} is not installed")
                continue
            if (sc.daemon, sc.checker) != (lab.st.get("daemon", "ucarp"), lab.st.get("checker")):
                out.detail(f"[{hs}] switching the CARP daemon to {sc.daemon}"
                           f"{f', health checks by {sc.checker}' if sc.checker else ''}")
                switch_hooks(lab, v, hs, sc.daemon, sc.checker, out=out)
            count = sum(1 for x in results if x["scenario"] == n and x["set"] == hs) + 1
            out.detail(f"[{hs}] {n}{f' (run {count})' if repeat > 1 else ''} ...")
            r = run_scenario(lab, v, SCENARIOS[n], hs, settle_max)
            r["run"] = count
            results.append(r)
            if out.log:
                out.say(report.short_line(r))
            out.detail("   " + report.one_line(r))
            if verbose:
                if out.log:
                    out.detail(report.timeline(r))
                else:
                    print(report.timeline(r))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="bring a lab up and leave it running")
    p_up.add_argument("--hooks", choices=["bare", "carphooks"], default="bare")
    p_down = sub.add_parser(
        "down", help="remove labs recorded by up (default: those whose driver is gone)"
    )
    p_down.add_argument("--id")
    p_down.add_argument("--all", action="store_true")
    p_down.add_argument("--keep", action="store_true", help="keep the tmp dir (logs)")
    for name in ("run", "demo"):
        p = sub.add_parser(name)
        p.add_argument(
            "--hooks",
            choices=["bare", "carphooks", "both"],
            default="both" if name == "demo" else "bare",
        )
        p.add_argument(
            "--scenarios",
            help=f"comma list of {', '.join(SCENARIOS)} (default: "
            + ("the demo's " + ",".join(DEMO_SCENARIOS) if name == "demo" else "all") + ")",
        )
        if name == "demo":
            p.add_argument("--full", action="store_true", help="every scenario")
            p.add_argument("--log", help="per-step log and timelines here, not on the terminal")
        p.add_argument("--repeat", type=int, default=1, metavar="N",
                       help="run the selected scenarios N times over (a table row per run)")
        p.add_argument("--settle-max", type=float, metavar="S",
                       help="after the last action, wait at most S seconds for steady state "
                       f"(default {SETTLE_MAX:.0f}; the short demo {DEMO_SETTLE_MAX:.0f})")
        p.add_argument("--json", help="write results here")
        p.add_argument("--markdown", help="write the result tables here")
        p.add_argument("--plot", help="draw the timelines here (.svg, or .png with matplotlib)")
        p.add_argument("--keep", action="store_true", help="keep the tmp dir (logs)")
        p.add_argument("-v", "--verbose", action="store_true", help="print each timeline")
    a = ap.parse_args(argv)

    if a.cmd == "down":
        labs = all_labs()
        if a.id:
            labs = [lab for lab in labs if lab.id == a.id]
        elif not a.all:
            labs = [lab for lab in labs if not (lab.st.get("owner") and alive(lab.st["owner"]))]
        for lab in labs:
            print(f"{lab.id}: removed {' '.join(lab.down(keep=a.keep)) or 'nothing'}")
        return 0

    out = QUIET
    try:
        if a.cmd == "up":
            lab = Lab()
            try:
                bring_up(lab, a.hooks)
            except BaseException:
                lab.down(keep=True)
                raise
            print(lab.id)
            return 0

        demo, full = a.cmd == "demo", a.cmd == "demo" and a.full
        sets = ["bare", "carphooks"] if a.hooks == "both" else [a.hooks]
        if a.scenarios:
            names = [n for n in a.scenarios.split(",") if n]
        else:
            names = list(DEMO_SCENARIOS) if demo and not full else list(SCENARIOS)
        bad = [n for n in names if n not in SCENARIOS]
        if bad:
            ap.error(f"unknown scenarios: {bad}")
        if a.repeat < 1:
            ap.error("--repeat must be at least 1")
        settle_max = a.settle_max
        if settle_max is None:
            settle_max = DEMO_SETTLE_MAX if demo and not full else SETTLE_MAX
        if demo:
            out = Console(a.log)
        if "carphooks" in sets and carphooks_missing():
            if demo and a.hooks == "both":
                out.say(
                    f"carphooks entry points missing ({', '.join(carphooks_missing())}): "
                    "running the bare hooks only"
                )
                sets = ["bare"]
            else:
                raise LabError(f"carphooks entry points missing: {', '.join(carphooks_missing())}")
        if demo:
            out.say(
                f"carphooks lab: {len(names)} scenario(s) x {' and '.join(sets)} hooks, three "
                "hosts in network namespaces (real tincd, ucarp; keepalived for a switchover)"
            )
            if a.log:
                out.say(f"per-step log and timelines: {a.log}")
        lab = Lab(owner=os.getpid())
        _guard(lab, a.keep, out)
        t0 = time.time()
        v = bring_up(lab, sets[0], out)
        verbose = a.verbose or bool(demo and a.log)  # the demo's timelines go to its log
        results = run(lab, v, sets, names, verbose, a.repeat, out, settle_max)
        res = {"lab": lab.id, "when": time.strftime("%Y-%m-%d %H:%M:%S"), "results": results}
        tables = [report.runs(results) if a.repeat > 1 else report.summary(results)]
        if any(r.get("svc") for r in results):
            tables.append(report.health(results))
        if demo and len(sets) == 2 and a.repeat == 1:
            tables.insert(0, report.side_by_side(results) + "\n\n" + report.LEGEND)
        if demo:
            out.say(f"scenarios done in {time.time() - t0:.0f} s")
            out.detail("\n\n".join(tables))
        print("\n\n".join(tables[:1] if demo else tables))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)
            print(f"results: {a.json}")
        if a.markdown:
            with open(a.markdown, "w") as f:
                f.write("\n\n".join(tables) + "\n")
            print(f"tables: {a.markdown}")
        plot = a.plot or ("lab-demo.svg" if demo else None)
        if plot:
            print(f"picture: {report.draw(results, plot)}")
        return 0
    except LabError as e:
        out.say(f"lab: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
