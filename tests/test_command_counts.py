"""Regression guard for the cost of a hook: the commands it runs (no timings).

Commands run must be exactly the needed changes plus a constant number of reads per
interface (issue 6). The FreeBSD cases count the emulator's call log; the Linux case
counts ``ip`` through a logging wrapper on PATH, in a private network namespace.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import stat
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import BINDIR, FakeBSD, SyslogServer, mutating, run_script, write_config

N = 256


def floating(n: int) -> list[str]:
    """Half IPv4 (198.51.100.0/24, 203.0.113.0/24), half IPv6 (2001:db8:1::/64)."""
    pool4 = [f"198.51.100.{i}/24" for i in range(1, 254)] + [
        f"203.0.113.{i}/24" for i in range(1, 255) if i not in (10, 11)]
    n4 = min(len(pool4), n - n // 2)
    return pool4[:n4] + [f"2001:db8:1::{i + 1:x}/64" for i in range(n - n4)]


def group_table(name: str, vhid: int, addresses: list[str], external: str = "vtnet0") -> str:
    quoted = ", ".join(f'"{a}"' for a in addresses)
    return f"""
[[group]]
name = "{name}"
vhid = {vhid}
carp_interface = "tap0"
external_interface = "{external}"
addresses = [{quoted}]
probe = false

[group.carp]
address = "192.0.2.{254 if vhid == 1 else 100 + vhid}/24"
"""


def make_config(path: Path, state: Path, sock: Path, groups: str, backend: str = "freebsd"
                ) -> Path:
    cfg = write_config(path, f"""\
