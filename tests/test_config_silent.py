"""No silent misconfiguration: each config that used to load and then do nothing fails
at load (exit 6, one line naming the key and the fix) or in ``carphooks check`` with a
fix that, applied, loads: advice is never circular."""

from __future__ import annotations

import copy
import json
import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import BINDIR, FakeBSD, addrs, run_script

from carphooks import config as configmod
from carphooks.errors import ConfigError
from carphooks.setup import check

Data = dict[str, Any]

GROUP: Data = {"name": "web", "vhid": 1, "carp_interface": "tap0",
               "external_interface": "vtnet0", "addresses": ["203.0.113.10/24"]}
CARP: Data = {"address": "192.0.2.254/24", "password": "s3cret"}


def dump(data: Data, prefix: str = "") -> list[str]:
    """TOML lines for ``data`` (strings, numbers, booleans, lists, tables, arrays of
    tables): enough for these configs."""
    lines: list[str] = []
    tables: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict) or (isinstance(value, list) and value
                                       and all(isinstance(v, dict) for v in value)):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    for key, value in tables:
        if isinstance(value, dict):
            lines.append(f"[{prefix}{key}]")
            lines += dump(value, f"{prefix}{key}.")
        else:
            for item in value:
                lines.append(f"[[{prefix}{key}]]")
                lines += dump(item, f"{prefix}{key}.")
    return lines


def write(path: Path, data: Data) -> Path:
    path.write_text("\n".join(dump(data)) + "\n", encoding="utf-8")
    os.chmod(path, 0o600)
    return path


def base(**top: Any) -> Data:
    """backend freebsd, state and syslog out of the way, then ``top``."""
    return {"backend": "freebsd", "state_dir": "/nonexistent/carphooks-state",
            "syslog_socket": "/nonexistent/log", **top}


def group(carp: bool | Data = True, **over: Any) -> Data:
    """A [[group]]; ``carp``: its [group.carp] (True: the usual one, False: none)."""
    entry = {**GROUP, **over}
    if carp:
        entry["carp"] = dict(CARP) if carp is True else carp
    return entry


def cluster(nodes: list[str], **top: Any) -> Data:
    hosts = {n: {"vpn_address": f"192.0.2.{11 + i}/24"} for i, n in enumerate(nodes)}
    data = base(tinc={"nodes": nodes}, hosts=hosts, group=[group()])
    data.update(top)
    return data


# -- load errors -------------------------------------------------------------------------

MINIMAL = base(group=[group(carp=False)])  # what a newcomer writes first


def load_error(data: Data) -> str:
    with pytest.raises(ConfigError) as info:
        configmod.parse(data, path=Path("/etc/c.toml"), check_permissions=False)
    text = str(info.value)
    assert "\n" not in text
    return text


def loads(data: Data) -> configmod.Config:
    return configmod.parse(data, path=Path("/etc/c.toml"), check_permissions=False)


def test_minimal_one_group_config_fails_at_load_naming_the_fix() -> None:
    text = load_error(MINIMAL)
    assert text.startswith("/etc/c.toml: tinc.nodes: ")
    assert 'quorum = "majority" (the default)' in text
    assert "list the hosts' tinc node names in tinc.nodes" in text
    assert 'or set quorum = "none"' in text
    # both fixes it names load
    assert loads({**MINIMAL, "quorum": "none"}).quorum == "none"
    assert loads({**MINIMAL, "tinc": {"nodes": ["hA", "hB", "hC"]}}).voters == ("hA", "hB", "hC")


def test_explicit_majority_over_no_voters_names_quorum() -> None:
    text = load_error({**MINIMAL, "quorum": "majority", "tinc": {"nodes": []}})
    assert text.startswith("/etc/c.toml: quorum: quorum = \"majority\" counts the votes")


