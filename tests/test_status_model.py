"""The status model and its renderings; every action's typed result; one log line per change.

Renderers are checked on reports built by hand (so each rule is pinned down), the
actions in-process on the FreeBSD emulator.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

import pytest
from conftest import (
    BASE_CONFIG,
    FakeBSD,
    SyslogServer,
    addrs,
    run_script,
    write_config,
)

from carphooks import config as configmod
from carphooks.log import Log
from carphooks.runtime import actions
from carphooks.runtime import status as model
from carphooks.runtime.context import current_quorum
from carphooks.runtime.engine import address_status
from carphooks.runtime.events import CarpEvent, CarpState, TincEnv
from carphooks.runtime.status import (
    AddressState,
    AddressStatus,
    DadStatus,
    DemotionStatus,
    GroupStatus,
    LastEvent,
    QuorumStatus,
    Report,
    Verdict,
)

V4 = ipaddress.ip_interface("203.0.113.10/24")
V6 = ipaddress.ip_interface("2001:db8:10::10/64")
TINC = {"NETNAME": "carp", "NAME": "hA", "DEVICE": "/dev/tap0", "INTERFACE": "tap0"}
# label=value[UOM];[warn];[crit];[min];[max] (monitoring-plugins guidelines, perfdata)
PERF_RE = re.compile(r"^('[^'=]+'|[^'= ]+)=-?[0-9.]+[a-zA-Z%]*"
                     r"(;[0-9.:~@-]*){0,2}(;-?[0-9.]*){0,2}$")


def group(*states: AddressState, hold: bool = True, name: str = "web",
          problems: tuple[str, ...] = (), dad: DadStatus | None = None) -> GroupStatus:
    addresses = tuple(AddressStatus(a, s, dad if s.in_dad else None)
                      for a, s in zip((V4, V6), states, strict=False))
    return GroupStatus(name=name, vhid=1, carp_interface="tap0", external_interface="vtnet0",
                       carp=CarpState.MASTER if hold else CarpState.BACKUP, should_hold=hold,
                       reason="CARP is MASTER" if hold else "CARP is BACKUP",
                       addresses=addresses, problems=problems)


def report(*groups: GroupStatus, quorum_ok: bool = True, maintenance: bool = False,
           demotion_problems: tuple[str, ...] = (), mode: str = "majority",
           last: LastEvent | None = None) -> Report:
    q = QuorumStatus(ok=quorum_ok, have=2 if quorum_ok else 1, need=2, mode=mode,
                     reason="quorum: 2 of 3 votes, 2 needed" if quorum_ok
                     else "no quorum: 1 of 3 votes, 2 needed", voters=3)
    return Report(host="hA", backend="freebsd", quorum=q, maintenance=maintenance,
                  demotion=DemotionStatus(added={}, kernel=0,
                                          problems=list(demotion_problems)),
                  last_event=last, groups=groups)


def perf_items(line: str) -> list[str]:
    assert line.count("|") == 1, line
    return line.split(" | ", 1)[1].split()


# -- the one spelling of address states ------------------------------------------------

def test_address_states_are_one_enum_with_the_json_words() -> None:
    assert [s.value for s in AddressState] == [
        "held", "absent", "tentative", "duplicated", "wrong-prefix"]
    assert {s for s in AddressState if s.present} == {
        AddressState.HELD, AddressState.TENTATIVE, AddressState.DUPLICATED}
    assert {s for s in AddressState if s.in_dad} == {
        AddressState.TENTATIVE, AddressState.DUPLICATED}
    assert address_status(None, V4) is AddressState.ABSENT


# -- JSON ---------------------------------------------------------------------------------

def test_json_keeps_the_documented_keys_and_adds_levels() -> None:
    dad = DadStatus(detail="another host on the link answers for it (DAD failed); "
                    "next re-add in 4 s", since=3.0, attempts=1, last=3.0)
    g = group(AddressState.HELD, AddressState.DUPLICATED, dad=dad,
              problems=(f"{V6} duplicated (...)",))
    r = report(g, last=LastEvent(source="carp-event", detail="1@tap0 MASTER", time=100.0,
                                 age=2.5))
    data = model.to_json(r)
    assert json.loads(json.dumps(data)) == data  # plain data only
    assert data == {
        "host": "hA", "backend": "freebsd",
        "demotion": {"carphooks": {}, "kernel": 0, "problems": []},
        "quorum": {"ok": True, "have": 2, "need": 2, "mode": "majority",
                   "reason": "quorum: 2 of 3 votes, 2 needed", "voters": 3},
        "maintenance": False,
        "last_event": {"source": "carp-event", "detail": "1@tap0 MASTER", "time": 100.0,
                       "age": 2.5},
        "level": "CRITICAL", "mesh": None,
        "groups": [{
            "name": "web", "vhid": 1, "carp_interface": "tap0",
            "external_interface": "vtnet0", "carp": "MASTER", "should_hold": True,
            "reason": "CARP is MASTER",
            "addresses": {str(V4): "held", str(V6): "duplicated"},
            "verdict": f"{V6} duplicated (...)", "level": "CRITICAL",
            "dad": {str(V6): {"status": "duplicated", "detail": dad.detail, "since": 3.0,
                              "attempts": 1, "last": 3.0}},
        }],
    }


def test_json_of_a_healthy_group_has_no_dad_and_an_unreadable_last_event() -> None:
    data = model.to_json(report(group(AddressState.HELD, AddressState.HELD),
                                last=LastEvent(error="state file: unsafe")))
    assert data["groups"][0]["verdict"] == "ok" and "dad" not in data["groups"][0]
    assert data["last_event"] == {"error": "state file: unsafe"}
    assert data["level"] == "OK"
    assert model.to_json(report())["last_event"] is None


# -- text ---------------------------------------------------------------------------------

def test_text_lines() -> None:
    dad = DadStatus(detail="duplicate address detection running")
    r = report(group(AddressState.HELD, AddressState.TENTATIVE, dad=dad),
               group(AddressState.ABSENT, hold=False, name="mail"),
               maintenance=True, demotion_problems=("kernel demotion 0 is below the 240",),
               last=LastEvent(source="tinc-up", detail="hA on tap0", age=12.0))
    assert model.text_lines(r) == [
        "host hA (freebsd): quorum: 2 of 3 votes, 2 needed; MAINTENANCE",
        "group web (vhid 1 on tap0): CARP MASTER, should hold (CARP is MASTER): ok",
        f"  {V4} on vtnet0: held",
        f"  {V6} on vtnet0: tentative (duplicate address detection running)",
        "group mail (vhid 1 on tap0): CARP BACKUP, should release (CARP is BACKUP): ok",
        f"  {V4} on vtnet0: absent",
        "demotion: kernel demotion 0 is below the 240",
        "last event: tinc-up hA on tap0 (12 s ago)",
    ]


def test_maintenance_line() -> None:
    r = report()
    assert model.maintenance_line(r) == (
        "maintenance off; carphooks demotion none; kernel demotion 0")
    r = Report(host=None, backend="freebsd", quorum=r.quorum, maintenance=True,
               demotion=DemotionStatus(added=None, kernel=240), last_event=None, groups=())
    assert model.maintenance_line(r) == (
        "maintenance on; carphooks demotion unknown (record unreadable); kernel demotion 240")


# -- Nagios -------------------------------------------------------------------------------

def test_nagios_ok_with_perfdata() -> None:
    r = report(group(AddressState.HELD, AddressState.HELD),
               group(AddressState.ABSENT, AddressState.ABSENT, hold=False, name="mail"))
    code, line = model.nagios(r)
    assert code == 0
    assert line == ("CARPHOOKS OK - web MASTER 2/2 held; mail BACKUP 0/2 held; "
                    "quorum: 2 of 3 votes, 2 needed | "
                    "web_held=2;;2:;0;2 mail_held=0;;0;0;2 quorum_votes=2;2:;;0;3")
    assert all(PERF_RE.match(item) for item in perf_items(line))


def test_nagios_critical_names_the_problem_first_one_line() -> None:
    g = group(AddressState.ABSENT, AddressState.HELD,
              problems=(f"drift: should hold, missing {V4}",))
    code, line = model.nagios(report(g, quorum_ok=False))
    assert code == int(Verdict.CRITICAL) == 2
    assert line.startswith(f"CARPHOOKS CRITICAL - web: drift: should hold, missing {V4}; "
                           "no quorum: 1 of 3 votes, 2 needed (web MASTER 1/2 held)")
    assert perf_items(line) == ["web_held=1;;2:;0;2", "quorum_votes=1;2:;;0;3"]
    assert "\n" not in line


@pytest.mark.parametrize("r,why", [
    (report(group(AddressState.HELD, AddressState.TENTATIVE)),
     "web: tentative address (DAD running)"),
    (report(group(AddressState.HELD, AddressState.HELD), quorum_ok=False),
     "no quorum: 1 of 3 votes, 2 needed"),
    (report(group(AddressState.HELD, AddressState.HELD), maintenance=True),
     "maintenance mode on"),
    (report(group(AddressState.HELD, AddressState.HELD), demotion_problems=("x",)),
     "demotion: x"),
])
def test_nagios_warnings(r: Report, why: str) -> None:
    code, line = model.nagios(r)
    assert (code, line.split(" - ")[0]) == (1, "CARPHOOKS WARNING")
    assert why in line.split(" | ")[0]


def test_nagios_tentative_on_a_group_to_release_is_not_a_warning() -> None:
    # a BACKUP still holding a tentative address is drift, reported by its problems
    assert model.nagios(report(group(AddressState.ABSENT, AddressState.TENTATIVE,
                                     hold=False)))[0] == 0


def test_nagios_event_age_and_quorum_off() -> None:
    r = report(group(AddressState.HELD, AddressState.HELD), mode="none",
               last=LastEvent(source="carp-event", detail="1@tap0 MASTER", age=900.0))
    assert model.nagios(r)[0] == 0
    code, line = model.nagios(r, max_event_age=600)
    assert code == 1 and "last event 900 s ago" in line
    assert perf_items(line) == ["web_held=2;;2:;0;2"]  # no quorum votes without a quorum


def test_nagios_text_never_carries_a_pipe() -> None:
    g = group(AddressState.ABSENT, problems=("drift | odd\nreason",))
    code, line = model.nagios(report(g))
    assert code == 2 and line.count("|") == 1 and "\n" not in line
    assert model.unknown("bad | config") == (3, "CARPHOOKS UNKNOWN - bad / config")


# -- every action returns one typed result ---------------------------------------------------

@pytest.fixture
def cluster(bsd: FakeBSD, tmp_path: Path, syslog: SyslogServer,
            monkeypatch: pytest.MonkeyPatch) -> Path:
    for key, value in bsd.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CARPHOOKS_NO_DETACH", "1")
    text = BASE_CONFIG.format(state=tmp_path / "state", sock=syslog.path).replace(
        'quorum = "none"', 'quorum = "majority"')
    text = text.replace('name = "web"', 'name = "web"\nprobe = false')
    return write_config(tmp_path / "c.toml", text + '\n[tinc]\nnetname = "carp"\n'
                        'nodes = ["hA", "hB", "hC"]\n')


@pytest.fixture
def solo(bsd: FakeBSD, tmp_path: Path, syslog: SyslogServer,
         monkeypatch: pytest.MonkeyPatch) -> Path:
    """No quorum: tinc-up takes what CARP says (it counts no peers at start)."""
    for key, value in bsd.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CARPHOOKS_NO_DETACH", "1")
    text = BASE_CONFIG.format(state=tmp_path / "state", sock=syslog.path)
    return write_config(tmp_path / "c.toml", text.replace('name = "web"',
                                                          'name = "web"\nprobe = false'))


def context(cfg: Path, *, dry_run: bool = False) -> actions.Context:
    config = configmod.load(cfg)
    return actions.build_context(config, Log("t", config.syslog_socket, mirror=False),
                                 host="hA", dry_run=dry_run)


def tinc(node: str | None = None) -> TincEnv:
    return TincEnv(netname="carp", name="hA", interface="tap0", device="/dev/tap0", node=node)


def test_every_action_returns_an_action_result(bsd: FakeBSD, cluster: Path) -> None:
    bsd.set_sysctl("net.inet.carp.preempt", 1)
    up = actions.tinc_up(context(cluster), tinc())
    assert isinstance(up, actions.ActionResult)
    assert any(line.startswith("set MAC") for line in up.lines)
    assert up.outcomes and not up.failed
    host_up = actions.tinc_host_up(context(cluster), tinc("hB"))  # quorum: 2 of 3
    assert isinstance(host_up, actions.ActionResult) and not host_up.failed
    bsd.set_carp_state("tap0", 1, "MASTER")
    event = actions.carp_event(context(cluster), CarpEvent(1, "tap0", CarpState.MASTER))
    assert isinstance(event, actions.ActionResult)
    assert {str(c.address) for c in event.outcomes[0].done} == {str(V4), str(V6)}
    assert f"assigned {V4} on vtnet0" in event.text()
    again = actions.reconcile(context(cluster))
    assert isinstance(again, actions.ActionResult) and not again.changed
    released = actions.manual(context(cluster), context(cluster).config.groups[0], False,
                              False)
    assert isinstance(released, actions.ActionResult)
    assert f"removed {V4} on vtnet0" in released.text()
    bsd.set_carp_state("tap0", 1, "BACKUP")  # a peer took over
    on = actions.maintenance_on(context(cluster), 0)
    assert isinstance(on, actions.ActionResult) and on.lines == ["demoted CARP by 240"]
    off = actions.maintenance_off(context(cluster))
    assert isinstance(off, actions.ActionResult)
    assert off.text() == ["removed the maintenance demotion", "maintenance off"]
    host_down = actions.tinc_host_down(context(cluster), tinc("hB"))
    assert isinstance(host_down, actions.ActionResult)
    down = actions.tinc_down(context(cluster), tinc())
    assert isinstance(down, actions.ActionResult) and not down.failed
    assert isinstance(actions.status(context(cluster)), Report)


def test_a_failed_take_is_a_failed_result_not_an_exception(bsd: FakeBSD, solo: Path) -> None:
    """tinc-up used to raise the engine's error (logged again by the entry point)."""
    bsd.set_carp_state("tap0", 1, "MASTER")
    bsd.fail_next(["ifconfig", "vtnet0", "inet", str(V4)], stderr="ifconfig: boom")
    result = actions.tinc_up(context(solo), tinc())
    assert result.failed
    assert any(e.startswith(f"failed to assign {V4} on vtnet0") for o in result.outcomes
               for e in o.errors)


