"""End-to-end tests in the three-host lab (lab/): real tincd, ucarp, namespaces.

Run as root: `pytest -m lab`. Skipped (with the reason) only where network namespaces
cannot be created or tincd/ucarp/arping are missing. Each hook set runs every
scenario once in its own lab (about 90 s per set); `minority-partition` also runs
CARPHOOKS_LAB_MINORITY_RUNS times in a row (default 3) in a lab of its own.
Restrict with CARPHOOKS_LAB_SCENARIOS=tincd-kill,preempt.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest

pytestmark = pytest.mark.lab


def _why_no_lab() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "tincd", "ucarp", "arping"):
        if not shutil.which(tool):
            return f"{tool} not installed (apt-get install -y iproute2 tinc ucarp iputils-arping)"
    name = f"chl-{os.getpid()}-probe"
    p = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if p.returncode != 0:
        return f"cannot create a network namespace: {p.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun (tincd needs a tap device)"
    return None


_WHY = _why_no_lab()
if _WHY:
    pytestmark = [pytest.mark.lab, pytest.mark.skip(reason=_WHY)]


def _run_set(hookset: str, names: list[str] | None = None, repeat: int = 1) -> dict[str, Any]:
    import json

    from lab.__main__ import bring_up, run
    from lab.scenarios import SCENARIOS
    from lab.topo import HOSTS, VENV_BIN, Lab

    if names is None:  # the health-check scenarios have their own test (test_lab_health.py)
        chosen = os.environ.get("CARPHOOKS_LAB_SCENARIOS",
                                ",".join(n for n, s in SCENARIOS.items() if not s.checker))
        names = [n for n in chosen.split(",") if n]
    lab = Lab(owner=os.getpid())
    try:
        v = bring_up(lab, hookset)
        results = run(lab, v, [hookset], names, verbose=False, repeat=repeat)
        hooks = lab.hook_log.read_text().splitlines() if lab.hook_log.exists() else []
        v.poll()
        # how each host's `carphooks status` sees the tinc links once the lab is steady
        lab.wait_mesh()
        status = {}
        for h in HOSTS:
            p = subprocess.run(["ip", "netns", "exec", lab.ns[h], str(VENV_BIN / "carphooks"),
                                "status", "--json"], env=lab.env(h), capture_output=True,
                               text=True, timeout=60)
            status[h] = json.loads(p.stdout) if p.returncode == 0 else {"error": p.stderr}
        return {"results": results, "hooks": hooks, "syslog": list(v.syslog), "id": lab.id,
                "status": status}
    finally:
        lab.down(keep=bool(os.environ.get("CARPHOOKS_LAB_KEEP")))


@pytest.fixture(scope="module")
def bare() -> dict[str, Any]:
    return _run_set("bare")


@pytest.fixture(scope="module")
def carphooks() -> dict[str, Any]:
    from lab.topo import carphooks_missing

    miss = carphooks_missing()
    assert not miss, f"carphooks entry points not installed in the venv: {miss}"
    return _run_set("carphooks")


def _env_reached(run: dict[str, Any]) -> None:
    import json

    recs = [json.loads(x) for x in run["hooks"]]
    up = [r for r in recs if r["hook"] == "tinc-up"]
    assert up, "tinc-up never ran"
    for r in up:
        e = r["env"]
        assert e["NETNAME"] == "carp" and e["NAME"] == r["host"], e
        assert e["INTERFACE"] == "tap0" and e["DEVICE"] == "/dev/net/tun", e
        assert e["PATH"] == "/sbin:/bin:/usr/sbin:/usr/bin", e
    hu = [r for r in recs if r["hook"] == "host-up"]
    assert hu, "host-up never ran"
    for r in hu:
        e = r["env"]
        assert e["NODE"] in ("hA", "hB", "hC") and e["NODE"] != r["host"], e
        assert e["REMOTEADDRESS"].startswith("198.51.100.") and e["REMOTEPORT"] == "655", e
    assert any(r["hook"] == "tinc-down" for r in recs), "tinc-down never ran (SIGTERM scenario)"


# ---------------------------------------------------------------- baseline
def test_bare_lab_runs_and_tinc_env_reaches_hooks(bare: dict[str, Any]) -> None:
    _env_reached(bare)
    assert bare["results"], "no scenario ran"


def test_bare_hooks_show_the_known_failures(bare: dict[str, Any]) -> None:
    """The baseline the issue asks to beat: two holders at failover/failback, and a
    hook that blocks its caller ~1 s (foreground arping)."""
    rs = bare["results"]
    assert sum(r["two_holder_samples"] for r in rs) > 0
    ups = [r["hook_block_ms"]["ucarp-up"]["max"] for r in rs if "ucarp-up" in r["hook_block_ms"]]
    assert ups and max(ups) > 500


# ---------------------------------------------------------------- carphooks
def test_carphooks_one_live_master_answers_after_each_scenario(carphooks: dict[str, Any]) -> None:
    bad = [(r["scenario"], r["notes"]) for r in carphooks["results"] if not r["final_master"]]
    assert not bad, f"no single live master answering the client after: {bad}"


def test_carphooks_never_two_holders(carphooks: dict[str, Any]) -> None:
    bad = {r["scenario"]: r["two_holder_samples"]
           for r in carphooks["results"] if r["two_holder_samples"]}
    assert not bad, f"samples with the floating address on two hosts: {bad}"


def test_carphooks_tinc_env_reaches_hooks(carphooks: dict[str, Any]) -> None:
    _env_reached(carphooks)


def test_carphooks_hooks_return_fast(carphooks: dict[str, Any]) -> None:
    slow = {(r["scenario"], k): x["max"] for r in carphooks["results"]
            for k, x in r["hook_block_ms"].items() if x["max"] > 500}
    assert not slow, f"hooks blocking their caller > 500 ms: {slow}"


def test_carphooks_syslog_lines_appeared(carphooks: dict[str, Any]) -> None:
    hosts = {s["host"] for s in carphooks["syslog"]}
    assert hosts == {"hA", "hB", "hC"}, f"syslog lines only from {hosts}"
    assert any("carphooks" in s["msg"] for s in carphooks["syslog"]), carphooks["syslog"][:3]


def _result(run: dict[str, Any], scenario: str) -> dict[str, Any] | None:
    return next((r for r in run["results"] if r["scenario"] == scenario), None)


def test_bare_vpn_partition_gives_two_holders(bare: dict[str, Any]) -> None:
    """The original script's flaw its author named: cut the master off the VPN and two
    hosts answer for one address. carphooks must not (test_carphooks_never_two_holders)."""
    r = _result(bare, "vpn-partition")
    if r is None:
        pytest.skip("vpn-partition not selected")
    assert r["two_holder_samples"] > 0


def _minority_holds(r: dict[str, Any]) -> None:
    """A backup cut off the VPN: it never holds the address, and the two others keep
    their quorum (a direct link between them), so the client sees no outage."""
    held_by = {x for seg in r["timeline"]["holders4"] + r["timeline"]["holders6"]
               for x in seg[2].split(",") if x}
    assert "hC" not in held_by, r["timeline"]["holders4"]
    assert r["mesh"]["complete"], r["mesh"]
    assert r["quorum_lost"] == ["hC"], r["timeline"]["syslog"]
    fo = r["phases"]["failover"]
    assert (fo["outage4_ms"], fo["outage6_ms"], r["two_holder_samples"]) == (0, 0, 0), r["phases"]


def test_carphooks_minority_never_holds(carphooks: dict[str, Any]) -> None:
    r = _result(carphooks, "minority-partition")
    if r is None:
        pytest.skip("minority-partition not selected")
    _minority_holds(r)


def test_carphooks_mesh_complete_before_every_fault(carphooks: dict[str, Any]) -> None:
    """The lab waits for a direct tinc link between every pair of running tincds."""
    bad = {r["scenario"]: r["mesh"] for r in carphooks["results"] if not r["mesh"]["complete"]}
    assert not bad, bad


def test_carphooks_status_shows_direct_links(carphooks: dict[str, Any]) -> None:
    """`carphooks status --json` on each host: every other voter reached directly, told
    from tincd's sockets (ss) and hosts/ files, and reachable (host-up)."""
    for host, report in carphooks["status"].items():
        assert "mesh" in report, report
        mesh = report["mesh"]
        assert mesh["complete"] is True, (host, mesh)
        assert set(mesh["voters"]) == {"hA", "hB", "hC"} - {host}
        assert all(v["reachable"] and v["link"] for v in mesh["voters"].values()), mesh


