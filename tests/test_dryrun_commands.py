"""Honest dry runs (issue 12, item 4): ``-n``/``--dry-run`` on every command writes
nothing. Over the FreeBSD emulator, for each command: the state directory's tree is
byte-for-byte, mode-for-mode and mtime-for-mtime the same, the emulated kernel runs
no change, and syslog gets no line claiming a change; what would change is worded
"would ...".
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest
from conftest import BASE_CONFIG, FakeBSD, SyslogServer, addrs, mutating, run_script, write_config

V4 = "203.0.113.10/24"
V6 = "2001:db8:10::10/64"
TINC = {"NETNAME": "carp", "NAME": "hA", "DEVICE": "/dev/tap0", "INTERFACE": "tap0"}

# Words of a syslog line that says something was (or is being) changed.
CLAIMS = re.compile(r"\b(assigned|removed|repaired|demoted|configured|updated|brought|"
                    r"releasing|released|taken|took|requested|regained|lost|set MAC|"
                    r"maintenance (on|off)|added|subtracted)\b", re.I)


def cluster_config(tmp_path: Path, syslog: SyslogServer) -> Path:
    """Three voters (hA is this host), quorum by majority, one group on tap0/vtnet0."""
    text = BASE_CONFIG.format(state=tmp_path / "state", sock=syslog.path).replace(
        'quorum = "none"', 'quorum = "majority"')
    text += ('\n[tinc]\nnodes = ["hA", "hB", "hC"]\n'
             '[hosts.hA]\nvpn_address = "192.0.2.11/24"\nmac = "02:00:00:00:00:11"\n'
             '[hosts.hB]\nvpn_address = "192.0.2.12/24"\n'
             '[hosts.hC]\nvpn_address = "192.0.2.13/24"\n')
    return write_config(tmp_path / "carphooks.toml", text)


def run(bsd: FakeBSD, cfg: Path, name: str, *args: str, node: str | None = None):
    env = bsd.env()
    env["CARPHOOKS_HOST"] = "hA"
    if name.startswith("tinc-"):
        env.update(TINC)
        if node:
            env.update(NODE=node, REMOTEADDRESS="203.0.113.99", REMOTEPORT="655")
    return run_script(name, *args, env=env, config=cfg)


def tree(path: Path) -> dict[str, tuple[int, int, int, int, str | None]]:
    """Every entry below ``path`` and ``path`` itself (links not followed): mode, owner,
    size, mtime (ns) and a digest of a regular file's content."""
    out = {}
    for root, dirs, files in os.walk(path):
        for name in [".", *dirs, *files] if root == str(path) else [*dirs, *files]:
            p = Path(root) / name
            st = os.lstat(p)
            digest = (hashlib.sha256(p.read_bytes()).hexdigest()
                      if p.is_file() and not p.is_symlink() else None)
            out[str(p.relative_to(path))] = (st.st_mode, st.st_uid, st.st_size,
                                             st.st_mtime_ns, digest)
    return out


@pytest.fixture
def cfg(tmp_path: Path, syslog: SyslogServer) -> Path:
    return cluster_config(tmp_path, syslog)


def lived_in(bsd: FakeBSD, cfg: Path, syslog: SyslogServer) -> None:
    """A host that has run for real: tinc up with both peers, maintenance off, the
    state directory full of records; the addresses held as BACKUP (stale)."""
    for name, args, node in (("tinc-up", (), None), ("tinc-host-up", (), "hB"),
                             ("tinc-host-up", (), "hC")):
        res = run(bsd, cfg, name, *args, node=node)
        assert res.code == 0, (name, res.err)
    bsd.set_carp_state("tap0", 1, "MASTER")
    assert run(bsd, cfg, "carp-event", "1@tap0", "MASTER").code == 0
    bsd.set_carp_state("tap0", 1, "BACKUP")  # the BACKUP event is still to come
    syslog.raw.clear()
    bsd.clear_calls()


def master_missing_v4(bsd: FakeBSD, cfg: Path) -> None:
    bsd.set_carp_state("tap0", 1, "MASTER")
    bsd.remove_address("vtnet0", V4)


def master_holding(bsd: FakeBSD, cfg: Path) -> None:
    bsd.set_carp_state("tap0", 1, "MASTER")
    assert run(bsd, cfg, "carp-event", "1@tap0", "MASTER").code == 0