log_tag = "carphooks-test"
backend = "{backend}"
state_dir = "{state}"
syslog_socket = "{sock}"
quorum = "none"
lock_timeout = 30
{groups}""")
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    return cfg


def reads(host: FakeBSD) -> Counter[str]:
    """``ifconfig IF`` reads per interface (``-a``: one read of them all)."""
    return Counter(argv[1] for argv in host.calls("ifconfig") if len(argv) == 2)


def held(host: FakeBSD, ifname: str = "vtnet0") -> set[str]:
    return {a[0].with_prefixlen for a in host.addresses(ifname) if a[1] is None}


def hold_in_emulator(host: FakeBSD, addresses: list[str]) -> None:
    for a in addresses:
        host.add_address("vtnet0", a)


@pytest.fixture
def big(tmp_path: Path, syslog: SyslogServer) -> Path:
    """One group "web" (vhid 1) with N floating addresses on vtnet0."""
    return make_config(tmp_path / "big.toml", tmp_path / "state", syslog.path,
                       group_table("web", 1, floating(N)))


def test_reconcile_256_nothing_to_do_released(bsd: FakeBSD, big: Path) -> None:
    bsd.clear_calls()
    res = run_script("carphooks", "reconcile", env=bsd.env(), config=big)
    assert res.code == 0, res.err
    assert mutating(bsd) == []
    assert set(reads(bsd)) <= {"-a", "tap0", "vtnet0"}
    assert all(n <= 1 for n in reads(bsd).values()), reads(bsd)


def test_reconcile_256_nothing_to_do_held(bsd: FakeBSD, big: Path) -> None:
    hold_in_emulator(bsd, floating(N))
    bsd.set_carp_state("tap0", 1, "MASTER")
    bsd.clear_calls()
    res = run_script("carphooks", "reconcile", env=bsd.env(), config=big)
    assert res.code == 0, res.err
    assert mutating(bsd) == []
    assert all(n <= 1 for n in reads(bsd).values()), reads(bsd)
    assert held(bsd) >= set(floating(N))


def test_take_256_runs_exactly_256_alias_commands(bsd: FakeBSD, big: Path) -> None:
    bsd.set_carp_state("tap0", 1, "MASTER")
    bsd.clear_calls()
    res = run_script("carphooks", "reconcile", env=bsd.env(), config=big, timeout=300)
    assert res.code == 0, res.err
    changes = mutating(bsd)
    assert len(changes) == N
    assert all(argv[0] == "ifconfig" and argv[1] == "vtnet0" and argv[-1] == "alias"
               for argv in changes), changes[:3]
    added = {ipaddress.ip_interface(argv[3]) for argv in changes}
    assert added == {ipaddress.ip_interface(a) for a in floating(N)}
    # A constant number of reads: tap0 and vtnet0 in one read, then one verification
    # read that is also the re-read of the CARP state after taking (issues 10, 11).
    assert reads(bsd) == Counter({"-a": 2})
    assert held(bsd) >= set(floating(N))


def test_carp_event_with_nothing_to_do_only_reads(bsd: FakeBSD, config: Path) -> None:
    # BACKUP with nothing held, then MASTER with everything held: reads only.
    for state in ("BACKUP", "MASTER"):
        if state == "MASTER":
            hold_in_emulator(bsd, ["203.0.113.10/24", "2001:db8:10::10/64"])
        bsd.set_carp_state("tap0", 1, state)
        bsd.clear_calls()
        res = run_script("carp-event", "1@tap0", state, env=bsd.env(), config=config)
        assert res.code == 0, res.err
        assert mutating(bsd) == []
        assert [argv[0] for argv in bsd.calls()] == ["ifconfig"] * len(bsd.calls())
        assert sum(reads(bsd).values()) <= 2
        assert set(reads(bsd)) <= {"-a", "tap0", "vtnet0"}


def test_many_groups_read_each_interface_a_constant_number_of_times(
        tmp_path: Path, syslog: SyslogServer) -> None:
    groups = 8
    vhids = range(1, groups + 1)
    host = FakeBSD(tmp_path / "bsd8")
    host.add_interface("vtnet0", mac="58:9c:fc:00:00:01")
    host.add_address("vtnet0", "203.0.113.11/24")
    host.add_interface("tap0", mac="02:00:00:00:00:11", kind="tap")
    host.add_address("tap0", "192.0.2.11/24")
    addrs = floating(4 * groups)
    tables = ""
    for vhid in vhids:
        host.add_vhid("tap0", vhid)
        host.add_address("tap0", f"192.0.2.{254 if vhid == 1 else 100 + vhid}/24", vhid=vhid)
        host.set_carp_state("tap0", vhid, "MASTER")
        tables += group_table(f"g{vhid}", vhid, addrs[4 * (vhid - 1):4 * vhid])
    cfg = make_config(tmp_path / "g.toml", tmp_path / "state", syslog.path, tables)
    host.clear_calls()
    res = run_script("carphooks", "reconcile", env=host.env(), config=cfg, timeout=300)
    assert res.code == 0, res.err
    assert len(mutating(host)) == 4 * groups
    assert held(host) >= set(addrs)
    # One read of both interfaces, plus one verification read of the changed one that
    # is also the re-read of the CARP interface after taking (issues 10, 11).
    assert reads(host) == Counter({"-a": 2})


# -- Linux: one ip -batch for many changes ------------------------------------------------

needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="needs root and iproute2 to create a network namespace")


@pytest.fixture
def linux_ns(tmp_path: Path):
    name = f"chcount-{os.getpid()}-{time.monotonic_ns() % 1000000}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for argv in (["link", "add", "ext0", "type", "veth", "peer", "name", "peer0"],
                     ["link", "set", "ext0", "up"], ["link", "set", "peer0", "up"],
                     ["addr", "add", "198.51.100.254/24", "dev", "ext0"],
                     ["addr", "add", "203.0.113.11/24", "dev", "ext0"]):
            subprocess.run(["ip", "-n", name, *argv], check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def ns_floating(name: str) -> set[str]:
    out = subprocess.run(["ip", "-n", name, "-o", "addr", "show", "dev", "ext0"],
                         capture_output=True, text=True, check=True).stdout
    found = {w[3] for w in (line.split() for line in out.splitlines())
             if len(w) > 3 and w[2] in ("inet", "inet6")}
    return found - {"198.51.100.254/24", "203.0.113.11/24"} - {
        a for a in found if a.startswith("fe80:")}


@needs_netns
def test_linux_256_changes_are_one_ip_batch(linux_ns: str, tmp_path: Path,
                                            syslog: SyslogServer) -> None:
    wrap = tmp_path / "wrap"
    wrap.mkdir()
    log = tmp_path / "ip.log"
    real_ip = shutil.which("ip") or "ip"
    (wrap / "ip").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec {real_ip} "$@"\n')
    (wrap / "ip").chmod(0o755)
    addrs = floating(N)
    cfg = make_config(tmp_path / "l.toml", tmp_path / "state", syslog.path,
                      group_table("web", 1, addrs, external="ext0"), backend="linux")
    env = dict(os.environ, PATH=f"{wrap}:{os.environ.get('PATH', '')}",
               CARPHOOKS_CONFIG=str(cfg))

    def event(state: str) -> list[str]:
        log.write_text("")
        proc = subprocess.run([real_ip, "netns", "exec", linux_ns, str(BINDIR / "carp-event"),
                               "1@tap0", state], env=env, capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr
        return log.read_text().splitlines()

    assert event("MASTER") == ["-force -batch -"]
    assert ns_floating(linux_ns) == set(addrs)
    assert event("MASTER") == []  # nothing to do: reads are in-process, no command
    assert event("BACKUP") == ["-force -batch -"]
    assert ns_floating(linux_ns) == set()
    assert event("BACKUP") == []
