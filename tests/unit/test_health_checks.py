"""Health checks: hysteresis (fall/rise), the watch loop's demotion bookkeeping (also
across a restart), the all-unhealthy case, and [[check]] config errors.

The loop runs on a fake clock with scripted probe results; commands go to the
recording fake runner (tests/test_health.py runs real probes and the real CLI).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from carphooks.config import Check, ConfigError
from carphooks.runtime import actions, watch
from carphooks.runtime import status as model
from carphooks.runtime.health import CheckState, Health, Probe, step

from .conftest import CLUSTER, Rig, load_config

V4 = "203.0.113.10/24"
DEMOTION = "net.inet.carp.demotion"
NGINX = """
[[check]]
name = "nginx"
type = "tcp"
port = 80
interval = 2
timeout = 1
fall = 3
rise = 2
weight = 100
"""


def check(fall: int = 3, rise: int = 2) -> Check:
    return Check(name="nginx", type="tcp", interval=2.0, timeout=1.0, fall=fall, rise=rise,
                 weight=100, groups=("web",))


# -- hysteresis -----------------------------------------------------------------------------

# fall, rise, probe results (P good, F bad), health after each probe
HYSTERESIS = [
    (3, 2, "FFF", "UUF"),
    (3, 2, "FFPFFPFFF", "UUPPPPPPF"),  # a good probe restarts the count
    (3, 2, "PFFPFFF", "PPPPPPF"),
    (3, 2, "FFFPFPP", "UUFFFFP"),  # one good probe between bad ones is not enough
    (3, 2, "FFFPPFFF", "UUFFPPPF"),
    (1, 1, "FPFP", "FPFP"),
    (2, 3, "PFFPPFPPP", "PPFFFFFFP"),
]


@pytest.mark.parametrize(("fall", "rise", "results", "expected"), HYSTERESIS)
def test_hysteresis_table(fall: int, rise: int, results: str, expected: str) -> None:
    c = check(fall, rise)
    state = CheckState("nginx")
    seen = []
    changes = []
    for t, r in enumerate(results):
        before = state.health
        state = step(state, c, Probe(r == "P", "x"), float(t))
        seen.append({"unknown": "U", "passing": "P", "failing": "F"}[state.health.value])
        if state.health is not before:
            changes.append(float(t))
            assert state.since == float(t)
    assert "".join(seen) == expected
    assert state.since == (changes[-1] if changes else None)


def test_counts_reset_and_last_result() -> None:
    c = check()
    state = step(step(CheckState("nginx"), c, Probe(False, "refused"), 1.0), c,
                 Probe(False, "refused", "out"), 2.0)
    assert (state.fails, state.passes, state.last_ok, state.last_time) == (2, 0, False, 2.0)
    assert (state.detail, state.output) == ("refused", "out")
    state = step(state, c, Probe(True, "connected"), 3.0)
    assert (state.fails, state.passes, state.last_ok) == (0, 1, True)


# -- the loop on a fake clock ----------------------------------------------------------------

@dataclasses.dataclass
class FakeClock:
    now: float = 1000.0

    def clock(self) -> watch.Clock:
        return watch.Clock(monotonic=lambda: self.now, wall=lambda: self.now,
                           sleep=self.sleep)

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.001)


class Script:
    """Probe results in order (P/F); then the last one forever."""

    def __init__(self, results: str) -> None:
        self.results = list(results)
        self.calls = 0

    def __call__(self, c: Check) -> Probe:
        self.calls += 1
        r = self.results.pop(0) if len(self.results) > 1 else self.results[0]
        return Probe(r == "P", "connected" if r == "P" else "Connection refused")


@pytest.fixture
def host(rig: Callable[..., Rig]) -> Iterator[Callable[..., Rig]]:
    def build(extra: str = NGINX, state: str = "MASTER", demotion: int = 10) -> Rig:
        r = rig(extra=extra)
        r.bsd.set_carp_state("tap0", 1, state)
        r.bsd.sysctls[DEMOTION] = demotion  # someone else's: never touched
        r.runner.answer(["sockstat", "-46", "-c", "-s", "-P", "tcp"])  # status: no tincd
        return r
    yield build


def rebuild(r: Rig, extra: str) -> Rig:
    """The same host (kernel, state dir) with another config: a restarted loop."""
    text = CLUSTER.format(state=r.state, quorum="none", extra=extra)
    config = load_config(r.ctx.config.path, text)
    ctx = dataclasses.replace(r.ctx, config=config)
    return dataclasses.replace(r, ctx=ctx)


def run(r: Rig, clock: FakeClock, script: Script, probes: int) -> None:
    """Run the loop until ``probes`` more probes were made."""
    target = script.calls + probes
    loop = watch.Watch(r.ctx, r.ctx.config.checks, 10.0, clock=clock.clock(), probe=script)
    loop.start()
    while True:
        wait = loop.run_once()
        if script.calls >= target:
            return
        clock.sleep(wait)


def record(r: Rig) -> dict[str, int]:
    added: dict[str, int] = json.loads((r.state / "demotion.json").read_text())["added"]
    return added


def test_demotes_after_fall_and_removes_exactly_on_rise(host: Callable[..., Rig]) -> None:
    r = host()
    clock = FakeClock()
    script = Script("FFFFPPP")
    loop = watch.Watch(r.ctx, r.ctx.config.checks, 10.0, clock=clock.clock(), probe=script)
    loop.start()
    demotion = []
    while script.calls < 7:
        clock.sleep(loop.run_once())
        demotion.append((script.calls, r.bsd.sysctls[DEMOTION]))
    by_probe = dict(demotion)
    assert [by_probe[n] for n in range(1, 8)] == [10, 10, 110, 110, 110, 10, 10]
    assert record(r) == {}
    texts = r.log.texts()
    assert any("check nginx failing" in t and "demoting CARP by 100" in t for t in texts)
    assert any("check nginx passing again" in t for t in texts)
    # the loop never took the address away for it
    assert not [c for c in r.runner.mutations() if c[-1] == "-alias"]


def test_probes_follow_the_interval(host: Callable[..., Rig]) -> None:
    r = host()
    clock = FakeClock()
    script = Script("P")
    start = clock.now
    run(r, clock, script, 6)
    assert clock.now - start == pytest.approx(10.0, abs=0.01)  # 6 probes, 2 s apart


def test_restart_neither_doubles_nor_leaks(host: Callable[..., Rig]) -> None:
    r = host()
    clock = FakeClock()
    run(r, clock, Script("F"), 3)
    assert r.bsd.sysctls[DEMOTION] == 110
    assert record(r) == {"check:nginx": 100}
    # restarted while still failing: the recorded state carries on, nothing added twice
    script = Script("FP")
    run(r, clock, script, 1)
    assert r.bsd.sysctls[DEMOTION] == 110
    # two good probes after the restart remove exactly the check's demotion
    run(r, clock, script, 2)
    assert r.bsd.sysctls[DEMOTION] == 10
    assert record(r) == {}


def test_restart_passing_then_failing_needs_fall_again(host: Callable[..., Rig]) -> None:
    r = host()
    clock = FakeClock()
    run(r, clock, Script("FFP"), 3)  # two failures recorded, then a good one
    run(r, clock, Script("FF"), 2)
    assert r.bsd.sysctls[DEMOTION] == 10
    run(r, clock, Script("F"), 1)
    assert r.bsd.sysctls[DEMOTION] == 110


def test_check_removed_from_config_is_withdrawn_at_start(host: Callable[..., Rig]) -> None:
    r = host()
    clock = FakeClock()
    run(r, clock, Script("F"), 3)
    assert r.bsd.sysctls[DEMOTION] == 110
    gone = rebuild(r, "")
    loop = watch.Watch(gone.ctx, gone.ctx.config.checks, 10.0, clock=clock.clock(),
                       probe=Script("P"))
    loop.start()
    assert r.bsd.sysctls[DEMOTION] == 10
    assert record(r) == {}
    # and a cron reconcile of a config without the check withdraws it too
    run(r, clock, Script("F"), 3)
    assert r.bsd.sysctls[DEMOTION] == 110
    actions.reconcile(gone.ctx)
    assert r.bsd.sysctls[DEMOTION] == 10


def test_lost_demotion_record_is_restored_once(host: Callable[..., Rig]) -> None:
    """After a reboot tinc-up drops the record the kernel lost; the loop, restarted with
    the check still failing, adds the demotion again, once."""
    r = host()
    clock = FakeClock()
    run(r, clock, Script("F"), 3)
    r.bsd.sysctls[DEMOTION] = 0  # reboot
    (r.state / "demotion.json").write_text('{"added": {}, "time": 0}')
    run(r, clock, Script("F"), 1)
    run(r, clock, Script("F"), 1)
    assert r.bsd.sysctls[DEMOTION] == 100
    assert record(r) == {"check:nginx": 100}


def test_all_unhealthy_master_keeps_the_address(host: Callable[..., Rig]) -> None:
    """Every node's check fails (so every node is demoted alike): nobody takes over,
    and the master keeps serving, says so in syslog and in status."""
    r = host()
    clock = FakeClock()
    script = Script("P")
    loop = watch.Watch(r.ctx, r.ctx.config.checks, 10.0, clock=clock.clock(), probe=script)
    loop.start()
    clock.sleep(loop.run_once())
    assert V4 in r.bsd.addresses("vtnet0")
    script.results = ["F"]
    for _ in range(30):  # 3 failures, then the master-down time and more: 60 s
        clock.sleep(loop.run_once())
    assert r.bsd.sysctls[DEMOTION] == 110
    assert V4 in r.bsd.addresses("vtnet0")  # never released for a failing check
    assert not [c for c in r.runner.mutations() if c[-1] == "-alias"]
    warnings = [t for t in r.log.texts() if "no healthier peer took over" in t]
    assert len(warnings) == 1
    assert "check nginx failing; no healthier peer took over: keeping the address" \
        in warnings[0]
    report = actions.status(r.ctx)
    (c,) = report.checks
    assert (c.health, c.kept, c.demotion, c.fails) == ("failing", True, 100, c.fails)
    assert report.verdict() is model.Verdict.WARNING
    code, line = model.nagios(report)
    assert code == 1 and "keeping the address" in line
    assert any("keeping the address" in x for x in model.text_lines(report))
    # a peer takes over: not "kept" any more, and still nothing removed by the check
    r.bsd.set_carp_state("tap0", 1, "BACKUP")
    for _ in range(10):
        clock.sleep(loop.run_once())
    (c,) = actions.status(r.ctx).checks
    assert not c.kept
    assert any("a peer took over" in t for t in r.log.texts())


def test_backup_with_failing_check_takes_nothing_and_demotes(host: Callable[..., Rig]) -> None:
    r = host(state="BACKUP")
    clock = FakeClock()
    run(r, clock, Script("F"), 10)
    assert r.bsd.sysctls[DEMOTION] == 110
    assert V4 not in r.bsd.addresses("vtnet0")
    assert not any("no healthier peer" in t for t in r.log.texts())


def test_status_shows_each_check(host: Callable[..., Rig]) -> None:
    r = host()
    clock = FakeClock()
    run(r, clock, Script("FF"), 2)
    report = actions.status(r.ctx)
    (c,) = report.checks
    assert (c.name, c.health, c.fails, c.demotion, c.last_ok) == ("nginx", "unknown", 2, 0,
                                                                 False)
    assert c.detail == "Connection refused"
    data = model.to_json(report)
    assert data["checks"][0]["name"] == "nginx" and data["checks"][0]["fails"] == 2
    assert data["checks"][0]["target"] == "tcp 127.0.0.1:80"


def test_status_without_a_loop_warns(host: Callable[..., Rig]) -> None:
    r = host()
    actions.reconcile(r.ctx)
    report = actions.status(r.ctx)
    assert report.checks_error is not None and "watch" in report.checks_error
    assert report.verdict() is model.Verdict.WARNING


def test_stale_record_does_not_demote(host: Callable[..., Rig]) -> None:
    """A record nobody refreshes (the loop is gone) demotes nothing: reconcile removes
    the check's demotion and status says the check is not run."""
    r = host()
    clock = FakeClock(now=1000.0)
    run(r, clock, Script("F"), 3)
    data = json.loads((r.state / "checks.json").read_text())
    data["updated"] -= 3600
    (r.state / "checks.json").write_text(json.dumps(data))
    report = actions.status(r.ctx)
    assert report.checks[0].stale
    actions.reconcile(r.ctx)
    assert r.bsd.sysctls[DEMOTION] == 10


