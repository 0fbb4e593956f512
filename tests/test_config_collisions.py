"""Floating addresses that collide with a host's own: refused at load, or never removed.

At load (exit 6): a host's vpn_address, a vhid's CARP address, a unicast peer, /0,
0.0.0.0/8 and 240.0.0.0/4 (with 255.255.255.255), IPv4-mapped/-compatible IPv6.
At run time: the interface's primary IPv4 address (the first one; ``ifconfig IF inet
A/P`` without ``alias`` replaces it, sbin/ifconfig/af_inet.c ``in_delete_first_nl``)
is not removed when no other IPv4 address would be left: that is the host's own.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from conftest import BASE_CONFIG, SyslogServer, addrs, mutating, run_script, write_config
from fakebsd.control import FakeBSD
from setupkit import write_cluster

from carphooks import config as configmod
from carphooks.backends.base import AddrInfo, Change, Interface
from carphooks.errors import ConfigError

FLOATING = '"198.51.100.100/24", "2001:db8:100::100/64"'


@pytest.mark.parametrize("floating, message", [
    ('"192.0.2.12/24"', "group[0].addresses[0]: 192.0.2.12 is also hosts.hB.vpn_address"),
    ('"192.0.2.11/32"', "192.0.2.11 is also hosts.hA.vpn_address"),
    ('"192.0.2.253/24"', "192.0.2.253 is also group[1].carp.address"),
    ('"192.0.2.254/24"', "192.0.2.254 is also group[0].carp.address"),
    ('"198.51.100.100/0"', "a /0 prefix"),
    ('"2001:db8:100::100/0"', "a /0 prefix"),
    ('"255.255.255.255/32"', "limited broadcast"),
    ('"240.0.0.1/24"', "240.0.0.0/4"),
    ('"0.1.2.3/8"', "0.0.0.0/8"),
    ('"::ffff:198.51.100.100/128"', "IPv4-mapped"),
    ('"::198.51.100.100/128"', "IPv4-compatible"),
])
def test_own_and_impossible_addresses_are_refused_at_load(tmp_path: Path, floating: str,
                                                          message: str) -> None:
    path = write_cluster(tmp_path / "c.toml", "tinc",
                         replace=(f"addresses = [{FLOATING}]", f"addresses = [{floating}]"))
    with pytest.raises(ConfigError) as info:
        configmod.load(path)
    line = str(info.value)
    assert line.startswith(f"{path}: group[0].addresses[0]: ")
    assert message in line and "\n" not in line


def test_a_unicast_peer_cannot_float(tmp_path: Path) -> None:
    path = write_cluster(tmp_path / "u.toml", "unicast",
                         replace=('addresses = ["198.51.100.107/24"]',
                                  'addresses = ["10.0.0.12/24"]'))
    with pytest.raises(ConfigError, match=r"group\[1\]\.addresses\[0\]: 10\.0\.0\.12 is also "
                                          r"hosts\.hB\.vpn_address"):
        configmod.load(path)
    text = path.read_text().replace('addresses = ["10.0.0.12/24"]',
                                    'addresses = ["10.0.0.99/24"]').replace(
        'peers = ["10.0.0.11", "10.0.0.12", "10.0.0.13"]',
        'peers = ["10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.99"]')
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"10\.0\.0\.99 is also group\[0\]\.carp\.peers\[3\]"):
        configmod.load(path)


def test_carp_event_exits_6_on_a_colliding_config(tmp_path: Path,
                                                   syslog: SyslogServer) -> None:
    host = FakeBSD(tmp_path / "bsd")
    host.add_interface("vtnet0")
    host.add_address("vtnet0", "203.0.113.11/24")
    text = BASE_CONFIG.format(state=tmp_path / "state", sock=syslog.path).replace(
        '"203.0.113.10/24"', '"192.0.2.254/24"')  # the vhid's own CARP address
    path = write_config(tmp_path / "c.toml", text)
    host.clear_calls()
    res = run_script("carp-event", "1@tap0", "BACKUP", env=host.env(), config=path)
    assert res.code == 6, res.err
    assert "192.0.2.254 is also group[0].carp.address" in res.err
    assert host.calls() == []


# -- the primary address at run time ----------------------------------------------------


def own_address_as_floating(tmp_path: Path, syslog: SyslogServer) -> Path:
    """A config whose group lists 203.0.113.11, which is this host's own address."""
    text = BASE_CONFIG.format(state=tmp_path / "state", sock=syslog.path).replace(
        '"203.0.113.10/24", "2001:db8:10::10/64"', '"203.0.113.11/24", "203.0.113.10/24"')
    return write_config(tmp_path / "c.toml", text)


