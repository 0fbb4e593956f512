"""policy.quorum and policy.decide over every combination that matters."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from carphooks.config import Config
from carphooks.runtime.events import CarpState
from carphooks.runtime.policy import Quorum, decide, quorum
from carphooks.state import Peers

from .conftest import load_config

CONFIGS = {
    "none": 'quorum = "none"\n[tinc]\nnodes = ["hA", "hB", "hC"]\n',
    "three": 'quorum = "majority"\n[tinc]\nnodes = ["hA", "hB", "hC"]\n',
    "two+witness": 'quorum = "majority"\n[tinc]\nnodes = ["hA", "hB"]\nwitnesses = ["w"]\n',
    "four": 'quorum = "majority"\n[tinc]\nnodes = ["hA", "hB", "hC", "hD"]\n',
}
EMPTY = "empty"  # majority over no voters: the loader refuses it, policy still says no


def config_named(path: Path, name: str) -> Config:
    if name == EMPTY:
        return replace(load_config(path, CONFIGS["three"]), nodes=())
    return load_config(path, CONFIGS[name])

# config, me, reachable, tinc_up -> ok, have, need
QUORUM = [
    ("none", None, set(), False, True, 1, 1),
    ("none", "stranger", set(), True, True, 1, 1),
    ("none", "hA", {"hB", "hC"}, True, True, 1, 1),
    ("three", "hA", set(), True, False, 1, 2),
    ("three", "hA", {"hB"}, True, True, 2, 2),
    ("three", "hA", {"hC"}, True, True, 2, 2),
    ("three", "hA", {"hB", "hC"}, True, True, 3, 2),
    ("three", "hA", {"hB", "hC"}, False, False, 1, 2),  # tinc down: only its own vote
    ("three", "hA", {"hA"}, True, False, 1, 2),  # itself is not counted twice
    ("three", "hA", {"hX", "hY"}, True, False, 1, 2),  # non-voters do not count
    ("three", None, {"hB", "hC"}, True, False, 0, 2),  # host unknown
    ("three", "stranger", {"hB", "hC"}, True, False, 0, 2),  # not a voter
    ("two+witness", "hA", set(), True, False, 1, 2),
    ("two+witness", "hA", {"w"}, True, True, 2, 2),  # the witness votes
    ("two+witness", "hA", {"hB"}, True, True, 2, 2),
    ("two+witness", "w", {"hA"}, True, True, 2, 2),  # a witness is a voter itself
    ("four", "hA", {"hB"}, True, False, 2, 3),  # an even split is no majority
    ("four", "hA", {"hB", "hC"}, True, True, 3, 3),
    ("empty", "hA", set(), True, False, 0, 1),
]


@pytest.mark.parametrize("name, me, reachable, tinc_up, ok, have, need", QUORUM)
def test_quorum(tmp_path: Path, name: str, me: str | None, reachable: set[str], tinc_up: bool,
                ok: bool, have: int, need: int) -> None:
    config = config_named(tmp_path / "c.toml", name)
    q = quorum(config, me, Peers(reachable=frozenset(reachable), tinc_up=tinc_up, updated=0.0))
    assert (q.ok, q.have, q.need) == (ok, have, need)
    assert q.mode == ("none" if name == "none" else "majority")
    assert "\n" not in q.reason


@pytest.mark.parametrize("name, me, reachable, reason", [
    ("none", "hA", set(), 'quorum disabled (quorum = "none")'),
    ("three", "hA", {"hB"}, "quorum: 2 of 3 votes, 2 needed"),
    ("three", "hA", set(), "no quorum: 1 of 3 votes, 2 needed"),
    ("two+witness", "hA", {"w"}, "quorum: 2 of 3 votes, 2 needed"),
    ("three", None, set(), "this host (unknown) is not in tinc.nodes"),
    ("three", "hZ", set(), "this host (hZ) is not in tinc.nodes"),
    ("empty", "hA", set(), "tinc.nodes is empty: no quorum possible"),
])
def test_quorum_reasons(tmp_path: Path, name: str, me: str | None, reachable: set[str],
                        reason: str) -> None:
    config = config_named(tmp_path / "c.toml", name)
    assert quorum(config, me, Peers(frozenset(reachable), True, 0.0)).reason == reason


OK = Quorum(True, 2, 2, "majority", "quorum: 2 of 3 votes, 2 needed")
OFF = Quorum(True, 1, 1, "none", 'quorum disabled (quorum = "none")')
LOST = Quorum(False, 1, 2, "majority", "no quorum: 1 of 3 votes, 2 needed")
NOT_VOTER = Quorum(False, 0, 2, "majority", "this host (hZ) is not in tinc.nodes")


@pytest.mark.parametrize("carp, q, hold, reason", [
    (CarpState.MASTER, OK, True, "CARP is MASTER, quorum: 2 of 3 votes, 2 needed"),
    (CarpState.MASTER, OFF, True, "CARP is MASTER"),
    (CarpState.MASTER, LOST, False, "no quorum: 1 of 3 votes, 2 needed"),
    (CarpState.MASTER, NOT_VOTER, False, "this host (hZ) is not in tinc.nodes"),
    (CarpState.BACKUP, OK, False, "CARP is BACKUP"),
    (CarpState.BACKUP, OFF, False, "CARP is BACKUP"),
    (CarpState.BACKUP, LOST, False, "CARP is BACKUP"),
    (CarpState.INIT, OK, False, "CARP is INIT"),
    (CarpState.INIT, OFF, False, "CARP is INIT"),
    (CarpState.INIT, NOT_VOTER, False, "CARP is INIT"),
])
def test_decide(carp: CarpState, q: Quorum, hold: bool, reason: str) -> None:
    decision = decide(carp, q)
    assert (decision.hold, decision.reason) == (hold, reason)
