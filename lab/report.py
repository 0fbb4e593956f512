"""Printed timeline, summary table, and the picture (SVG by hand; PNG when
matplotlib is importable and the file name ends in .png)."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

HOST_COLOURS = {
    "hA": "#1f77b4",
    "hB": "#ff7f0e",
    "hC": "#2ca02c",
    "FAIL": "#d62728",
    "-": "#999999",
}


def one_line(r: dict[str, Any]) -> str:
    ph = " ".join(
        f"{k}: v4 {p['outage4_ms']}{'+' if p['outage4_open'] else ''} ms, "
        f"two-holder samples {p['two_holder_samples']}"
        for k, p in r["phases"].items()
    )
    hb = ", ".join(f"{k} {x['max']:.0f}" for k, x in sorted(r["hook_block_ms"].items()))
    if r.get("svc"):
        sv = r["svc"]
        ph = (f"service outage v4 {_svc_outage(sv, 4)} ms, v6 {_svc_outage(sv, 6)} ms "
              f"(failover / repair), served by {sv['peer4']} at +{sv['peer_at4']} s, back on "
              f"hA {sv['back_at4']} s after the repair; two-holder samples "
              f"{r['two_holder_samples']}")
    return (
        f"{r['set']:9} {r['scenario']:10} final master {r['final_master']}; {ph}; "
        f"hook block max ms: {hb}" + (f"; NOTE {'; '.join(r['notes'])}" if r["notes"] else "")
    )


def _outages(r: dict[str, Any], af: int = 4) -> str:
    """'failover / repair' outage in ms; '+' = still failing when the run stopped."""
    return " / ".join(f"{p[f'outage{af}_ms']}{'+' if p[f'outage{af}_open'] else ''}"
                      for p in r["phases"].values())


def _hook_block(r: dict[str, Any]) -> float:
    return max((x["max"] for x in r["hook_block_ms"].values()), default=0.0)


def short_line(r: dict[str, Any]) -> str:
    """One terminal line per run: hook set, scenario, outage, two holders, hook block."""
    back = ""
    if any(p["outage4_open"] for p in r["phases"].values()):
        back = " (not recovered)"
    elif not r["final_master"]:
        back = " (no steady state)"
    return (f"{r['set']:9} {r.get('label', r['title']):32} outage v4 {_outages(r)} ms{back}; "
            f"two holders {r['two_holder_samples']}; hook block {_hook_block(r):.0f} ms")


LEGEND = (
    "outage: longest run of failed client probes (every 50 ms) to the floating IPv4 address, "
    "after the fault / after the repair; + = still failing when the run stopped. two "
    "holders: 50 ms samples with the address on two hosts at once. hook block: longest "
    "time a hook kept its caller (ucarp, keepalived, tincd) waiting."
)


def side_by_side(results: list[dict[str, Any]]) -> str:
    """The bare hook and carphooks next to each other, one row per scenario (markdown)."""
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        by.setdefault(r["scenario"], {}).setdefault(r["set"], r)
    rows = [["scenario", "outage v4 ms: bare", "carphooks", "two holders: bare", "carphooks",
             "hook block ms: bare", "carphooks"]]
    def cell(r: dict[str, Any] | None, text: Callable[[dict[str, Any]], str]) -> str:
        return text(r) if r else "-"

    def holders(r: dict[str, Any]) -> str:
        return str(r["two_holder_samples"])

    def block(r: dict[str, Any]) -> str:
        return f"{_hook_block(r):.0f}"

    for sets in by.values():
        b, c = sets.get("bare"), sets.get("carphooks")
        first = b or c or {}
        title = str(first.get("label", first.get("title", "")))
        rows.append([title, cell(b, _outages), cell(c, _outages), cell(b, holders),
                     cell(c, holders), cell(b, block), cell(c, block)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def fmt(row: list[str]) -> str:
        return "| " + " | ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(rows[0]), sep, *(fmt(row) for row in rows[1:])])


def timeline(r: dict[str, Any]) -> str:
    """Events in time order, seconds relative to the fault."""
    tl = r["timeline"]
    ev: list[tuple[float, str]] = []
    for key, label in (
        ("masters", "CARP master(s)"),
        ("holders4", "198.51.100.100 on"),
        ("holders6", "2001:db8:100::100 on"),
    ):
        for t0, t1, x in tl[key]:
            ev.append((t0, f"{label:22} {x or 'nobody':8} for {1000 * (t1 - t0):6.0f} ms"))
    for af in (4, 6):
        for t0, t1, x in tl[f"client{af}"]:
            what = "FAILS" if x == "FAIL" else f"answered by {x}"
            ev.append((t0, f"client IPv{af} {what:15} for {1000 * (t1 - t0):6.0f} ms"))
    for af in (4, 6):
        for t0, t1, x in tl.get(f"svc{af}", []):
            what = "FAILS" if x == "FAIL" else f"answered by {x}"
            ev.append((t0, f"service IPv{af} {what:14} for {1000 * (t1 - t0):6.0f} ms"))
    for t0, ms, host, hook, rc in tl["hooks"]:
        ev.append((t0, f"hook {host} {hook} blocked {ms:.0f} ms rc={rc}"))
    for t0, host, msg in tl["syslog"]:
        ev.append((t0, f"syslog {host}: {msg.strip()[:100]}"))
    if r["repair_at"] is not None:
        ev.append((r["repair_at"], "=== repair"))
    ev.append((0.0, f"=== FAULT: {r['title']}"))
    ev.sort(key=lambda e: e[0])
    lines = [f"--- {r['set']} / {r['scenario']}: {r['title']}"]
    lines += [f"  {t:+8.3f} s  {text}" for t, text in ev if t is not None]
    return "\n".join(lines)


def summary(results: list[dict[str, Any]]) -> str:
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        by.setdefault(r["scenario"], {})[r["set"]] = r
    hdr = (
        "| scenario | hooks | outage v4 ms (failover / repair) | outage v6 ms | two-holder samples "
        "| recovered at s | hook block max ms | ratio v4 carphooks/bare |"
    )
    lines = [hdr, "|" + "---|" * 8]
    for sc, sets in by.items():
        for hs in ("bare", "carphooks"):
            r = sets.get(hs)
            if not r:
                continue
            ph = r["phases"]
            o4 = " / ".join(
                f"{p['outage4_ms']}{'+' if p['outage4_open'] else ''}" for p in ph.values()
            )
            o6 = " / ".join(
                f"{p['outage6_ms']}{'+' if p['outage6_open'] else ''}" for p in ph.values()
            )
            hb = max((x["max"] for x in r["hook_block_ms"].values()), default=0)
            ratio = ""
            if hs == "carphooks" and "bare" in sets:
                b = sets["bare"]["outage4_ms"]
                ratio = f"{r['outage4_ms'] / b:.2f}" if b else "n/a (bare 0)"
            lines.append(
                f"| {sc} | {hs} | {o4} | {o6} | {r['two_holder_samples']} | "
                f"{r['recovered_at']} | {hb:.0f} | {ratio} |"
            )
    return "\n".join(lines)


def _svc_outage(sv: dict[str, Any], af: int) -> str:
    return " / ".join(f"{p[f'outage{af}_ms']}{'+' if p[f'outage{af}_open'] else ''}"
                      for p in sv["phases"].values())


def health(results: list[dict[str, Any]]) -> str:
    """The health-check scenarios: the lab service as the client saw it, one row per
    run (carphooks' [[check]] vs keepalived's track_script)."""
    from .topo import CHECK

    hdr = ("| run | scenario | checker | service outage v4 ms (failover / failback) | v6 ms "
           "| hA advertises the demotion at s | served by a peer at s "
           "| back on hA s after restart | two-holder samples | final master |")
    lines = [f"checks: interval {CHECK['interval']} s, timeout {CHECK['timeout']} s, fall "
             f"{CHECK['fall']}, rise {CHECK['rise']}, weight {CHECK['weight']}", "",
             hdr, "|" + "---|" * 10]
    for r in results:
        sv = r.get("svc")
        if not sv:
            continue
        checker = {"carphooks": "carphooks watch",
                   "keepalived": "keepalived track_script"}.get(r.get("checker") or "", "?")
        lines.append(f"| {r.get('run', 1)} | {r['scenario']} | {checker} | {_svc_outage(sv, 4)} | "
                     f"{_svc_outage(sv, 6)} | {sv.get('demoted_adv_at')} "
                     f"(priority {' -> '.join(str(x) for x in sv.get('priority', []))}) | "
                     f"{sv['peer_at4']} ({sv['peer4']}) | "
                     f"{sv['back_at4']} | {r['two_holder_samples']} | "
                     f"{r['final_master'] or 'none'} |")
    return "\n".join(lines)


def runs(results: list[dict[str, Any]]) -> str:
    """One row per scenario run (for --repeat): the mesh before the fault, outages,
    two-holder samples and who lost quorum during the fault."""
    hdr = ("| run | hooks | scenario | full tinc mesh before the fault | outage v4 ms "
           "(failover / repair) | outage v6 ms | two-holder samples | quorum lost on "
           "| final master |")
    lines = [hdr, "|" + "---|" * 9]
    for r in results:
        m = r.get("mesh") or {}
        mesh = (f"yes, after {m.get('waited_s')} s" if m.get("complete")
                else f"NO ({', '.join(m.get('missing') or [])})")
        ph = r["phases"].values()
        o4 = " / ".join(f"{p['outage4_ms']}{'+' if p['outage4_open'] else ''}" for p in ph)
        o6 = " / ".join(f"{p['outage6_ms']}{'+' if p['outage6_open'] else ''}" for p in ph)
        lines.append(f"| {r.get('run', 1)} | {r['set']} | {r['scenario']} | {mesh} | {o4} | "
                     f"{o6} | {r['two_holder_samples']} | "
                     f"{', '.join(r.get('quorum_lost') or []) or '-'} | "
                     f"{r['final_master'] or 'none'} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- picture
LANES = ["masters", "holders4", "holders6", "client4", "client6"]


def _lanes(results: list[dict[str, Any]]) -> list[str]:
    """LANES, plus the lab service's lanes when a health-check scenario ran."""
    return LANES + (["svc4", "svc6"] if any(r.get("svc") for r in results) else [])


