"""Lab: a health check moves the floating address off a host whose service died.

One lab (carphooks hook set, keepalived as the CARP daemon, demotion through its
track_file) runs the `health` scenario twice over: the check done by `carphooks watch`
([[check]] in each host's config) and, in the same run, by keepalived's own
`track_script` with the same interval, fall, rise and weight. Each run stops the
service on the master hA, waits, starts it again; the client polls the service
through the floating addresses. About 70 s, root only (`pytest -m lab`).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest
from test_lab import _why_no_lab

pytestmark = pytest.mark.lab

# one advertisement is FreeBSD's bound (carp_input_c preempts a slower master at once);
# keepalived's VRRP waits for its master-down timer instead (lab.scenarios.MASTER_DOWN)
MARGIN = 2.0  # seconds: the address move (carp-event, ARP probe: up to ~1 s under load)
CHECKERS = ("health", "health-keepalived")


def _why_not() -> str | None:
    why = _why_no_lab()
    if why:
        return why
    for tool in ("keepalived", "curl"):
        if not shutil.which(tool):
            return f"{tool} not installed (apt-get install -y keepalived curl)"
    return None


_WHY = _why_not()
if _WHY:
    pytestmark = [pytest.mark.lab, pytest.mark.skip(reason=_WHY)]


@pytest.fixture(scope="module")
def runs() -> dict[str, dict[str, Any]]:
    from lab.__main__ import bring_up, run
    from lab.topo import Lab, carphooks_missing

    assert not carphooks_missing(), carphooks_missing()
    lab = Lab(owner=os.getpid())
    try:
        v = bring_up(lab, "carphooks")
        results = run(lab, v, ["carphooks"], list(CHECKERS), verbose=False)
        return {r["scenario"]: r for r in results}
    finally:
        lab.down(keep=bool(os.environ.get("CARPHOOKS_LAB_KEEP")))


@pytest.mark.parametrize("scenario", CHECKERS)
def test_no_two_holders(runs: dict[str, dict[str, Any]], scenario: str) -> None:
    """The address moved to hB and back, never held by two hosts at once."""
    r = runs[scenario]
    held = [seg[2] for seg in r["timeline"]["holders4"]]
    assert "hB" in held and held[-1] == "hA", held
    assert r["two_holder_samples"] == 0, r["timeline"]["holders4"]


@pytest.mark.parametrize("scenario", CHECKERS)
def test_a_peer_serves_within_fall_times_interval_plus_master_down(
        runs: dict[str, dict[str, Any]], scenario: str) -> None:
    from lab.scenarios import MASTER_DOWN
    from lab.topo import CHECK

    r = runs[scenario]
    sv = r["svc"]
    fo = sv["phases"]["failover"]
    bound = CHECK["fall"] * CHECK["interval"] + MASTER_DOWN + MARGIN
    assert not fo["outage4_open"] and not fo["outage6_open"], sv["timeline"]
    assert sv["peer4"] == "hB" and sv["peer6"] == "hB", sv["timeline"]
    assert fo["outage4_ms"] <= bound * 1000, (bound, sv)
    assert fo["outage6_ms"] <= bound * 1000, (bound, sv)


@pytest.mark.parametrize("scenario", CHECKERS)
def test_the_master_takes_back_its_address_once_healthy(
        runs: dict[str, dict[str, Any]], scenario: str) -> None:
    from lab.scenarios import MASTER_DOWN
    from lab.topo import CHECK

    r = runs[scenario]
    sv = r["svc"]
    assert sv["peer4"] == "hB", sv["timeline"]  # it had lost the address
    assert r["final_master"] == "hA", r["notes"]
    bound = CHECK["rise"] * CHECK["interval"] + MASTER_DOWN + MARGIN
    assert sv["back_at4"] is not None and sv["back_at4"] <= bound, sv
    assert sv["back_at6"] is not None and sv["back_at6"] <= bound, sv
    # hB serves until hA takes over: failing back costs no more than the address move
    assert sv["phases"]["repair"]["outage4_ms"] <= MARGIN * 1000, sv["phases"]