def test_a_hook_logs_a_failed_take_once(bsd: FakeBSD, solo: Path,
                                        syslog: SyslogServer) -> None:
    env = {**bsd.env(), **TINC}
    bsd.set_carp_state("tap0", 1, "MASTER")
    bsd.fail_next(["ifconfig", "vtnet0", "inet", str(V4)], stderr="ifconfig: boom")
    res = run_script("tinc-up", env=env, config=solo)
    assert res.code == 1, res.err
    failures = [t for t in syslog.texts() if f"failed to assign {V4}" in t]
    assert len(failures) == 1, failures
    assert f"Assigned {V6} on vtnet0." in syslog.texts()  # the other address was taken


def test_dry_run_tinc_up_logs_no_change(bsd: FakeBSD, cluster: Path,
                                        syslog: SyslogServer) -> None:
    res = run_script("tinc-up", "--dry-run", env={**bsd.env(), **TINC}, config=cluster)
    assert res.code == 0, res.err
    assert "set MAC" in res.out  # what would change is printed ...
    logged = [m.message for m in syslog.messages(settle=0.3)]
    assert not any(t.startswith("tinc-up:") for t in logged)  # ... but not logged
    assert bsd.calls() and not any(len(c) > 2 and c[:2] == ["ifconfig", "tap0"]
                                   and c[2] in ("ether", "inet", "up")
                                   for c in bsd.calls())