LANE_LABEL = {
    "svc4": "service v4",
    "svc6": "service v6",
    "masters": "CARP master",
    "holders4": "holds v4",
    "holders6": "holds v6",
    "client4": "client v4",
    "client6": "client v6",
}


def draw(results: list[dict[str, Any]], path: str) -> str:
    if path.endswith(".png"):
        try:
            return _draw_mpl(results, path)
        except ImportError:
            path = path[:-4] + ".svg"
    return _draw_svg(results, path)


def _grid(
    results: list[dict[str, Any]],
) -> tuple[list[str], list[list[dict[str, Any] | None]]]:
    """Hook sets as columns (bare first), one row per scenario run: the bare hook and
    carphooks side by side."""
    sets = [s for s in ("bare", "carphooks") if any(r["set"] == s for r in results)]
    sets += sorted({r["set"] for r in results} - set(sets))
    rows: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for r in results:
        rows.setdefault((r["scenario"], r.get("run", 1)), {})[r["set"]] = r
    return sets, [[cells.get(s) for s in sets] for cells in rows.values()]


def _caption(r: dict[str, Any]) -> str:
    return (f"{r['set']} / {r.get('label', r['title'])}: v4 outage {_outages(r)} ms, "
            f"two-holder samples {r['two_holder_samples']}")


