"""The lab's report (lab/report.py) without a lab: the demo's side-by-side table, its
one line per run and the picture's layout, from hand-made results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lab import report


def _result(hookset: str, scenario: str, label: str, fo: int, rep: int, *, open_: bool = False,
            two: int = 0, block: float = 100.0, final: str | None = "hA") -> dict[str, Any]:
    phase = {"outage4_ms": 0, "outage4_open": False, "outage6_ms": 0, "outage6_open": False,
             "two_holder_samples": 0}
    return {
        "set": hookset, "scenario": scenario, "title": f"{label}, long title", "label": label,
        "run": 1, "final_master": final, "two_holder_samples": two, "outage4_ms": max(fo, rep),
        "outage6_ms": 0, "recovered_at": 1.0, "repair_at": 6.0, "end_at": 12.0, "notes": [],
        "phases": {"failover": dict(phase, outage4_ms=fo),
                   "repair": dict(phase, outage4_ms=rep, outage4_open=open_)},
        "hook_block_ms": {"ucarp-up": {"n": 1, "max": block, "median": block}},
        "timeline": {lane: [[-1.0, 12.0, "hA"]] for lane in report.LANES},
    }


RESULTS = [
    _result("bare", "tincd-kill", "master crash", 3600, 2050, two=59, block=1015),
    _result("bare", "vpn-partition", "master cut off", 51, 9856, open_=True, two=89,
            final=None),
    _result("carphooks", "tincd-kill", "master crash", 3800, 200, block=179),
    _result("carphooks", "vpn-partition", "master cut off", 200, 200, block=209),
]


def test_side_by_side_pairs_each_scenario_with_both_hook_sets() -> None:
    rows = [[c.strip() for c in line.strip("|").split("|")]
            for line in report.side_by_side(RESULTS).splitlines()]
    assert rows[0][0] == "scenario" and len(rows) == 4  # header, rule, two scenarios
    assert rows[2] == ["master crash", "3600 / 2050", "3800 / 200", "59", "0", "1015", "179"]
    assert rows[3] == ["master cut off", "51 / 9856+", "200 / 200", "89", "0", "100", "209"]


def test_side_by_side_marks_a_missing_hook_set() -> None:
    table = report.side_by_side(RESULTS[:2])
    assert "| -" in table.splitlines()[2]


def test_short_line_says_not_recovered() -> None:
    line = report.short_line(RESULTS[1])
    assert line.startswith("bare ") and "master cut off" in line
    assert "51 / 9856+ ms (not recovered)" in line and "two holders 89" in line
    assert "not recovered" not in report.short_line(RESULTS[3])
    v6_only = _result("bare", "preempt", "old master returns", 0, 0, final=None)
    assert "0 / 0 ms (no steady state)" in report.short_line(v6_only)


def test_picture_puts_bare_left_and_carphooks_right(tmp_path: Path) -> None:
    sets, grid = report._grid(list(reversed(RESULTS)))
    assert sets == ["bare", "carphooks"]
    assert [[r["set"] if r else None for r in row] for row in grid] == [
        ["bare", "carphooks"], ["bare", "carphooks"]]
    svg = Path(report.draw(RESULTS, str(tmp_path / "t.svg"))).read_text()
    assert svg.count("bare / master crash") == 1 and svg.count("carphooks / master crash") == 1