# -- one flag, one host name ---------------------------------------------------------------

def test_dry_run_is_the_runners(cluster: Path) -> None:
    ctx = context(cluster, dry_run=True)
    assert ctx.dry_run and ctx.engine.dry_run and ctx.state.dry_run
    ctx.runner.dry_run = False  # one source: everything above follows it
    assert not ctx.dry_run and not ctx.engine.dry_run


def test_quorum_reads_the_host_and_sets_nothing(cluster: Path) -> None:
    ctx = context(cluster)
    assert ctx.host == "hA"
    ctx.host = None
    q = current_quorum(ctx)
    assert ctx.host is None and not q.ok  # unknown host: no quorum, and no side effect


def test_host_is_resolved_once_when_the_context_is_built(
        cluster: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARPHOOKS_HOST", "hB")
    config = configmod.load(cluster)
    ctx = actions.build_context(config, Log("t", config.syslog_socket, mirror=False))
    assert ctx.host == "hB"


# -- the CLI only renders ----------------------------------------------------------------------

def test_cli_status_renders_the_model(bsd: FakeBSD, cluster: Path) -> None:
    env = {**bsd.env(), **TINC}
    run_script("tinc-up", env=env, config=cluster)
    run_script("tinc-host-up", env={**env, "NODE": "hB"}, config=cluster)
    bsd.set_carp_state("tap0", 1, "MASTER")
    run_script("carp-event", "1@tap0", "MASTER", env=env, config=cluster)
    ctx = context(cluster)
    expected = actions.status(ctx)
    res = run_script("carphooks", "--host", "hA", "status", "--json", env=env, config=cluster)
    data = json.loads(res.out)
    assert data["level"] == "OK" and data["groups"][0]["addresses"] == {
        str(V4): "held", str(V6): "held"}
    assert {k: v for k, v in data.items() if k != "last_event"} == {
        k: v for k, v in model.to_json(expected).items() if k != "last_event"}
    res = run_script("carphooks", "--host", "hA", "status", "--nagios", env=env,
                     config=cluster)
    assert res.code == 0
    assert perf_items(res.out.strip()) == ["web_held=2;;2:;0;2", "quorum_votes=2;2:;;0;3"]
    res = run_script("carphooks", "--host", "hA", "status", env=env, config=cluster)
    assert res.out.splitlines()[:2] == model.text_lines(expected)[:2]
    assert addrs(bsd, "vtnet0") >= {str(V4), str(V6)}