def _colour(x: str) -> list[str]:
    if not x:
        return []
    return [HOST_COLOURS.get(p, "#999999") for p in x.split(",")]


def _draw_svg(results: list[dict[str, Any]], path: str) -> str:
    lanes = _lanes(results)
    sets, grid = _grid(results)
    col_w, left, right, gap_x = 560, 90, 10, 20
    W = left + len(sets) * (col_w + gap_x)
    lane_h, gap, head = 12, 2, 24
    block_h = head + len(lanes) * (lane_h + gap) + 18
    tmin = -1.0
    tmax = max((r["end_at"] for r in results), default=10.0)
    sx = (col_w - right) / (tmax - tmin)
    H = 40 + block_h * len(grid)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
        '<text x="10" y="16" font-size="13">carphooks lab: seconds from the fault; colours '
        "hA blue, hB orange, hC green, client failures red; two stacked colours = two hosts</text>",
    ]
    for i, row in enumerate(grid):
        y0 = 30 + i * block_h
        for j, lane in enumerate(lanes):
            y = y0 + head + j * (lane_h + gap)
            out.append(
                f'<text x="{left - 6}" y="{y + lane_h - 2}" text-anchor="end">'
                f"{LANE_LABEL[lane]}</text>"
            )
        for c, r in enumerate(row):
            if r is None:
                continue
            x0 = left + c * (col_w + gap_x)
            X = lambda t, x0=x0: x0 + (t - tmin) * sx  # noqa: E731
            out.append(f'<text x="{x0}" y="{y0 + 14}" font-weight="bold">'
                       f"{html.escape(_caption(r))}</text>")
            for j, lane in enumerate(lanes):
                y = y0 + head + j * (lane_h + gap)
                out.append(f'<rect x="{x0}" y="{y}" width="{col_w - right}" height="{lane_h}" '
                           f'fill="#f3f3f3"/>')
                for t0, t1, x in r["timeline"].get(lane, []):
                    t0, t1 = max(t0, tmin), min(t1, tmax)
                    if t1 <= t0:
                        continue
                    cols = _colour(x)
                    for k, colour in enumerate(cols):
                        h = lane_h / len(cols)
                        out.append(
                            f'<rect x="{X(t0):.1f}" y="{y + k * h:.1f}" '
                            f'width="{max(0.5, (t1 - t0) * sx):.1f}" height="{h:.1f}" '
                            f'fill="{colour}"/>'
                        )
            yb = y0 + head + len(lanes) * (lane_h + gap)
            for t in (0.0, r["repair_at"]):
                if t is not None:
                    out.append(
                        f'<line x1="{X(t):.1f}" y1="{y0 + head - 2}" x2="{X(t):.1f}" y2="{yb}" '
                        f'stroke="black" stroke-dasharray="3,2"/>'
                    )
            for s in range(int(tmin), int(tmax) + 1, 2):
                out.append(f'<text x="{X(s):.1f}" y="{yb + 11}" text-anchor="middle" '
                           f'fill="#555">{s}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))
    return path


def _draw_mpl(results: list[dict[str, Any]], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lanes = _lanes(results)
    sets, grid = _grid(results)
    fig, axes = plt.subplots(len(grid), len(sets), figsize=(7 * len(sets), 1.6 * len(grid)),
                             squeeze=False, sharex=True)
    for i, row in enumerate(grid):
        for c, r in enumerate(row):
            ax = axes[i, c]
            if r is None:
                ax.set_axis_off()
                continue
            for j, lane in enumerate(lanes):
                for t0, t1, x in r["timeline"].get(lane, []):
                    cols = _colour(x)
                    for k, colour in enumerate(cols):
                        h = 0.8 / len(cols)
                        ax.broken_barh([(t0, t1 - t0)], (len(lanes) - j - 0.4 + k * h, h),
                                       color=colour)
            ax.axvline(0, color="k", ls="--", lw=0.8)
            if r["repair_at"] is not None:
                ax.axvline(r["repair_at"], color="k", ls="--", lw=0.8)
            ax.set_yticks(range(len(lanes), 0, -1), [LANE_LABEL[x] for x in lanes], fontsize=7)
            ax.set_title(_caption(r), fontsize=8)
    for c in range(len(sets)):
        axes[-1, c].set_xlabel("seconds from the fault")
    from matplotlib.patches import Patch

    legend = [
        Patch(color=HOST_COLOURS[k], label=label)
        for k, label in (("hA", "hA"), ("hB", "hB"), ("hC", "hC"), ("FAIL", "client probe failed"))
    ]
    fig.legend(
        handles=legend,
        loc="upper center",
        ncol=4,
        fontsize=8,
        frameon=False,
        title="two colours stacked in one lane = two hosts at once",
        title_fontsize=8,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (1.6 * len(grid))))
    fig.savefig(path, dpi=90)
    return path
