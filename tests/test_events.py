"""devd arguments and tinc environments are validated strictly."""

from __future__ import annotations

import pytest

from carphooks.backends.base import CarpState
from carphooks.errors import UsageError
from carphooks.runtime.events import parse_carp_event, parse_tinc_env


@pytest.mark.parametrize("subsystem, vhid, ifname", [
    ("1@vtnet0", 1, "vtnet0"), ("220@lagg0_vlan220", 220, "lagg0_vlan220"),
    ("10@vtnet0.100", 10, "vtnet0.100"), ("255@tap0", 255, "tap0"), ("007@tap0", 7, "tap0"),
])
def test_good_subsystems(subsystem, vhid, ifname):
    for word in ("MASTER", "master", "Backup", "INIT"):
        event = parse_carp_event(subsystem, word)
        assert (event.vhid, event.interface, event.state) == (vhid, ifname,
                                                             CarpState(word.upper()))
        assert event.subsystem == f"{vhid}@{ifname}"


@pytest.mark.parametrize("subsystem", [
    "", "1", "@tap0", "1@", "0@tap0", "256@tap0", "1000@tap0", "1@tap 0", "1@-tap0",
    "a@tap0", "1@tap0\n", " 1@tap0", "1@tap0;reboot", "1@$(id)", "1@tap0@x",
    "1@averyveryverylongname0",
])
def test_bad_subsystems(subsystem):
    with pytest.raises(UsageError, match="bad subsystem"):
        parse_carp_event(subsystem, "MASTER")


@pytest.mark.parametrize("type_", ["", "MASTERS", "LINK_UP", " MASTER", "MASTER\n", "1"])
def test_bad_types(type_):
    with pytest.raises(UsageError, match="bad type"):
        parse_carp_event("1@tap0", type_)


def test_tinc_env():
    env = {"NETNAME": "carp", "NAME": "hA", "DEVICE": "/dev/tap0", "INTERFACE": "tap0",
           "NODE": "hB", "REMOTEADDRESS": "203.0.113.12", "REMOTEPORT": "655"}
    parsed = parse_tinc_env(env, need_node=True)
    assert (parsed.name, parsed.interface, parsed.node, parsed.netname) == (
        "hA", "tap0", "hB", "carp")
    assert parse_tinc_env(env, need_node=False).node is None
    no_net = dict(env, NETNAME="")  # tinc 1.0 without -n exports it empty
    assert parse_tinc_env(no_net, need_node=False).netname is None
    with pytest.raises(UsageError, match="NODE"):
        parse_tinc_env(dict(env, NODE=""), need_node=True)
    with pytest.raises(UsageError, match="NAME"):
        parse_tinc_env({"INTERFACE": "tap0"}, need_node=False)
