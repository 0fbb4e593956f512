"""Direct tinc links (carphooks.mesh): the rendered full mesh, its detection from tincd's
TCP sockets (FreeBSD sockstat, Linux ss), ``carphooks status`` and ``carphooks check``."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from conftest import FakeBSD, SyslogServer, run_script, write_config
from fakebsd import fakebsd_sockstat as fake_sockstat
from setupkit import target, write_cluster

from carphooks import config as configmod
from carphooks import mesh
from carphooks.setup import check, render
from carphooks.state import StateDir

HOSTS = {"hA": "198.51.100.11", "hB": "198.51.100.12", "hC": "198.51.100.13"}
PUBKEY = """-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEAxUs9Address = 203.0.113.99
Port = 1
-----END RSA PUBLIC KEY-----
"""


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


# -- rendering: a full mesh with a bounded back-off ------------------------------------------

def settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in mesh.tinc_settings(text):
        out.setdefault(key, []).append(value)
    return out


def test_rendered_tinc_conf_is_a_full_mesh_with_bounded_reconnects(tmp_path: Path) -> None:
    path = write_cluster(tmp_path / "c.toml", "tinc",
                         replace=('nodes = ["hA", "hB", "hC"]',
                                  'nodes = ["hA", "hB", "hC"]\nwitnesses = ["w1"]'))
    config = configmod.load(path)
    for host in ("hA", "hB", "hC"):
        conf = settings(render.render(target(config, host), "tinc.conf").text)
        # every other voter, the witness included: no pair depends on a third node
        assert sorted(conf["connectto"]) == sorted(set(config.voters) - {host})
        # tinc 1.0 backs off 5 s more per failure up to MaxTimeout (default 900 s)
        (max_timeout,) = conf["maxtimeout"]
        assert 0 < int(max_timeout) <= 10
        # tincd lowers PingTimeout to PingInterval: a larger one would be a lie; on its
        # whole-second clock a PingTimeout of 1 may leave a PONG only milliseconds
        (interval,), (timeout,) = conf["pinginterval"], conf["pingtimeout"]
        assert 2 <= int(timeout) <= int(interval)
        # a dead link is still noticed within seconds (defaults: 60 and 5)
        assert int(interval) + 2 * int(timeout) <= 6


def test_install_follows_tinc_confbase(tmp_path: Path) -> None:
    path = write_cluster(tmp_path / "c.toml", "tinc",
                         replace=('netname = "carp"',
                                  'netname = "carp"\nconfbase = "/etc/tinc-cluster"'))
    config = configmod.load(path)
    assert config.tinc_dir == Path("/etc/tinc-cluster")
    dests = {r.kind.name: r.dest for r in render.render_install_set(target(config, "hA"))}
    assert dests["tinc.conf"] == "/etc/tinc-cluster/tinc.conf"
    assert dests["host-up"] == "/etc/tinc-cluster/host-up"
    bad = write_cluster(tmp_path / "bad.toml", "tinc",
                        replace=('netname = "carp"', 'netname = "carp"\nconfbase = "etc/x"'))
    with pytest.raises(configmod.ConfigError, match=r"tinc\.confbase"):
        configmod.load(bad)


# -- parsing ---------------------------------------------------------------------------------

def test_hosts_file_addresses_ports_and_key_block() -> None:
    text = ("# hB\nAddress = 198.51.100.12\nAddress=2001:db8::12 656\n"
            "Address   bhost.example 657\nPort = 700\nSubnet = 02:00:00:00:00:12\n" + PUBKEY)
    seen: list[str] = []

    def resolve(name: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        seen.append(name)
        return [ip("192.0.2.77")]

    node = mesh.node_address(text, resolve)
    assert node.ips == {ip("198.51.100.12"), ip("2001:db8::12"), ip("192.0.2.77")}
    assert node.ports == {656, 657, 700}  # nothing from inside the key block
    assert seen == ["bhost.example"] and node.names == ("bhost.example",)
    assert mesh.node_address("Address = 198.51.100.12\n").ports == {655}
    assert mesh.node_address("Port = 700\nPort = 701\n").ports == {700}  # the first
    # tinc.conf and hosts/ME in one tree: lowest line number first, then hosts/ME
    assert mesh.own_port("Name = hA\n", "Port = 1655\n") == 1655
    assert mesh.own_port("Name = hA\nPort = 800\n", "Port = 1655\n") == 1655
    assert mesh.own_port("Port = 800\n", "Address = x\nPort = 1655\n") == 800
    assert mesh.own_port("Port = 800\n", "Port = 1655\n") == 1655
    assert mesh.own_port("", "") == 655


SOCKSTAT = "\n".join([
    "USER     COMMAND    PID   FD  PROTO  LOCAL ADDRESS         "
    "FOREIGN ADDRESS       PATH STATE   CONN STATE",
    "root     tincd       1234 5   tcp4   198.51.100.11:655     "
    "198.51.100.12:40312                ESTABLISHED",
    "root     tincd       1234 7   tcp6   2001:db8::11:41000    "
    "2001:db8::13:655                   ESTABLISHED",
    "root     tincd       1234 8   tcp4   198.51.100.11:41002   "
    "198.51.100.13:655                  SYN_SENT",
    "root     my daemon    99 5   tcp4   198.51.100.11:22      "
    "198.51.100.2:50000                 ESTABLISHED",
    "?        ?          ?     ?   tcp4   198.51.100.11:41001   "
    "198.51.100.13:655                  TIME_WAIT",
])


def test_parse_sockstat() -> None:
    conns = mesh.parse_sockstat(SOCKSTAT)
    assert [(c.command, str(c.local), str(c.remote)) for c in conns] == [
        ("tincd", "198.51.100.11:655", "198.51.100.12:40312"),
        ("tincd", "[2001:db8::11]:41000", "[2001:db8::13]:655"),
        ("my daemon", "198.51.100.11:22", "198.51.100.2:50000"),
    ]


def test_parse_sockstat_reads_the_fake_like_the_real_layout(tmp_path: Path) -> None:
    bsd = FakeBSD(tmp_path / "bsd")
    fake_sockstat.add_socket(bsd, local="198.51.100.11:655", foreign="198.51.100.12:40312")
    fake_sockstat.add_socket(bsd, local="*:655", state="LISTEN")
    fake_sockstat.add_socket(bsd, local="fe80::1%vtnet0:655", foreign="fe80::2%vtnet0:40000")
    out = bsd.run(*mesh.COMMANDS["freebsd"], check=True).stdout
    conns = mesh.parse_sockstat(out)
    assert [(str(c.local), str(c.remote)) for c in conns] == [
        ("198.51.100.11:655", "198.51.100.12:40312"), ("[fe80::1]:655", "[fe80::2]:40000")]
    bad = bsd.run("sockstat", "-x")
    assert bad.returncode == 1 and "usage: sockstat" in bad.stderr


SS = "\n".join([
    '0      0               198.51.100.11:655    '
    '198.51.100.12:43399 users:(("tincd",pid=19,fd=4))',
    '0      0      [::ffff:198.51.100.11]:655 '
    '[::ffff:198.51.100.13]:60012 users:(("tincd",pid=19,fd=5))',
    '0      0                   [::1]:43399              '
    '[::1]:41554 users:(("python3",pid=7,fd=7),("x",pid=8,fd=3))',
    '0      0        198.51.100.11:22     '
    '198.51.100.2:50000',
])


def test_parse_ss() -> None:
    conns = mesh.parse_ss(SS)
    assert [(c.command, str(c.local), str(c.remote)) for c in conns] == [
        ("tincd", "198.51.100.11:655", "198.51.100.12:43399"),
        ("tincd", "198.51.100.11:655", "198.51.100.13:60012"),  # IPv4-mapped unwrapped
        ("python3", "[::1]:43399", "[::1]:41554"),
        ("x", "[::1]:43399", "[::1]:41554"),
        ("", "198.51.100.11:22", "198.51.100.2:50000"),
    ]


# -- matching ----------------------------------------------------------------------------------

def conn(local: str, remote: str, command: str = "tincd") -> mesh.TcpConn:
    return mesh.TcpConn(command, mesh.parse_endpoint(local), mesh.parse_endpoint(remote))


def test_direct_links_match_address_and_port_exactly() -> None:
    nodes = {"hB": mesh.node_address("Address = 198.51.100.12\n"),
             "hC": mesh.node_address("Address = 198.51.100.13\nPort = 700\n")}
    links = mesh.direct_links([
        conn("198.51.100.11:655", "198.51.100.12:43399"),  # hB connected to us
        conn("198.51.100.11:41000", "198.51.100.13:655"),  # hC's address, wrong port
        conn("198.51.100.11:41001", "198.51.100.130:700", "tincd"),  # .130 is not .13
        conn("198.51.100.11:41002", "198.51.100.13:700", "sshd"),  # not tincd
    ], nodes, my_port=655)
    assert links["hB"] is not None and links["hC"] is None
    links = mesh.direct_links([conn("198.51.100.11:41003", "198.51.100.13:700")], nodes, 655)
    assert links["hC"] is not None  # we connected to hC's Port
    # another tinc network on this host (its own port) does not count
    links = mesh.direct_links([conn("198.51.100.11:656", "198.51.100.12:43399")], nodes, 655)
    assert links["hB"] is None


def tinc_dir(tmp_path: Path, me: str = "hA", port: str = "") -> Path:
    base = tmp_path / "tinc"
    (base / "hosts").mkdir(parents=True, exist_ok=True)
    (base / "tinc.conf").write_text(f"Name = {me}\nMode = switch\n{port}")
    for name, addr in HOSTS.items():
        (base / "hosts" / name).write_text(f"Address = {addr}\n{PUBKEY}")
    return base


def test_mesh_states(tmp_path: Path) -> None:
    base = tinc_dir(tmp_path)
    conns = [conn("198.51.100.11:655", "198.51.100.12:43399")]
    view = mesh.mesh(base, "hA", ("hA", "hB", "hC"), {"hB", "hC"}, conns)
    assert {v.name: v.state for v in view.voters} == {"hB": "direct", "hC": "indirect"}
    assert view.complete is False and [v.name for v in view.indirect] == ["hC"]
    view = mesh.mesh(base, "hA", ("hA", "hB", "hC"), {"hB"}, conns)
    assert {v.name: v.state for v in view.voters} == {"hB": "direct", "hC": "unreachable"}
    (base / "hosts" / "hC").unlink()
    view = mesh.mesh(base, "hA", ("hA", "hB", "hC"), {"hB", "hC"}, conns)
    assert view.voters[1].state == "unknown" and "hosts/hC" in str(view.voters[1].note)
    assert view.complete is None
    view = mesh.mesh(base, "hA", ("hA", "hB", "hC"), {"hB", "hC"}, None, error="no sockstat")
    assert [v.state for v in view.voters] == ["unknown", "unknown"]
    assert mesh.describe(view.as_json()).endswith("; no sockstat")


# -- status and check through the FreeBSD emulator ---------------------------------------------

CLUSTER = """\
log_tag = "carphooks-test"
backend = "freebsd"
state_dir = "{state}"
syslog_socket = "{sock}"
lock_timeout = 5

