"""Random arguments, environments and configs never give a traceback or change state."""

from __future__ import annotations

import os
import string
import subprocess
from pathlib import Path

import pytest
from conftest import BINDIR, FakeBSD
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carphooks import config as configmod
from carphooks.errors import CarphooksError, UsageError
from carphooks.runtime.events import parse_carp_event, parse_tinc_env

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=40)
words = st.one_of(text, st.sampled_from(["1@tap0", "MASTER", "BACKUP", "INIT", "255@lagg0_v.1",
                                         "0@tap0", "1@-x", "master"]))


@given(words, words)
def test_event_parser_only_raises_usage_errors(subsystem, type_):
    try:
        event = parse_carp_event(subsystem, type_)
    except UsageError as exc:
        assert "\n" not in str(exc)
    else:
        assert 1 <= event.vhid <= 255


@given(st.dictionaries(st.sampled_from(["NAME", "INTERFACE", "NETNAME", "NODE", "DEVICE"]),
                       text))
def test_tinc_env_parser_only_raises_usage_errors(env):
    try:
        parse_tinc_env(env, need_node=True)
    except UsageError as exc:
        assert "\n" not in str(exc)


toml_scalar = st.one_of(st.integers(-1000, 1000), st.booleans(), text,
                        st.lists(text, max_size=3), st.floats(allow_nan=False))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(st.dictionaries(st.sampled_from(["vhid", "carp_interface", "external_interface",
                                        "addresses", "probe", "name", "bogus"]), toml_scalar))
def test_config_parser_only_raises_config_errors(tmp_path, group):
    data = {"quorum": "none", "group": [group]}
    try:
        configmod.parse(data, path=tmp_path / "x.toml", check_permissions=False)
    except CarphooksError as exc:
        assert exc.code == 6 and "\n" not in str(exc)


@pytest.fixture(scope="module")
def host(tmp_path_factory) -> tuple[FakeBSD, Path]:
    tmp = tmp_path_factory.mktemp("fuzz")
    bsd = FakeBSD(tmp / "bsd")
    bsd.add_interface("vtnet0")
    bsd.add_address("vtnet0", "203.0.113.11/24")
    bsd.add_interface("tap0", kind="tap")
    bsd.add_vhid("tap0", 1)
    bsd.add_address("tap0", "192.0.2.254/24", vhid=1)
    bsd.set_carp_state("tap0", 1, "MASTER")
    cfg = tmp / "c.toml"
    cfg.write_text(f'backend = "freebsd"\nquorum = "none"\nstate_dir = "{tmp}/state"\n'
                   f'syslog_socket = "{tmp}/none.sock"\n[[group]]\nvhid = 1\n'
                   'carp_interface = "tap0"\nexternal_interface = "vtnet0"\n'
                   'addresses = ["203.0.113.10/24"]\n')
    os.chmod(cfg, 0o600)
    return bsd, cfg


argv_text = st.text(alphabet=string.printable.replace("\x0b", "").replace("\x0c", ""),
                    max_size=20)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(argv_text, st.sampled_from(["1@tap0", "MASTER", "--dry-run",
                                                      "--config", "-v", "--help"])),
                max_size=4),
       st.dictionaries(st.sampled_from(["NAME", "INTERFACE", "NODE"]), argv_text, max_size=3))
def test_console_scripts_never_traceback(host, args, env_extra):
    bsd, cfg = host
    before = sorted(str(a[0]) for a in bsd.addresses("vtnet0"))
    env = bsd.env()
    env["CARPHOOKS_CONFIG"] = str(cfg)
    env.update(env_extra)
    is_valid = args in (["1@tap0", "MASTER"], ["-v", "1@tap0", "MASTER"])
    for script in ("carp-event", "tinc-host-up"):
        proc = subprocess.run([str(BINDIR / script), *args], env=env, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.returncode in (0, 1, 2, 6, 7)
    after = sorted(str(a[0]) for a in bsd.addresses("vtnet0"))
    if not is_valid:
        assert after == before