def one_peer_left(bsd: FakeBSD, cfg: Path) -> None:
    """MASTER with the addresses, hC gone: losing hB too loses the quorum."""
    master_holding(bsd, cfg)
    assert run(bsd, cfg, "tinc-host-down", node="hC").code == 0


def no_peer_left(bsd: FakeBSD, cfg: Path) -> None:
    """MASTER without quorum (released, demoted): hB coming back regains it."""
    one_peer_left(bsd, cfg)
    assert run(bsd, cfg, "tinc-host-down", node="hB").code == 0
    assert not {V4, V6} & addrs(bsd, "vtnet0")


def in_maintenance(bsd: FakeBSD, cfg: Path) -> None:
    bsd.set_carp_state("tap0", 1, "BACKUP")
    res = run(bsd, cfg, "carphooks", "maintenance", "on", "--wait", "0")
    assert res.code == 0, res.err


def nothing(bsd: FakeBSD, cfg: Path) -> None:
    pass


def v6_duplicated(bsd: FakeBSD, cfg: Path) -> None:
    """MASTER whose IPv6 address failed DAD: a real reconcile removes and adds it and
    records the attempt in dad.json."""
    master_holding(bsd, cfg)
    bsd.set_address_flags("vtnet0", V6, ["duplicated"])


PREPARE = {f.__name__: f for f in (master_missing_v4, master_holding, one_peer_left,
                                   no_peer_left, in_maintenance, nothing, v6_duplicated)}

# command, arguments, tinc NODE, what the host looks like first, what the output says
DRY_RUNS = [
    ("carp-event", ("--dry-run", "1@tap0", "BACKUP"), None, "nothing",
     f"would remove {V4} from vtnet0"),
    ("carp-event", ("-n", "1@tap0", "MASTER"), None, "master_missing_v4",
     f"would add {V4} on vtnet0"),
    ("tinc-up", ("--dry-run",), None, "nothing", f"would remove {V4} from vtnet0"),
    ("tinc-down", ("--dry-run",), None, "master_holding", f"would remove {V4} from vtnet0"),
    ("tinc-host-up", ("--dry-run",), "hB", "no_peer_left", f"would add {V4} on vtnet0"),
    ("tinc-host-down", ("--dry-run",), "hB", "one_peer_left", f"would remove {V4} from vtnet0"),
    ("carphooks", ("--dry-run", "reconcile"), None, "nothing", f"would remove {V4} from vtnet0"),
    ("carphooks", ("--dry-run", "reconcile"), None, "v6_duplicated",
     f"would remove {V6} from vtnet0"),
    ("carp-event", ("--dry-run", "1@tap0", "MASTER"), None, "v6_duplicated",
     f"would remove {V6} from vtnet0"),
    ("carphooks", ("-n", "release", "web"), None, "master_holding",
     f"would remove {V4} from vtnet0"),
    ("carphooks", ("-n", "hold", "web", "--force"), None, "nothing", "group web: nothing to do"),
    ("carphooks", ("-n", "maintenance", "on", "--wait", "0"), None, "master_holding",
     "would demote CARP by 240"),
    ("carphooks", ("-n", "maintenance", "off"), None, "in_maintenance",
     "would remove the maintenance demotion"),
    ("carphooks", ("-n", "maintenance", "status"), None, "in_maintenance",
     "maintenance on; carphooks demotion maintenance 240; kernel demotion 240"),
    ("carphooks", ("-n", "status"), None, "nothing",
     "group web (vhid 1 on tap0): CARP BACKUP, should release"),
]


@pytest.mark.parametrize("name, args, node, prepare, says", DRY_RUNS,
                         ids=[" ".join((n, *a, p)) for n, a, _, p, _ in DRY_RUNS])
