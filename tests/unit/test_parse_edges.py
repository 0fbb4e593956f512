"""Event and config parsing edge cases not covered by tests/test_events.py and test_config.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from carphooks.errors import ConfigError, UsageError
from carphooks.runtime.events import parse_carp_event, parse_tinc_env

from .conftest import CLUSTER, load_config


@pytest.mark.parametrize("subsystem, ok", [
    ("1@abcdefghijklmno", True),  # 15 characters: IFNAMSIZ - 1
    ("1@abcdefghijklmnop", False),  # 16
    ("00@tap0", False),  # vhid 0
    ("0255@tap0", False),  # more than three digits
    ("1@tap_0", True),
    ("\u0661@tap0", False),  # an Arabic-Indic digit is not [0-9]
    ("1@t\u0430p0", False),  # a Cyrillic a
    ("1@.tap0", False),
    ("1@tap/0", False),
])
def test_subsystem_edges(subsystem: str, ok: bool) -> None:
    if ok:
        assert parse_carp_event(subsystem, "init").subsystem == subsystem
    else:
        with pytest.raises(UsageError, match="bad subsystem"):
            parse_carp_event(subsystem, "INIT")


BASE = {"NAME": "hA", "INTERFACE": "tap0", "NETNAME": "carp", "NODE": "hB"}


@pytest.mark.parametrize("key, value, need_node, word", [
    ("NETNAME", "car p", False, "NETNAME"),
    ("NETNAME", "../x", False, "NETNAME"),
    ("INTERFACE", "tap0/..", False, "INTERFACE"),
    ("INTERFACE", "", False, "INTERFACE"),
    ("NAME", "h-A", False, "NAME"),
    ("NAME", "a" * 65, False, "NAME"),
    ("NODE", "h B", True, "NODE"),
])
def test_tinc_env_edges(key: str, value: str, need_node: bool, word: str) -> None:
    with pytest.raises(UsageError, match=f"bad environment: {word}="):
        parse_tinc_env(dict(BASE, **{key: value}), need_node=need_node)


def test_tinc_env_keeps_remote_and_drops_node_when_not_needed() -> None:
    env = parse_tinc_env(dict(BASE, NODE="h B", REMOTEADDRESS="203.0.113.12",
                              REMOTEPORT="655"), need_node=False)
    assert (env.node, env.remote_address, env.remote_port) == (None, "203.0.113.12", "655")


def cluster(state: Path, extra: str = "") -> str:
    return CLUSTER.format(state=state, quorum="none", extra=extra)


# (old, new) replaced once in the cluster text, and the message expected
EDGES = [
    ('lock_timeout = 1', 'lock_timeout = -1', "lock_timeout: -1 is out of range 0.0-600.0"),
    ('lock_timeout = 1', 'lock_timeout = 601', "lock_timeout: 601 is out of range"),
    ('lock_timeout = 1', 'lock_timeout = true', "lock_timeout: expected a number, got a boolean"),
    ('log_tag = "carphooks-unit"', 'log_tag = "car hooks"', "log_tag: 'car hooks': use 1 to 32"),
    ('log_tag = "carphooks-unit"', f'log_tag = "{"x" * 33}"', "log_tag: 'xxx"),
    ('quorum = "none"', 'quorum = "none"\nsyslog_facility = "kern2"',
     "syslog_facility: 'kern2' is not one of"),
    ('quorum = "none"', 'quorum = "none"\ndemotion_file = "demotion"',
     "demotion_file: 'demotion' is not an absolute path"),
    ('quorum = "none"', 'quorum = "none"\nbindir = "bin"', "bindir: 'bin' is not an absolute"),
    ('quorum = "none"', 'quorum = "none"\ntopology = "unicast"\n',
     None),  # quorum none: unicast is allowed
    ('quorum = "none"', 'quorum = "majority"\ntopology = "unicast"',
     'quorum: topology = "unicast" has no tinc host-up/host-down'),
    ('nodes = ["hA", "hB", "hC"]', 'nodes = ["hA", "hB", "hA"]',
     "tinc.nodes[2]: 'hA' is listed twice"),
    ('nodes = ["hA", "hB", "hC"]', 'nodes = ["hA", "hB", "hC"]\nwitnesses = ["hC"]',
     "tinc.witnesses[0]: 'hC' is listed twice"),
    ('nodes = ["hA", "hB", "hC"]', 'nodes = ["hA", "h-B"]', "tinc.nodes[1]: 'h-B' is not"),
    ('mac = "02:00:00:00:00:11"', 'mac = "03:00:00:00:00:11"',
     "hosts.hA.mac: '03:00:00:00:00:11' is a multicast MAC"),
    ('mac = "02:00:00:00:00:11"', 'mac = "02:00:00:00:11"', "hosts.hA.mac: '02:00:00:00:11'"),
    ('[hosts.hB]', '[hosts.hB]\nadvskew = 241', "hosts.hB.advskew: 241 is out of range 0-240"),
    ('[hosts.hB]', '[hosts.hB]\nport = 655', "hosts.hB.port: unknown key"),
    ('password = "s3cret"', 'password = "s3cret"\npassword_file = "/etc/pw"',
     "group[0].carp.password: set password or password_file, not both"),
    ('password = "s3cret"', 'password_file = "my-secret-pw"',
     "group[0].carp.password_file: is not an absolute path (value not shown)"),
    ('password = "s3cret"', 'password = "s3cret"\npeers6 = ["192.0.2.12"]',
     "group[0].carp.peers6[0]: '192.0.2.12' is not an IPv6 address"),
    ('password = "s3cret"', 'password = "s3cret"\nvhid = 2', "group[0].carp.vhid: unknown key"),
    ('password = "s3cret"', 'password = "s3cret"\nadvskew = 241',
     "group[0].carp.advskew: 241 is out of range 0-240"),
    ('name = "web"', 'name = "-web"', "group[0].name: '-web' is not a valid value"),
    ('probe = false', 'probe = "no"', "group[0].probe: expected true or false, got a string"),
    ('addresses = ["203.0.113.10/24", "2001:db8:10::10/64"]', 'addresses = "203.0.113.10/24"',
     "group[0].addresses: expected a list, got a string"),
]


@pytest.mark.parametrize("old, new, message", EDGES)
def test_config_edges(tmp_path: Path, old: str, new: str, message: str | None) -> None:
    text = cluster(tmp_path / "state")
    assert old in text
    text = text.replace(old, new, 1)
    path = tmp_path / "carphooks.toml"
    if message is None:
        load_config(path, text)
        return
    with pytest.raises(ConfigError) as info:
        load_config(path, text)
    line = str(info.value)
    assert line.startswith(f"{path}: ") and "\n" not in line
    assert message in line
    assert "my-secret-pw" not in line


def test_second_group_collisions(tmp_path: Path) -> None:
    second = ('\n[[group]]\nname = "{name}"\nvhid = {vhid}\ncarp_interface = "tap0"\n'
              'external_interface = "vtnet0"\naddresses = ["{addr}"]\n')
    base = cluster(tmp_path / "state")
    cases = [
        (second.format(name="web", vhid=2, addr="203.0.113.20/24"),
         "group[1].name: 'web' is used by another group"),
        (second.format(name="mail", vhid=1, addr="203.0.113.20/24"),
         "group[1].vhid: vhid 1 on tap0 is used by group 'web'"),
        (second.format(name="mail", vhid=2, addr="203.0.113.10/32"),
         "group[1].addresses[0]: 203.0.113.10 is already listed in group[0]"),
    ]
    for extra, message in cases:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            load_config(tmp_path / "c.toml", base + extra)
    ok = load_config(tmp_path / "c.toml", base + second.format(name="mail", vhid=10,
                                                               addr="203.0.113.1/24"))
    assert ok.group_for(10, "tap0") is ok.groups[1] and ok.group_for(1, "tap0") is ok.groups[0]
