"""The Linux backend on real interfaces inside a private network namespace (root only)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from conftest import BINDIR, SyslogServer, write_config

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="needs root and iproute2 to create a network namespace",
)

V4 = "198.51.100.100/24"
V6 = "2001:db8:100::100/64"


@pytest.fixture
def netns(tmp_path):
    name = f"chk-{os.getpid()}-{time.monotonic_ns() % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        def sh(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["ip", "netns", "exec", name, *argv], check=True,
                                  capture_output=True, text=True)
        sh("ip", "link", "add", "ext0", "type", "veth", "peer", "name", "peer0")
        sh("ip", "link", "set", "ext0", "up")
        sh("ip", "link", "set", "peer0", "up")
        sh("ip", "addr", "add", "198.51.100.11/24", "dev", "ext0")
        yield name, sh
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def linux_config(tmp_path: Path, syslog: SyslogServer, name: str, groups: list[str],
                 top: str = "") -> Path:
    """A Linux-backend config with these [[group]] bodies (vhid, interfaces, ...)."""
    text = (f'backend = "linux"\nquorum = "none"\nstate_dir = "{tmp_path / "state"}"\n'
            f'syslog_socket = "{syslog.path}"\n{top}')
    for body in groups:
        text += "[[group]]\n" + textwrap.dedent(body)
    return write_config(tmp_path / name, text)


def group(vhid: int, addresses: list[str], extra: str = "") -> str:
    """One [[group]] body on tap0/ext0 (without the probe guard unless ``extra`` sets it:
    these tests look at the addresses right after the hook returns)."""
    quoted = ", ".join(f'"{a}"' for a in addresses)
    if "probe" not in extra:
        extra = "probe = false\n" + extra
    return (f'vhid = {vhid}\ncarp_interface = "tap0"\nexternal_interface = "ext0"\n'
            f"addresses = [{quoted}]\n{extra}")


def ns_addrs(sh) -> set[str]:
    data = json.loads(sh("ip", "-j", "addr", "show", "dev", "ext0").stdout)
    return {f"{a['local']}/{a['prefixlen']}" for a in data[0]["addr_info"]
            if a.get("scope") == "global"}


def run(name: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CARPHOOKS_CONFIG=str(config))
    return subprocess.run(["ip", "netns", "exec", name, str(BINDIR / args[0]), *args[1:]],
                          env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def base_config(tmp_path, syslog: SyslogServer) -> Path:
    return linux_config(tmp_path, syslog, "c.toml", [group(1, [V4, V6])])


def test_master_backup_cycle_on_real_interfaces(netns, base_config, syslog):
    name, sh = netns
    res = run(name, base_config, "carp-event", "1@tap0", "MASTER")
    assert res.returncode == 0, res.stderr
    assert {V4, V6} <= ns_addrs(sh)
    assert "Assigned 198.51.100.100/24 on ext0." in syslog.texts()
    # the IPv6 address is usable at once (nodad), not tentative
    info = json.loads(sh("ip", "-j", "-6", "addr", "show", "dev", "ext0").stdout)
    entry = [a for a in info[0]["addr_info"] if a["local"] == "2001:db8:100::100"]
    assert entry and not entry[0].get("tentative")
    res = run(name, base_config, "carp-event", "1@tap0", "MASTER")
    assert res.returncode == 0
    res = run(name, base_config, "carp-event", "1@tap0", "BACKUP")
    assert res.returncode == 0, res.stderr
    assert ns_addrs(sh) == {"198.51.100.11/24"}
    assert "Removed 198.51.100.100/24 from ext0." in syslog.texts()


def test_gratuitous_arp_is_sent_after_taking(netns, base_config):
    name, _ = netns
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump not installed")
    cap = subprocess.Popen(["ip", "netns", "exec", name, "tcpdump", "-l", "-n", "-i", "peer0",
                            "-c", "3", "arp or icmp6"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(0.5)
        started = time.monotonic()
        res = run(name, base_config, "carp-event", "1@tap0", "MASTER")
        hook_time = time.monotonic() - started
        assert res.returncode == 0, res.stderr
        out, _ = cap.communicate(timeout=10)
    finally:
        cap.kill()
        cap.wait()
    assert "198.51.100.100" in out
    assert hook_time < 2.0  # announcements repeat in a detached child, not in the hook


def test_reconcile_uses_recorded_state(netns, base_config):
    name, sh = netns
    assert run(name, base_config, "carp-event", "1@tap0", "MASTER").returncode == 0
    sh("ip", "addr", "del", V4, "dev", "ext0")
    res = run(name, base_config, "carphooks", "reconcile")
    assert res.returncode == 0, res.stderr
    assert V4 in ns_addrs(sh)


def test_batch_for_many_addresses(netns, tmp_path, syslog):
    name, sh = netns
    many = [f"198.51.100.{i}/24" for i in range(100, 140)]
    cfg = linux_config(tmp_path, syslog, "many.toml", [group(2, many)])
    assert run(name, cfg, "carp-event", "2@tap0", "MASTER").returncode == 0
    assert set(many) <= ns_addrs(sh)
    res = run(name, cfg, "carp-event", "--dry-run", "2@tap0", "BACKUP")
    assert res.stdout.count("would run: ip -force -batch -") == 1
    assert run(name, cfg, "carp-event", "2@tap0", "BACKUP").returncode == 0
    assert ns_addrs(sh) == {"198.51.100.11/24"}


def test_probe_guard_waits_for_the_other_holder(netns, tmp_path, syslog):
    name, sh = netns
    other = f"{name}-o"
    subprocess.run(["ip", "netns", "add", other], check=True)
    try:
        sh("ip", "link", "set", "peer0", "netns", other)
        subprocess.run(["ip", "-n", other, "link", "set", "peer0", "up"], check=True)
        subprocess.run(["ip", "-n", other, "addr", "add", V4, "dev", "peer0"], check=True)
        cfg = linux_config(tmp_path, syslog, "probe.toml", [group(1, [V4], "probe = true\n")])
        started = time.monotonic()
        res = run(name, cfg, "carp-event", "1@tap0", "MASTER")
        assert res.returncode == 0, res.stderr
        assert time.monotonic() - started < 2.0  # the probing happens after the hook returned
        for _ in range(2):  # repeated events (or a frequent reconcile) start no second prober
            assert run(name, cfg, "carp-event", "1@tap0", "MASTER").returncode == 0
        time.sleep(1.5)
        assert V4 not in ns_addrs(sh)  # the other host still answers: not taken
        assert sum("is answered by" in t for t in syslog.texts()) == 1
        subprocess.run(["ip", "-n", other, "addr", "del", V4, "dev", "peer0"], check=True)
        for _ in range(40):
            if V4 in ns_addrs(sh):
                break
            time.sleep(0.1)
        assert V4 in ns_addrs(sh)
    finally:
        subprocess.run(["ip", "netns", "del", other], check=False)


def test_release_of_a_primary_keeps_other_groups(netns, tmp_path, syslog):
    """Linux deletes every secondary with its primary unless promote_secondaries is set:
    releasing group a (first in the subnet) must not take group b's address with it."""
    name, sh = netns
    sh("ip", "addr", "flush", "dev", "ext0")
    sh("sysctl", "-qw", "net.ipv4.conf.ext0.promote_secondaries=0")
    cfg = linux_config(tmp_path, syslog, "two.toml", [
        group(1, ["203.0.113.10/24"], 'name = "a"\n'),
        group(2, ["203.0.113.20/24"], 'name = "b"\n'),
    ])
    assert run(name, cfg, "carp-event", "1@tap0", "MASTER").returncode == 0
    assert run(name, cfg, "carp-event", "2@tap0", "MASTER").returncode == 0
    res = run(name, cfg, "carp-event", "1@tap0", "BACKUP")
    assert res.returncode == 0, res.stderr
    assert ns_addrs(sh) == {"203.0.113.20/24"}