@pytest.fixture(scope="module")
def minority_runs() -> dict[str, Any]:
    from lab.topo import carphooks_missing

    assert not carphooks_missing()
    runs = int(os.environ.get("CARPHOOKS_LAB_MINORITY_RUNS", "3"))
    return _run_set("carphooks", ["minority-partition"], repeat=runs)


def test_carphooks_minority_partition_repeated(minority_runs: dict[str, Any]) -> None:
    """The issue's case, several times in a row (CARPHOOKS_LAB_MINORITY_RUNS, default 3;
    the report's table has 10): each run holds on its own."""
    rs = minority_runs["results"]
    assert len(rs) == int(os.environ.get("CARPHOOKS_LAB_MINORITY_RUNS", "3"))
    for r in rs:
        _minority_holds(r)


def test_carphooks_repairs_a_hand_deleted_address(carphooks: dict[str, Any]) -> None:
    r = _result(carphooks, "manual-del")
    if r is None:
        pytest.skip("manual-del not selected")
    assert r["final_master"] == "hA"
    assert r["outage4_ms"] < 3000  # the periodic reconcile puts it back
    # the periodic reconcile found it missing; with probe = true the detached prober
    # then took it back
    assert any("Assigned 198.51.100.100/24 on ext0." in s[2] and s[1] == "hA"
               for s in r["timeline"]["syslog"])


def test_carphooks_planned_switchover_is_fast(carphooks: dict[str, Any]) -> None:
    """carphooks maintenance on/off moves the address with ≤ 0.5 s of client outage
    (the original set-up's way, cutting the VPN, costs ~3 s)."""
    r = _result(carphooks, "maintenance")
    if r is None:
        pytest.skip("maintenance not selected, or keepalived not installed")
    assert r["final_master"] == "hA"
    assert r["two_holder_samples"] == 0
    for phase in ("failover", "repair"):
        assert r["phases"][phase]["outage4_ms"] <= 500, r["phases"]
