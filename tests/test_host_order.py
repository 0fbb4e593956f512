"""One order for "which host is this": the hooks and the set-up tools agree."""

from __future__ import annotations

from pathlib import Path

from setupkit import write_cluster

from carphooks import config as configmod
from carphooks.setup import render


def test_candidates_come_in_one_order_and_ask_tinc_only_when_reached() -> None:
    asked: list[bool] = []

    def tinc() -> str | None:
        asked.append(True)
        return "hB"

    env = {"CARPHOOKS_HOST": "hC", "NAME": "ignored"}
    got = list(configmod.host_candidates("hA", env, tinc, "hD.example.org"))
    assert got == [("--host", "hA"), ("CARPHOOKS_HOST", "hC"), ("tinc NAME", "hB"),
                   ("hostname", "hD")]
    asked.clear()
    first = next(iter(configmod.host_candidates(None, env, tinc, "hD")))
    assert first == ("CARPHOOKS_HOST", "hC") and asked == []


def test_render_prefers_carphooks_host_to_tinc_name_like_the_hooks(tmp_path: Path) -> None:
    config = configmod.load(write_cluster(tmp_path / "c.toml", "tinc"))
    env = {"NAME": "hA", "CARPHOOKS_HOST": "hC"}
    assert render.resolve_host(config, None, environ=env, hostname="hB") == "hC"
    # a name that is not a host of the config is skipped, not taken
    env = {"NAME": "hA", "CARPHOOKS_HOST": "other"}
    assert render.resolve_host(config, None, environ=env, hostname="hB") == "hA"
