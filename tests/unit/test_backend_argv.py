"""Exact argv of the FreeBSD and Linux backends, through the recording fake runner."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import netifaces
import pytest

from carphooks.backends.base import Change, InterfaceMissing
from carphooks.backends.freebsd import FreeBSDBackend
from carphooks.backends.linux import LinuxBackend
from carphooks.config import CarpParams, Group
from carphooks.errors import CommandError, ConfigError
from carphooks.state import StateDir

from .fakerunner import FakeFreeBSD, FakeRunner


def ch(op: str, text: str, ifname: str = "vtnet0") -> Change:
    return Change(op, ifname, ipaddress.ip_interface(text))


@pytest.mark.parametrize("change, argv", [
    (ch("add", "203.0.113.10/24"), ["ifconfig", "vtnet0", "inet", "203.0.113.10/24", "alias"]),
    (ch("add", "203.0.113.10/32"), ["ifconfig", "vtnet0", "inet", "203.0.113.10/32", "alias"]),
    (ch("add", "2001:db8::10/64"), ["ifconfig", "vtnet0", "inet6", "2001:db8::10/64", "alias"]),
    (ch("remove", "203.0.113.10/24"), ["ifconfig", "vtnet0", "inet", "203.0.113.10", "-alias"]),
    (ch("remove", "2001:db8::10/64"), ["ifconfig", "vtnet0", "inet6", "2001:db8::10",
                                       "-alias"]),
    (ch("add", "192.0.2.1/24", "vtnet0.100"),
     ["ifconfig", "vtnet0.100", "inet", "192.0.2.1/24", "alias"]),
])
def test_freebsd_argv(change: Change, argv: list[str]) -> None:
    assert FreeBSDBackend.argv(change) == argv


def freebsd(tmp_path: Path, bsd: FakeFreeBSD, dry_run: bool = False,
            ) -> tuple[FreeBSDBackend, FakeRunner]:
    runner = FakeRunner(bsd, dry_run=dry_run)
    return FreeBSDBackend(runner, StateDir(tmp_path / "state", dry_run=dry_run)), runner


def test_freebsd_apply_runs_each_change_and_reports_failures(tmp_path: Path) -> None:
    bsd = FakeFreeBSD().add_interface("vtnet0", "58:9c:fc:00:00:01",
                                      addresses=["203.0.113.11/24"])
    backend, runner = freebsd(tmp_path, bsd)
    failed = backend.apply([ch("add", "203.0.113.10/24"), ch("remove", "203.0.113.99/24"),
                            ch("add", "2001:db8::10/64")])
    assert runner.mutations() == [
        ["ifconfig", "vtnet0", "inet", "203.0.113.10/24", "alias"],
        ["ifconfig", "vtnet0", "inet", "203.0.113.99", "-alias"],
        ["ifconfig", "vtnet0", "inet6", "2001:db8::10/64", "alias"],
    ]
    assert failed == [(ch("remove", "203.0.113.99/24"),
                       "ifconfig vtnet0 inet 203.0.113.99 -alias: ifconfig: ioctl "
                       "(SIOCDIFADDR): Can't assign requested address")]
    assert bsd.addresses("vtnet0") == {"203.0.113.11/24", "203.0.113.10/24", "2001:db8::10/64"}


def test_freebsd_read(tmp_path: Path) -> None:
    backend, runner = freebsd(tmp_path, FakeFreeBSD().load("r13_two_vhids_1_and_10"))
    iface = backend.read("vtnet1")
    assert runner.commands() == [["ifconfig", "vtnet1"]]
    assert sorted(iface.carp) == [1, 10] and iface.mac == "58:9c:fc:00:01:02"
    with pytest.raises(InterfaceMissing, match="interface vtnet9 does not exist"):
        backend.read("vtnet9")
    runner.answer(["ifconfig", "vtnet1"], stderr="ifconfig: ioctl: Device busy\n", returncode=1)
    with pytest.raises(CommandError, match="Device busy"):
        backend.read("vtnet1")


def carp_group(peers: tuple[str, ...] = (), advbase: int = 1) -> Group:
    return Group(name="web", vhid=1, carp_interface="tap0", external_interface="vtnet0",
                 addresses=(ipaddress.ip_interface("203.0.113.10/24"),),
                 carp=CarpParams(address=ipaddress.ip_interface("192.0.2.254/24"),
                                 advbase=advbase,
                                 peers=tuple(ipaddress.IPv4Address(p) for p in peers)))


def tap0(release: str, vhid: bool) -> FakeFreeBSD:
    bsd = FakeFreeBSD(release=release).add_interface(
        "tap0", "02:00:00:00:00:11", tap=True, addresses=["192.0.2.11/24"])
    if vhid:
        bsd.add_vhid("tap0", 1, "192.0.2.254/24", "BACKUP", advbase=1, advskew=0)
    return bsd


NEW = ["ifconfig", "tap0", "inet", "192.0.2.254/24", "vhid", "1", "advbase", "1",
       "advskew", "100", "pass", "s3cret"]
UPDATE = ["ifconfig", "tap0", "vhid", "1", "advbase", "1", "advskew", "100"]


@pytest.mark.parametrize("release, vhid, peer, argv", [
    ("14.1", False, None, [*NEW, "mcast", "mcast6", "alias"]),
    ("14.1", False, "192.0.2.12", [*NEW, "peer", "192.0.2.12", "mcast6", "alias"]),
    ("13.3", False, None, [*NEW, "alias"]),
    ("15.0", False, None, [*NEW, "mcast", "mcast6", "alias"]),
    ("14.1", True, None, [*UPDATE, "mcast", "mcast6"]),  # 14.x: always name the peers
    ("14.1", True, "192.0.2.12", [*UPDATE, "peer", "192.0.2.12", "mcast6"]),
    ("13.3", True, None, UPDATE),
])
def test_configure_carp_argv(tmp_path: Path, release: str, vhid: bool, peer: str | None,
                             argv: list[str]) -> None:
    bsd = tap0(release, vhid)
    backend, runner = freebsd(tmp_path, bsd)
    current = backend.read("tap0")
    done = backend.configure_carp(carp_group(), 100, "s3cret", current,
                                  peer=ipaddress.IPv4Address(peer) if peer else None)
    assert runner.mutations() == [argv]
    assert runner.commands()[:2] == [["ifconfig", "tap0"], ["sysctl", "-n", "kern.osrelease"]]
    assert len(done) == 1
    assert backend.read("tap0").carp[1].advskew == 100  # the model took it


def test_configure_carp_unchanged_runs_nothing(tmp_path: Path) -> None:
    bsd = tap0("14.1", True)
    backend, runner = freebsd(tmp_path, bsd)
    assert backend.configure_carp(carp_group(), 0, "s3cret", backend.read("tap0")) == []
    assert runner.mutations() == []


def test_configure_carp_moves_a_unicast_vhid_back_to_multicast(tmp_path: Path) -> None:
    bsd = tap0("14.1", False)
    backend, runner = freebsd(tmp_path, bsd)
    backend.configure_carp(carp_group(), 0, "s3cret", backend.read("tap0"),
                           peer=ipaddress.IPv4Address("192.0.2.12"))
    runner.calls.clear()
    assert backend.configure_carp(carp_group(), 0, "s3cret", backend.read("tap0")) != []
    assert runner.mutations() == [["ifconfig", "tap0", "vhid", "1", "advbase", "1", "advskew",
                                   "0", "mcast", "mcast6"]]


def test_unicast_peer_refused_before_14(tmp_path: Path) -> None:
    backend, runner = freebsd(tmp_path, tap0("13.3", False))
    with pytest.raises(ConfigError, match=r"FreeBSD 14\.0 or later; this host runs "
                                          r"13\.3-RELEASE"):
        backend.configure_carp(carp_group(), 0, None, backend.read("tap0"),
                               peer=ipaddress.IPv4Address("192.0.2.12"))
    assert runner.mutations() == []
    with pytest.raises(ConfigError, match=r"need FreeBSD 14\.0 or later, but this host runs "
                                          r"13\.3-RELEASE"):
        backend.check_carp_features([carp_group(peers=("192.0.2.12",))])
    backend.check_carp_features([carp_group()])  # multicast is fine


def test_configure_carp_dry_run_hides_the_password(tmp_path: Path) -> None:
    bsd = tap0("14.1", False)
    backend, runner = freebsd(tmp_path, bsd, dry_run=True)
    backend.configure_carp(carp_group(), 100, "s3cret", backend.read("tap0"))
    assert runner.echoed == ["ifconfig tap0 inet 192.0.2.254/24 vhid 1 advbase 1 advskew 100 "
                             "pass ******** mcast mcast6 alias"]
    assert runner.mutations() == [] and 1 not in backend.read("tap0").carp


@pytest.mark.parametrize("mac, address, up, argvs", [
    ("02:00:00:00:00:11", "192.0.2.11/24", True, []),
    ("02:00:00:00:00:99", "192.0.2.11/24", True, [["ifconfig", "tap0", "ether",
                                                   "02:00:00:00:00:99"]]),
    ("02:00:00:00:00:11", "192.0.2.21/24", True,
     [["ifconfig", "tap0", "inet", "192.0.2.21/24", "alias"]]),
    ("02:00:00:00:00:11", "192.0.2.11/32", True,  # another prefix: added again
     [["ifconfig", "tap0", "inet", "192.0.2.11/32", "alias"]]),
    ("02:00:00:00:00:11", "fd00::11/64", True,
     [["ifconfig", "tap0", "inet6", "fd00::11/64", "alias"]]),
    ("02:00:00:00:00:99", "192.0.2.21/24", False,
     [["ifconfig", "tap0", "ether", "02:00:00:00:00:99"],
      ["ifconfig", "tap0", "inet", "192.0.2.21/24", "alias"], ["ifconfig", "tap0", "up"]]),
])
def test_setup_vpn(tmp_path: Path, mac: str, address: str, up: bool,
                   argvs: list[list[str]]) -> None:
    bsd = FakeFreeBSD().add_interface("tap0", "02:00:00:00:00:11", tap=True, up=up,
                                      addresses=["192.0.2.11/24"])
    backend, runner = freebsd(tmp_path, bsd)
    done = backend.setup_vpn("tap0", mac, ipaddress.ip_interface(address))
    assert runner.mutations() == argvs and len(done) == len(argvs)
    runner.calls.clear()
    assert backend.setup_vpn("tap0", mac, ipaddress.ip_interface(address)) == []  # idempotent
    assert runner.mutations() == []


def test_demotion_and_sysctls(tmp_path: Path) -> None:
    bsd = FakeFreeBSD()
    backend, runner = freebsd(tmp_path, bsd)
    backend.add_demotion(240)
    backend.add_demotion(-240)
    backend.add_demotion(240)
    assert runner.mutations() == [["sysctl", "net.inet.carp.demotion=240"],
                                  ["sysctl", "net.inet.carp.demotion=-240"],
                                  ["sysctl", "net.inet.carp.demotion=240"]]
    assert backend.sysctl("net.inet.carp.demotion") == 240
    assert backend.sysctl("net.inet.carp.nosuch") is None
    assert backend.sysctl("kern.osrelease") is None  # not an integer
    assert backend.sysctl_str("kern.osrelease") == "14.1-RELEASE"


# -- Linux ------------------------------------------------------------------------------

@pytest.mark.parametrize("change, words", [
    (ch("add", "203.0.113.10/24", "ext0"), ["addr", "add", "203.0.113.10/24", "dev", "ext0"]),
    (ch("add", "2001:db8::10/64", "ext0"),
     ["addr", "add", "2001:db8::10/64", "dev", "ext0", "nodad"]),
    (ch("remove", "203.0.113.10/24", "ext0"), ["addr", "del", "203.0.113.10/24", "dev",
                                                "ext0"]),
    (ch("remove", "2001:db8::10/64", "ext0"), ["addr", "del", "2001:db8::10/64", "dev",
                                                "ext0"]),
])
def test_linux_line(change: Change, words: list[str]) -> None:
    assert LinuxBackend.line(change) == words


def linux(tmp_path: Path, dry_run: bool = False, demotion: Path | None = None,
          ) -> tuple[LinuxBackend, FakeRunner]:
    runner = FakeRunner(dry_run=dry_run)
    return LinuxBackend(runner, StateDir(tmp_path / "state", dry_run=dry_run), demotion), runner


def test_linux_apply_one_change_is_one_ip_call(tmp_path: Path) -> None:
    backend, runner = linux(tmp_path)
    runner.answer(["ip", "addr", "add", "2001:db8::10/64", "dev", "chk0", "nodad"])
    assert backend.apply([ch("add", "2001:db8::10/64", "chk0")]) == []
    assert [(c.argv, c.stdin) for c in runner.calls] == [
        (("ip", "addr", "add", "2001:db8::10/64", "dev", "chk0", "nodad"), None)]
    assert backend.apply([]) == [] and len(runner.calls) == 1


def test_linux_apply_batches_several_changes(tmp_path: Path) -> None:
    backend, runner = linux(tmp_path)
    batch = ["ip", "-force", "-batch", "-"]
    runner.answer(batch)
    changes = [ch("add", "203.0.113.10/24", "chk0"), ch("remove", "2001:db8::10/64", "chk0")]
    assert backend.apply(changes) == []
    assert [(list(c.argv), c.stdin) for c in runner.calls] == [
        (batch, "addr add 203.0.113.10/24 dev chk0\naddr del 2001:db8::10/64 dev chk0\n")]
    runner.answer(batch, stderr="RTNETLINK answers: File exists\nCommand failed -:1\n",
                  returncode=1)
    failed = backend.apply(changes)
    assert [c for c, _ in failed] == changes  # the verification read decides which


def test_linux_setup_vpn_is_one_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netifaces, "ifaddresses", lambda name: {
        netifaces.AF_LINK: [{"addr": "02:00:00:00:00:01"}],
        netifaces.AF_INET: [{"addr": "192.0.2.11", "netmask": "255.255.255.0"}]})
    backend, runner = linux(tmp_path)
    runner.answer(["ip", "-batch", "-"])
    done = backend.setup_vpn("chk0", "02:00:00:00:00:11", ipaddress.ip_interface("fd00::11/64"))
    assert [(list(c.argv), c.stdin) for c in runner.calls] == [
        (["ip", "-batch", "-"], "link set dev chk0 address 02:00:00:00:00:11\n"
                                "addr add fd00::11/64 dev chk0 nodad\n")]
    assert len(done) == 2
    runner.calls.clear()
    runner.answer(["ip", "link", "set", "dev", "chk0", "address", "02:00:00:00:00:11"])
    backend.setup_vpn("chk0", "02:00:00:00:00:11", ipaddress.ip_interface("192.0.2.11/24"))
    assert runner.commands() == [["ip", "link", "set", "dev", "chk0", "address",
                                  "02:00:00:00:00:11"]]


def test_linux_demotion_file(tmp_path: Path) -> None:
    path = tmp_path / "demotion"
    backend, runner = linux(tmp_path, demotion=path)
    assert backend.supports_demotion and backend.sysctl("net.inet.carp.demotion") == 0
    backend.add_demotion(240)
    backend.add_demotion(240)
    backend.add_demotion(-300)
    assert path.read_text() == "180\n"
    backend.add_demotion(-500)
    assert path.read_text() == "0\n"  # never below zero
    assert runner.calls == []  # written in-process, no command
    dry, dry_runner = linux(tmp_path, dry_run=True, demotion=path)
    dry.add_demotion(240)
    assert dry_runner.echoed == [f"echo 240 > {path}"] and path.read_text() == "0\n"
    assert not linux(tmp_path)[0].supports_demotion