[tinc]
netname = "carp"
nodes = ["hA", "hB", "hC"]
confbase = "{tinc}"

[hosts.hA]
vpn_address = "192.0.2.11/24"

[[group]]
name = "web"
vhid = 1
carp_interface = "tap0"
external_interface = "vtnet0"
addresses = ["203.0.113.10/24"]

[group.carp]
address = "192.0.2.254/24"
password = "s3cret"
"""


@pytest.fixture
def cluster(tmp_path: Path, bsd: FakeBSD, syslog: SyslogServer) -> Path:
    base = tinc_dir(tmp_path)
    cfg = write_config(tmp_path / "cluster.toml", CLUSTER.format(
        state=tmp_path / "state", sock=syslog.path, tinc=base))
    StateDir(tmp_path / "state").write_peers(frozenset({"hB", "hC"}), tinc_up=True)
    # hB connected to us; hC is reached through hB only (our attempt still connecting)
    fake_sockstat.add_socket(bsd, local="198.51.100.11:655", foreign="198.51.100.12:40312")
    fake_sockstat.add_socket(bsd, local="198.51.100.11:41002", foreign="198.51.100.13:655",
                             state="SYN_SENT")
    fake_sockstat.add_socket(bsd, local="*:655", state="LISTEN")
    return cfg


def test_status_shows_how_each_voter_is_reached(bsd: FakeBSD, cluster: Path) -> None:
    env = dict(bsd.env(), CARPHOOKS_HOST="hA")
    res = run_script("carphooks", "status", "--json", env=env, config=cluster)
    assert res.code == 0, res.err
    report = json.loads(res.out)["mesh"]
    assert report["complete"] is False and report["error"] is None
    assert report["voters"]["hB"]["state"] == "direct"
    assert report["voters"]["hB"]["link"] == "198.51.100.11:655 - 198.51.100.12:40312"
    assert report["voters"]["hC"] == {"reachable": True, "direct": False, "state": "indirect",
                                      "link": None, "note": None}
    assert ["sockstat", "-46", "-c", "-s", "-P", "tcp"] in bsd.calls()
    text = run_script("carphooks", "status", env=env, config=cluster)
    assert "tinc links: hB direct, hC only through another node" in text.out
    # the link comes up
    fake_sockstat.add_socket(bsd, local="198.51.100.11:41003", foreign="198.51.100.13:655")
    report = json.loads(run_script("carphooks", "status", "--json", env=env,
                                   config=cluster).out)["mesh"]
    assert report["complete"] is True


def test_status_when_sockstat_fails(bsd: FakeBSD, cluster: Path) -> None:
    bsd.fail_next(["sockstat"], "sockstat: cap_sysctlbyname(): Operation not permitted", 1)
    env = dict(bsd.env(), CARPHOOKS_HOST="hA")
    res = run_script("carphooks", "status", "--json", env=env, config=cluster)
    assert res.code == 0, res.err
    report = json.loads(res.out)["mesh"]
    assert report["complete"] is None
    assert "Operation not permitted" in report["error"]
    assert {v["state"] for v in report["voters"].values()} == {"unknown"}


def test_check_warns_when_a_voter_is_reached_only_through_another(
        bsd: FakeBSD, cluster: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in bsd.env().items():
        monkeypatch.setenv(key, value)

    def tinc_links() -> check.Check:
        doc = check.Doctor(config_path=cluster, host="hA", bindir="/usr/local/bin")
        tgt = render.target(configmod.load(cluster, check_permissions=False), host="hA",
                            bindir="/usr/local/bin")
        doc.check_mesh(tgt)
        return next(c for c in doc.checks if c.name == "tinc links")

    line = tinc_links()
    assert line.status == check.WARN
    assert "hC is reached only through another node" in line.message
    assert "tincd -n carp -kALRM" in line.fix and "hosts/hC" in line.fix
    fake_sockstat.add_socket(bsd, local="198.51.100.11:41003", foreign="198.51.100.13:655")
    line = tinc_links()
    assert line.status == check.OK, line.line()
    assert "hB (198.51.100.11:655 - 198.51.100.12:40312)" in line.message
    StateDir(cluster.parent / "state").write_peers(frozenset({"hB"}), tinc_up=True)
    fake_sockstat.clear_sockets(bsd)
    fake_sockstat.add_socket(bsd, local="198.51.100.11:655", foreign="198.51.100.12:40312")
    line = tinc_links()
    assert line.status == check.WARN and "hC is unreachable" in line.message
