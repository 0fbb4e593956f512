"""Config loading: defaults, per-host values, and one clear line per problem."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
from conftest import write_config

from carphooks import config as configmod
from carphooks.errors import ConfigError

CLUSTER = """\
[tinc]
nodes = ["hA", "hB", "hC"]
[hosts.hA]
vpn_address = "192.0.2.11/24"
[hosts.hB]
vpn_address = "192.0.2.12/24"
[[group]]
vhid = 1
carp_interface = "tap0"
external_interface = "vtnet0"
addresses = ["198.51.100.100/24", "2001:db8:100::100/64"]
[group.carp]
address = "192.0.2.254/24"
"""


def load(tmp_path: Path, text: str) -> configmod.Config:
    return configmod.load(write_config(tmp_path / "carphooks.toml", text))


def test_defaults_and_derived_values(tmp_path):
    cfg = load(tmp_path, CLUSTER)
    assert cfg.log_tag == "carphooks"
    assert cfg.backend == "auto"
    assert cfg.state_dir == Path("/var/db/carphooks")
    assert cfg.quorum == "majority"
    group = cfg.groups[0]
    assert group.name == "vhid1"
    assert group.addresses == (ipaddress.ip_interface("198.51.100.100/24"),
                               ipaddress.ip_interface("2001:db8:100::100/64"))
    skews = [cfg.advskew_for(group, h) for h in ("hA", "hB", "hC")]
    assert len(set(skews)) == 3 and skews == sorted(skews) and max(skews) <= 240
    macs = {cfg.hosts[h].mac for h in ("hA", "hB", "hC")}
    assert len(macs) == 3
    for mac in macs:
        first = int(mac[:2], 16)
        assert first & 0x02 and not first & 0x01  # locally administered unicast
    assert load(tmp_path, CLUSTER).hosts["hA"].mac == cfg.hosts["hA"].mac  # stable


def test_lookup_helpers(tmp_path):
    cfg = load(tmp_path, CLUSTER)
    assert cfg.group_for(1, "tap0") is cfg.groups[0]
    assert cfg.group_for(10, "tap0") is None
    assert cfg.group_for(1, "tap00") is None
    assert cfg.group_named("1@tap0") is cfg.groups[0]
    assert cfg.group_named("vhid1") is cfg.groups[0]


@pytest.mark.parametrize("patch, message", [
    (("\"2001:db8:100::100/64\"", "\"2001:db8::1/129\""),
     "group[0].addresses[1]: '2001:db8::1/129' is not an IPv6 interface address"),
    (("\"198.51.100.100/24\"", "\"198.51.100.100\""),
     "group[0].addresses[0]: '198.51.100.100' has no /PREFIX"),
    (("\"198.51.100.100/24\"", "\"198.51.100.0/24\""),
     "is the network or broadcast address"),
    (("\"198.51.100.100/24\"", "\"fe80::1/64\""), "cannot be a floating address"),
    (("\"198.51.100.100/24\"", "\"2001:db8:100::100/64\""), "is already listed"),
    (("vhid = 1", "vhid = 0"), "group[0].vhid: 0 is out of range 1-255"),
    (("vhid = 1", "vhid = \"1\""), "group[0].vhid: expected an integer, got a string"),
    (("vhid = 1", "vhid = true"), "group[0].vhid: expected an integer, got a boolean"),
    (("external_interface = \"vtnet0\"", "external_interface = \"-vtnet0\""),
     "group[0].external_interface: '-vtnet0' is not a valid value"),
    (("external_interface = \"vtnet0\"", "external_interface = \"vtnet0; reboot\""),
     "is not a valid value"),
    (("nodes = [\"hA\", \"hB\", \"hC\"]", "nodes = [\"hA\", \"hB\"]"),
     "quorum: a 2-node cluster has no majority"),
    (("[hosts.hB]", "[hosts.hB]\nadvskew = 0"), "hosts.hB.advskew: 0 ties with hA"),
    (("address = \"192.0.2.254/24\"", "address = \"192.0.2.254/24\"\nadvbase = 0"),
     "group[0].carp.advbase: 0 is out of range 1-255"),
    (("address = \"192.0.2.254/24\"", "password = \"two words\""),
     "group[0].carp.password: must be one word"),
    (("address = \"192.0.2.254/24\"", "peers = [\"not-an-ip\"]"),
     "group[0].carp.peers[0]: 'not-an-ip' is not an IPv4 address"),
    (("[tinc]", "typo = 1\n[tinc]"), "typo: unknown key"),
])
def test_each_problem_is_one_line_naming_file_and_key(tmp_path, patch, message):
    text = CLUSTER.replace(*patch, 1)
    assert text != CLUSTER
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith(str(tmp_path / "carphooks.toml") + ": ")
    assert message in line


def test_two_nodes_with_explicit_none_or_witness(tmp_path):
    two = CLUSTER.replace('nodes = ["hA", "hB", "hC"]', 'nodes = ["hA", "hB"]')
    assert load(tmp_path, 'quorum = "none"\n' + two).quorum == "none"
    cfg = load(tmp_path, two.replace('nodes = ["hA", "hB"]',
                                     'nodes = ["hA", "hB"]\nwitnesses = ["w"]'))
    assert cfg.voters == ("hA", "hB", "w")


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_config_writable_by_others_is_refused(tmp_path, mode):
    path = write_config(tmp_path / "c.toml", CLUSTER, mode=mode)
    with pytest.raises(ConfigError, match="writable by group or others"):
        configmod.load(path)


def test_password_file_permissions(tmp_path):
    secret = tmp_path / "pass"
    secret.write_text("s3cret\n")
    text = CLUSTER.replace('address = "192.0.2.254/24"',
                           f'address = "192.0.2.254/24"\npassword_file = "{secret}"')
    for mode, ok in ((0o600, True), (0o640, True), (0o604, False), (0o660, False)):
        os.chmod(secret, mode)
        if ok:
            assert load(tmp_path, text).groups[0].carp.secret() == "s3cret"
        else:
            with pytest.raises(ConfigError):
                load(tmp_path, text)


def test_locate_order(tmp_path, monkeypatch):
    monkeypatch.delenv("CARPHOOKS_CONFIG", raising=False)
    assert configmod.locate(None) == Path("/usr/local/etc/carphooks.toml")
    monkeypatch.setenv("CARPHOOKS_CONFIG", str(tmp_path / "env.toml"))
    assert configmod.locate(None) == tmp_path / "env.toml"
    assert configmod.locate(str(tmp_path / "x.toml")) == tmp_path / "x.toml"


def test_sample_config_is_valid(tmp_path):
    sample = Path(__file__).parent.parent / "carphooks.toml.sample"
    if not sample.exists():
        pytest.fail("carphooks.toml.sample is missing")
    path = write_config(tmp_path / "sample.toml", sample.read_text())
    cfg = configmod.load(path, check_permissions=False)  # its password file lives on the host
    assert cfg.groups
    assert all(line.startswith("#") or not line.strip() or "=" in line or line.startswith("[")
               for line in sample.read_text().splitlines())
