"""The emulator's ``ifconfig -a``, which the hooks read the CARP and the floating
interface with (issue 11): as sbin/ifconfig/ifconfig.c ``args_parse``, ``main`` and
``list_interfaces`` (-> ifconfig_netlink.c ``list_interfaces_nl`` -> ``status_nl``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakebsd.control import FakeBSD


@pytest.fixture
def host(tmp_path: Path) -> FakeBSD:
    bsd = FakeBSD(tmp_path / "bsd")
    bsd.add_interface("vtnet0", mac="58:9c:fc:00:00:01")
    bsd.add_address("vtnet0", "203.0.113.11/24")
    bsd.add_interface("tap0", mac="02:00:00:00:00:11", kind="tap")
    bsd.add_vhid("tap0", 1)
    bsd.add_address("tap0", "192.0.2.254/24", vhid=1)
    return bsd


@pytest.mark.parametrize("args, message", [
    (["-a", "tap0"], "ifconfig: Address family 'tap0' unknown."),  # not an interface
    (["-a", "inet", "tap0"], "usage: ifconfig"),
    (["-a", "-l"], "usage: ifconfig"),
])
def test_anything_but_a_family_after_a_is_a_usage_error(host: FakeBSD, args: list[str],
                                                        message: str) -> None:
    res = host.run("ifconfig", *args)
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.startswith(message)
