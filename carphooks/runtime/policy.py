"""Desired state: hold the floating addresses only while CARP is MASTER and quorum holds.

Maintenance mode is not a condition here: it demotes CARP (see ``demotion``), so a
peer becomes master and this host's state follows. A host in maintenance that no
peer replaced keeps serving rather than leaving the address unheld.
"""

from __future__ import annotations

from dataclasses import dataclass

from carphooks.backends.base import CarpState
from carphooks.config import Config
from carphooks.state import Peers


@dataclass(frozen=True)
class Quorum:
    """Votes this host sees (itself plus reachable voters) against what a majority needs."""

    ok: bool
    have: int
    need: int
    mode: str
    reason: str


@dataclass(frozen=True)
class Decision:
    """Hold or release, and why."""

    hold: bool
    reason: str


def quorum(config: Config, me: str | None, peers: Peers) -> Quorum:
    """Strict majority of ``config.voters`` counting this host and reachable peers."""
    voters = config.voters
    need = len(voters) // 2 + 1
    if config.quorum == "none":
        return Quorum(True, 1, 1, "none", "quorum disabled (quorum = \"none\")")
    if not voters:
        return Quorum(False, 0, 1, "majority", "tinc.nodes is empty: no quorum possible")
    if me is None or me not in voters:
        return Quorum(False, 0, need, "majority",
                      f"this host ({me or 'unknown'}) is not in tinc.nodes")
    if not peers.tinc_up:
        have = 1
    else:
        have = 1 + len((peers.reachable & set(voters)) - {me})
    ok = have >= need
    word = "quorum" if ok else "no quorum"
    return Quorum(ok, have, need, "majority", f"{word}: {have} of {len(voters)} votes, "
                                             f"{need} needed")


def decide(carp: CarpState, q: Quorum) -> Decision:
    """MASTER with quorum: hold; anything else: release."""
    if carp is not CarpState.MASTER:
        return Decision(False, f"CARP is {carp.value}")
    if not q.ok:
        return Decision(False, q.reason)
    return Decision(True, "CARP is MASTER" + ("" if q.mode == "none" else f", {q.reason}"))
