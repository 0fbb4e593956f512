"""The CARP password: checked at load, never echoed, safe for rc.conf's network.subr.

* ifconfig keeps 19 characters (strlcpy into CARP_KEY_LEN 20, sbin/ifconfig/carp.c
  setcarp_callback; sys/netinet/ip_carp.h);
* rc.conf aliases pass through libexec/rc/network.subr, which eval's the value
  (ifalias_af_common) and expands "hex digit + '-'" as an address range
  (ifalias_af_common_handler): `pass change-me` recursed without end, `pass a;b`
  ran `b`;
* a config holding `password` must not be readable by others (carphooks.toml(5)).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
from conftest import BASE_CONFIG, SyslogServer, run_script, write_config
from fakebsd.control import FakeBSD
from hypothesis import given, settings
from hypothesis import strategies as st
from setupkit import write_cluster

from carphooks import config as configmod
from carphooks.errors import ConfigError
from carphooks.setup import check

SAMPLE = Path(__file__).resolve().parent.parent / "carphooks.toml.sample"
V4 = "203.0.113.10/24"

BAD = [
    ("change-me", "address range"),  # the old sample's: network.subr recursed on "e-"
    ("db-pass", "address range"),
    ("a;reboot", "eval"),
    ("x$(id)", "eval"),
    ("`id`", "eval"),
    ("a|b", "eval"),
    ("pa'ss", "eval"),
    ('pa"ss', "eval"),
    ("pass*", "eval"),
    ("~root", "eval"),
    ("#comment", "eval"),
    ("two words", "one word"),
    ("tab\there", "one word"),
    ("", "one word"),
    ("inet6", "address-family"),
    ("A1b2C3d4E5f6G7h8I9j0", "first 19"),  # 20 characters: ifconfig would cut one off
]


def cluster_text(tmp_path: Path, syslog: SyslogServer, password_line: str) -> str:
    return BASE_CONFIG.format(state=tmp_path / "state", sock=syslog.path).replace(
        'password = "s3cret"', password_line)


@pytest.mark.parametrize("value, why", BAD)
def test_bad_inline_password_refused_at_load_without_echo(tmp_path: Path, syslog: SyslogServer,
                                                          value: str, why: str) -> None:
    text = cluster_text(tmp_path, syslog, f"password = {_toml(value)}")
    path = write_config(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError) as info:
        configmod.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: group[0].carp.password: ")
    assert why in message
    assert "\n" not in message
    if len(value) > 2 and value not in configmod.RC_FAMILY_WORDS:  # those are listed
        assert value not in message  # the secret is never echoed
    assert "value not shown" in message


@pytest.mark.parametrize("value, why", [b for b in BAD if b[0].strip()])
def test_bad_password_file_refused_at_load_without_echo(tmp_path: Path, syslog: SyslogServer,
                                                        value: str, why: str) -> None:
    secret = tmp_path / "carp.pass"
    secret.write_text(value + "\n")
    secret.chmod(0o600)
    path = write_config(tmp_path / "c.toml",
                        cluster_text(tmp_path, syslog, f'password_file = "{secret}"'))
    with pytest.raises(ConfigError) as info:
        configmod.load(path)
    assert why in str(info.value) and str(secret) in str(info.value)
    if len(value) > 2 and value not in configmod.RC_FAMILY_WORDS:
        assert value not in str(info.value)


def test_good_passwords(tmp_path: Path, syslog: SyslogServer) -> None:
    for value in ("s3cret", "0ther", "db.pass", "A1b2C3d4E5f6G7h8I9j", "a:b,c+d=e@f%g/h_i",
                  "inet4", "1f2e3d4c5b6a7980"):
        path = write_config(tmp_path / "c.toml",
                            cluster_text(tmp_path, syslog, f'password = "{value}"'))
        assert configmod.load(path).groups[0].carp.secret() == value
        if len(value) == 19:  # one more character than ifconfig keeps
            path = write_config(tmp_path / "c.toml",
                                cluster_text(tmp_path, syslog, f'password = "{value}x"'))
            with pytest.raises(ConfigError, match="first 19"):
                configmod.load(path)


def test_password_pasted_as_password_file_is_not_printed(tmp_path: Path,
                                                         syslog: SyslogServer) -> None:
    path = write_config(tmp_path / "c.toml",
                        cluster_text(tmp_path, syslog, 'password_file = "Hunter2Secret"'))
    host = FakeBSD(tmp_path / "bsd")
    res = run_script("carp-event", "1@tap0", "MASTER", env=host.env(), config=path)
    assert res.code == 6
    assert "group[0].carp.password_file: is not an absolute path" in res.err
    assert "Hunter2Secret" not in res.err + res.out
    assert not any("Hunter2Secret" in m.message for m in syslog.messages())


def test_inline_password_readable_by_others_is_refused(tmp_path: Path,
                                                       syslog: SyslogServer) -> None:
    """carphooks.toml(5): a configuration holding `password` must not be readable by
    others; every hook refuses it (exit 6) and changes nothing."""
    host = FakeBSD(tmp_path / "bsd")
    host.add_interface("vtnet0")
    host.add_address("vtnet0", "203.0.113.11/24")
    host.add_interface("tap0", kind="tap")
    host.add_vhid("tap0", 1)
    host.add_address("tap0", "192.0.2.254/24", vhid=1)
    host.set_carp_state("tap0", 1, "MASTER")
    path = write_config(tmp_path / "c.toml", cluster_text(tmp_path, syslog,
                                                          'password = "s3cret"'), mode=0o644)
    host.clear_calls()
    res = run_script("carp-event", "1@tap0", "MASTER", env=host.env(), config=path)
    assert res.code == 6, res.err
    assert "readable by others" in res.err and "chmod o-r" in res.err
    assert "s3cret" not in res.err
    assert V4 not in {str(a[0]) for a in host.addresses("vtnet0")}
    assert host.calls("ifconfig") == []
    # the same file without the inline password may be world-readable
    os.chmod(path, 0o600)
    path.write_text(path.read_text().replace('password = "s3cret"\n', ""))
    os.chmod(path, 0o644)
    assert configmod.load(path).groups[0].carp.password is None


def test_sample_loads_and_check_flags_its_placeholder(tmp_path: Path) -> None:
    path = write_config(tmp_path / "sample.toml", SAMPLE.read_text())
    config = configmod.load(path)
    assert config.groups[0].carp.password == configmod.SAMPLE_PASSWORD
    doc = check.Doctor(config_path=path)
    doc.check_private(config)
    lines = {c.name: c for c in doc.checks}
    assert lines["password web"].status == check.FAIL
    assert "placeholder" in lines["password web"].message
    assert "password_file" in lines["password web"].fix


def test_check_flags_the_placeholder_in_a_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "carp.pass"
    secret.write_text(configmod.SAMPLE_PASSWORD + "\n")
    secret.chmod(0o600)
    path = write_cluster(tmp_path / "c.toml", "tinc",
                         replace=('password = "s3cret"', f'password_file = "{secret}"'))
    config = configmod.load(path)
    doc = check.Doctor(config_path=path)
    doc.check_private(config)
    assert {c.name: c.status for c in doc.checks}["password web"] == check.FAIL
    secret.write_text("mine.42\n")
    doc = check.Doctor(config_path=path)
    doc.check_private(config)
    assert "password web" not in {c.name for c in doc.checks}


@settings(max_examples=400, deadline=None)
@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), min_size=1,
               max_size=24))
def test_every_accepted_password_is_inert_in_network_subr(value: str) -> None:
    """Independent oracle: what is accepted needs no shell quoting, holds no '-' (no
    address range), fits ifconfig's 19 characters and is not a family keyword."""
    if configmod.password_problem(value) is None:
        assert shlex.quote(value) == value
        assert "-" not in value and len(value) <= 19
        assert value not in ("inet", "inet6", "link", "ether")


def _toml(value: str) -> str:
    """A TOML basic string for ``value``."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t") + '"'
