"""``carphooks check``: configured health checks without a running ``carphooks watch``
loop are a silent misconfiguration (a failing service would move nothing)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from test_config_silent import cluster, write

from carphooks.setup import check
from carphooks.state import StateDir

TCP = {"name": "web", "type": "tcp", "port": 80, "interval": 2.0, "timeout": 1.0}


def watch_check(tmp_path: Path, checks: list[dict[str, object]]) -> check.Check | None:
    state = tmp_path / "state"
    data = cluster(["hA", "hB", "hC"], state_dir=str(state), check=checks)
    doc = check.Doctor(config_path=write(tmp_path / "c.toml", data), root=tmp_path / "root",
                       host="hA", bindir="/usr/local/bin")
    config = doc.check_config()
    assert config is not None
    if config.checks:
        doc.check_watch(config)
    return next((c for c in doc.checks if c.name == "watch"), None)


def record(tmp_path: Path, names: list[str], age: float) -> None:
    """A record of ``names`` as a loop writes it, ``age`` seconds old."""
    StateDir(tmp_path / "state").write_check_record({n: {"health": "passing"} for n in names})
    path = tmp_path / "state" / "checks.json"
    data = json.loads(path.read_text())
    data["updated"] = time.time() - age
    path.write_text(json.dumps(data))


def test_no_checks_no_watch_line(tmp_path: Path) -> None:
    assert watch_check(tmp_path, []) is None


def test_checks_without_a_loop_warn_with_the_rc_d_fix(tmp_path: Path) -> None:
    got = watch_check(tmp_path, [TCP])
    assert got is not None and got.status == check.WARN
    assert "web" in got.message and "no carphooks watch loop" in got.message
    assert got.fix == "sysrc carphooks_enable=YES && service carphooks start"


def test_a_fresh_record_of_every_check_is_ok(tmp_path: Path) -> None:
    record(tmp_path, ["web"], age=1.0)
    got = watch_check(tmp_path, [TCP])
    assert got is not None and got.status == check.OK, got


def test_a_stale_record_warns(tmp_path: Path) -> None:
    record(tmp_path, ["web"], age=600.0)
    got = watch_check(tmp_path, [TCP])
    assert got is not None and got.status == check.WARN
    assert "for 600 s" in got.message


def test_a_check_the_loop_does_not_know_warns(tmp_path: Path) -> None:
    record(tmp_path, ["web"], age=1.0)
    got = watch_check(tmp_path, [TCP, {**TCP, "name": "db", "port": 5432}])
    assert got is not None and got.status == check.WARN
    assert "run db " in got.message and "web" not in got.message.split("run ")[1].split(" for")[0]
