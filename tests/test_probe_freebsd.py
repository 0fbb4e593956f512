"""The probe guard on FreeBSD: an RFC 5227 ARP probe through bpf(4) before taking an
address, on by default where bpf works, driven through the real action path against the
emulator (tests/fakebsd, whose bpf.py stands in for /dev/bpf and for other link hosts)."""

from __future__ import annotations

import errno
import ipaddress
import os
import threading
import time
from pathlib import Path

import pytest
from conftest import BASE_CONFIG, SyslogServer, addrs, write_config
from fakebsd.bpf import FakeBpf
from fakebsd.control import FakeBSD

from carphooks import config as configmod
from carphooks.backends import announce, bpf
from carphooks.backends.base import CarpState
from carphooks.backends.freebsd import FreeBSDBackend
from carphooks.errors import CarphooksError, ConfigError
from carphooks.log import Log
from carphooks.runner import Runner
from carphooks.runtime import actions
from carphooks.runtime.context import Context
from carphooks.runtime.engine import Engine
from carphooks.runtime.events import CarpEvent
from carphooks.state import StateDir

OUR_MAC = bytes.fromhex("589cfc000001")  # vtnet0 in the bsd fixture
OTHER_MAC = "02:00:00:00:aa:01"
V4 = ipaddress.IPv4Address("203.0.113.10")


@pytest.fixture
def on_fakebsd(bsd: FakeBSD, monkeypatch: pytest.MonkeyPatch) -> FakeBSD:
    """Commands of this process go to the emulator; detached work runs inline."""
    for key, value in bsd.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CARPHOOKS_NO_DETACH", "1")
    return bsd


def freebsd_context(path: Path, bsd: FakeBSD) -> Context:
    """What build_context wires, with the emulator's bpf device instead of /dev/bpf."""
    cfg = configmod.load(path)
    runner = Runner()
    state = StateDir(cfg.state_dir)
    backend = FreeBSDBackend(runner, state, bpf_opener=bsd.bpf_opener())
    cfg = configmod.resolve_probe(cfg, backend.probe_problem())
    log = Log(cfg.log_tag, cfg.syslog_socket, mirror=False)
    return Context(config=cfg, log=log, runner=runner, state=state, backend=backend,
                   engine=Engine(backend, log))


def test_master_waits_while_another_host_answers_then_takes(
        on_fakebsd: FakeBSD, config: Path, syslog: SyslogServer) -> None:
    bsd = on_fakebsd
    ctx = freebsd_context(config, bsd)
    assert ctx.config.groups[0].probe is True  # not set in the file: on, bpf works here
    bsd.set_carp_state("tap0", 1, "MASTER")
    bsd.link_host("vtnet0", str(V4), OTHER_MAC)
    seen_while_answered: list[set[str]] = []

    def other_host_lets_go() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if any("is answered by" in t for t in syslog.texts()):
                seen_while_answered.append(addrs(bsd, "vtnet0"))
                bsd.link_host_gone("vtnet0", str(V4))
                return
            time.sleep(0.05)

    helper = threading.Thread(target=other_host_lets_go)
    helper.start()
    try:
        result = actions.carp_event(ctx, CarpEvent(1, "tap0", CarpState.MASTER))
    finally:
        helper.join(30)
    assert result.outcomes[0].warnings == ["group web: probing before taking it"]
    assert seen_while_answered == [{"203.0.113.11/24"}]  # nothing taken while answered
    assert addrs(bsd, "vtnet0") == {"203.0.113.11/24", "203.0.113.10/24",
                                    "2001:db8:10::10/64"}
    texts = syslog.texts()
    assert sum(t.startswith(f"{V4} is answered by {OTHER_MAC} on vtnet0: not taking group web")
               for t in texts) == 1  # once, not once per probe round
    assert any("group web: taken after a quiet ARP probe" in t for t in texts)
    frames = bsd.bpf_frames("vtnet0")
    assert len(frames) >= 2 and set(frames) == {announce.probe_frame(OUR_MAC, V4)}


def test_quiet_link_takes_after_one_probe(on_fakebsd: FakeBSD, config: Path,
                                          syslog: SyslogServer) -> None:
    bsd = on_fakebsd
    bsd.link_host("vtnet0", "203.0.113.99", OTHER_MAC)  # someone else, another address
    ctx = freebsd_context(config, bsd)
    bsd.set_carp_state("tap0", 1, "MASTER")
    actions.carp_event(ctx, CarpEvent(1, "tap0", CarpState.MASTER))
    assert {"203.0.113.10/24", "2001:db8:10::10/64"} <= addrs(bsd, "vtnet0")
    assert bsd.bpf_frames("vtnet0") == [announce.probe_frame(OUR_MAC, V4)]
    assert not any("is answered by" in t for t in syslog.texts())


