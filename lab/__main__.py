"""python -m lab up|down|run|demo  (see lab/README.md)"""

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
from .scenarios import SCENARIOS, View, run_scenario, wait_steady
from .topo import Lab, LabError, all_labs, carphooks_missing


def _guard(lab: Lab, keep: bool) -> None:
    """Tear the lab down on exit, SIGINT, SIGTERM, SIGHUP."""
    done = [False]

    def cleanup() -> None:
        if not done[0]:
            done[0] = True
            removed = lab.down(keep=keep)
            print(
                f"lab {lab.id} down: removed {len(removed)} processes/namespaces", file=sys.stderr
            )

    def on_signal(sig: int, _frm: Any) -> None:
        cleanup()
        os._exit(128 + sig)

    atexit.register(cleanup)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)


def bring_up(lab: Lab, hookset: str) -> View:
    t = time.time()
    lab.up(hookset)
    v = View(str(lab.monitor_log))
    w = wait_steady(lab, v, "hA", 30.0, fix_client=True)
    if not w:
        raise LabError("lab not steady (hA master, holding, answering) 30 s after up")
    print(
        f"lab {lab.id} up in {time.time() - t:.1f} s (hooks: {hookset}); tmp {lab.tmp}",
        file=sys.stderr,
    )
    return v


def switch_hooks(lab: Lab, v: View, hookset: str, daemon: str = "ucarp",
                 checker: str | None = None) -> None:
    """Restart the lab's daemons with another hook set, CARP daemon and/or health
    checker (carphooks' [[check]] run by `carphooks watch`, or keepalived's
    track_script; None: no service, no check)."""
    lab.stop_daemons()
    lab.reset_carphooks_state()
    lab.st["daemon"] = daemon
    lab.st["checker"] = checker
    lab.write_hooks(hookset)
    lab.flush_client()
    lab.start_all()
    if not wait_steady(lab, v, "hA", 30.0, fix_client=True):
        raise LabError(f"lab not steady 30 s after switching to hooks {hookset} ({daemon})")


def run(
    lab: Lab, v: View, sets: list[str], names: list[str], verbose: bool, repeat: int = 1
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    names = names * repeat  # the whole list again, N times
    # scenarios needing another CARP daemon (keepalived) or a health checker run last
    # in each set, grouped so that each switch happens once
    names = sorted(names, key=lambda n: (SCENARIOS[n].daemon != "ucarp",
                                         SCENARIOS[n].checker or ""))
    for hs in sets:
        if (lab.st["hookset"] != hs or lab.st.get("daemon", "ucarp") != "ucarp"
                or lab.st.get("checker")):
            switch_hooks(lab, v, hs)
        for n in names:
            sc = SCENARIOS[n]
            if hs not in sc.sets:
                print(f"[{hs}] {n}: skipped, it needs the hook set {'/'.join(sc.sets)}",
                      file=sys.stderr, flush=True)
                continue
            if shutil.which(sc.daemon) is None:
                print(f"[{hs}] {n}: skipped, {sc.daemon} is not installed",
                      file=sys.stderr, flush=True)
                continue
            if (sc.daemon, sc.checker) != (lab.st.get("daemon", "ucarp"), lab.st.get("checker")):
                print(f"[{hs}] switching the CARP daemon to {sc.daemon}"
                      f"{f', health checks by {sc.checker}' if sc.checker else ''}",
                      file=sys.stderr, flush=True)
                switch_hooks(lab, v, hs, sc.daemon, sc.checker)
            count = sum(1 for x in results if x["scenario"] == n and x["set"] == hs) + 1
            print(f"[{hs}] {n}{f' (run {count})' if repeat > 1 else ''} ...", file=sys.stderr,
                  flush=True)
            r = run_scenario(lab, v, SCENARIOS[n], hs)
            r["run"] = count
            results.append(r)
            print("   " + report.one_line(r), file=sys.stderr, flush=True)
            if verbose:
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
            "--scenarios", default=",".join(SCENARIOS), help=f"comma list of {', '.join(SCENARIOS)}"
        )
        p.add_argument("--repeat", type=int, default=1, metavar="N",
                       help="run the selected scenarios N times over (a table row per run)")
        p.add_argument("--json", help="write results here")
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

        sets = ["bare", "carphooks"] if a.hooks == "both" else [a.hooks]
        names = [n for n in a.scenarios.split(",") if n]
        bad = [n for n in names if n not in SCENARIOS]
        if bad:
            ap.error(f"unknown scenarios: {bad}")
        if "carphooks" in sets and carphooks_missing():
            if a.cmd == "demo" and a.hooks == "both":
                print(
                    f"carphooks entry points missing ({', '.join(carphooks_missing())}): "
                    "running the bare hooks only",
                    file=sys.stderr,
                )
                sets = ["bare"]
            else:
                raise LabError(f"carphooks entry points missing: {', '.join(carphooks_missing())}")
        lab = Lab(owner=os.getpid())
        _guard(lab, a.keep)
        v = bring_up(lab, sets[0])
        if a.repeat < 1:
            ap.error("--repeat must be at least 1")
        results = run(lab, v, sets, names, a.verbose or a.cmd == "demo", a.repeat)
        out = {"lab": lab.id, "when": time.strftime("%Y-%m-%d %H:%M:%S"), "results": results}
        print(report.runs(results) if a.repeat > 1 else report.summary(results))
        if any(r.get("svc") for r in results):
            print(report.health(results))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=1)
        plot = a.plot or ("lab-demo.svg" if a.cmd == "demo" else None)
        if plot:
            print(f"picture: {report.draw(results, plot)}")
        return 0
    except LabError as e:
        print(f"lab: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
