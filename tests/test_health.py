"""Health checks for real: command, TCP and HTTP probes against what the test starts,
a hanging check killed at its timeout, and ``carphooks watch`` as a process on the
FreeBSD emulator (demotion, status, SIGTERM, a restart, config errors).
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BASE_CONFIG, BINDIR, FakeBSD, SyslogServer, run_script, write_config

from carphooks import config as configmod
from carphooks.config import Check
from carphooks.runner import Runner
from carphooks.runtime import health

V4 = "203.0.113.10/24"


def alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it counts as gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def wait_for(what: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def command_check(*argv: str, timeout: float = 0.5) -> Check:
    return Check(name="svc", type="command", interval=timeout * 2, timeout=timeout, fall=1,
                 rise=1, weight=50, groups=("web",), command=tuple(argv))


# -- probes -------------------------------------------------------------------------------

def test_command_exit_status_and_output(tmp_path: Path) -> None:
    ok = script(tmp_path / "ok", "echo fine\n")
    bad = script(tmp_path / "bad", "echo 'no upstream' >&2\nexit 3\n")
    assert health.probe(command_check(str(ok)), Runner()) == health.Probe(True, "exit 0", "fine")
    result = health.probe(command_check(str(bad)), Runner())
    assert (result.ok, result.detail, result.output) == (False, "exit 3", "no upstream")


def test_hanging_command_is_killed_at_the_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    hang = script(tmp_path / "hang", f"sleep 60 &\necho $! > {pidfile}\nwait\n")
    start = time.monotonic()
    result = health.probe(command_check(str(hang), timeout=0.5), Runner())
    took = time.monotonic() - start
    assert not result.ok and "timed out after 0.5 s" in result.detail
    assert took < 5  # bounded by the timeout, not by the 60 s sleep
    wait_for(lambda: not alive(int(pidfile.read_text())), 5)  # its child went too


def test_missing_or_untrusted_program_fails(tmp_path: Path) -> None:
    result = health.probe(command_check(str(tmp_path / "nope")), Runner())
    assert not result.ok and "not found" in result.detail
    loose = script(tmp_path / "loose", "exit 0\n")
    loose.chmod(0o777)  # writable by others: never run as root
    assert not health.probe(command_check(str(loose)), Runner()).ok


def test_output_tail_is_short_one_line_and_hides_the_carp_password(tmp_path: Path) -> None:
    config = configmod.parse(tomllib.loads(BASE_CONFIG.format(state=tmp_path, sock="x")),
                             path=tmp_path / "c.toml", check_permissions=False)
    noisy = script(tmp_path / "noisy",
                   "i=0; while [ $i -lt 50 ]; do echo line $i; i=$((i+1)); done\n"
                   "printf 'pass s3cret\\001\\n'\nexit 1\n")
    result = health.probe(command_check(str(noisy)), Runner(), health.Secrets.of(config))
    assert "s3cret" not in result.output and "********" in result.output
    assert len(result.output.encode()) <= health.TAIL_BYTES
    assert "\n" not in result.output and "\x01" not in result.output
    assert result.output.endswith("pass ********?")


def tcp_check(port: int, timeout: float = 1.0) -> Check:
    return Check(name="tcp", type="tcp", interval=2, timeout=timeout, fall=1, rise=1,
                 weight=50, groups=("web",), address=configmod.ipaddress.ip_address(
                     "127.0.0.1"), port=port)


def test_tcp_connect() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        assert health.probe(tcp_check(port), Runner()) == health.Probe(True, "connected")
    result = health.probe(tcp_check(port), Runner())
    assert not result.ok and "refused" in result.detail.lower()


class Server:
    """A local HTTP server answering every GET with ``status``."""

    def __init__(self) -> None:
        self.status = 200
        self.paths: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.paths.append(self.path)
                body = f"status {outer.status}\n".encode()
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def http_check(url: str, expect: int = 200, timeout: float = 1.0) -> Check:
    return Check(name="web", type="http", interval=2, timeout=timeout, fall=1, rise=1,
                 weight=50, groups=("web",), url=url, expect_status=expect)


def test_http_status(server: Server) -> None:
    url = f"http://127.0.0.1:{server.port}/health?full=1"
    assert health.probe(http_check(url), Runner()) == health.Probe(True, "HTTP 200",
                                                                   "status 200")
    assert server.paths == ["/health?full=1"]
    server.status = 503
    result = health.probe(http_check(url), Runner())
    assert (result.ok, result.detail) == (False, "HTTP 503, expected 200")
    assert health.probe(http_check(url, expect=503), Runner()).ok


def test_http_that_never_answers_fails_at_the_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        start = time.monotonic()
        result = health.probe(http_check(url, timeout=0.5), Runner())
        assert time.monotonic() - start < 3
    assert not result.ok and "timed out" in result.detail


# -- carphooks watch as a process ---------------------------------------------------------------

def watch_config(tmp_path: Path, syslog: SyslogServer, checks: str) -> Path:
    text = BASE_CONFIG.format(state=tmp_path / "state", sock=syslog.path).replace(
        "lock_timeout = 5\n", "lock_timeout = 5\nreconcile_interval = 1\n") + checks
    return write_config(tmp_path / "carphooks.toml", text)


CHECK = """
[[check]]
name = "svc"
type = "command"
command = ["{program}"]
interval = 0.5
timeout = 0.4
fall = 2
rise = 2
weight = 50
"""


def start_watch(bsd: FakeBSD, cfg: Path) -> subprocess.Popen[str]:
    env = bsd.env()
    env["CARPHOOKS_CONFIG"] = str(cfg)
    return subprocess.Popen([str(BINDIR / "carphooks"), "--host", "hA", "watch"], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    return proc.returncode, err


def status_json(bsd: FakeBSD, cfg: Path) -> dict[str, object]:
    res = run_script("carphooks", "--host", "hA", "status", "--json", env=bsd.env(), config=cfg)
    assert res.code == 0, res.err
    data: dict[str, object] = json.loads(res.out)
    return data


def test_watch_demotes_reports_stops_and_restarts(bsd: FakeBSD, tmp_path: Path,
                                                  syslog: SyslogServer) -> None:
    bsd.set_sysctl("net.inet.carp.demotion", 7)  # someone else's
    bsd.set_carp_state("tap0", 1, "MASTER")
    cfg = watch_config(tmp_path, syslog, CHECK.format(program="/bin/false"))
    proc = start_watch(bsd, cfg)
    try:
        wait_for(lambda: bsd.sysctl("net.inet.carp.demotion") == 57)
        wait_for(lambda: V4 in {str(a[0]) for a in bsd.addresses("vtnet0")})  # reconciled
    finally:
        code, err = stop(proc)
    assert code == 143, err
    assert bsd.sysctl("net.inet.carp.demotion") == 57  # a restart must not double it
    assert V4 in {str(a[0]) for a in bsd.addresses("vtnet0")}  # the check took nothing
    messages = [m.message for m in syslog.messages()]
    assert any("check svc failing" in m for m in messages)
    assert any("watch: stopped by SIGTERM" in m for m in messages)
    data = status_json(bsd, cfg)
    (check,) = data["checks"]  # type: ignore[misc]
    assert check["health"] == "failing" and check["demotion"] == 50
    assert check["detail"] == "exit 1" and check["target"] == "/bin/false"
    nagios = run_script("carphooks", "--host", "hA", "status", "--nagios", env=bsd.env(),
                        config=cfg)
    assert nagios.code == 1 and "check svc failing" in nagios.out
    # the same loop restarted, the service back: its demotion goes, exactly
    cfg = watch_config(tmp_path, syslog, CHECK.format(program="/bin/true"))
    proc = start_watch(bsd, cfg)
    try:
        wait_for(lambda: bsd.sysctl("net.inet.carp.demotion") == 7)
    finally:
        code, _ = stop(proc)
    assert code == 143
    assert json.loads((tmp_path / "state" / "demotion.json").read_text())["added"] == {}


def test_sigterm_during_a_hanging_check_leaves_no_child(bsd: FakeBSD, tmp_path: Path,
                                                       syslog: SyslogServer) -> None:
    pidfile = tmp_path / "child.pid"
    hang = script(tmp_path / "hang", f"sleep 60 &\necho $! > {pidfile}\nwait\n")
    cfg = watch_config(tmp_path, syslog, CHECK.format(program=hang).replace(
        "interval = 0.5\ntimeout = 0.4", "interval = 20\ntimeout = 15"))
    proc = start_watch(bsd, cfg)
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    finally:
        start = time.monotonic()
        code, err = stop(proc)
    assert code == 143, err
    assert time.monotonic() - start < 10  # not after the check's 15 s timeout
    wait_for(lambda: not alive(int(pidfile.read_text())), 5)


def test_watch_bad_check_is_one_line_exit_6(bsd: FakeBSD, tmp_path: Path,
                                            syslog: SyslogServer) -> None:
    cfg = watch_config(tmp_path, syslog, CHECK.format(program="false"))
    res = run_script("carphooks", "--host", "hA", "watch", env=bsd.env(), config=cfg,
                     timeout=30)
    assert res.code == 6
    (line,) = [x for x in res.err.splitlines() if x.startswith("carphooks watch: error:")]
    assert f"{cfg}: check[0].command[0]: 'false' is not an absolute path" in line
    assert "Traceback" not in res.err
    assert bsd.calls() == []  # nothing run, nothing changed


def test_reconcile_every_still_loops_and_stops_on_sigterm(bsd: FakeBSD, config: Path) -> None:
    bsd.set_carp_state("tap0", 1, "MASTER")
    env = bsd.env()
    env["CARPHOOKS_CONFIG"] = str(config)
    proc = subprocess.Popen([str(BINDIR / "carphooks"), "reconcile", "--every", "0.5"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: V4 in {str(a[0]) for a in bsd.addresses("vtnet0")})
        bsd.remove_address("vtnet0", V4)  # removed by hand: the next pass repairs it
        wait_for(lambda: V4 in {str(a[0]) for a in bsd.addresses("vtnet0")})
    finally:
        code, err = stop(proc)
    assert code == 143, err
    assert not (Path(os.fspath(config)).parent / "state" / "checks.json").exists()


# -- rc.d/carphooks -------------------------------------------------------------------------------

def test_rc_d_script_runs_watch_under_daemon(tmp_path: Path) -> None:
    """The rendered rc.d script, run by sh with a stub rc.subr that prints what
    run_rc_command would start: daemon(8) supervising ``carphooks watch``."""
    from setupkit import CONFIG_PATH, target, write_cluster

    from carphooks.setup import render

    cfg = configmod.load(write_cluster(tmp_path / "c.toml", "tinc"))
    text = render.render(target(cfg, "hA"), "rc.d").text
    stub = tmp_path / "rc.subr"
    stub.write_text('load_rc_config() { :; }\n'
                    'run_rc_command() { printf "%s|%s|%s|%s|%s\\n" "$1" "$rcvar" "$pidfile" '
                    '"$procname" "$command $command_args"; }\n')
    path = tmp_path / "carphooks"
    path.write_text(text.replace(". /etc/rc.subr", f". {stub}"))
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run(["sh", str(path), "start"], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    arg, rcvar, pidfile, procname, command = out.split("|")
    assert (arg, rcvar, pidfile, procname) == ("start", "carphooks_enable",
                                               "/var/run/carphooks_daemon.pid",
                                               "/usr/sbin/daemon")
    assert command.split() == [
        "/usr/sbin/daemon", "-f", "-r", "-P", "/var/run/carphooks_daemon.pid",
        "-p", "/var/run/carphooks.pid", "-t", "carphooks", "/usr/local/bin/carphooks",
        "--config", str(CONFIG_PATH), "watch"]
    env["carphooks_config"] = "/etc/other.toml"  # rc.conf's carphooks_config wins
    out = subprocess.run(["sh", str(path), "status"], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert "--config /etc/other.toml watch" in out and out.startswith("status|")