def test_reconcile_every_is_the_loop_without_checks(host: Callable[..., Rig]) -> None:
    r = host()
    clock = FakeClock()
    watch.run(r.ctx, checks=False, interval=5.0, clock=clock.clock(), rounds=3,
              probe=Script("F"))
    assert V4 in r.bsd.addresses("vtnet0")
    assert r.bsd.sysctls[DEMOTION] == 10
    assert not (r.state / "checks.json").exists()


# -- config -------------------------------------------------------------------------------------

BAD = [
    ('name = "Nginx"\ntype = "tcp"\nport = 80', "check[0].name"),
    ('name = "a"\ntype = "ping"', "check[0].type"),
    ('name = "a"\ntype = "tcp"', "check[0].port: missing"),
    ('name = "a"\ntype = "tcp"\nport = 80\nurl = "http://127.0.0.1/"', "check[0].url"),
    ('name = "a"\ntype = "tcp"\nport = 80\naddress = "localhost"', "check[0].address"),
    ('name = "a"\ntype = "command"\ncommand = ["curl", "-f"]', "check[0].command[0]"),
    ('name = "a"\ntype = "command"\ncommand = []', "check[0].command: missing"),
    ('name = "a"\ntype = "command"\ncommand = "/bin/true"', "check[0].command"),
    ('name = "a"\ntype = "http"\nurl = "http://example.org/"', "check[0].url"),
    ('name = "a"\ntype = "http"\nurl = "https://127.0.0.1/"', "check[0].url"),
    ('name = "a"\ntype = "http"\nurl = "http://u:pw@127.0.0.1/"', "check[0].url"),
    ('name = "a"\ntype = "tcp"\nport = 80\ninterval = 1\ntimeout = 1', "check[0].timeout"),
    ('name = "a"\ntype = "tcp"\nport = 80\nfall = 0', "check[0].fall"),
    ('name = "a"\ntype = "tcp"\nport = 80\nweight = 241', "check[0].weight"),
    ('name = "a"\ntype = "tcp"\nport = 80\ngroups = ["db"]', "check[0].groups[0]"),
    ('name = "a"\ntype = "tcp"\nport = 80\ngroups = []', "check[0].groups"),
    ('name = "a"\ntype = "tcp"\nport = 80\nbogus = 1', "check[0].bogus: unknown key"),
]