def test_demotion_file_for_keepalived(netns, tmp_path, syslog):
    """On Linux, carphooks' CARP demotion goes to a file keepalived tracks (track_file,
    weight -1), with the same bookkeeping as net.inet.carp.demotion on FreeBSD."""
    name, sh = netns
    demotion = tmp_path / "demotion"
    cfg = linux_config(tmp_path, syslog, "d.toml", [group(1, [V4])],
                       top=f'demotion_file = "{demotion}"\n')
    demotion.write_text("5\n")  # someone else's share is never touched
    assert run(name, cfg, "carp-event", "1@tap0", "BACKUP").returncode == 0
    res = run(name, cfg, "carphooks", "maintenance", "on", "--wait", "0")
    assert res.returncode == 0, res.stderr
    assert demotion.read_text().strip() == "245"
    res = run(name, cfg, "carphooks", "maintenance", "on", "--wait", "0")
    assert demotion.read_text().strip() == "245"
    res = run(name, cfg, "carphooks", "maintenance", "status")
    assert "maintenance on" in res.stdout
    assert run(name, cfg, "carphooks", "maintenance", "off").returncode == 0
    assert demotion.read_text().strip() == "5"
    # still MASTER when maintenance starts and nobody takes over: say so, keep serving
    assert run(name, cfg, "carp-event", "1@tap0", "MASTER").returncode == 0
    res = run(name, cfg, "carphooks", "maintenance", "on", "--wait", "0.5")
    assert res.returncode == 1 and "no peer took over" in res.stderr
    assert V4 in ns_addrs(sh)