def test_dry_run_writes_nothing(bsd: FakeBSD, cfg: Path, tmp_path: Path,
                                syslog: SyslogServer, name: str, args: tuple[str, ...],
                                node: str | None, prepare: str, says: str) -> None:
    lived_in(bsd, cfg, syslog)
    PREPARE[prepare](bsd, cfg)
    syslog.raw.clear()
    bsd.clear_calls()
    before_state = tree(tmp_path / "state")
    before_addrs = addrs(bsd, "vtnet0"), addrs(bsd, "tap0")
    before_demotion = bsd.sysctl("net.inet.carp.demotion")
    res = run(bsd, cfg, name, *args, node=node)
    assert res.code in (0, 1), res.err
    assert any(line.startswith(says) for line in res.out.splitlines()), res.out
    assert tree(tmp_path / "state") == before_state
    assert mutating(bsd) == []
    assert (addrs(bsd, "vtnet0"), addrs(bsd, "tap0")) == before_addrs
    assert bsd.sysctl("net.inet.carp.demotion") == before_demotion
    claims = [t for t in syslog.texts() if CLAIMS.search(t)]
    assert claims == []
    assert [r for r in bsd.syslog() if CLAIMS.search(str(r.get("msg")))] == []  # logger(1)
    for line in res.out.splitlines():
        assert not re.match(r"(\(dry run\) )?(assigned|removed|demoted|configured|"
                            r"maintenance (on|off)$)", line), line


FRESH_RUNS = [(n, a, node) for n, a, node, _, _ in DRY_RUNS]


@pytest.mark.parametrize("name, args, node", FRESH_RUNS,
                         ids=[" ".join((n, *a)) for n, a, _ in FRESH_RUNS])
def test_dry_run_creates_no_state_dir(tmp_path: Path, syslog: SyslogServer, name: str,
                                      args: tuple[str, ...], node: str | None) -> None:
    """A host that never ran carphooks: the dry run creates no state_dir (nor a lock)
    and leaves its parent untouched."""
    host = FakeBSD(tmp_path / "fresh", release="14.1")
    host.add_interface("vtnet0", mac="58:9c:fc:00:00:01")
    host.add_address("vtnet0", "203.0.113.11/24")
    host.add_interface("tap0", mac="58:9c:fc:aa:bb:cc", kind="tap", up=False)
    cfg = cluster_config(tmp_path, syslog)
    parent = tmp_path / "parent"
    parent.mkdir(mode=0o755)
    cfg.write_text(cfg.read_text().replace(str(tmp_path / "state"), str(parent / "state")))
    before = tree(parent)
    res = run(host, cfg, name, *args, node=node)
    assert res.code in (0, 1), res.err
    assert tree(parent) == before
    assert mutating(host) == []
    assert [t for t in syslog.texts() if CLAIMS.search(t)] == []


def test_tinc_up_dry_run_on_a_fresh_tap_says_what_it_would_do(
        tmp_path: Path, syslog: SyslogServer) -> None:
    host = FakeBSD(tmp_path / "fresh", release="14.1")
    host.add_interface("vtnet0", mac="58:9c:fc:00:00:01")
    host.add_interface("tap0", mac="58:9c:fc:aa:bb:cc", kind="tap", up=False)
    cfg = cluster_config(tmp_path, syslog)
    res = run(host, cfg, "tinc-up", "--dry-run")
    assert res.code == 0, res.err
    said = [ln for ln in res.out.splitlines() if not ln.startswith("would run: ")]
    assert said == [
        "would set MAC 02:00:00:00:00:11 on tap0",
        "would assign VPN address 192.0.2.11/24 on tap0",
        "would bring tap0 up",
        "would configure vhid 1 on tap0 (192.0.2.254/24, advbase 1, advskew 0, multicast)",
    ]
    assert mutating(host) == [] and not (tmp_path / "state").exists()
    assert [t for t in syslog.texts() if CLAIMS.search(t)] == []


@pytest.mark.parametrize("flags", [("-n", "install"), ("install", "--dry-run"),
                                   ("--dry-run", "install", "--force")])
def test_install_dry_run_writes_nothing(tmp_path: Path, syslog: SyslogServer,
                                       flags: tuple[str, ...]) -> None:
    cfg = cluster_config(tmp_path, syslog)
    root = tmp_path / "root"
    (root / "usr/local/etc/devd").mkdir(parents=True)
    if "--force" in flags:  # a real run would keep a backup of it and replace it
        (root / "usr/local/etc/devd/carphooks.conf").write_text("# someone else's\n")
    before = tree(root)
    env = {"PATH": "/usr/bin:/bin", "CARPHOOKS_HOST": "hA"}
    res = run_script("carphooks", *flags, "--root", str(root), env=env, config=cfg)
    assert res.code == 0, res.err
    assert tree(root) == before
    assert not (tmp_path / "state").exists()
    assert "then (after a real install):" in res.out
    assert [t for t in syslog.texts() if CLAIMS.search(t)] == []