@pytest.mark.parametrize(("body", "key"), BAD)
def test_bad_check_is_one_config_line(tmp_path: Path, body: str, key: str) -> None:
    text = CLUSTER.format(state=tmp_path / "s", quorum="none", extra=f"\n[[check]]\n{body}\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "c.toml", text)
    message = str(info.value)
    assert "\n" not in message and f": {key}" in message


def test_duplicate_check_name(tmp_path: Path) -> None:
    extra = NGINX + NGINX
    with pytest.raises(ConfigError, match=r"check\[1\]\.name: 'nginx' is used"):
        load_config(tmp_path / "c.toml", CLUSTER.format(state=tmp_path, quorum="none",
                                                        extra=extra))


def test_check_defaults(tmp_path: Path) -> None:
    extra = '\n[[check]]\nname = "web-1"\ntype = "http"\nurl = "http://[::1]:8080/h?x=1"\n'
    config = load_config(tmp_path / "c.toml", CLUSTER.format(state=tmp_path, quorum="none",
                                                             extra=extra))
    (c,) = config.checks
    assert (c.interval, c.timeout, c.fall, c.rise, c.weight, c.groups, c.expect_status) == \
        (2.0, 1.0, 3, 2, 240, ("web",), 200)
    assert c.reason == "check:web-1"
    assert config.reconcile_interval == 10.0
    assert Health.FAILING.value == "failing"


def test_sample_check_block_is_valid(tmp_path: Path) -> None:
    """The commented [[check]] of carphooks.toml.sample, uncommented, is a valid check."""
    sample = (Path(__file__).resolve().parents[2] / "carphooks.toml.sample").read_text()
    block = sample[sample.index("# [[check]]"):]
    lines = [line[2:] for line in block.splitlines()
             if line.startswith("# ") and not line.startswith("# # ")]
    text = CLUSTER.format(state=tmp_path, quorum="none", extra="\n" + "\n".join(lines) + "\n")
    (c,) = load_config(tmp_path / "c.toml", text).checks
    assert (c.name, c.type, c.command[0], c.weight) == ("nginx", "command",
                                                        "/usr/local/bin/curl", 240)


def test_dry_run_writes_nothing_and_claims_no_change(rig: Callable[..., Rig]) -> None:
    r = rig(extra=NGINX, dry_run=True)
    r.bsd.set_carp_state("tap0", 1, "MASTER")
    clock = FakeClock()
    run(r, clock, Script("F"), 4)
    assert r.bsd.sysctls[DEMOTION] == 0
    assert r.runner.mutations() == []
    assert not r.state.exists()
    texts = r.log.texts()
    assert any("check nginx failing" in t and "dry run" in t for t in texts)
    assert not any("demoted CARP" in t or "demoting CARP" in t for t in texts)
