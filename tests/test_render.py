"""Templates rendered per host from the one cluster config.

Golden files: tests/golden/<topology>/<host>/<kind>. After an intended change run

    CARPHOOKS_REGEN_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_render.py

and review the diff of tests/golden/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from setupkit import CONFIG_PATH, HOSTS, RENDER_BINDIR, first_match, target, write_cluster

from carphooks import config as configmod
from carphooks.cli import admin as cli
from carphooks.errors import ConfigError, UsageError
from carphooks.setup import devd, render

GOLDEN = Path(__file__).resolve().parent / "golden"
REGEN = os.environ.get("CARPHOOKS_REGEN_GOLDEN") == "1"
TOPOLOGIES = ("tinc", "unicast")


def cluster(tmp_path: Path, topology: str, **kw: object) -> configmod.Config:
    path = write_cluster(tmp_path / f"{topology}.toml", topology, **kw)  # type: ignore[arg-type]
    return configmod.load(path)


def rendered_set(config: configmod.Config, host: str) -> dict[str, str]:
    tgt = target(config, host)
    return {r.kind.name: r.text for r in render.render_install_set(tgt)}


def golden_cases() -> list[tuple[str, str]]:
    return [(t, h) for t in TOPOLOGIES for h in HOSTS]


def compare_golden(topology: str, host: str, files: dict[str, str]) -> list[str]:
    """Differences between ``files`` and the golden directory (regenerates when asked)."""
    directory = GOLDEN / topology / host
    if REGEN:
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        for name, text in files.items():
            (directory / name).write_text(text, encoding="utf-8")
    problems = []
    have = {p.name for p in directory.iterdir()} if directory.is_dir() else set()
    for name in sorted(set(files) | have):
        if name not in have:
            problems.append(f"{directory / name}: golden file missing "
                            "(CARPHOOKS_REGEN_GOLDEN=1 to create)")
        elif name not in files:
            problems.append(f"{directory / name}: stale golden file (no such rendered file)")
        elif (directory / name).read_text(encoding="utf-8") != files[name]:
            problems.append(f"{directory / name}: rendered text differs")
    return problems


@pytest.mark.parametrize(("topology", "host"), golden_cases())
def test_golden(tmp_path: Path, topology: str, host: str) -> None:
    files = rendered_set(cluster(tmp_path, topology), host)
    problems = compare_golden(topology, host, files)
    assert not problems, "\n".join(problems)


def test_golden_fails_on_a_change(tmp_path: Path) -> None:
    if REGEN:
        pytest.skip("regenerating")
    config = cluster(tmp_path, "tinc", replace=('advbase = 2', 'advbase = 3'))
    files = rendered_set(config, "hA")
    assert compare_golden("tinc", "hA", files) == []  # advbase is not in tinc files ...
    files["devd"] = files["devd"].replace("notify 200", "notify 100")
    assert compare_golden("tinc", "hA", files) != []  # ... but any text change fails
    unicast = cluster(tmp_path, "unicast", replace=('advbase = 1', 'advbase = 3'))
    assert compare_golden("unicast", "hA", rendered_set(unicast, "hA")) != []


def test_install_sets_per_topology(tmp_path: Path) -> None:
    tinc = rendered_set(cluster(tmp_path, "tinc"), "hA")
    assert sorted(tinc) == ["cron", "devd", "host-down", "host-up", "newsyslog.conf",
                            "rc.d", "sysctl.conf", "syslog.conf", "tinc-down", "tinc-up",
                            "tinc.conf"]
    unicast = rendered_set(cluster(tmp_path, "unicast"), "hA")
    assert sorted(unicast) == ["cron", "devd", "newsyslog.conf", "rc.conf", "rc.d",
                               "sysctl.conf", "syslog.conf"]


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_every_template_has_the_marker_and_no_placeholder_left(tmp_path: Path,
                                                              topology: str) -> None:
    for text in rendered_set(cluster(tmp_path, topology), "hB").values():
        assert render.has_marker(text)
        assert not render.placeholders(text)
        assert "@" + "BINDIR" not in text


def test_per_host_values(tmp_path: Path) -> None:
    config = cluster(tmp_path, "tinc")
    conf_b = render.render(target(config, "hB"), "tinc.conf").text
    assert "Name = hB\n" in conf_b
    assert "ConnectTo = hA\nConnectTo = hC\n" in conf_b
    assert "ConnectTo = hB" not in conf_b
    for line in ("Mode = switch", "DeviceType = tap", "Interface = tap0", "TCPOnly = yes"):
        assert f"\n{line}\n" in conf_b
    unicast = cluster(tmp_path, "unicast")
    rc_b = render.render(target(unicast, "hB"), "rc.conf").text
    # advskew derived from the position in tinc.nodes (0, 100, 200): no ties
    assert ('ifconfig_vtnet1_alias0="inet vhid 1 advbase 1 advskew 100 pass s3cret '
            'peer 10.0.0.11 alias 10.0.0.254/24"') in rc_b
    assert "only 10.0.0.11 hears" in rc_b and "not 10.0.0.13" in rc_b
    assert ('ifconfig_vtnet1_100_alias0="inet6 vhid 7 advbase 1 advskew 100 pass db.pass '
            'alias fd00:100::254/64"') in rc_b
    assert "no peers configured" in rc_b
    v6 = cluster(tmp_path, "unicast", replace=('password = "db.pass"',
                                               'password = "db.pass"\npeers6 = ["fd00:100::12"]'))
    assert ("pass db.pass peer6 fd00:100::12 alias fd00:100::254/64"
            in render.render(target(v6, "hA"), "rc.conf").text)
    rc_c = render.render(target(unicast, "hC"), "rc.conf").text
    assert "advskew 200" in rc_c and "peer 10.0.0.11 alias" in rc_c


def test_hooks_exec_installed_scripts_by_absolute_path(tmp_path: Path) -> None:
    files = rendered_set(cluster(tmp_path, "tinc"), "hA")
    wants = {"tinc-up": "tinc-up", "tinc-down": "tinc-down", "host-up": "tinc-host-up",
             "host-down": "tinc-host-down"}
    for kind, script in wants.items():
        lines = [x for x in files[kind].splitlines() if x and not x.startswith("#")]
        assert files[kind].startswith("#!/bin/sh\n")
        assert lines == [f"exec {RENDER_BINDIR}/{script} --config {CONFIG_PATH}"]
    assert f"root\t{RENDER_BINDIR}/carphooks --config {CONFIG_PATH} reconcile" in files["cron"]
    assert "net.inet.carp.preempt=1\n" in files["sysctl.conf"]
    assert "net.link.ether.inet.garp_rexmit_count=4\n" in files["sysctl.conf"]


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_sh_n_on_every_rendered_script(tmp_path: Path, topology: str) -> None:
    config = cluster(tmp_path, topology)
    tgt = target(config, "hA")
    scripts = [k for k in render.KINDS.values()
               if k.script and config.topology in k.topologies]
    assert scripts
    for kind in scripts:
        text = render.render(tgt, kind).text
        path = tmp_path / kind.name
        path.write_text(text)
        proc = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, (kind.name, proc.stderr)
    # rc.conf is sourced by sh too
    if topology == "unicast":
        path = tmp_path / "rc.conf"
        path.write_text(render.render(tgt, "rc.conf").text)
        proc = subprocess.run(["sh", "-c", f'. "{path}"; echo "$ifconfig_vtnet1_alias0"'],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("inet vhid 1 advbase 1 advskew 0 pass s3cret peer ")


def test_lab_adapters_render_with_bindir(tmp_path: Path) -> None:
    tgt = target(cluster(tmp_path, "tinc"), "hA")
    text = render.render(tgt, "ucarp-up").text
    assert f"'{RENDER_BINDIR}'" in text and "@CARPHOOKS_BINDIR@" not in text


def test_substitute_is_strict() -> None:
    assert render.substitute("a @X@ b @Y_2@", {"X": "1", "Y_2": "2"}, source="t") == "a 1 b 2"
    assert render.substitute("mail@example.org 1@tap0 @lower@", {}, source="t") == \
        "mail@example.org 1@tap0 @lower@"
    with pytest.raises(render.RenderError, match="@NOPE@"):
        render.substitute("@NOPE@", {}, source="t")


def test_host_resolution(tmp_path: Path) -> None:
    config = cluster(tmp_path, "tinc")
    assert render.resolve_host(config, "hC", environ={"NAME": "hA"}, hostname="hB") == "hC"
    assert render.resolve_host(config, None, environ={"NAME": "hA"}, hostname="hB") == "hA"
    assert render.resolve_host(config, None, environ={"CARPHOOKS_HOST": "hC"},
                               hostname="hB") == "hC"
    assert render.resolve_host(config, None, environ={}, hostname="hB.example.org") == "hB"
    assert render.resolve_host(config, None, environ={"NAME": "other"}, hostname="hA") == "hA"
    with pytest.raises(UsageError, match="pass --host"):
        render.resolve_host(config, None, environ={}, hostname="web1")
    with pytest.raises(UsageError, match="hosts: hA, hB, hC"):
        render.resolve_host(config, "hX", environ={}, hostname="hA")


def test_bindir_resolution(tmp_path: Path) -> None:
    config = cluster(tmp_path, "tinc")
    assert render.resolve_bindir(config) == Path(sys.executable).parent
    assert render.resolve_bindir(config, "/opt/ch/bin") == Path("/opt/ch/bin")
    with pytest.raises(UsageError, match="absolute"):
        render.resolve_bindir(config, "venv/bin")
    with pytest.raises(render.RenderError, match="unsafe"):
        render.resolve_bindir(config, "/opt/my venv/bin")
    with_key = cluster(tmp_path, "tinc", extra='bindir = "/usr/local/carphooks/bin"\n')
    assert render.resolve_bindir(with_key) == Path("/usr/local/carphooks/bin")
    with pytest.raises(ConfigError, match="bindir"):
        cluster(tmp_path, "tinc", extra='bindir = "bin"\n')


def test_config_path_must_be_safe(tmp_path: Path) -> None:
    config = cluster(tmp_path, "tinc")
    with pytest.raises(render.RenderError, match="config path"):
        render.target(config, host="hA", bindir=RENDER_BINDIR, config_path="/etc/car hooks.toml")


def test_wrong_topology_and_unrenderable_configs(tmp_path: Path) -> None:
    tinc = cluster(tmp_path, "tinc")
    with pytest.raises(UsageError, match="unicast"):
        render.render(target(tinc, "hA"), "rc.conf")
    unicast = cluster(tmp_path, "unicast")
    with pytest.raises(UsageError, match="tinc"):
        render.render(target(unicast, "hA"), "tinc-up")
    two_ifs = cluster(tmp_path, "tinc", replace=('carp_interface = "tap0"\nexternal_interface'
                                                 ' = "vtnet0"\naddresses = ["198.51.100.101/24"]',
                                                 'carp_interface = "tap1"\nexternal_interface'
                                                 ' = "vtnet0"\naddresses = ["198.51.100.101/24"]'))
    with pytest.raises(render.RenderError, match="several CARP interfaces"):
        render.render(target(two_ifs, "hA"), "tinc.conf")
    with pytest.raises(ConfigError, match="password"):  # refused at load since issue 9.4
        cluster(tmp_path, "unicast", replace=('password = "s3cret"', 'password = "a$b"'))
    no_addr = cluster(tmp_path, "unicast", replace=('address = "10.0.0.254/24"\n', ''))
    with pytest.raises(render.RenderError, match=r"carp\.address"):
        render.render(target(no_addr, "hA"), "rc.conf")


def test_password_file_is_read_for_rc_conf(tmp_path: Path) -> None:
    secret = tmp_path / "carp.pass"
    secret.write_text("fromfile\n")
    os.chmod(secret, 0o600)
    config = cluster(tmp_path, "unicast",
                     replace=('password = "s3cret"', f'password_file = "{secret}"'))
    assert "pass fromfile peer" in render.render(target(config, "hA"), "rc.conf").text


def test_cli_render(tmp_path: Path) -> None:
    path = write_cluster(tmp_path / "c.toml", "tinc")
    runner = CliRunner()
    result = runner.invoke(cli.cli, ["-c", str(path), "render", "tinc.conf", "--host", "hC",
                                     "--bindir", "/usr/local/bin"])
    assert result.exit_code == 0, result.output
    assert "Name = hC\n" in result.output
    result = runner.invoke(cli.cli, ["-c", str(path), "--host", "hB", "render", "devd"])
    assert result.exit_code == 0, result.output
    assert f"{Path(sys.executable).parent}/carp-event --config {path}" in result.output
    result = runner.invoke(cli.cli, ["-c", str(path), "render", "rc.conf", "--host", "hA"])
    assert result.exit_code == 2
    result = runner.invoke(cli.cli, ["-c", str(path), "render", "nope"])
    assert result.exit_code == 2


# -- the rendered tinc scripts, run with tinc's environment, against the emulator -------------

try:
    from fakebsd import control as fakebsd_control
except ImportError:  # another helper writes the emulator; skip only when it is absent
    fakebsd_control = None


def _run(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(path)], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(fakebsd_control is None,
                    reason="the FreeBSD emulator (tests/fakebsd/control.py) is absent")
def test_rendered_tinc_scripts_and_devd_rule_against_fakebsd(tmp_path: Path) -> None:
    assert fakebsd_control is not None
    bsd = fakebsd_control.FakeBSD(tmp_path / "bsd", release="14.1")
    bsd.add_interface("tap0", kind="tap")
    bsd.add_interface("vtnet0")
    bsd.add_address("vtnet0", "198.51.100.7/24")
    cfg_path = write_cluster(tmp_path / "carphooks.toml", "tinc", state_dir=tmp_path / "state")
    config = configmod.load(cfg_path)
    bindir = Path(sys.executable).parent
    tgt = render.target(config, host="hA", bindir=bindir)
    scripts = tmp_path / "tinc" / "carp"
    scripts.mkdir(parents=True)
    for kind in ("tinc-up", "tinc-down", "host-up", "host-down"):
        path = scripts / kind
        path.write_text(render.render(tgt, kind).text)
        path.chmod(0o755)
    base = bsd.env()
    base.pop("CARPHOOKS_CONFIG", None)
    tinc_env = dict(base, NETNAME="carp", NAME="hA", DEVICE="/dev/tap0", INTERFACE="tap0")

    # tinc-up: fixed MAC, VPN address, both vhids with hA's advskew (0), nothing floating
    proc = _run(scripts / "tinc-up", tinc_env)
    assert proc.returncode == 0, proc.stderr
    assert bsd.interface("tap0")["mac"] == config.hosts["hA"].mac
    tap = {str(a): vhid for a, vhid, _ in bsd.addresses("tap0")}
    assert tap["192.0.2.11/24"] is None
    assert tap["192.0.2.254/24"] == 1 and tap["192.0.2.253/24"] == 2
    carp = bsd.carp("tap0")
    assert carp[1]["advskew"] == 0 and carp[1]["advbase"] == 1 and carp[1]["key"] == "s3cret"
    assert carp[2]["advbase"] == 2
    ifconfig_calls = bsd.calls("ifconfig")
    assert ["ifconfig", "tap0", "inet", "192.0.2.254/24", "vhid", "1", "advbase", "1",
            "advskew", "0", "pass", "s3cret", "mcast", "mcast6", "alias"] in ifconfig_calls
    assert [str(a) for a, _, _ in bsd.addresses("vtnet0")] == ["198.51.100.7/24"]

    # tinc-up again: idempotent, no change
    bsd.clear_calls()
    proc = _run(scripts / "tinc-up", tinc_env)
    assert proc.returncode == 0, proc.stderr
    assert all(len(c) <= 2 for c in bsd.calls("ifconfig")), bsd.calls("ifconfig")

    # host-up for hB: with hA itself that is 2 of 3 votes
    proc = _run(scripts / "host-up", dict(tinc_env, NODE="hB", REMOTEADDRESS="203.0.113.12",
                                          REMOTEPORT="655"))
    assert proc.returncode == 0, proc.stderr
    assert "hB" in (tmp_path / "state" / "peers.json").read_text()

    # the kernel makes vhid 1 MASTER; devd applies OUR rule to its event line
    bsd.clear_events()
    bsd.set_carp_state("tap0", 1, "MASTER")
    events = [e for e in bsd.events() if "subsystem=1@tap0" in e]
    assert events and events[-1] == "!system=CARP subsystem=1@tap0 type=MASTER"
    rules = devd.parse(render.render(tgt, "devd").text, "/usr/local/etc/devd/carphooks.conf")
    for line in events:
        rule = first_match(rules, devd.parse_event(line))
        assert rule is not None
        command = devd.expand_action(rule.actions[0], devd.parse_event(line))
        proc = subprocess.run(["/bin/sh", "-c", command], env=base, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    held = {str(a) for a, _, _ in bsd.addresses("vtnet0")}
    assert {"198.51.100.100/24", "2001:db8:100::100/64"} <= held
    assert "198.51.100.101/24" not in held  # vhid 2 is not MASTER

    # host-down hB and hC: quorum lost, the addresses go
    for node in ("hB", "hC"):
        proc = _run(scripts / "host-down", dict(tinc_env, NODE=node))
        assert proc.returncode == 0, proc.stderr
    assert [str(a) for a, _, _ in bsd.addresses("vtnet0")] == ["198.51.100.7/24"]

    # regain quorum, hold again via the rule, then tinc-down releases
    _run(scripts / "host-up", dict(tinc_env, NODE="hC"))
    held = {str(a) for a, _, _ in bsd.addresses("vtnet0")}
    assert "198.51.100.100/24" in held
    proc = _run(scripts / "tinc-down", tinc_env)
    assert proc.returncode == 0, proc.stderr
    assert [str(a) for a, _, _ in bsd.addresses("vtnet0")] == ["198.51.100.7/24"]


SAMPLE = Path(__file__).resolve().parent.parent / "carphooks.toml.sample"
ALL_KEYS = {
    "log_tag", "backend", "state_dir", "syslog_socket", "syslog_facility", "topology", "quorum",
    "lock_timeout", "bindir", "netname", "nodes", "witnesses", "confbase", "vpn_address",
    "advskew", "mac",
    "name", "vhid",
    "carp_interface", "external_interface", "addresses", "probe", "address", "advbase",
    "password", "password_file", "peers", "peers6",
}


def test_sample_config_is_valid_and_mentions_every_key(tmp_path: Path) -> None:
    import re
    import tomllib

    text = SAMPLE.read_text(encoding="utf-8")
    config = configmod.parse(tomllib.loads(text), path=SAMPLE, check_permissions=False)
    assert config.nodes == ("hA", "hB", "hC")
    mentioned = set(re.findall(r"^#?\s*([a-z_0-9]+) = ", text, re.MULTILINE))
    assert ALL_KEYS <= mentioned, ALL_KEYS - mentioned
    # every key line is preceded by a comment line (or is a per-host repeat)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[a-z_0-9]+ = ", line) and not lines[i - 1].startswith("#"):
            assert line.startswith(("vpn_address", "name")), line
    # renders for every host
    path = tmp_path / "sample.toml"
    path.write_text(text)
    path.chmod(0o600)
    for host in HOSTS:
        tgt = target(configmod.load(path), host)
        assert render.render_install_set(tgt)