@pytest.fixture
def host(tmp_path: Path) -> FakeBSD:
    bsd = FakeBSD(tmp_path / "bsd", release="14.1")
    bsd.add_interface("vtnet0", mac="58:9c:fc:00:00:01")
    bsd.add_address("vtnet0", "203.0.113.11/24")  # the host's own, first: the primary
    bsd.add_interface("tap0", kind="tap")
    bsd.add_address("tap0", "192.0.2.11/24")
    bsd.add_vhid("tap0", 1)
    bsd.add_address("tap0", "192.0.2.254/24", vhid=1)
    bsd.set_carp_state("tap0", 1, "BACKUP")
    return bsd


def test_backup_never_removes_the_hosts_only_address(host: FakeBSD, tmp_path: Path,
                                                     syslog: SyslogServer) -> None:
    config = own_address_as_floating(tmp_path, syslog)
    host.clear_calls()
    res = run_script("carp-event", "1@tap0", "BACKUP", env=host.env(), config=config)
    assert res.code == 1, (res.out, res.err)
    assert addrs(host, "vtnet0") == {"203.0.113.11/24"}
    assert mutating(host) == []
    assert any("refusing to remove 203.0.113.11/24 from vtnet0" in m.message
               and m.severity == 3 for m in syslog.messages())


def test_backup_removes_the_floating_ones_but_not_the_primary(host: FakeBSD, tmp_path: Path,
                                                              syslog: SyslogServer) -> None:
    config = own_address_as_floating(tmp_path, syslog)
    host.set_carp_state("tap0", 1, "MASTER")
    res = run_script("carp-event", "1@tap0", "MASTER", env=host.env(), config=config)
    assert res.code == 0, res.err
    assert addrs(host, "vtnet0") == {"203.0.113.11/24", "203.0.113.10/24"}
    host.set_carp_state("tap0", 1, "BACKUP")
    host.clear_calls()
    res = run_script("carp-event", "1@tap0", "BACKUP", env=host.env(), config=config)
    assert res.code == 1
    assert addrs(host, "vtnet0") == {"203.0.113.11/24"}
    assert mutating(host) == [["ifconfig", "vtnet0", "inet", "203.0.113.10", "-alias"]]


def _iface(*entries: tuple[str, int | None]) -> Interface:
    return Interface(name="vtnet0", addresses=[
        AddrInfo(iface=ipaddress.ip_interface(a), vhid=v) for a, v in entries])


def _remove(*texts: str) -> list[Change]:
    return [Change("remove", "vtnet0", ipaddress.ip_interface(t)) for t in texts]


def test_keep_primary_rules() -> None:
    from carphooks.runtime.engine import keep_primary, primary_address

    own = _iface(("203.0.113.11/24", None), ("203.0.113.10/24", None))
    assert primary_address(own) == ipaddress.ip_interface("203.0.113.11/24")
    # the primary goes and nothing would be left: refused, the other change kept
    kept, errors = keep_primary(_remove("203.0.113.11/24", "203.0.113.10/24"), own)
    assert kept == _remove("203.0.113.10/24") and len(errors) == 1
    # another IPv4 address stays: a floating primary may go (Linux test: two groups)
    kept, errors = keep_primary(_remove("203.0.113.11/24"), own)
    assert kept == _remove("203.0.113.11/24") and errors == []
    # a re-prefix of the lone primary (remove + add of the same address) is refused whole
    lone = _iface(("203.0.113.11/24", None))
    changes = [*_remove("203.0.113.11/24"),
               Change("add", "vtnet0", ipaddress.ip_interface("203.0.113.11/32"))]
    assert keep_primary(changes, lone)[0] == []
    # a vhid address first: no primary of the host's own to protect
    carp_first = _iface(("203.0.113.1/24", 1), ("203.0.113.10/24", None))
    assert primary_address(carp_first) is None
    assert keep_primary(_remove("203.0.113.10/24"), carp_first) == \
        (_remove("203.0.113.10/24"), [])
    # IPv6 is not guarded
    v6 = _iface(("2001:db8::10/64", None))
    assert keep_primary(_remove("2001:db8::10/64"), v6) == (_remove("2001:db8::10/64"), [])
