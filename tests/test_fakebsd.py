"""Tests of the FreeBSD emulator (tests/fakebsd) against freebsd-facts.md."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fakebsd.control import BIN_DIR, FIXTURES_DIR, FakeBSD

FIXTURES = sorted(p.stem for p in FIXTURES_DIR.glob("*.txt"))


# --------------------------------------------------------------------------- helpers

def ref_parse(text: str) -> dict:
    """Minimal reference parser, used only to cross-check fixtures and emulator output."""
    lines = text.splitlines()
    m = re.match(r"^(\S+): flags=([0-9a-f]+)<([^>]*)> metric \d+ mtu (\d+)$", lines[0])
    assert m, lines[0]
    result: dict = {"name": m[1], "flags": m[3].split(",") if m[3] else [], "mtu": int(m[4]),
                    "ether": None, "addresses": [], "carp": []}
    for line in lines[1:]:
        assert line.startswith("\t"), repr(line)
        words = line.split()
        if not words:
            continue
        key = words[0]
        if key == "ether" and result["ether"] is None:
            result["ether"] = words[1]
        elif key == "inet":
            plen = bin(int(words[words.index("netmask") + 1], 16)).count("1")
            vhid = int(words[words.index("vhid") + 1]) if "vhid" in words else None
            result["addresses"].append({"address": f"{words[1]}/{plen}", "vhid": vhid,
                                        "flags": []})
        elif key == "inet6":
            addr, _, scope = words[1].partition("%")
            plen = int(words[words.index("prefixlen") + 1])
            vhid = int(words[words.index("vhid") + 1]) if "vhid" in words else None
            flags = [w for w in words if w in ("anycast", "tentative", "duplicated", "detached",
                                               "deprecated", "autoconf", "temporary",
                                               "prefer_source")]
            entry = {"address": f"{addr}/{plen}", "vhid": vhid, "flags": flags}
            if scope:
                entry["scope"] = scope
            result["addresses"].append(entry)
        elif key == "carp:":
            result["carp"].append({"vhid": int(words[3]), "state": words[1],
                                   "advbase": int(words[5]), "advskew": int(words[7]),
                                   "peer": None, "peer6": None, "version": 2})
        elif key == "peer" and line.startswith("\t      peer "):
            result["carp"][-1]["peer"] = words[1]
            result["carp"][-1]["peer6"] = words[3]
        elif key == "vrrp:":
            result["carp"].append({"vhid": int(words[3]), "state": words[1], "advbase": None,
                                   "advskew": None, "peer": None, "peer6": None, "version": 3,
                                   "prio": int(words[5]), "interval": int(words[7])})
    return result


@pytest.fixture(params=["13.2", "14.1", "15.0"])
def bsd(request, tmp_path) -> FakeBSD:
    b = FakeBSD(tmp_path, release=request.param)
    b.add_interface("vtnet0", mac="58:9c:fc:00:00:01")
    return b


@pytest.fixture
def bsd14(tmp_path) -> FakeBSD:
    b = FakeBSD(tmp_path, release="14.1")
    b.add_interface("vtnet0", mac="58:9c:fc:00:00:01")
    return b


def ok(b: FakeBSD, *argv: str) -> str:
    r = b.run(*argv)
    assert r.returncode == 0, (argv, r.stderr)
    return r.stdout


def fail(b: FakeBSD, *argv: str) -> str:
    r = b.run(*argv)
    assert r.returncode == 1, (argv, r.stdout, r.stderr)
    return r.stderr


# --------------------------------------------------------------------------- fixtures

@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_consistent(name: str) -> None:
    text = (FIXTURES_DIR / f"{name}.txt").read_text()
    expected = json.loads((FIXTURES_DIR / f"{name}.json").read_text())
    assert "        " not in text, "indentation must be a TAB"
    assert text.endswith("\n")
    for a in expected["addresses"]:
        ipaddress.ip_interface(a["address"])  # valid, canonical strings
        assert str(ipaddress.ip_interface(a["address"])) == a["address"]
    assert ref_parse(text) == expected


def test_fixture_readme_lists_all() -> None:
    readme = (FIXTURES_DIR / "README.md").read_text()
    for name in FIXTURES:
        assert f"`{name}`" in readme, name


# --------------------------------------------------------------------------- ifconfig output

def test_output_format_per_release(bsd: FakeBSD) -> None:
    major = int(bsd.release.split(".")[0])
    bsd.add_address("vtnet0", "192.0.2.11/24")
    ok(bsd, "ifconfig", "vtnet0", "inet", "192.0.2.1/24", "vhid", "1", "advskew", "100", "alias")
    ok(bsd, "ifconfig", "vtnet0", "inet", "192.0.2.10/32", "vhid", "10", "alias")
    ok(bsd, "ifconfig", "vtnet0", "inet6", "2001:db8::1/64", "vhid", "1", "alias")
    out = ok(bsd, "ifconfig", "vtnet0")
    lines = out.splitlines()
    assert lines[0].startswith("vtnet0: flags=")
    assert ("LOWER_UP" in lines[0]) == (major >= 14)
    assert "\tinet 192.0.2.10 netmask 0xffffffff broadcast 192.0.2.10 vhid 10" in lines
    assert "\tinet 192.0.2.1 netmask 0xffffff00 broadcast 192.0.2.255 vhid 1" in lines
    assert "\tinet6 2001:db8::1 prefixlen 64 vhid 1" in lines
    assert "\tcarp: BACKUP vhid 1 advbase 1 advskew 100" in lines
    i = lines.index("\tcarp: BACKUP vhid 1 advbase 1 advskew 100")
    if major >= 14:
        assert lines[i + 1] == "\t      peer 224.0.0.18 peer6 ff02::12"
    else:
        assert "peer" not in out
    parsed = ref_parse(out)
    assert [c["vhid"] for c in parsed["carp"]] == [1, 10]
    assert [a["address"] for a in parsed["addresses"]] == [
        "192.0.2.11/24", "192.0.2.1/24", "192.0.2.10/32", "2001:db8::1/64"]
    # inet lines come before inet6 lines
    kinds = [ln.split()[0] for ln in lines if ln.split()[0] in ("inet", "inet6")]
    assert kinds == sorted(kinds)


def test_vrrp_line_on_15(tmp_path: Path) -> None:
    b = FakeBSD(tmp_path, release="15.0")
    b.add_interface("vtnet0")
    ok(b, "ifconfig", "vtnet0", "inet", "192.0.2.5/24", "vhid", "5", "carpver", "3",
       "vrrpprio", "150", "alias")
    out = ok(b, "ifconfig", "vtnet0")
    assert "\tvrrp: BACKUP vrid 5 prio 150 interval 100" in out.splitlines()
    assert ref_parse(out)["carp"][0]["version"] == 3


@pytest.mark.parametrize("release", ["13.2", "14.1"])
def test_vrrp_keywords_rejected_before_15(tmp_path: Path, release: str) -> None:
    b = FakeBSD(tmp_path, release=release)
    b.add_interface("vtnet0")
    err = fail(b, "ifconfig", "vtnet0", "inet", "192.0.2.5/24", "vhid", "5", "carpver", "3",
               "alias")
    assert err == "ifconfig: carpver: bad value\n"


def test_peer_rejected_on_13(tmp_path: Path) -> None:
    b = FakeBSD(tmp_path, release="13.2")
    b.add_interface("vtnet0")
    err = fail(b, "ifconfig", "vtnet0", "inet", "192.0.2.1/24", "vhid", "1", "peer",
               "198.51.100.2", "alias")
    assert err == "ifconfig: peer: bad value\n"


def test_unicast_peer_on_14(bsd14: FakeBSD) -> None:
    ok(bsd14, "ifconfig", "vtnet0", "inet", "192.0.2.1/32", "vhid", "1", "peer", "198.51.100.2",
       "peer6", "2001:db8::2", "alias")
    assert "\t      peer 198.51.100.2 peer6 2001:db8::2" in ok(bsd14, "ifconfig", "vtnet0")


def test_link_local_and_inet6_flags(tmp_path: Path) -> None:
    b = FakeBSD(tmp_path)
    b.add_interface("lo_dummy", kind="tap")
    b.add_interface("vtnet0", mac="58:9c:fc:00:00:01", link_local=True)
    b.add_address("vtnet0", "2001:db8::3/64", flags=("autoconf", "deprecated"))
    out = ok(b, "ifconfig", "vtnet0").splitlines()
    assert "\tinet6 fe80::5a9c:fcff:fe00:1%vtnet0 prefixlen 64 scopeid 0x2" in out
    assert "\tinet6 2001:db8::3 prefixlen 64 deprecated autoconf" in out


def test_interface_names_with_underscore_and_dot(tmp_path: Path) -> None:
    b = FakeBSD(tmp_path)
    b.add_interface("lagg0_vlan220")
    b.add_interface("vtnet0.100")
    ok(b, "ifconfig", "vtnet0.100", "inet", "192.0.2.100/25", "vhid", "100", "alias")
    assert ok(b, "ifconfig", "-l") == "lagg0_vlan220 vtnet0.100\n"
    assert "!system=CARP subsystem=100@vtnet0.100 type=BACKUP" in b.events()
    assert ok(b, "ifconfig").count("flags=") == 2


def test_tap_output(tmp_path: Path) -> None:
    b = FakeBSD(tmp_path)
    b.add_interface("tap0", kind="tap", mac="02:00:00:00:00:0a", opened_by=777)
    out = ok(b, "ifconfig", "tap0")
    assert "\tgroups: tap" in out.splitlines()
    assert "\tOpened by PID 777" in out.splitlines()
    assert "\tmedia: Ethernet autoselect" in out.splitlines()


def test_p2p_tun(tmp_path: Path) -> None:
    b = FakeBSD(tmp_path)
    b.add_interface("tun0", kind="tun")
    ok(b, "ifconfig", "tun0", "inet", "10.255.0.1/32", "10.255.0.2")
    out = ok(b, "ifconfig", "tun0")
    assert "\tinet 10.255.0.1 --> 10.255.0.2 netmask 0xffffffff" in out.splitlines()
    assert "POINTOPOINT" in out.splitlines()[0]


# --------------------------------------------------------------------------- ifconfig errors

def test_unknown_interface(bsd: FakeBSD) -> None:
    assert fail(bsd, "ifconfig", "vtnet9") == "ifconfig: interface vtnet9 does not exist\n"
    err = fail(bsd, "ifconfig", "vtnet9", "inet", "192.0.2.1/24", "alias")
    assert err == "ifconfig: interface vtnet9 does not exist\n"


def test_remove_missing_address(bsd: FakeBSD) -> None:
    for argv in (["inet", "192.0.2.1/24", "-alias"], ["inet", "192.0.2.1", "delete"],
                 ["inet6", "2001:db8::1", "-alias"]):
        err = fail(bsd, "ifconfig", "vtnet0", *argv)
        assert err == "ifconfig: ioctl (SIOCDIFADDR): Can't assign requested address\n"


def test_remove_matches_address_only(bsd: FakeBSD) -> None:
    bsd.add_address("vtnet0", "192.0.2.1/24")
    bsd.add_address("vtnet0", "192.0.2.10/24")
    ok(bsd, "ifconfig", "vtnet0", "inet", "192.0.2.1", "-alias")
    assert [str(a[0]) for a in bsd.addresses("vtnet0")] == ["192.0.2.10/24"]
    ok(bsd, "ifconfig", "vtnet0", "inet", "192.0.2.10/32", "delete")
    assert bsd.addresses("vtnet0") == []


def test_vhid_range_and_order(bsd: FakeBSD) -> None:
    msg = "ifconfig: vhid must be greater than 0 and less than 255\n"
    assert fail(bsd, "ifconfig", "vtnet0", "inet", "192.0.2.1/24", "vhid", "0", "alias") == msg
    assert fail(bsd, "ifconfig", "vtnet0", "inet", "192.0.2.1/24", "vhid", "256", "alias") == msg
    err = fail(bsd, "ifconfig", "vtnet0", "advskew", "10", "vhid", "1")
    assert err == "ifconfig: advskew requires vhid\n"
    err = fail(bsd, "ifconfig", "vtnet0", "pass", "s3cret", "vhid", "1")
    assert err == "ifconfig: passwd requires vhid\n"  # carp.c setcarp_passwd's word
    err = fail(bsd, "ifconfig", "vtnet0", "inet", "192.0.2.1/24", "vhid", "1", "advskew", "255",
               "alias")
    assert err == "ifconfig: SIOCSVH: Invalid argument\n"
    assert fail(bsd, "ifconfig", "vtnet0", "vhid", "1", "state", "bogus") == \
        "ifconfig: unknown state\n"
    assert bsd.addresses("vtnet0") == []


def test_ipv6_needs_inet6_keyword(bsd14: FakeBSD) -> None:
    err = fail(bsd14, "ifconfig", "vtnet0", "2001:db8::1/64", "alias")
    assert err == "ifconfig: 2001:db8::1/64: bad value (width too large)\n"
    ok(bsd14, "ifconfig", "vtnet0", "inet6", "2001:db8::1", "alias")
    assert str(bsd14.addresses("vtnet0")[0][0]) == "2001:db8::1/64"


def test_no_mask_warning(bsd14: FakeBSD) -> None:
    r = bsd14.run("ifconfig", "vtnet0", "inet", "10.1.2.3", "alias")
    assert r.returncode == 0
    assert r.stderr == ("ifconfig: WARNING: setting interface address without mask is "
                        "deprecated,\ndefault mask may not be correct.\n")
    assert str(bsd14.addresses("vtnet0")[0][0]) == "10.1.2.3/8"


def test_bad_word(bsd14: FakeBSD) -> None:
    assert fail(bsd14, "ifconfig", "vtnet0", "frobnicate") == "ifconfig: frobnicate: bad value\n"


# --------------------------------------------------------------------------- semantics

def test_readd_ipv4_bounces(bsd14: FakeBSD) -> None:
    ok(bsd14, "ifconfig", "vtnet0", "inet", "192.0.2.1/24", "vhid", "1", "alias")
    bsd14.set_carp_state("vtnet0", 1, "MASTER")
    bsd14.clear_events()
    r = bsd14.run("ifconfig", "vtnet0", "inet", "192.0.2.1/24", "vhid", "1", "alias")
    assert (r.returncode, r.stderr) == (0, "")
    assert bsd14.readd_count("vtnet0", "192.0.2.1") == 1
    assert bsd14.events() == ["!system=CARP subsystem=1@vtnet0 type=INIT",
                              "!system=CARP subsystem=1@vtnet0 type=BACKUP"]
    assert len(bsd14.addresses("vtnet0")) == 1


def test_readd_ipv6_in_place(bsd14: FakeBSD) -> None:
    ok(bsd14, "ifconfig", "vtnet0", "inet6", "2001:db8::1/64", "alias")
    ok(bsd14, "ifconfig", "vtnet0", "inet6", "2001:db8::1/64", "alias")
    assert len(bsd14.addresses("vtnet0")) == 1
    assert bsd14.readd_count() == 1  # updated in place (in6_update_ifa), counted


def test_carp_lifecycle(bsd14: FakeBSD) -> None:
    ok(bsd14, "ifconfig", "vtnet0", "inet", "192.0.2.1/24", "vhid", "1", "pass", "s3cret",
       "alias")
    assert bsd14.carp_state("vtnet0", 1) == "BACKUP"
    assert bsd14.events() == ["!system=CARP subsystem=1@vtnet0 type=BACKUP"]
    ok(bsd14, "ifconfig", "vtnet0", "vhid", "1", "state", "MASTER")
    assert bsd14.carp_state("vtnet0", 1) == "MASTER"
    ok(bsd14, "ifconfig", "vtnet0", "vhid", "1", "advskew", "200")
    assert bsd14.carp("vtnet0")[1]["advskew"] == 200
    assert bsd14.carp_state("vtnet0", 1) == "MASTER"
    ok(bsd14, "ifconfig", "vtnet0", "down")
    assert bsd14.carp_state("vtnet0", 1) == "INIT"
    assert bsd14.sysctl("net.inet.carp.demotion") == 240
    ok(bsd14, "ifconfig", "vtnet0", "up")
    assert bsd14.carp_state("vtnet0", 1) == "BACKUP"
    assert bsd14.sysctl("net.inet.carp.demotion") == 0
    ok(bsd14, "ifconfig", "vtnet0", "inet", "192.0.2.1", "-alias")
    assert bsd14.carp("vtnet0") == {}
    assert bsd14.events()[-1] == "!system=CARP subsystem=1@vtnet0 type=INIT"
    assert "carp: 1@vtnet0: BACKUP -> MASTER (user requested via ifconfig)" in \
        bsd14.kernel_log()


def test_modify_unknown_vhid_creates_it(bsd14: FakeBSD) -> None:
    ok(bsd14, "ifconfig", "vtnet0", "vhid", "7", "advskew", "100")
    assert bsd14.carp("vtnet0")[7]["state"] == "INIT"
    assert "\tcarp: INIT vhid 7 advbase 1 advskew 100" in ok(bsd14, "ifconfig", "vtnet0")


def test_lladdr_nd6_description(bsd14: FakeBSD) -> None:
    ok(bsd14, "ifconfig", "vtnet0", "ether", "02:aa:bb:cc:dd:ee")
    ok(bsd14, "ifconfig", "vtnet0", "inet6", "no_dad")
    ok(bsd14, "ifconfig", "vtnet0", "description", "floating ips")
    out = ok(bsd14, "ifconfig", "vtnet0").splitlines()
    assert "\tether 02:aa:bb:cc:dd:ee" in out
    assert "\thwaddr 58:9c:fc:00:00:01" in out
    assert "\tnd6 options=121<PERFORMNUD,AUTO_LINKLOCAL,NO_DAD>" in out
    assert out[1] == "\tdescription: floating ips"
    ok(bsd14, "ifconfig", "vtnet0", "inet6", "-no_dad")
    assert bsd14.nd6_flags("vtnet0") == 0x21


def test_dad_tentative_countdown(tmp_path: Path) -> None:
    b = FakeBSD(tmp_path, dad="tentative:2")
    b.add_interface("vtnet0")
    ok(b, "ifconfig", "vtnet0", "inet6", "2001:db8::5/64", "alias")
    assert b.addresses("vtnet0")[0][2] == ("tentative",)
    assert "2001:db8::5 prefixlen 64 tentative" in ok(b, "ifconfig", "vtnet0")
    assert "2001:db8::5 prefixlen 64 tentative" in ok(b, "ifconfig", "vtnet0")
    assert "\tinet6 2001:db8::5 prefixlen 64\n" in ok(b, "ifconfig", "vtnet0")


def test_dad_duplicated_and_no_dad(tmp_path: Path) -> None:
    b = FakeBSD(tmp_path, dad="duplicated")
    b.add_interface("vtnet0")
    b.add_interface("vtnet1")
    ok(b, "ifconfig", "vtnet0", "inet6", "2001:db8::5/64", "alias")
    assert "2001:db8::5 prefixlen 64 duplicated" in ok(b, "ifconfig", "vtnet0")
    ok(b, "ifconfig", "vtnet1", "inet6", "2001:db8::6/64", "alias", "no_dad")
    assert b.addresses("vtnet1")[0][2] == ()


def test_fail_next_and_calls(bsd14: FakeBSD) -> None:
    bsd14.fail_next(["ifconfig", "vtnet0", "inet"], "ifconfig: ioctl (SIOCAIFADDR): boom", 1)
    r = bsd14.run("ifconfig", "vtnet0", "inet", "192.0.2.1/24", "alias")
    assert (r.returncode, r.stderr) == (1, "ifconfig: ioctl (SIOCAIFADDR): boom\n")
    assert bsd14.addresses("vtnet0") == []
    ok(bsd14, "ifconfig", "vtnet0", "inet", "192.0.2.1/24", "alias")
    assert bsd14.calls() == [["ifconfig", "vtnet0", "inet", "192.0.2.1/24", "alias"]] * 2
    assert bsd14.calls("sysctl") == []


def test_state_required(tmp_path: Path) -> None:
    r = subprocess.run([str(BIN_DIR / "ifconfig"), "-l"], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin"})
    assert r.returncode != 0
    assert "FAKEBSD_STATE" in r.stderr


def test_concurrent_same_alias(bsd14: FakeBSD) -> None:
    argv = [str(BIN_DIR / "ifconfig"), "vtnet0", "inet", "192.0.2.50/24", "alias"]
    env = bsd14.env()
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(12)]
    rcs = [p.wait(timeout=60) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert rcs == [0] * 12
    assert [str(a[0]) for a in bsd14.addresses("vtnet0")] == ["192.0.2.50/24"]
    assert bsd14.readd_count("vtnet0", "192.0.2.50") == 11
    assert len(bsd14.calls()) == 12


def test_concurrent_distinct_aliases(bsd14: FakeBSD) -> None:
    def add(i: int) -> int:
        return bsd14.run("ifconfig", "vtnet0", "inet", f"192.0.2.{100 + i}/32", "alias").returncode

    with ThreadPoolExecutor(12) as pool:
        assert list(pool.map(add, range(12))) == [0] * 12
    assert len(bsd14.addresses("vtnet0")) == 12


# --------------------------------------------------------------------------- sysctl, logger, uname

def test_sysctl(bsd: FakeBSD) -> None:
    assert ok(bsd, "sysctl", "-n", "net.inet.carp.preempt") == "0\n"
    assert ok(bsd, "sysctl", "net.inet.carp.allow") == "net.inet.carp.allow: 1\n"
    lines = ok(bsd, "sysctl", "net.inet.carp").splitlines()
    assert "net.inet.carp.ifdown_demotion_factor: 240" in lines
    assert "net.inet.carp.dscp: 56" in lines
    assert len(lines) == 7
    assert ok(bsd, "sysctl", "net.inet.carp.preempt=1") == "net.inet.carp.preempt: 0 -> 1\n"
    assert bsd.sysctl("net.inet.carp.preempt") == 1
    assert ok(bsd, "sysctl", "-n", "net.link.ether.inet.garp_rexmit_count") == "0\n"
    assert fail(bsd, "sysctl", "net.inet.carp.nope") == "sysctl: unknown oid 'net.inet.carp.nope'\n"
    assert ok(bsd, "sysctl", "-n", "kern.osrelease") == f"{bsd.release}-RELEASE\n"


def test_sysctl_demotion_additive(bsd14: FakeBSD) -> None:
    assert ok(bsd14, "sysctl", "net.inet.carp.demotion=240") == \
        "net.inet.carp.demotion: 0 -> 240\n"
    assert ok(bsd14, "sysctl", "net.inet.carp.demotion=240") == \
        "net.inet.carp.demotion: 240 -> 480\n"
    assert ok(bsd14, "sysctl", "net.inet.carp.demotion=-480") == \
        "net.inet.carp.demotion: 480 -> 0\n"
    assert "carp: demoted by 240 to 240 (sysctl)" in bsd14.kernel_log()


def test_sysctl_allow_reevaluates(bsd14: FakeBSD) -> None:
    bsd14.add_address("vtnet0", "192.0.2.1/24", vhid=1)
    bsd14.set_carp_state("vtnet0", 1, "MASTER")
    ok(bsd14, "sysctl", "net.inet.carp.allow=0")
    assert bsd14.carp_state("vtnet0", 1) == "INIT"
    ok(bsd14, "sysctl", "net.inet.carp.allow=1")
    assert bsd14.carp_state("vtnet0", 1) == "BACKUP"


def test_logger(bsd14: FakeBSD) -> None:
    assert ok(bsd14, "logger", "-t", "carphooks", "took", "vhid 1") == ""
    msgs = bsd14.syslog()
    assert [(m["tag"], m["pri"], m["msg"]) for m in msgs] == [
        ("carphooks", "user.notice", "took vhid 1")]


def test_uname(bsd: FakeBSD) -> None:
    assert ok(bsd, "uname", "-s") == "FreeBSD\n"
    assert ok(bsd, "uname", "-r") == f"{bsd.release}-RELEASE\n"
    assert ok(bsd, "uname") == "FreeBSD\n"


def test_env_path(bsd14: FakeBSD) -> None:
    env = bsd14.env()
    assert env["PATH"].split(":")[0] == str(BIN_DIR)
    for key in ("FAKEBSD_STATE", "FAKEBSD_LOG", "FAKEBSD_RELEASE"):
        assert key in env
    r = subprocess.run(["sh", "-c", "command -v ifconfig"], env=env, capture_output=True,
                       text=True)
    assert r.stdout.strip() == str(BIN_DIR / "ifconfig")


# --------------------------------------------------------------------------- IPv6 DAD, re-add,
# interface up on add, lifetimes (issue 9 items 1 and 8; sources in tests/fakebsd/README.md)

V6 = "2001:db8::5"


def v6_line(b: FakeBSD, ifname: str = "vtnet0", *opts: str) -> str:
    """The ``inet6`` line of V6 in ``ifconfig [opts] IF`` (one read)."""
    lines = [ln for ln in ok(b, "ifconfig", *opts, ifname).splitlines()
             if ln.startswith(f"\tinet6 {V6} ")]
    assert len(lines) == 1, lines
    return lines[0]


def test_ipv6_prefix_change_is_einval(bsd: FakeBSD) -> None:
    ok(bsd, "ifconfig", "vtnet0", "inet6", f"{V6}/64", "alias")
    err = fail(bsd, "ifconfig", "vtnet0", "inet6", f"{V6}/80", "alias")
    assert err == "ifconfig: ioctl (SIOCAIFADDR): Invalid argument\n"
    assert [str(a[0]) for a in bsd.addresses("vtnet0")] == [f"{V6}/64"]


def test_readd_ipv6_vhid_address_bounces_carp(bsd: FakeBSD) -> None:
    ok(bsd, "ifconfig", "vtnet0", "inet6", f"{V6}/64", "vhid", "1", "alias")
    bsd.set_carp_state("vtnet0", 1, "MASTER")
    bsd.clear_events()
    ok(bsd, "ifconfig", "vtnet0", "inet6", f"{V6}/64", "vhid", "1", "alias")
    assert bsd.events() == ["!system=CARP subsystem=1@vtnet0 type=INIT",
                            "!system=CARP subsystem=1@vtnet0 type=BACKUP"]
    assert bsd.carp_state("vtnet0", 1) == "BACKUP"


def test_adding_ipv4_to_a_down_interface_brings_it_up(bsd: FakeBSD) -> None:
    major = int(bsd.release.split(".")[0])
    bsd.add_address("vtnet0", "192.0.2.1/24", vhid=1)
    ok(bsd, "ifconfig", "vtnet0", "down")
    assert bsd.carp_state("vtnet0", 1) == "INIT"
    assert bsd.sysctl("net.inet.carp.demotion") == 240
    ok(bsd, "ifconfig", "vtnet0", "inet", "198.51.100.7/24", "alias")
    assert ok(bsd, "ifconfig", "vtnet0").startswith("vtnet0: flags=" + (
        "1008843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST,LOWER_UP>" if major >= 14
        else "8843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST>"))
    if major >= 14:  # netlink: if_up() re-runs CARP
        assert bsd.carp_state("vtnet0", 1) == "BACKUP"
        assert bsd.sysctl("net.inet.carp.demotion") == 0
    else:  # ioctl: IFF_UP set by the driver, CARP not told
        assert bsd.carp_state("vtnet0", 1) == "INIT"
        assert bsd.sysctl("net.inet.carp.demotion") == 240


def test_first_ipv6_address_brings_interface_up_later_ones_do_not(tmp_path: Path) -> None:
    b = FakeBSD(tmp_path)
    b.add_interface("vtnet0", up=False)
    ok(b, "ifconfig", "vtnet0", "inet6", "2001:db8::1/64", "alias")
    assert b.interface("vtnet0")["up"]
    ok(b, "ifconfig", "vtnet0", "down")
    ok(b, "ifconfig", "vtnet0", "inet6", f"{V6}/64", "alias")
    assert not b.interface("vtnet0")["up"]
    assert "tentative" in v6_line(b)  # no DAD while down (in6if_do_dad: EAGAIN)
    ok(b, "ifconfig", "vtnet0", "up")  # in6_if_up()
    assert v6_line(b) == f"\tinet6 {V6} prefixlen 64"


def test_lifetimes_printed_on_14_without_L(tmp_path: Path) -> None:
    b = FakeBSD(tmp_path, release="14.1")
    b.add_interface("vtnet0")
    ok(b, "ifconfig", "vtnet0", "inet6", f"{V6}/64", "pltime", "1800", "vltime", "3600", "alias")
    ok(b, "ifconfig", "vtnet0", "inet6", "2001:db8::6/64", "pltime", "0x80", "vltime", "0400",
       "alias")
    out = ok(b, "ifconfig", "vtnet0")
    assert f"\tinet6 {V6} prefixlen 64 pltime 1800 vltime 3600\n" in out
    assert "\tinet6 2001:db8::6 prefixlen 64 pltime 128 vltime 256\n" in out
    b.advance_clock(1801)
    assert v6_line(b) == f"\tinet6 {V6} prefixlen 64 deprecated pltime 1800 vltime 3600"
    b.advance_clock(1800)
    assert V6 not in ok(b, "ifconfig", "vtnet0")


def test_lifetimes_printed_on_13_only_with_L(tmp_path: Path) -> None:
    b = FakeBSD(tmp_path, release="13.2")
    b.add_interface("vtnet0")
    ok(b, "ifconfig", "vtnet0", "inet6", f"{V6}/64", "pltime", "1800", "vltime", "3600", "alias")
    assert v6_line(b) == f"\tinet6 {V6} prefixlen 64"
    b.advance_clock(100)
    m = re.fullmatch(rf"\tinet6 {V6} prefixlen 64 pltime (\d+) vltime (\d+)",
                     v6_line(b, "vtnet0", "-L"))
    assert m and 1690 <= int(m[1]) <= 1700 and int(m[2]) == int(m[1]) + 1800, m
    ok(b, "ifconfig", "vtnet0", "inet6", "2001:db8::6/64", "alias")
    assert "\tinet6 2001:db8::6 prefixlen 64\n" in ok(b, "ifconfig", "-L", "vtnet0")


@pytest.mark.parametrize(("argv", "message"), [
    (["inet6", f"{V6}/64", "pltime", "soon", "alias"], "ifconfig: invalid pltime\n"),
    (["inet", "192.0.2.1/24", "vltime", "60", "alias"],
     "ifconfig: vltime not allowed for the AF\n"),
    (["inet6", f"{V6}/64", "pltime", "70", "vltime", "60", "alias"],
     "ifconfig: ioctl (SIOCAIFADDR): Invalid argument\n"),
    # pltime stays infinite (ND6_INFINITE_LIFETIME), larger than vltime
    (["inet6", f"{V6}/64", "vltime", "60", "alias"],
     "ifconfig: ioctl (SIOCAIFADDR): Invalid argument\n"),
])
def test_lifetime_errors(bsd14: FakeBSD, argv: list[str], message: str) -> None:
    assert fail(bsd14, "ifconfig", "vtnet0", *argv) == message
    assert bsd14.addresses("vtnet0") == []


def test_dad_neighbour_duplicated_readd_clears_remove_add_reruns(bsd: FakeBSD) -> None:
    bsd.neighbour("vtnet0", V6, "58:9c:fc:00:00:99")
    ok(bsd, "ifconfig", "vtnet0", "inet6", f"{V6}/64", "alias")
    assert v6_line(bsd) == f"\tinet6 {V6} prefixlen 64 duplicated"
    assert "vtnet0: DAD complete for 2001:db8::5 - duplicate found" in bsd.kernel_log()
    # re-adding only clears the flag, without DAD: the address is usable although
    # the neighbour still answers for it (in6_update_ifa_internal)
    ok(bsd, "ifconfig", "vtnet0", "inet6", f"{V6}/64", "alias")
    assert v6_line(bsd) == f"\tinet6 {V6} prefixlen 64"
    ok(bsd, "ifconfig", "vtnet0", "inet6", V6, "-alias")
    ok(bsd, "ifconfig", "vtnet0", "inet6", f"{V6}/64", "alias")
    assert v6_line(bsd) == f"\tinet6 {V6} prefixlen 64 duplicated"
    bsd.neighbour_gone("vtnet0", V6)
    assert bsd.neighbours("vtnet0") == {}
    ok(bsd, "ifconfig", "vtnet0", "inet6", V6, "-alias")
    ok(bsd, "ifconfig", "vtnet0", "inet6", f"{V6}/64", "alias")
    assert v6_line(bsd) == f"\tinet6 {V6} prefixlen 64"


def test_dad_neighbour_on_another_link_does_not_count(bsd14: FakeBSD) -> None:
    bsd14.add_interface("vtnet1")
    bsd14.neighbour("vtnet1", V6)
    ok(bsd14, "ifconfig", "vtnet0", "inet6", f"{V6}/64", "alias")
    assert v6_line(bsd14) == f"\tinet6 {V6} prefixlen 64"


def test_dad_timed_and_manual(tmp_path: Path) -> None:
    b = FakeBSD(tmp_path, dad="timed")
    b.add_interface("vtnet0")
    ok(b, "ifconfig", "vtnet0", "inet6", f"{V6}/64", "alias")
    assert v6_line(b).endswith(" tentative")
    assert v6_line(b).endswith(" tentative")  # reads do not end a timed DAD
    b.advance_clock(1.0)  # dad_count 1 x retrans 1 s
    assert v6_line(b) == f"\tinet6 {V6} prefixlen 64"
    b.set_dad("manual")
    b.neighbour("vtnet0", "2001:db8::6")
    ok(b, "ifconfig", "vtnet0", "inet6", "2001:db8::6/64", "alias")
    b.advance_clock(60)
    assert b.addresses("vtnet0")[1][2] == ("tentative",)
    assert b.complete_dad("vtnet0") == 1
    assert b.addresses("vtnet0")[1][2] == ("duplicated",)


def test_nd6_timer_marks_addresses_tentative_while_down(bsd14: FakeBSD) -> None:
    bsd14.neighbour("vtnet0", V6)
    ok(bsd14, "ifconfig", "vtnet0", "inet6", f"{V6}/64", "alias")
    ok(bsd14, "ifconfig", "vtnet0", "inet6", "2001:db8::6/64", "alias")
    assert "duplicated" in v6_line(bsd14)
    ok(bsd14, "ifconfig", "vtnet0", "down")
    out = ok(bsd14, "ifconfig", "vtnet0")
    assert f"\tinet6 {V6} prefixlen 64 tentative\n" in out  # DUPLICATED cleared
    assert "\tinet6 2001:db8::6 prefixlen 64 tentative\n" in out
    bsd14.neighbour_gone("vtnet0", V6)
    ok(bsd14, "ifconfig", "vtnet0", "up")
    out = ok(bsd14, "ifconfig", "vtnet0")
    assert f"\tinet6 {V6} prefixlen 64\n" in out
    assert "\tinet6 2001:db8::6 prefixlen 64\n" in out


def test_ifdisabled_transitions(bsd14: FakeBSD) -> None:
    ok(bsd14, "ifconfig", "vtnet0", "inet6", f"{V6}/64", "alias")
    ok(bsd14, "ifconfig", "vtnet0", "inet6", "ifdisabled")
    assert v6_line(bsd14).endswith(" tentative")
    assert bsd14.nd6_flags("vtnet0") & 0x8
    ok(bsd14, "ifconfig", "vtnet0", "inet6", "-ifdisabled")  # in6_if_up(): DAD
    assert v6_line(bsd14) == f"\tinet6 {V6} prefixlen 64"
    ok(bsd14, "ifconfig", "vtnet0", "inet6", "ifdisabled")
    ok(bsd14, "ifconfig", "vtnet0", "inet6", "2001:db8::6/64", "alias")  # clears it
    assert not bsd14.nd6_flags("vtnet0") & 0x8
    assert v6_line(bsd14) == f"\tinet6 {V6} prefixlen 64"
