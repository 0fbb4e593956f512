"""Client-visible outage and hook blocking: carphooks vs the bare hook in the lab.

Runs ``python -m lab run --hooks both`` (the bare set and carphooks, same lab, same
run) over the unplanned-failover scenarios, ``repeats`` times, and reports per
scenario the ratio of the failover outage (IPv4), the samples with two holders and
the longest time a hook kept ucarp/tinc waiting. Needs root and network namespaces.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import ROOT

SCENARIOS = ("tincd-kill", "tincd-term", "link-down")
TARGET = 1.05


def available() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "tincd", "ucarp"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def run(repeats: int, out: Path) -> dict[str, Any]:
    """Run the lab ``repeats`` times; collect per-scenario figures."""
    why = available()
    if why:
        return {"skipped": why}
    per: dict[str, dict[str, list[float]]] = {}
    for i in range(repeats):
        path = out / f"failover-{i}.json"
        print(f"failover: lab run {i + 1}/{repeats} (both hook sets, {', '.join(SCENARIOS)})",
              file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "lab", "run", "--hooks", "both", "--scenarios",
                        ",".join(SCENARIOS), "--json", str(path)], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        for r in json.loads(path.read_text())["results"]:
            d = per.setdefault(r["scenario"], {})
            key = r["set"]
            d.setdefault(f"{key}_outage", []).append(r["phases"]["failover"]["outage4_ms"])
            d.setdefault(f"{key}_two", []).append(r["two_holder_samples"])
            blocks = [x["max"] for x in r["hook_block_ms"].values()]
            d.setdefault(f"{key}_block", []).append(max(blocks) if blocks else 0.0)
    table = {}
    for name, d in per.items():
        ratios = [c / b for c, b in zip(d["carphooks_outage"], d["bare_outage"], strict=True)
                  if b > 0]
        table[name] = {k: statistics.median(v) for k, v in d.items()}
        table[name]["ratio"] = statistics.median(ratios) if ratios else None
        table[name]["ratio_min"] = min(ratios) if ratios else None
        table[name]["ratio_max"] = max(ratios) if ratios else None
    return {"repeats": repeats, "scenarios": table}


def tables(res: dict[str, Any]) -> list[str]:
    """Markdown for results.md."""
    if "skipped" in res:
        return [f"#### Failover in the lab: skipped ({res['skipped']})", ""]
    lines = [f"#### Failover in the lab (real tincd + ucarp, {res['repeats']} run(s), medians)",
             "",
             "| scenario | outage v4 bare | carphooks | ratio [min-max] | two-holder samples "
             "bare / carphooks | longest hook block bare / carphooks |",
             "|---|---|---|---|---|---|"]
    for name, t in res["scenarios"].items():
        ratio = "-" if t["ratio"] is None else (
            f"**{t['ratio']:.2f}** [{t['ratio_min']:.2f}-{t['ratio_max']:.2f}]")
        lines.append(f"| {name} | {t['bare_outage']:.0f} ms | {t['carphooks_outage']:.0f} ms | "
                     f"{ratio} | {t['bare_two']:.0f} / {t['carphooks_two']:.0f} | "
                     f"{t['bare_block']:.0f} / {t['carphooks_block']:.0f} ms |")
    lines += ["", f"Target: ratio ≤ {TARGET} on unplanned failover, 0 samples with two holders "
              "for carphooks.", ""]
    return lines
