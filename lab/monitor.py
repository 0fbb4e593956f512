"""The lab's observer, one process for the whole lab (started by `up`).

From the root namespace it opens sockets inside the lab namespaces (setns) and runs
one selector loop that:
  * serves each host's name on TCP port PORT (listening socket in the host's netns,
    dual stack), so "who answered" is known;
  * probes the floating IPv4 and IPv6 addresses from the client every 50 ms
    (TCP connect + read the name, short timeout);
  * with `svc_port` set, also probes the lab service there (python's http.server
    on each host, started by the health-check scenarios): HTTP GET `svc_path`, the
    body names the host (records with "svc": 1);
  * samples every 50 ms, over rtnetlink, which host has which floating address on
    ext0 (with DAD flags and ext0's link state) and whether tap0 exists;
  * records every CARP advertisement (IP protocol 112) seen in each host (sent or
    received), so who is CARP master is known;
  * receives syslog datagrams on one unix socket per host.

Everything is written as JSON lines to OUT (wall-clock seconds, `t`).
Usage: python -m lab.monitor CONFIG.json
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import signal
import socket
import sys
import time
from typing import Any

from .nsutil import IFF_LOWER_UP, IFF_UP, Netlink, socket_in

PERIOD = 0.05
PROBE_TIMEOUT = 0.25
ETH_P_IP = 0x0800
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


class Monitor:
    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg
        self.out = open(cfg["out"], "a", buffering=1 << 16)
        self.sel = selectors.DefaultSelector()
        self.hosts: dict[str, str] = cfg["hosts"]  # name -> netns
        self.vip4 = cfg["vip4"].split("/")[0]
        self.vip6 = cfg["vip6"].split("/")[0]
        self.port = int(cfg["port"])
        self.svc_port = int(cfg.get("svc_port") or 0)
        self.svc_req = (f"GET {cfg.get('svc_path', '/')} HTTP/1.0\r\n"
                        "Host: lab\r\n\r\n").encode()
        self.ext = cfg.get("ext_if", "ext0")
        self.nl = {h: Netlink(ns) for h, ns in self.hosts.items()}
        self.addr_ip = {a: h for h, a in cfg["vpn_ips"].items()}  # 192.0.2.11 -> hA
        self.probes: dict[socket.socket, dict[str, Any]] = {}
        self.running = True
        for h, ns in self.hosts.items():
            ls = socket_in(ns, socket.AF_INET6, socket.SOCK_STREAM)
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            ls.bind(("::", self.port))
            ls.listen(64)
            ls.setblocking(False)
            self.sel.register(ls, selectors.EVENT_READ, ("listen", h))
            # ETH_P_ALL: packets this host sends are only shown to ETH_P_ALL sockets
            ps = socket_in(ns, socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
            ps.setblocking(False)
            self.sel.register(ps, selectors.EVENT_READ, ("sniff", h))
        for h, path in cfg["syslog"].items():
            if os.path.exists(path):
                os.unlink(path)
            us = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            us.bind(path)
            os.chmod(path, 0o666)
            us.setblocking(False)
            self.sel.register(us, selectors.EVENT_READ, ("syslog", h))

    def emit(self, rec: dict[str, Any]) -> None:
        self.out.write(json.dumps(rec, separators=(",", ":")) + "\n")

    # ------------------------------------------------------------ probes
    def start_probe(self, af: int, now: float, svc: bool = False) -> None:
        fam, dst = (socket.AF_INET, self.vip4) if af == 4 else (socket.AF_INET6, self.vip6)
        s = socket_in(self.cfg["client"], fam, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex((dst, self.svc_port if svc else self.port))
        p: dict[str, Any] = {"af": af, "t": now, "buf": b""}
        if svc:
            p["svc"] = 1
        if err not in (0, errno.EINPROGRESS):
            s.close()
            self.emit({"k": "probe", "af": af, "t": now, "ok": False, "err": os.strerror(err),
                       **({"svc": 1} if svc else {})})
            return
        self.probes[s] = p
        self.sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, ("probe", None))

    def finish_probe(self, s: socket.socket, ok: bool, err: str = "") -> None:
        p = self.probes.pop(s)
        self.sel.unregister(s)
        s.close()
        buf = p["buf"]
        if p.get("svc") and ok:  # an HTTP answer: 200 and the host's name as the body
            head, _, buf = buf.partition(b"\r\n\r\n")
            status = head.split(b" ", 2)[1:2]
            if status != [b"200"]:
                ok, err = False, f"HTTP status {b''.join(status).decode(errors='replace')}"
        rec = {
            "k": "probe",
            "af": p["af"],
            "t": p["t"],
            "ok": ok,
            "ms": round((time.time() - p["t"]) * 1000, 1),
        }
        if p.get("svc"):
            rec["svc"] = 1
        if ok:
            rec["who"] = buf.decode(errors="replace").strip()
        else:
            rec["err"] = err
        self.emit(rec)

    def on_probe(self, s: socket.socket, mask: int) -> None:
        p = self.probes[s]
        if mask & selectors.EVENT_WRITE and not p.get("conn"):
            e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if e:
                self.finish_probe(s, False, os.strerror(e))
                return
            p["conn"] = True
            if p.get("svc"):
                try:
                    s.send(self.svc_req)  # a few bytes into an empty socket buffer
                except OSError as e:
                    self.finish_probe(s, False, str(e))
                    return
            self.sel.modify(s, selectors.EVENT_READ, ("probe", None))
            return
        try:
            d = s.recv(256)
        except OSError as e:
            self.finish_probe(s, False, str(e))
            return
        if not d:
            self.finish_probe(s, bool(p["buf"]), "" if p["buf"] else "empty")
        else:
            p["buf"] += d

    # ------------------------------------------------------------ sampler
    def sample(self, now: float, dt: float) -> None:
        hold: dict[str, Any] = {}
        for h, nl in self.nl.items():
            try:
                links = nl.links()
                addrs = nl.addrs()
            except OSError as e:
                hold[h] = {"err": str(e)}
                continue
            ext = links.get(self.ext)
            entry: dict[str, Any] = {"tap0": "tap0" in links}
            if ext:
                idx, fl = ext
                entry["up"] = bool(fl & IFF_UP) and bool(fl & IFF_LOWER_UP)
                for a, af in addrs.get(idx, []):
                    ip_ = a.split("/")[0]
                    if ip_ == self.vip4:
                        entry["v4"] = True
                    elif ip_ == self.vip6:
                        entry["v6"] = (
                            "dadfailed" if af & 0x08 else "tentative" if af & 0x40 else True
                        )
            hold[h] = entry
        self.emit(
            {
                "k": "sample",
                "t": now,
                "dt": round(dt * 1000, 1),
                "took": round((time.time() - now) * 1000, 1),
                "h": hold,
            }
        )

    # ------------------------------------------------------------ packets, syslog
    def on_sniff(self, s: socket.socket, host: str) -> None:
        for _ in range(64):
            try:
                data, addr = s.recvfrom(2048)
            except BlockingIOError:
                return
            if addr[1] != ETH_P_IP or len(data) < 20 or data[9] != 112:
                continue
            ihl = (data[0] & 0x0F) * 4
            src = socket.inet_ntoa(data[12:16])
            skew = data[ihl + 2] if len(data) > ihl + 3 else None
            self.emit(
                {
                    "k": "adv",
                    "t": time.time(),
                    "ns": host,
                    "src": self.addr_ip.get(src, src),
                    "skew": skew,
                    "dir": "out" if addr[2] == PACKET_OUTGOING else "in",
                    "if": addr[0],
                }
            )

    def on_syslog(self, s: socket.socket, host: str) -> None:
        while True:
            try:
                d = s.recv(8192)
            except BlockingIOError:
                return
            self.emit(
                {"k": "syslog", "t": time.time(), "host": host, "msg": d.decode(errors="replace")}
            )

    def on_listen(self, s: socket.socket, host: str) -> None:
        while True:
            try:
                c, _ = s.accept()
            except BlockingIOError:
                return
            try:
                c.setblocking(True)
                c.settimeout(0.05)
                c.sendall(host.encode() + b"\n")
            except OSError:
                pass
            finally:
                c.close()

    # ------------------------------------------------------------ loop
    def run(self) -> None:
        self.emit({"k": "start", "t": time.time(), "pid": os.getpid()})
        now = time.time()
        next_tick = now
        last_sample = now
        while self.running:
            timeout = max(0.0, next_tick - time.time())
            for key, mask in self.sel.select(timeout):
                kind, host = key.data
                s = key.fileobj
                if kind == "probe":
                    if s in self.probes:
                        self.on_probe(s, mask)  # type: ignore[arg-type]
                elif kind == "listen":
                    self.on_listen(s, host)  # type: ignore[arg-type]
                elif kind == "sniff":
                    self.on_sniff(s, host)  # type: ignore[arg-type]
                elif kind == "syslog":
                    self.on_syslog(s, host)  # type: ignore[arg-type]
            now = time.time()
            for s, p in list(self.probes.items()):
                if now - p["t"] > PROBE_TIMEOUT:
                    self.finish_probe(s, False, "timeout")
            if now >= next_tick:
                self.start_probe(4, now)
                self.start_probe(6, now)
                if self.svc_port:
                    self.start_probe(4, now, svc=True)
                    self.start_probe(6, now, svc=True)
                self.sample(now, now - last_sample)
                last_sample = now
                next_tick += PERIOD
                if next_tick < now:  # fell behind: do not burst
                    next_tick = now + PERIOD
                self.out.flush()
        self.out.flush()


def main() -> None:
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    m = Monitor(cfg)

    def stop(*_: Any) -> None:
        m.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    m.run()


if __name__ == "__main__":
    main()
