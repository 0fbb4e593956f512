"""``python -m bench`` (``make bench``): per-event cost and scale, printed and saved.

Writes ``out/bench/results.json`` and ``out/bench/results.md`` (the README table).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench import event, failover, importtime, scale
from bench.common import ROOT

TARGET = 4.0


def _ms(d: dict[str, float] | None) -> str:
    if not d:
        return "-"
    return f"{d['median'] * 1e3:.1f} [{d['q1'] * 1e3:.1f}-{d['q3'] * 1e3:.1f}]"


def _x(d: dict[str, float] | None) -> str:
    if not d:
        return "-"
    return f"{d['median']:.2f}x [{d['q1']:.2f}-{d['q3']:.2f}]"


def _procs(p: dict[str, Any]) -> str:
    if "processes" not in p.get("MASTER", {}):
        return p.get("MASTER", {}).get("tool", "-")
    m, b = p["MASTER"], p["BACKUP"]
    return (f"{m['processes']} + {b['processes']} ({m['execs']} + {b['execs']} exec, "
            f"{m['threads']} + {b['threads']} threads)")


def event_tables(res: dict[str, Any]) -> list[str]:
    lines = []
    for vname, v in res["variants"].items():
        c, o = v["contenders"]["carphooks"], v["contenders"]["original.sh"]
        title = {"minifake": "minimal sh fake (isolates the hooks' own cost)",
                 "emulator": "Python FreeBSD emulator (~{:.0f} ms a fake call)".format(
                     v["fake_call"]["median"] * 1e3)}[vname]
        lines += [f"#### Per event, {title}: {res['runs']} runs each, alternating", "",
                  "| figure (MASTER + BACKUP, 2 addresses) | carphooks | original.sh | "
                  "ratio carphooks/original |",
                  "|---|---|---|---|",
                  f"| wall time, ms median [IQR] | {_ms(c['wall'])} | {_ms(o['wall'])} | "
                  f"**{_x(v['ratio_wall'])}** |",
                  f"| - MASTER only | {_ms(c['wall_master'])} | {_ms(o['wall_master'])} | |",
                  f"| - BACKUP only | {_ms(c['wall_backup'])} | {_ms(o['wall_backup'])} | |",
                  f"| CPU user+sys (incl. children), ms | {_ms(c['cpu'])} | {_ms(o['cpu'])} | "
                  f"{_x(v['ratio_cpu'])} |",
                  f"| peak RSS (largest process; {c['maxrss_tool']}), MB | "
                  f"{c['maxrss_kb']['median'] / 1024:.1f} | "
                  f"{o['maxrss_kb']['median'] / 1024:.1f} | {_x(v['ratio_maxrss'])} |",
                  f"| processes, MASTER + BACKUP (strace) | {_procs(v['processes']['carphooks'])} "
                  f"| {_procs(v['processes']['original.sh'])} | |",
                  f"| fake tool calls, MASTER + BACKUP | {c['fake_calls']['MASTER']} + "
                  f"{c['fake_calls']['BACKUP']} | {o['fake_calls']['MASTER']} + "
                  f"{o['fake_calls']['BACKUP']} | |"]
        if vname == "emulator":
            mf = v["minus_fakes_ms"]
            r = v["ratio_minus_fakes"]
            lines.append(f"| wall minus fake calls x {v['fake_call']['median'] * 1e3:.0f} ms "
                         f"(rough estimate) | {max(0, mf['carphooks']):.0f} | "
                         f"{max(0, mf['original.sh']):.0f} | "
                         f"{'- (fakes are all of it)' if r is None or r < 0 else f'{r:.2f}x'} |")
        fl = v["floor"]
        lines += ["", "Interpreter floor in the same runs: `python -c pass` "
                  f"{_ms(fl['python -c pass'])} ms, `python -I -S -c pass` "
                  f"{_ms(fl['python -I -S -c pass'])} ms.", ""]
    mini = res["variants"].get("minifake")
    if mini:
        r = mini["ratio_wall"]["median"]
        lines += [f"Target ≤ {TARGET:g}x the shell script's wall time (minimal fake): "
                  f"**{r:.2f}x — {'met' if r <= TARGET else 'NOT met'}**.", ""]
    it = res.get("importtime")
    if it:
        lines += [f"#### Import time, `python -X importtime carp-event 1@tap0 BACKUP` "
                  f"(median of {it['runs']})", "",
                  f"All imports: {it['total_import_ms']:.1f} ms over {it['modules']} modules; "
                  f"carphooks.* own code {it['carphooks_self_ms']:.1f} ms.", "",
                  "| module | cumulative ms | self ms |", "|---|---|---|"]
        for name, cum, own in importtime.top(it, 18):
            lines.append(f"| `{name}` | {cum:.1f} | {own:.1f} |")
        lines.append("")
    return lines


def _counts(c: dict[str, int] | None) -> str:
    if not c:
        return "-"
    per_if = ", ".join(f"{k[6:]} {v}" for k, v in c.items() if k.startswith("reads_")
                       and k != "reads_max_per_if")
    return f"{c['changes']} mutating, {c['reads']} reads ({per_if})"


def scale_tables(res: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    titles = {"freebsd_minifake": "FreeBSD backend, minimal sh fake",
              "freebsd_emulator": "FreeBSD backend, Python emulator (command counts)",
              "linux_netns": "Linux backend, veth in a private network namespace"}
    for key, title in titles.items():
        part = res.get(key)
        if not part:
            continue
        lines += [f"#### Scale: `carphooks reconcile`, {title}", ""]
        if "skipped" in part:
            lines += [f"Skipped: {part['skipped']}.", ""]
            continue
        lines += ["| case | runs | nothing → all held, ms | commands | all held → nothing, ms "
                  "| commands |", "|---|---|---|---|---|---|"]
        for name, row in part["cases"].items():
            if row["skipped"]:
                lines.append(f"| {name} | 0 | skipped: {row['skipped']} | | | |")
                continue
            lines.append(f"| {name} | {row['runs']} | {_ms(row['take'])} | "
                         f"{_counts(row['counts'].get('take'))} | {_ms(row['release'])} | "
                         f"{_counts(row['counts'].get('release'))} |")
        lines.append("")
        for phase in ("take", "release"):
            lin = part.get(f"linear_{phase}") or {}
            if "per_address_ms" in lin:
                text = (f"{phase}: t ≈ {lin['fixed_ms']:.0f} ms + {lin['per_address_ms']:.2f} ms"
                        f" x N (R² {lin['r2']:.4f})")
                if "ratio_1024_64" in lin:
                    text += (f"; t(1024)/t(64) = {_x(lin['ratio_1024_64'])} (a purely linear "
                             f"cost with this fixed part gives "
                             f"{lin['ideal_linear_ratio_1024_64']:.2f}x; 16x if no fixed part)")
                lines.append(f"- {text}")
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--runs", type=int, default=15, help="per-event runs of each contender")
    ap.add_argument("--repeats", type=int, default=3, help="scale runs per case")
    ap.add_argument("--budget", type=float, default=150.0,
                    help="seconds for the scale section (large cases are skipped beyond it)")
    ap.add_argument("--full", action="store_true", help="run every scale case, whatever it takes")
    ap.add_argument("--only", choices=("event", "scale", "failover"), help="run one section")
    ap.add_argument("--lab-repeats", type=int, default=1,
                    help="lab runs for the failover section (about 4 min each)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench")
    args = ap.parse_args(argv)
    started = time.time()
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "python": sys.version.split()[0], "platform": platform.platform(),
    }
    lines: list[str] = []
    if args.only in (None, "event"):
        results["event"] = event.run(args.runs)
        lines += event_tables(results["event"])
    if args.only in (None, "scale"):
        results["scale"] = scale.run(args.repeats, args.budget, args.full)
        lines += scale_tables(results["scale"])
    if args.only in (None, "failover"):
        args.out.mkdir(parents=True, exist_ok=True)
        results["failover"] = failover.run(args.lab_repeats, args.out)
        lines += failover.tables(results["failover"])
    results["elapsed_s"] = time.time() - started
    lines.append(f"_{results['started']}, Python {results['python']}, {results['platform']}; "
                 f"bench took {results['elapsed_s']:.0f} s (`make bench`)._")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print()
    print("\n".join(lines))
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
