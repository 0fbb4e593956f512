"""The lab topology: namespaces, links, tincd, ucarp, hook sets, the monitor.

Everything `up` creates is recorded in a state file (/run/carphooks-lab/<id>.json)
before it is created, so `down` (same process or a later `python -m lab down`)
removes exactly that: the processes by PID (checked against their start time) and
the namespaces by name. Names carry the lab id (chl-<pid>), so parallel runs do not
collide.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import nsutil
from .nsutil import alive, ip, kill_wait, proc_state, reap, sh

REPO = Path(__file__).resolve().parent.parent
STATE_DIR = Path("/run/carphooks-lab")
TMP_ROOT = Path(os.environ.get("CARPHOOKS_LAB_TMP", "/tmp/carphooks-lab"))
VENV_BIN = Path(os.environ.get("CARPHOOKS_BINDIR", str(REPO / ".venv" / "bin")))
ENTRY_POINTS = ("carp-event", "tinc-up", "tinc-down", "tinc-host-up", "tinc-host-down")
MIN_PATH = "/sbin:/bin:/usr/sbin:/usr/bin"  # like devd's: hooks must use absolute paths

VIP4 = "198.51.100.100/24"
VIP6 = "2001:db8:100::100/64"
CARP_VIP = "192.0.2.254"
PORT = 7777
VHID = 1
# The health-check scenarios: a tiny HTTP service on each host (python -m http.server,
# GET /name answers the host's name), checked by carphooks' [[check]] or by keepalived's
# vrrp_script with the same interval, timeout, fall, rise and weight.
SVC_PORT = 8080
SVC_PATH = "/name"
# keepalived takes whole seconds (vrrp_parser.c vrrp_vscript_timeout_handler: at least
# 1) while carphooks wants the timeout below the interval: carphooks and curl give up
# after 0.9 s, keepalived's own timeout (a backstop behind curl's) is 1 s.
CHECK = {"interval": 1, "timeout": 0.9, "fall": 2, "rise": 2, "weight": 60}
KEEPALIVED_SCRIPT_TIMEOUT = 1
CHECKERS = ("carphooks", "keepalived")
NETNAME = "carp"
HOSTS: dict[str, dict[str, Any]] = {
    "hA": {"n": 11, "skew": 0},
    "hB": {"n": 12, "skew": 50},
    "hC": {"n": 13, "skew": 100},
}
for _h, _v in HOSTS.items():
    n = _v["n"]
    _v.update(
        pub4=f"198.51.100.{n}/24",
        pub6=f"2001:db8:100::{n}/64",
        vpn=f"192.0.2.{n}/24",
        mac=f"02:00:c0:00:02:{n:02x}",
    )
CLIENT4, CLIENT6 = "198.51.100.2/24", "2001:db8:100::2/64"

TINC_SCRIPTS = {
    "tinc-up": "tinc-up",
    "tinc-down": "tinc-down",
    "host-up": "tinc-host-up",
    "host-down": "tinc-host-down",
}


class LabError(RuntimeError):
    pass


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def render_adapter(name: str, bindir: Path) -> str:
    """hooks/<name> with the install-time placeholder filled in."""
    return (REPO / "hooks" / name).read_text().replace("@CARPHOOKS_BINDIR@", str(bindir))


# What the lab changes in carphooks' rendered tinc.conf (everything else, the full mesh
# of ConnectTo, MaxTimeout, PingInterval/PingTimeout, TCPOnly, Mode, is used as rendered):
# Linux's tun/tap clone device, IPv4 only between the namespaces, broadcasts (CARP
# advertisements) sent straight to every directly connected node.
TINC_OVERRIDES = {
    "Device": "/dev/net/tun",
    "AddressFamily": "ipv4",
    "Broadcast": "direct",
}
# Experiments: CARPHOOKS_LAB_TINC="PingInterval=1,PingTimeout=1" overrides more lines.
for _kv in filter(None, os.environ.get("CARPHOOKS_LAB_TINC", "").split(",")):
    _key, _, _val = _kv.partition("=")
    TINC_OVERRIDES[_key.strip()] = _val.strip()


def rendered_tinc_conf(config_path: Path, host: str) -> str:
    """carphooks' tinc.conf for ``host`` (``carphooks render tinc.conf``), with the lab's
    TINC_OVERRIDES replacing or following the rendered lines."""
    try:
        from carphooks import config as configmod
        from carphooks.errors import CarphooksError
        from carphooks.setup import render
    except ImportError as exc:
        raise LabError(f"carphooks is not importable ({exc}): run the lab with the venv's "
                       "python") from None
    try:
        config = configmod.load(config_path, check_permissions=False)
        tgt = render.target(config, host=host, bindir=VENV_BIN, config_path=config_path)
        text = render.render(tgt, "tinc.conf").text
    except CarphooksError as exc:
        raise LabError(f"cannot render tinc.conf for {host}: {exc}") from None
    lines, done = [], set()
    for line in text.splitlines():
        key = line.split("=", 1)[0].strip()
        if not line.startswith("#") and key in TINC_OVERRIDES:
            line = f"{key} = {TINC_OVERRIDES[key]}"
            done.add(key)
        lines.append(line)
    extra = [f"{k} = {val}" for k, val in TINC_OVERRIDES.items() if k not in done]
    if extra:
        lines += ["# carphooks lab (Linux namespaces):", *extra]
    return "\n".join(lines) + "\n"


def svc_url() -> str:
    """The URL both checkers GET inside each host (the host's own service)."""
    return f"http://127.0.0.1:{SVC_PORT}{SVC_PATH}"


def keepalived_check_argv() -> list[str]:
    """keepalived's track_script: the same HTTP GET as carphooks' check, by curl."""
    return ["/usr/bin/curl", "-fsS", "-o", "/dev/null", "--max-time", str(CHECK["timeout"]),
            svc_url()]


def carphooks_missing() -> list[str]:
    return [e for e in ENTRY_POINTS if not os.access(VENV_BIN / e, os.X_OK)]


class Lab:
    def __init__(self, lab_id: str | None = None, owner: int | None = None):
        self.id = lab_id or f"chl-{os.getpid()}"
        self.state_file = STATE_DIR / f"{self.id}.json"
        if self.state_file.exists():
            self.st: dict[str, Any] = json.loads(self.state_file.read_text())
        else:
            self.st = {
                "id": self.id,
                "tmp": str(TMP_ROOT / self.id),
                "netns": [],
                "procs": {},
                "owner": owner,
                "hookset": None,
                "daemon": "ucarp",
                "checker": None,
                "created": time.time(),
            }
        self.tmp = Path(self.st["tmp"])
        self.ns = {k: f"{self.id}-{k}" for k in ("pub", "client", *HOSTS)}
        self.popen: dict[str, subprocess.Popen[bytes]] = {}
        self._tail_pos = 0

    # ------------------------------------------------------------ state file
    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        _write(self.state_file, json.dumps(self.st, indent=1))

    @property
    def monitor_log(self) -> Path:
        return self.tmp / "monitor.jsonl"

    @property
    def hook_log(self) -> Path:
        return self.tmp / "hooks.jsonl"

    def hdir(self, h: str) -> Path:
        return self.tmp / h

    # ------------------------------------------------------------ processes
    def spawn(
        self, key: str, ns: str | None, argv: list[str], env: dict[str, str], log: Path
    ) -> int:
        """Start a process (in netns ns), record it by PID + start time."""
        self.stop(key)
        full = (["ip", "netns", "exec", ns] if ns else []) + argv
        logf = open(log, "ab")
        p = subprocess.Popen(
            full,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        logf.close()
        st = proc_state(p.pid)
        self.popen[key] = p
        self.st["procs"][key] = {"pid": p.pid, "start": st[1] if st else None, "argv": full}
        self.save()
        return p.pid

    def running(self, key: str) -> bool:
        reap()
        pr = self.st["procs"].get(key)
        return bool(pr) and alive(pr["pid"], pr["start"])

    def pid(self, key: str) -> int:
        return int(self.st["procs"][key]["pid"])

    def send(self, key: str, sig: int) -> None:
        pr = self.st["procs"][key]
        if alive(pr["pid"], pr["start"]):
            os.kill(pr["pid"], sig)

    def stop(self, key: str, sig: int = signal.SIGTERM, timeout: float = 3.0) -> None:
        pr = self.st["procs"].get(key)
        if not pr:
            return
        kill_wait(pr["pid"], pr["start"], sig, timeout)
        p = self.popen.pop(key, None)
        if p:
            with contextlib.suppress(Exception):
                p.wait(timeout=0.5)
        self.st["procs"].pop(key, None)
        self.save()

    def forget_dead(self) -> None:
        for key in list(self.st["procs"]):
            if not self.running(key):
                self.popen.pop(key, None)
                self.st["procs"].pop(key)
        self.save()

    # ------------------------------------------------------------ up
    def up(self, hookset: str = "bare") -> None:
        """Idempotent: creates what is missing, restarts dead daemons."""
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces)")
        for tool in ("tincd", "ucarp", "arping", "ip"):
            if not shutil.which(tool):
                raise LabError(
                    f"{tool} not found: apt-get install -y tinc ucarp iputils-arping iproute2"
                )
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.save()
        self._net()
        self._tinc_conf()
        self.write_hooks(hookset)
        if not self.running("monitor"):
            self._start_monitor()
        self.start_all()

    def _net(self) -> None:
        for ns in self.ns.values():
            if ns not in self.st["netns"]:
                self.st["netns"].append(ns)
                self.save()
            if not nsutil.netns_exists(ns):
                ip(None, "netns", "add", ns)
                ip(ns, "link", "set", "lo", "up")
        pub = self.ns["pub"]
        if ip(pub, "link", "show", "br0", check=False).returncode != 0:
            ip(pub, "link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0")
            ip(pub, "link", "set", "br0", "up")
        ends = {"client": ("eth0", CLIENT4, CLIENT6, "02:00:c6:33:64:02")}
        for h, v in HOSTS.items():
            ends[h] = ("ext0", v["pub4"], v["pub6"], f"02:00:c6:33:64:{v['n']:02x}")
        for who, (ifname, a4, a6, mac) in ends.items():
            ns = self.ns[who]
            if ip(ns, "link", "show", ifname, check=False).returncode == 0:
                continue
            ip(
                None,
                "link",
                "add",
                ifname,
                "netns",
                ns,
                "address",
                mac,
                "type",
                "veth",
                "peer",
                "name",
                f"v{who}",
                "netns",
                pub,
            )
            ip(pub, "link", "set", f"v{who}", "master", "br0", "up")
            ip(ns, "addr", "add", a4, "dev", ifname)
            ip(ns, "addr", "add", a6, "dev", ifname, "nodad")
            ip(ns, "link", "set", ifname, "up")

    def _tinc_conf(self) -> None:
        for h, v in HOSTS.items():
            cb = self.hdir(h) / "tinc"
            (cb / "hosts").mkdir(parents=True, exist_ok=True)
            (self.hdir(h) / "state").mkdir(mode=0o700, parents=True, exist_ok=True)
            self._write_config(h, v)
            _write(cb / "tinc.conf", rendered_tinc_conf(self.hdir(h) / "carphooks.toml", h))
            if not (cb / "rsa_key.priv").exists():
                _write(
                    cb / "hosts" / h,
                    f"Address = {HOSTS[h]['pub4'].split('/')[0]}\nPort = 655\nTCPOnly = yes\n",
                )
                sh("tincd", "-c", str(cb), "-K2048", timeout=60)
        for h in HOSTS:  # distribute host files (with public keys)
            src = (self.hdir(h) / "tinc" / "hosts" / h).read_text()
            for o in HOSTS:
                if o != h:
                    _write(self.hdir(o) / "tinc" / "hosts" / h, src)

    # ------------------------------------------------------------ hook sets
    def write_hooks(self, hookset: str) -> None:
        """Write the tinc scripts (in each confbase) and ucarp scripts for a hook set.
        Every script is a lab wrapper: it records start/end time, argv and the tinc
        environment in hooks.jsonl, then runs the real hook (and waits for it, as
        tinc and ucarp do)."""
        if hookset == "carphooks":
            miss = carphooks_missing()
            if miss:
                raise LabError(
                    f"carphooks entry points missing in {VENV_BIN}: {', '.join(miss)} "
                    "(pip install -e . in the venv first)"
                )
        elif hookset != "bare":
            raise LabError(f"unknown hook set {hookset}")
        bindir = self.tmp / "bin"
        for name in ("ucarp-up", "ucarp-down", "keepalived-notify"):
            _write(bindir / name, render_adapter(name, VENV_BIN), 0o755)
        for h, v in HOSTS.items():
            d = self.hdir(h)
            self._write_bare(h, v)
            self._write_config(h, v)
            for script, entry in TINC_SCRIPTS.items():
                target = (d / "bare" / script) if hookset == "bare" else (VENV_BIN / entry)
                self._wrapper(d / "tinc" / script, h, hookset, script, target)
            for name in ("ucarp-up", "ucarp-down"):
                target = (d / "bare" / name) if hookset == "bare" else (bindir / name)
                self._wrapper(d / name, h, hookset, name, target)
            self._wrapper(d / "keepalived-notify", h, hookset, "keepalived-notify",
                          (d / "bare" / "keepalived-notify") if hookset == "bare"
                          else (bindir / "keepalived-notify"))
        self.st["hookset"] = hookset
        self.save()

    def _wrapper(self, path: Path, h: str, hookset: str, hook: str, target: Path) -> None:
        envs = (
            "NETNAME",
            "NAME",
            "DEVICE",
            "INTERFACE",
            "NODE",
            "REMOTEADDRESS",
            "REMOTEPORT",
            "PATH",
            "CARPHOOKS_CONFIG",
        )
        fmt = ",".join(f'"{e}":"%s"' for e in envs)
        vals = " ".join(f'"${{{e}-}}"' for e in envs)
        _write(
            path,
            f"""#!/bin/sh
# lab wrapper ({hookset}): time the hook, record argv and environment, run it.
CARPHOOKS_CONFIG={self.hdir(h) / "carphooks.toml"}
CARPHOOKS_HOST={h}
export CARPHOOKS_CONFIG CARPHOOKS_HOST
t0=$(/usr/bin/date +%s.%N)
{target} "$@" 2>>{self.hdir(h) / "hooks.err"}
rc=$?
t1=$(/usr/bin/date +%s.%N)
printf '{{"host":"{h}","set":"{hookset}","hook":"{hook}",'\\
'"t0":%s,"t1":%s,"rc":%s,"argv":"%s","env":{{{fmt}}}}}\\n' \\
  "$t0" "$t1" "$rc" "$*" {vals} >>{self.hook_log}
exit $rc
""",
            0o755,
        )

    def _write_bare(self, h: str, v: dict[str, Any]) -> None:
        """The baseline: what the original shell script did."""
        d = self.hdir(h) / "bare"
        ipc, vip4, vip6 = "/usr/sbin/ip", VIP4, VIP6
        _write(
            d / "tinc-up",
            f"""#!/bin/sh
{ipc} link set "$INTERFACE" address {v["mac"]}
{ipc} addr add {v["vpn"]} dev "$INTERFACE"
{ipc} link set "$INTERFACE" up
""",
            0o755,
        )
        _write(
            d / "tinc-down",
            f"""#!/bin/sh
{ipc} addr del {vip4} dev ext0 2>/dev/null
{ipc} -6 addr del {vip6} dev ext0 2>/dev/null
{ipc} link set "$INTERFACE" down
exit 0
""",
            0o755,
        )
        for s in ("host-up", "host-down"):
            _write(d / s, "#!/bin/sh\nexit 0\n", 0o755)
        _write(
            d / "ucarp-up",
            f"""#!/bin/sh
# ucarp-up IF VIP XPARAM: take the floating address, announce once (foreground)
{ipc} addr add {vip4} dev ext0
{ipc} -6 addr add {vip6} dev ext0 nodad
/usr/bin/arping -U -c 1 -I ext0 {vip4.split("/")[0]} >/dev/null
exit 0
""",
            0o755,
        )
        _write(d / "keepalived-notify", f"""#!/bin/sh
# keepalived notify IF INSTANCE NAME STATE PRIO: the bare script behind keepalived
case $4 in MASTER) exec {d / "ucarp-up"} "$1" - 1 ;; *) exec {d / "ucarp-down"} "$1" - 1 ;; esac
""", 0o755)
        _write(
            d / "ucarp-down",
            f"""#!/bin/sh
{ipc} addr del {vip4} dev ext0 2>/dev/null
{ipc} -6 addr del {vip6} dev ext0 2>/dev/null
exit 0
""",
            0o755,
        )

    def _write_config(self, h: str, v: dict[str, Any]) -> None:
        """The carphooks config for host h (schema: docs/design.md)."""
        hosts = "\n".join(
            f'[hosts.{o}]\nvpn_address = "{ov["vpn"]}"\n'
            f'advskew = {ov["skew"]}\nmac = "{ov["mac"]}"\n'
            for o, ov in HOSTS.items()
        )
        _write(
            self.hdir(h) / "carphooks.toml",
            f"""# carphooks config for lab host {h} (written by lab/topo.py)
log_tag = "carphooks"
backend = "linux"
state_dir = "{self.hdir(h) / "state"}"
syslog_socket = "{self.hdir(h) / "syslog.sock"}"
topology = "tinc"
quorum = "majority"
lock_timeout = 5.0
demotion_file = "{self.hdir(h) / "demotion"}"
{"reconcile_interval = 1.0" if self.st.get("checker") == "carphooks" else ""}

[tinc]
netname = "{NETNAME}"
nodes = [{", ".join(f'"{o}"' for o in HOSTS)}]
confbase = "{self.hdir(h) / "tinc"}"

{hosts}
[[group]]
name = "web"
vhid = {VHID}
carp_interface = "tap0"
external_interface = "ext0"
addresses = ["{VIP4}", "{VIP6}"]
probe = true

[group.carp]
address = "{CARP_VIP}/24"
advbase = 1
advskew = {v["skew"]}
password = "labpass"
{self._check_toml()}""",
            0o600,  # holds the CARP password: carphooks refuses it readable by others
        )

    def _check_toml(self) -> str:
        """carphooks' health check of the lab service (only when carphooks is the checker)."""
        if self.st.get("checker") != "carphooks":
            return ""
        return f"""
[[check]]
name = "web"
type = "http"
url = "{svc_url()}"
expect_status = 200
interval = {CHECK["interval"]}
timeout = {CHECK["timeout"]}
fall = {CHECK["fall"]}
rise = {CHECK["rise"]}
weight = {CHECK["weight"]}
groups = ["web"]
"""

    # ------------------------------------------------------------ daemons
    def _start_monitor(self) -> None:
        cfg = {
            "out": str(self.monitor_log),
            "client": self.ns["client"],
            "hosts": {h: self.ns[h] for h in HOSTS},
            "vip4": VIP4,
            "vip6": VIP6,
            "port": PORT,
            "svc_port": SVC_PORT,
            "svc_path": SVC_PATH,
            "vpn_ips": {h: v["vpn"].split("/")[0] for h, v in HOSTS.items()},
            "syslog": {h: str(self.hdir(h) / "syslog.sock") for h in HOSTS},
        }
        _write(self.tmp / "monitor.json", json.dumps(cfg))
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.spawn(
            "monitor",
            None,
            [sys.executable, "-m", "lab.monitor", str(self.tmp / "monitor.json")],
            env,
            self.tmp / "monitor.log",
        )
        for _ in range(100):
            if self.monitor_log.exists() and self.monitor_log.stat().st_size:
                return
            time.sleep(0.05)
        raise LabError(f"monitor did not start, see {self.tmp / 'monitor.log'}")

    def env(self, h: str) -> dict[str, str]:
        return {
            "PATH": MIN_PATH,
            "CARPHOOKS_CONFIG": str(self.hdir(h) / "carphooks.toml"),
            "CARPHOOKS_HOST": h,
        }

    def start_tincd(self, h: str) -> None:
        d = self.hdir(h)
        self.spawn(
            f"tincd-{h}",
            self.ns[h],
            [
                "/usr/sbin/tincd",
                "-n",
                NETNAME,
                "-c",
                str(d / "tinc"),
                "-D",
                "-d1",
                f"--pidfile={d / 'tincd.pid'}",
                f"--logfile={d / 'tincd.log'}",
            ],
            self.env(h),
            d / "tincd.out",
        )

    def tap_ready(self, h: str) -> bool:
        p = ip(self.ns[h], "-4", "-o", "addr", "show", "dev", "tap0", check=False)
        return (
            p.returncode == 0
            and HOSTS[h]["vpn"] in p.stdout
            and ",UP" in ip(self.ns[h], "-o", "link", "show", "dev", "tap0", check=False).stdout
        )

    def wait_tap(self, h: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.tap_ready(h):
                return
            if not self.running(f"tincd-{h}"):
                raise LabError(f"tincd on {h} exited, see {self.hdir(h) / 'tincd.log'}")
            time.sleep(0.02)
        err = self.hdir(h) / "hooks.err"
        tail = err.read_text()[-600:] if err.exists() else ""
        raise LabError(
            f"tap0 on {h} not configured with {HOSTS[h]['vpn']} after {timeout}s "
            f"(tinc-up hook of set {self.st['hookset']}); {err}: {tail}"
        )

    def start_keepalived(self, h: str) -> None:
        """keepalived's VRRP instead of ucarp (process key ucarp-<h>: "the CARP daemon").
        track_file follows carphooks' demotion_file, as FreeBSD's CARP follows
        net.inet.carp.demotion; notify runs hooks/keepalived-notify."""
        d, v = self.hdir(h), HOSTS[h]
        demotion = d / "demotion"
        if not demotion.exists():
            _write(demotion, "0\n")
        conf = d / "keepalived.conf"
        track = ("    track_script {\n        chk_web\n    }\n"
                 if self.st.get("checker") == "keepalived" else "")
        _write(conf, f"""global_defs {{
    router_id {h}
    script_user root
    vrrp_garp_master_delay 0
    vrrp_garp_master_repeat 1
}}
vrrp_track_file carphooks_demotion {{
    file {demotion}
    weight -1
}}
{self._vrrp_script()}vrrp_instance vhid{VHID} {{
    state BACKUP
    interface tap0
    virtual_router_id {VHID}
    priority {250 - v["skew"]}
    advert_int 1
    virtual_ipaddress {{
        {CARP_VIP}/24 dev tap0
    }}
    track_file {{
        carphooks_demotion
    }}
{track}    notify "{d / "keepalived-notify"} tap0"
}}
""")
        self.spawn(
            f"ucarp-{h}", self.ns[h],
            ["/usr/sbin/keepalived", "-n", "-l", "-D", "-P", "-f", str(conf),
             "-p", str(d / "keepalived.pid"), "-r", str(d / "keepalived-vrrp.pid"),
             "-G", "-i", h],
            self.env(h), d / "ucarp.log",
        )

    def _vrrp_script(self) -> str:
        """keepalived's own health check, equal to carphooks' [[check]] (keepalived
        subtracts |weight| from the priority after `fall` failures, adds it back after
        `rise` successes: keepalived.conf(5), "VRRP script(s)")."""
        if self.st.get("checker") != "keepalived":
            return ""
        return f"""vrrp_script chk_web {{
    script "{" ".join(keepalived_check_argv())}"
    interval {CHECK["interval"]}
    timeout {KEEPALIVED_SCRIPT_TIMEOUT}
    fall {CHECK["fall"]}
    rise {CHECK["rise"]}
    weight -{CHECK["weight"]}
}}
"""

    # ------------------------------------------------------------ the service
    def start_service(self, h: str) -> None:
        """The tiny service behind the floating address: python's http.server on
        SVC_PORT (dual stack) in h's namespace; GET /name answers h."""
        www = self.hdir(h) / "www"
        _write(www / SVC_PATH.lstrip("/"), f"{h}\n")
        self.spawn(f"svc-{h}", self.ns[h],
                   [sys.executable, "-m", "http.server", str(SVC_PORT), "--bind", "::",
                    "--directory", str(www)],
                   {"PATH": MIN_PATH}, self.hdir(h) / "svc.log")

    def start_services(self) -> None:
        """Every host's service (health-check scenarios only); waits until they listen."""
        if not self.st.get("checker"):
            return
        for h in HOSTS:
            if not self.running(f"svc-{h}"):
                self.start_service(h)
        for h in HOSTS:
            self.wait_service(h)

    def wait_service(self, h: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = nsutil.socket_in(self.ns[h], socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", SVC_PORT)) == 0:
                    return
            finally:
                s.close()
            if not self.running(f"svc-{h}"):
                break
            time.sleep(0.05)
        raise LabError(f"service on {h} not listening on port {SVC_PORT}, see "
                       f"{self.hdir(h) / 'svc.log'}")

    def start_ucarp(self, h: str) -> None:
        if self.st.get("daemon") == "keepalived":
            self.start_keepalived(h)
            return
        d, v = self.hdir(h), HOSTS[h]
        self.spawn(
            f"ucarp-{h}",
            self.ns[h],
            [
                "/usr/sbin/ucarp",
                "-i",
                "tap0",
                "-s",
                v["vpn"].split("/")[0],
                "-v",
                str(VHID),
                "-p",
                "labpass",
                "-a",
                CARP_VIP,
                "-b",
                "1",
                "-k",
                str(v["skew"]),
                "-r",
                "3",
                "-P",
                "-z",
                "-x",
                str(VHID),
                "-u",
                str(d / "ucarp-up"),
                "-d",
                str(d / "ucarp-down"),
            ],
            self.env(h),
            d / "ucarp.log",
        )

    def start_cron(self, h: str) -> None:
        """carphooks' periodic reconcile (cron on FreeBSD; here every second, in one
        process): repairs missed events and hand-removed addresses. The bare set has none."""
        if self.st["hookset"] != "carphooks" or self.running(f"cron-{h}"):
            return
        d = self.hdir(h)
        # with carphooks as the health checker, its long-running loop runs the checks
        # and the periodic reconcile in one process
        argv = ([str(VENV_BIN / "carphooks"), "watch"] if self.st.get("checker") == "carphooks"
                else [str(VENV_BIN / "carphooks"), "reconcile", "--every", "1"])
        self.spawn(f"cron-{h}", self.ns[h], argv, self.env(h), d / "cron.log")

    def start_host(self, h: str) -> None:
        if self.st.get("checker") and not self.running(f"svc-{h}"):
            self.start_service(h)
            self.wait_service(h)
        if not self.running(f"tincd-{h}"):
            self.start_tincd(h)
        self.wait_tap(h)
        if not self.running(f"ucarp-{h}"):
            self.start_ucarp(h)
        self.start_cron(h)

    def start_all(self) -> None:
        self.start_services()
        for h in HOSTS:
            if not self.running(f"tincd-{h}"):
                self.start_tincd(h)
        for h in HOSTS:
            self.wait_tap(h)
        # ucarp started on all hosts at once elects several masters for a while
        # (each sends its first advertisement only advbase after taking over): start
        # the preferred host first and the others once it advertises.
        first = min(HOSTS, key=lambda h: HOSTS[h]["skew"])
        if not self.running(f"ucarp-{first}"):
            self.start_ucarp(first)
            self.wait_adv(first, next(h for h in HOSTS if h != first), timeout=6.0)
        for h in HOSTS:
            if not self.running(f"ucarp-{h}"):
                self.start_ucarp(h)
        for h in HOSTS:
            self.start_cron(h)

    def stop_daemons(self, kinds: tuple[str, ...] = ("cron", "svc", "ucarp", "tincd")) -> None:
        """Stop cron (or the watch loop), the services, then the CARP daemons, then tincd
        (or only ``kinds``): each kind
        signalled on all hosts at once (their shutdown hooks run in parallel), then
        waited for."""
        for kind in kinds:
            keys = [f"{kind}-{h}" for h in HOSTS]
            for key in keys:
                pr = self.st["procs"].get(key)
                if pr and alive(pr["pid"], pr["start"]):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pr["pid"], signal.SIGTERM)
            for key in keys:
                self.stop(key, sig=0)  # signalled above: wait, SIGKILL after the timeout
        for h in HOSTS:  # whatever the hooks left behind
            ip(self.ns[h], "addr", "del", VIP4, "dev", "ext0", check=False)
            ip(self.ns[h], "-6", "addr", "del", VIP6, "dev", "ext0", check=False)
            ip(self.ns[h], "link", "set", "ext0", "up", check=False)

    def reset_carphooks_state(self) -> None:
        """Forget maintenance and demotion left by an earlier scenario."""
        for h in HOSTS:
            d = self.hdir(h)
            for name in ("maintenance.json", "demotion.json"):
                with contextlib.suppress(FileNotFoundError):
                    (d / "state" / name).unlink()
            if d.exists():
                _write(d / "demotion", "0\n")

    def flush_client(self) -> None:
        ip(self.ns["client"], "neigh", "flush", "dev", "eth0", check=False)

    # ------------------------------------------------------------ down
    def down(self, keep: bool = False) -> list[str]:
        done = []
        for key in (
            "monitor",
            *sorted(k for k in self.st["procs"] if k.startswith("ucarp")),
            *sorted(k for k in self.st["procs"] if k != "monitor" and not k.startswith("ucarp")),
        ):
            pr = self.st["procs"].get(key)
            if pr:
                kill_wait(
                    pr["pid"],
                    pr["start"],
                    signal.SIGKILL if key.startswith("ucarp") else signal.SIGTERM,
                    2.0,
                )
                done.append(f"{key}[{pr['pid']}]")
        self.st["procs"] = {}
        for ns in self.st["netns"]:
            if nsutil.netns_exists(ns):
                ip(None, "netns", "del", ns, check=False)
                done.append(ns)
        if not keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        return done

    # ------------------------------------------------------------ tinc mesh
    def direct_peers(self, h: str) -> set[str]:
        """The hosts h's tincd holds an established meta connection with, as carphooks
        sees it (carphooks.mesh over `ss` in h's namespace and h's hosts/ files)."""
        from carphooks import mesh

        p = sh("ip", "netns", "exec", self.ns[h], "ss", "-H", "-t", "-n", "-p", "state",
               "established", check=False)
        if p.returncode != 0:
            return set()
        view = mesh.mesh(self.hdir(h) / "tinc", h, tuple(HOSTS), (), mesh.parse_ss(p.stdout),
                         resolve=None)
        return {v.name for v in view.voters if v.direct}

    def missing_links(self) -> list[str]:
        """Pairs of running tincds without a direct connection seen from both ends."""
        up = [h for h in HOSTS if self.running(f"tincd-{h}")]
        with ThreadPoolExecutor(max_workers=len(HOSTS)) as pool:  # one `ss` per host at once
            seen = dict(zip(up, pool.map(self.direct_peers, up), strict=True))
        return [f"{a}-{b}" for i, a in enumerate(up) for b in up[i + 1:]
                if b not in seen[a] or a not in seen[b]]

    def wait_mesh(self, timeout: float = 20.0,
                  stable: float = 1.0) -> tuple[bool, float, list[str]]:
        """Wait until every pair of running tincds is directly connected, and stays so
        for ``stable`` seconds. Returns (reached, seconds waited, missing pairs)."""
        t0 = time.monotonic()
        since = None
        missing: list[str] = []
        while True:
            missing = self.missing_links()
            now = time.monotonic()
            if missing:
                since = None
            elif since is None:
                since = now
            elif now - since >= stable:
                return True, round(since - t0, 2), []
            if now - t0 >= timeout:
                return False, round(now - t0, 2), missing
            time.sleep(0.2)

    # ------------------------------------------------------------ fault timing
    def wait_adv(self, src_host: str, seen_in: str, timeout: float = 3.0) -> bool:
        """Block until a CARP advertisement from src_host arrives in seen_in's netns."""
        src = socket.inet_aton(HOSTS[src_host]["vpn"].split("/")[0])
        s = nsutil.socket_in(
            self.ns[seen_in], socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800)
        )
        try:
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                s.settimeout(left)
                try:
                    d = s.recv(2048)
                except TimeoutError:
                    return False
                if len(d) >= 20 and d[9] == 112 and d[12:16] == src:
                    return True
            return False
        finally:
            s.close()


def all_labs() -> list[Lab]:
    if not STATE_DIR.exists():
        return []
    return [Lab(p.stem) for p in sorted(STATE_DIR.glob("chl-*.json"))]
