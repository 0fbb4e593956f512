"""``status --nagios`` (issue 12, item 5): WARNING when this host cannot hold a group
although nothing is wrong with its addresses (a vhid in INIT, no vhid at all, MASTER
while released), and performance data in the plugin guidelines' format."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import BASE_CONFIG, FakeBSD, SyslogServer, run_script, write_config

# 'label'=value[UOM];[warn];[crit];[min];[max] (Monitoring Plugins development guidelines)
PERF = re.compile(r"(?:'[^'=]+'|[^'= ]+)=-?[0-9.]+(?:[a-zA-Z%]+)?"
                  r";[-0-9.:~@]*;[-0-9.:~@]*;-?[0-9.]*;-?[0-9.]*")


def carphooks(bsd: FakeBSD, cfg: Path, *args: str):
    return run_script("carphooks", "--host", "hA", *args, env=bsd.env(), config=cfg)


def nagios(bsd: FakeBSD, cfg: Path) -> tuple[int, str, list[str]]:
    res = carphooks(bsd, cfg, "status", "--nagios")
    assert len(res.out.strip().splitlines()) == 1, res.out
    text, _, perf = res.out.strip().partition(" | ")
    return res.code, text, perf.split()


def majority(tmp_path: Path, syslog: SyslogServer) -> Path:
    text = BASE_CONFIG.format(state=tmp_path / "state", sock=syslog.path).replace(
        'quorum = "none"', 'quorum = "majority"')
    return write_config(tmp_path / "m.toml", text + '\n[tinc]\nnodes = ["hA", "hB", "hC"]\n')


def test_ok_line_and_perfdata_format(bsd: FakeBSD, config: Path) -> None:
    code, text, perf = nagios(bsd, config)
    assert (code, text.split(" - ")[0]) == (0, "CARPHOOKS OK")
    assert perf and all(PERF.fullmatch(item) for item in perf), perf
    assert perf[0] == "web_held=0;;0;0;2"  # releasing: CRITICAL outside 0..0


def test_vhid_in_init_is_warning(bsd: FakeBSD, config: Path) -> None:
    bsd.set_up("tap0", False)  # interface down: the kernel puts its vhids in INIT
    assert bsd.carp_state("tap0", 1) == "INIT"
    code, text, perf = nagios(bsd, config)
    assert code == 1 and text.startswith("CARPHOOKS WARNING - web: vhid 1 on tap0 is INIT")
    assert all(PERF.fullmatch(item) for item in perf)
    lines = carphooks(bsd, config, "status").out.splitlines()
    assert "  warning: vhid 1 on tap0 is INIT (interface down, no link, or " \
           "net.inet.carp.allow=0): this host cannot take over" in lines
    report = json.loads(carphooks(bsd, config, "status", "--json").out)
    assert report["level"] == "WARNING"
    assert report["groups"][0]["warnings"][0].startswith("vhid 1 on tap0 is INIT")


def test_no_vhid_on_the_carp_interface_is_warning(tmp_path: Path, config: Path) -> None:
    host = FakeBSD(tmp_path / "novhid", release="14.1")
    host.add_interface("vtnet0", mac="58:9c:fc:00:00:01")
    host.add_interface("tap0", mac="02:00:00:00:00:11", kind="tap")
    host.add_address("tap0", "192.0.2.11/24")  # addressed, but tinc-up made no vhid
    code, text, _ = nagios(host, config)
    assert code == 1
    assert text.startswith("CARPHOOKS WARNING - web: no vhid 1 on tap0, so this host can "
                           "never hold the addresses")


def test_tap_gone_is_warning(bsd: FakeBSD, config: Path) -> None:
    bsd.remove_interface("tap0")  # tincd stopped
    code, text, _ = nagios(bsd, config)
    assert code == 1 and "web: no vhid 1 on tap0" in text


def test_master_released_for_want_of_quorum_is_warning(
        bsd: FakeBSD, tmp_path: Path, syslog: SyslogServer) -> None:
    cfg = majority(tmp_path, syslog)
    env = {**bsd.env(), "NETNAME": "carp", "NAME": "hA", "DEVICE": "/dev/tap0",
           "INTERFACE": "tap0"}
    assert run_script("tinc-up", env=env, config=cfg).code == 0  # alone: no quorum
    bsd.set_carp_state("tap0", 1, "MASTER")
    assert run_script("carp-event", "1@tap0", "MASTER", env=bsd.env(), config=cfg).code == 0
    code, text, _ = nagios(bsd, cfg)
    assert code == 1
    assert "web: CARP is MASTER here but the addresses are released (no quorum: 1 of 3 " \
           "votes, 2 needed): nobody holds them until a peer takes over" in text


def test_backup_with_its_vhid_stays_ok(bsd: FakeBSD, config: Path) -> None:
    assert bsd.carp_state("tap0", 1) == "BACKUP"
    assert nagios(bsd, config)[0] == 0
