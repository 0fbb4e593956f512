"""``python -X importtime`` of a console script, folded into a per-module table."""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
from collections.abc import Sequence

_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)$")
FOCUS = ("click", "sh", "netifaces", "tomllib", "ipaddress", "json", "socket", "subprocess",
         "threading", "dataclasses", "pathlib", "shutil", "tempfile", "typing", "re",
         "fcntl", "signal", "queue", "logging", "inspect", "importlib.resources", "site",
         "encodings", "enum", "collections")


def parse(stderr: str) -> dict[str, dict[str, float]]:
    """{module: {"self_us", "cum_us", "depth"}} (first import of each module)."""
    out: dict[str, dict[str, float]] = {}
    for line in stderr.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        name = m.group(4)
        if name not in out:
            out[name] = {"self_us": float(m.group(1)), "cum_us": float(m.group(2)),
                         "depth": (len(m.group(3)) - 1) // 2}
    return out


def run(argv: Sequence[str], env: dict[str, str], runs: int = 5) -> dict[str, object]:
    """Median over ``runs`` cold runs of ``python -X importtime ARGV``."""
    samples = []
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-X", "importtime", *argv], env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        samples.append(parse(proc.stderr))
    names = set().union(*samples)
    table = {}
    for name in names:
        cums = [s[name]["cum_us"] for s in samples if name in s]
        selfs = [s[name]["self_us"] for s in samples if name in s]
        depth = next(s[name]["depth"] for s in samples if name in s)
        table[name] = {"cum_ms": statistics.median(cums) / 1e3,
                       "self_ms": statistics.median(selfs) / 1e3, "depth": depth,
                       "seen": len(cums)}
    total = statistics.median(sum(v["self_us"] for v in s.values()) for s in samples) / 1e3
    carphooks_self = statistics.median(
        sum(v["self_us"] for k, v in s.items() if k.startswith("carphooks")) for s in samples
    ) / 1e3
    return {"runs": runs, "modules": len(names), "total_import_ms": total,
            "carphooks_self_ms": carphooks_self, "table": table}


def top(result: dict[str, object], n: int = 15) -> list[tuple[str, float, float]]:
    """The focus modules and carphooks.*, by cumulative time: (name, cum_ms, self_ms)."""
    table: dict[str, dict[str, float]] = result["table"]  # type: ignore[assignment]
    picked = [(k, v["cum_ms"], v["self_ms"]) for k, v in table.items()
              if k in FOCUS or k.startswith("carphooks")]
    picked.sort(key=lambda r: -r[1])
    return picked[:n]