def test_minimal_config_carp_event_exits_6_instead_of_doing_nothing(
        bsd: FakeBSD, tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.toml", MINIMAL)
    bsd.set_carp_state("tap0", 1, "MASTER")
    res = run_script("carp-event", "1@tap0", "MASTER", env=bsd.env(), config=cfg)
    assert res.code == 6, (res.out, res.err)
    assert "tinc.nodes: quorum = \"majority\" (the default)" in res.err
    assert "203.0.113.10/24" not in addrs(bsd, "vtnet0")


def test_unicast_hosts_at_the_default_advskew_tie_at_load() -> None:
    data = base(topology="unicast", quorum="none",
                hosts={"hA": {"vpn_address": "10.0.0.11/24"},
                       "hB": {"vpn_address": "10.0.0.12/24"}},
                group=[group(carp_interface="vtnet1",
                             carp={"address": "10.0.0.254/24", "peers": ["10.0.0.11",
                                                                         "10.0.0.12"]})])
    text = load_error(data)
    match = re.search(r"hosts\.hB\.advskew: 0 \(not set: the default\) ties with hA, so CARP "
                      r"prefers neither host: set advskew = (\d+) under \[hosts\.hB\]", text)
    assert match, text
    fixed = copy.deepcopy(data)
    fixed["hosts"]["hB"]["advskew"] = int(match[1])
    config = loads(fixed)
    assert config.advskew_for(config.groups[0], "hA") != config.advskew_for(config.groups[0],
                                                                             "hB")


def test_explicit_advskew_tie_among_hosts_without_nodes() -> None:
    data = base(quorum="none", hosts={"a": {"advskew": 50}, "b": {"advskew": 50},
                                      "w": {}}, tinc={"witnesses": ["w"]}, group=[group()])
    text = load_error(data)
    assert "hosts.b.advskew: 50 ties with a" in text and "(not set" not in text
    assert "set advskew = 0 under [hosts.b]" in text  # 0 is free: the witness does not count


@pytest.mark.parametrize("data, expected", [
    ({"tinc": {"quorum": "majority"}}, "tinc.quorum: unknown key; quorum is a top-level key"),
    ({"tinc": {"quorom": "none"}},
     "tinc.quorom: unknown key; did you mean 'quorum' (a top-level key)?"),
    ({"nodes": ["hA"]}, "nodes: unknown key; nodes is a key of [tinc]"),
    ({"group": [{**GROUP, "password": "x"}]},
     "group[0].password: unknown key; password is a key of [group.carp]"),
    ({"group": [{**GROUP, "adresses": []}]},
     "group[0].adresses: unknown key; did you mean 'addresses'?"),
    ({"hosts": {"hA": {"vpn_adress": "192.0.2.1/24"}}},
     "hosts.hA.vpn_adress: unknown key; did you mean 'vpn_address'?"),
    ({"tinc": {"advskew": 1}},
     "tinc.advskew: unknown key; advskew is a key of [hosts.NAME] and a key of [group.carp]"),
    ({"zzz": 1}, "zzz: unknown key"),
    ({"check": [{"name": "web", "type": "tcp", "port": 80, "intervall": 2}]},
     "check[0].intervall: unknown key; did you mean 'interval'?"),
    ({"check": [{"name": "web", "type": "tcp", "port": 80, "vhid": 1}]},
     "check[0].vhid: unknown key; vhid is a key of [[group]]"),
    ({"check": [{"name": "web", "type": "tcp", "port": 80, "url": "http://127.0.0.1/"}]},
     "check[0].url: belongs to a type = 'http' check, not 'tcp'"),
    ({"group": [{**GROUP, "fall": 3}]},
     "group[0].fall: unknown key; fall is a key of [[check]]"),
    ({"hosts": {"vpn_address": "192.0.2.1/24"}},
     "hosts.vpn_address: expected a table; vpn_address is a key of [hosts.NAME]: put it "
     "under [hosts.NODE], NODE being the host's tinc node name"),
])
def test_unknown_keys_say_where_they_belong(data: Data, expected: str) -> None:
    text = load_error({**base(quorum="none", group=[group()]), **data})
    assert text == f"/etc/c.toml: {expected}"


# -- check: each silent case, and advice that loads ----------------------------------------

def config_checks(tmp_path: Path, data: Data, host: str | None = "hA",
                  release: str = "14.1-RELEASE") -> list[check.Check]:
    """The checks ``carphooks check`` makes of the config alone (no files, no system)."""
    path = write(tmp_path / "c.toml", data)
    doc = check.Doctor(config_path=path, root=tmp_path / "root", host=host,
                       bindir=str(BINDIR), osrelease=lambda: release)
    config = doc.check_config()
    if config is not None:
        doc.check_private(config)
        doc.check_quorum(config)
        doc.check_vhid_addresses(config)
        tgt = doc.check_target(config)
        if tgt is not None:
            doc.check_membership(tgt)
            if config.topology == "unicast":
                doc.check_unicast(tgt)
        doc.check_unicast_release(config)
    return [c for c in doc.checks if not c.name.startswith("rc.conf")]


def problems(checks: list[check.Check]) -> dict[str, check.Check]:
    return {c.name: c for c in checks if c.status != check.OK}


def _hosts(data: Data) -> dict[str, Data]:
    hosts: dict[str, Data] = data.setdefault("hosts", {})
    return hosts


def _vpn(data: Data, names: list[str]) -> None:
    for name in names:
        used = {h.get("vpn_address") for h in _hosts(data).values()}
        free = next(f"192.0.2.{i}/24" for i in range(11, 250) if f"192.0.2.{i}/24" not in used)
        _hosts(data).setdefault(name, {})["vpn_address"] = free


def _add_node(data: Data, name: str) -> None:
    nodes = data.setdefault("tinc", {}).setdefault("nodes", [])
    if name not in nodes:
        nodes.append(name)


def _list_hosts(data: Data) -> None:
    nodes = data.setdefault("tinc", {}).setdefault("nodes", [])
    for name in ("hA", "hB", "hC"):
        if name not in nodes:
            nodes.append(name)
    _vpn(data, [n for n in nodes if "vpn_address" not in _hosts(data).get(n, {})])


def _set(**values: Any) -> Callable[[Data, re.Match[str], str], None]:
    def edit(data: Data, match: re.Match[str], name: str) -> None:
        data.update(values)
    return edit


def _group_named(data: Data, name: str) -> Data:
    found: Data = next(g for g in data["group"] if g["name"] == name)
    return found


LISTING = (r"list every host's tinc node name in tinc\.nodes \(three, or two plus a small "
           r"third node in tinc\.witnesses\)")
# Each config fix check gives, as the edit it describes. A fix missing here fails the test.
EDITS: list[tuple[str, Callable[[Data, re.Match[str], str], None]]] = [
    (r'set quorum = "majority"', _set(quorum="majority")),
    (r'add a small third tinc node as a witness \(tinc\.witnesses\) and set quorum = '
     r'"majority"', lambda d, m, n: (d.setdefault("tinc", {}).update(witnesses=["w"]),
                                     d.update(quorum="majority"))),
    (LISTING + r', then set quorum = "majority"',
     lambda d, m, n: (_list_hosts(d), d.update(quorum="majority"))),
    (LISTING, lambda d, m, n: _list_hosts(d)),
    (r'to rule that out, set topology = "tinc", ' + LISTING + r' and set quorum = "majority"',
     lambda d, m, n: (d.update(topology="tinc"), _list_hosts(d), d.update(quorum="majority"))),
    (r'add a \[hosts\.NAME\] table with vpn_address for each host \(NAME: its tinc node '
     r'name\) and list them in tinc\.nodes', lambda d, m, n: _list_hosts(d)),
    (r'set vpn_address = "ADDR/PREFIX" under \[hosts\.(\w+)\] \(this host\'s own address on '
     r'the VPN, one per host\)', lambda d, m, n: _vpn(d, [m[1]])),
    (r'set vpn_address under ((?:\[hosts\.\w+\](?:, )?)+)',
     lambda d, m, n: _vpn(d, re.findall(r"\[hosts\.(\w+)\]", m[1]))),
    (r'add "(\w+)" to tinc\.nodes', lambda d, m, n: _add_node(d, m[1])),
    (r'add a \[hosts\.(\w+)\] table with vpn_address and list "\1" in tinc\.nodes, or '
     r'pass --host as one of [\w, ]+',
     lambda d, m, n: (_vpn(d, [m[1]]), _add_node(d, m[1]))),
    (r'add \[group\.carp\] with address = "ADDR/PREFIX" \(the vhid\'s address on \w+, the same '
     r'on every host\) after that \[\[group\]\]',
     lambda d, m, n: _group_named(d, n.split()[-1]).update(carp=dict(CARP))),
    (r"put a password of your own .* in password_file, the same on every host",
     lambda d, m, n: _group_named(d, n.split()[-1])["carp"].update(password="h0me.made")),
    (r'remove carp\.peers/peers6 .* or upgrade to FreeBSD 14',
     lambda d, m, n: [g.get("carp", {}).pop(k, None) for g in d["group"]
                      for k in ("peers", "peers6")]),
    (r'use topology = "tinc" for more than two hosts', _set(topology="tinc")),
    (r"set group\.carp\.address",
     lambda d, m, n: _group_named(d, n.split()[-1]).setdefault("carp", {}).update(
         address="10.0.0.254/24")),
]


def apply_fix(data: Data, item: check.Check) -> None:
    """Apply every part of ``item.fix``; fail on a part no edit describes."""
    for part in item.fix.split("; "):
        for pattern, edit in EDITS:
            match = re.fullmatch(pattern, part)
            if match:
                edit(data, match, item.name)
                break
        else:
            pytest.fail(f"no edit for the fix of {item.name!r}: {part!r}")


SCENARIOS: dict[str, tuple[Data, str]] = {
    # minimal config with the quorum the load error suggests: no hosts, no vhid address
    "minimal + quorum none": ({**MINIMAL, "quorum": "none"}, "hA"),
    "two nodes, quorum none": (cluster(["hA", "hB"], quorum="none"), "hA"),
    "three nodes, quorum none": (cluster(["hA", "hB", "hC"], quorum="none"), "hA"),
    "majority of one": (cluster(["hA"], quorum="majority"), "hA"),
    "host without vpn_address": (
        {**cluster(["hA", "hB", "hC"]), "hosts": {"hB": {"vpn_address": "192.0.2.12/24"}}},
        "hA"),
    "group without [group.carp]": (
        {**cluster(["hA", "hB", "hC"]), "group": [group(carp=False)]}, "hA"),
    "placeholder password": (
        {**cluster(["hA", "hB", "hC"]),
         "group": [group(carp={**CARP, "password": configmod.SAMPLE_PASSWORD})]}, "hA"),
    "host not in tinc.nodes": (
        {**cluster(["hA", "hB", "hC"]), "hosts": {
            **cluster(["hA", "hB", "hC"])["hosts"], "hD": {"vpn_address": "192.0.2.14/24"}}},
        "hD"),
    "unicast, three peers": (
        base(topology="unicast", quorum="none", tinc={"nodes": ["hA", "hB", "hC"]},
             hosts={n: {"vpn_address": f"10.0.0.{11 + i}/24"}
                    for i, n in enumerate(["hA", "hB", "hC"])},
             group=[group(carp_interface="vtnet1", carp={
                 "address": "10.0.0.254/24", "password": "s3cret",
                 "peers": ["10.0.0.11", "10.0.0.12", "10.0.0.13"]})]), "hA"),
    "unicast without carp.address, host without a table": (
        base(topology="unicast", quorum="none",
             hosts={"hB": {"vpn_address": "10.0.0.12/24", "advskew": 100}},
             group=[group(carp_interface="vtnet1", carp={"password": "s3cret"})]), "hA"),
    "unicast without carp.address": (
        base(topology="unicast", quorum="none",
             hosts={"hB": {"vpn_address": "10.0.0.12/24", "advskew": 100}},
             group=[group(carp_interface="vtnet1", carp={"password": "s3cret"})]), "hB"),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_check_flags_it_and_each_fix_applied_loads(tmp_path: Path, name: str) -> None:
    data, host = copy.deepcopy(SCENARIOS[name][0]), SCENARIOS[name][1]
    seen: list[str] = []
    for _ in range(6):
        found = problems(config_checks(tmp_path, data, host))
        assert "config" not in found, (seen, found["config"].line())  # every fix loads
        if not found:
            break
        for item in found.values():
            seen.append(item.line())
            apply_fix(data, item)
    else:
        pytest.fail(f"the advice goes round in circles: {seen}")
    assert seen, "the scenario raised nothing to fix"


def test_each_silent_case_is_named(tmp_path: Path) -> None:
    def lines(scenario: str) -> str:
        data, host = SCENARIOS[scenario]
        return "\n".join(c.line() for c in problems(config_checks(tmp_path, data, host))
                         .values())

    text = lines("host without vpn_address")
    assert "FAIL this host: hosts.hA.vpn_address is not set: tinc-up leaves tap0 without " \
           "an address of its own" in text
    assert "hosts.hC.vpn_address not set" in text
    text = lines("group without [group.carp]")
    assert "FAIL carp web: group[0] (web) has no carp.address: tinc-up cannot create vhid 1" \
           in text
    assert "FAIL password web:" in lines("placeholder password")
    assert "hD is not in tinc.nodes" in lines("host not in tinc.nodes")
    text = lines("majority of one")
    assert "WARN quorum: majority of 1 voter: hA always has quorum by itself" in text
    text = lines("unicast, three peers")
    assert 'WARN quorum: topology = "unicast" has no quorum' in text
    assert 'set quorum = "majority"' not in text.replace('and set quorum = "majority"', "")


def test_probe_where_it_cannot_work_is_a_config_error(tmp_path: Path) -> None:
    config = loads(cluster(["hA", "hB", "hC"], group=[group(probe=True)]))
    with pytest.raises(ConfigError, match=r"group\[0\]\.probe: true, but no bpf; set probe "
                                          r"= false"):
        configmod.resolve_probe(config, "no bpf")


def test_the_man_page_minimal_configuration_loads() -> None:
    man = (Path(__file__).resolve().parent.parent / "man" / "carphooks.toml.5").read_text()
    section = man.split(".Sh MINIMAL CONFIGURATION", 1)[1].split(".Sh ", 1)[0]
    block = section.split("need no more than:\n.Bd -literal -offset indent\n", 1)[1]
    config = loads(tomllib.loads(block.split("\n.Ed", 1)[0]))
    assert config.quorum == "majority" and config.voters == ("hA", "hB", "hC")
    assert config.groups[0].carp.address is not None