def test_probe_reports_each_answering_host(bsd: FakeBSD) -> None:
    """Two answers in one bpf read (records at word boundaries); our own frames and hosts
    answering for other addresses are not reported."""
    second = ipaddress.IPv4Address("203.0.113.20")
    bsd.link_host("vtnet0", str(V4), OTHER_MAC)
    bsd.link_host("vtnet0", str(second), "02:00:00:00:aa:02")
    bsd.link_host("vtnet0", "203.0.113.30", "02:00:00:00:aa:03")
    prober = bpf.ArpProbe("vtnet0", OUR_MAC, [V4, second], bsd.bpf_opener())
    prober.start()
    assert prober.collect(1.0) == {V4: OTHER_MAC, second: "02:00:00:00:aa:02"}
    assert bsd.bpf_frames() == [announce.probe_frame(OUR_MAC, V4),
                                announce.probe_frame(OUR_MAC, second)]


def test_probe_errors_name_the_interface(bsd: FakeBSD) -> None:
    prober = bpf.ArpProbe("vtnet9", OUR_MAC, [V4], bsd.bpf_opener())
    with pytest.raises(CarphooksError, match="ARP probe on vtnet9: bpf: "):
        prober.start()  # BIOCSETIF: ENXIO
    bsd.set_up("vtnet0", False)
    prober = bpf.ArpProbe("vtnet0", OUR_MAC, [V4], bsd.bpf_opener())
    with pytest.raises(CarphooksError, match=os.strerror(errno.ENETDOWN)):
        prober.start()


def test_fake_bpf_checks_like_the_kernel(bsd: FakeBSD) -> None:
    dev = FakeBpf(bsd.state_path)
    with pytest.raises(OSError) as exc:
        dev.write(announce.probe_frame(OUR_MAC, V4))
    assert exc.value.errno == errno.ENXIO  # bpfwrite: not attached
    dev.ioctl(bpf.BIOCSETIF, bpf.ifreq("vtnet0"))
    with pytest.raises(OSError) as exc:
        dev.read(100)
    assert exc.value.errno == errno.EINVAL  # bpfread: not the buffer size
    with pytest.raises(OSError) as exc:
        dev.ioctl(bpf.BIOCSETIF & ~0xFF0000, bpf.ifreq("vtnet0"))  # wrong size encoded
    assert exc.value.errno == errno.EINVAL


def test_probe_is_on_by_default_only_where_it_works(tmp_path: Path,
                                                    syslog: SyslogServer) -> None:
    """No /dev/bpf (this Linux host): off by default, and asking for it is a config error
    that says why; the Linux backend probes by default."""
    if bpf.unavailable() is None:
        pytest.skip("this host has a usable /dev/bpf")
    text = BASE_CONFIG.format(state=tmp_path / "state", sock=syslog.path)
    quiet = configmod.load(write_config(tmp_path / "a.toml", text))
    log = Log("t", str(syslog.path), mirror=False)
    assert actions.build_context(quiet, log).config.groups[0].probe is False
    asked = configmod.load(write_config(tmp_path / "b.toml",
                                        text.replace('name = "web"\n',
                                                     'name = "web"\nprobe = true\n')))
    assert asked.groups[0].probe is True
    with pytest.raises(ConfigError) as exc:
        actions.build_context(asked, log)
    assert str(exc.value).startswith(
        f"{tmp_path / 'b.toml'}: group[0].probe: true, but /dev/bpf does not exist")
    off = configmod.load(write_config(tmp_path / "c.toml",
                                      text.replace('name = "web"\n',
                                                   'name = "web"\nprobe = false\n')))
    assert actions.build_context(off, log).config.groups[0].probe is False
    linux = configmod.load(write_config(tmp_path / "d.toml",
                                        text.replace('"freebsd"', '"linux"')))
    assert configmod.resolve_probe(linux, None).groups[0].probe is True


def test_master_takes_when_the_probe_itself_fails(on_fakebsd: FakeBSD, config: Path,
                                                  syslog: SyslogServer) -> None:
    """A bpf failure at run time (EPERM in a jail, ENETDOWN) must not leave a MASTER
    without its addresses: the guard is an extra, so the take goes ahead, logged."""
    bsd = on_fakebsd
    ctx = freebsd_context(config, bsd)

    def refused() -> FakeBpf:
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), "/dev/bpf")

    ctx.backend.bpf_opener = refused  # type: ignore[attr-defined]
    bsd.set_carp_state("tap0", 1, "MASTER")
    actions.carp_event(ctx, CarpEvent(1, "tap0", CarpState.MASTER))
    assert {"203.0.113.10/24", "2001:db8:10::10/64"} <= addrs(bsd, "vtnet0")
    assert any("ARP probe on vtnet0 failed" in t and "taking without it" in t
               for t in syslog.texts())
