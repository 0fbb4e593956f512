"""Direct tinc links: which voters this host reaches over its own meta connection.

tinc 1.0 tells scripts when a node becomes *reachable* (``host-up``/``host-down``, run
from ``src/graph.c`` ``sssp_bfs`` for every node the graph reaches, through any path),
never whether the path is direct: there is no script for a meta connection,
``REMOTEADDRESS`` is the address tinc keeps for the node whichever edge it learned it
from, the SIGUSR1/SIGUSR2 dumps (``src/process.c`` ``sigusr1_handler``) go to the log,
and ``GraphDumpFile`` is written at most once a minute (``src/net.c`` ``main_loop``).
What is certain is that every direct link is one TCP meta connection owned by tincd
(``src/net_socket.c`` ``do_outgoing_connection``, ``handle_new_meta_connection``), so
this module lists tincd's established TCP sockets (FreeBSD ``sockstat``, Linux
``ss``) through the runner and matches their far end against the node's ``Address``
and ``Port`` from tinc's ``hosts/NODE`` files.

A voter counts as reached directly when such a socket joins us: its far address is one
of the node's addresses, and either its far port is one the node listens on (we
connected) or its near port is ours (it connected). Host names in ``Address`` are
resolved (bounded); the match itself compares ``ipaddress`` objects.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carphooks.errors import CarphooksError
from carphooks.runner import Runner

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_PORT = 655  # tinc's default Port (doc/tinc.conf.5.in)
TINCD = "tincd"
RESOLVE_TIMEOUT = 2.0

# The listing commands, per backend. FreeBSD sockstat(1): -4 -6 IPv4 and IPv6, -c
# connected sockets only, -s the TCP state ("CONN STATE" column), -P tcp
# (usr.bin/sockstat/sockstat.c main, gather_inet, displaysock). Linux ss(8): no header,
# TCP, numeric, owning process, established only (the state column is then left out).
COMMANDS: dict[str, tuple[str, ...]] = {
    "freebsd": ("sockstat", "-46", "-c", "-s", "-P", "tcp"),
    "linux": ("ss", "-H", "-t", "-n", "-p", "state", "established"),
}


class MeshError(CarphooksError):
    """tincd's connections could not be listed or understood."""


@dataclass(frozen=True)
class Endpoint:
    """One end of a TCP connection."""

    ip: IPAddress
    port: int

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if self.ip.version == 6 else f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class TcpConn:
    """An established TCP connection and the process holding it."""

    command: str
    local: Endpoint
    remote: Endpoint


@dataclass(frozen=True)
class NodeAddress:
    """Where a tinc node is, from its ``hosts/NODE`` file."""

    ips: frozenset[IPAddress] = frozenset()
    ports: frozenset[int] = frozenset({DEFAULT_PORT})
    names: tuple[str, ...] = ()  # Address values that are host names
    missing: bool = False  # no hosts/NODE file


# -- parsing -------------------------------------------------------------------------------

def parse_ip(text: str) -> IPAddress:
    """An address as sockstat/ss print it: no brackets, no %scope, IPv4-mapped unwrapped."""
    ip = ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_endpoint(text: str) -> Endpoint:
    """``192.0.2.1:655``, ``2001:db8::1:655`` (sockstat) or ``[2001:db8::1]:655`` (ss)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"not an address:port: {text!r}")
    value = int(port)
    if not 0 < value < 65536:
        raise ValueError(f"port out of range: {text!r}")
    return Endpoint(parse_ip(host), value)


def parse_sockstat(text: str) -> list[TcpConn]:
    """Established TCP sockets from ``sockstat -46 -c -s -P tcp`` (FreeBSD).

    Columns (sockstat.c ``display``/``displaysock``): USER COMMAND PID FD PROTO
    LOCAL FOREIGN, then with -s the TCP state. COMMAND is ``%.10s`` of the process
    name and may hold spaces, so the fixed columns are taken from the right; sockets
    without a process show ``?`` in the first four.
    """
    conns: list[TcpConn] = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 8 or words[0] == "USER":
            continue
        state, foreign, local, proto = words[-1], words[-2], words[-3], words[-4]
        if not proto.startswith("tcp") or state != "ESTABLISHED":
            continue
        try:
            conns.append(TcpConn(" ".join(words[1:-6]), parse_endpoint(local),
                                 parse_endpoint(foreign)))
        except ValueError:
            continue
    return conns


_SS_USER_RE = re.compile(r'\("([^"]*)",pid=\d+')


def parse_ss(text: str) -> list[TcpConn]:
    """Established TCP sockets from ``ss -H -t -n -p state established`` (Linux).

    Columns: Recv-Q Send-Q LOCAL PEER ``users:(("name",pid=N,fd=N),...)``; one entry
    per process sharing the socket.
    """
    conns: list[TcpConn] = []
    for line in text.splitlines():
        words = line.split(None, 4)
        if len(words) < 4:
            continue
        try:
            local, remote = parse_endpoint(words[2]), parse_endpoint(words[3])
        except ValueError:
            continue
        users = _SS_USER_RE.findall(words[4]) if len(words) > 4 else []
        for name in users or [""]:
            conns.append(TcpConn(name, local, remote))
    return conns


PARSERS: dict[str, Callable[[str], list[TcpConn]]] = {
    "freebsd": parse_sockstat,
    "linux": parse_ss,
}


def tinc_settings(text: str) -> list[tuple[str, str]]:
    """``Key = Value`` pairs of a tinc config file, in order (keys lower-cased).

    Like tinc 1.0's ``read_config_file`` (src/conf.c): ``#`` starts a comment line,
    the separator is ``=`` or blanks, and a PEM block (``-----BEGIN`` to ``-----END``)
    is skipped.
    """
    return [(key, value) for _, key, value in _numbered_settings(text)]


def _numbered_settings(text: str) -> list[tuple[int, str, str]]:
    pairs: list[tuple[int, str, str]] = []
    in_pem = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if in_pem:
            in_pem = not line.startswith("-----END")
            continue
        if line.startswith("-----BEGIN"):
            in_pem = True
            continue
        if not line or line.startswith("#"):
            continue
        match = re.match(r"([^\s=]+)\s*(?:=\s*|\s+)(.*)$", line)
        if match:
            pairs.append((number, match.group(1).lower(), match.group(2).strip()))
    return pairs


def _port(text: str) -> int | None:
    return int(text) if text.isdigit() and 0 < int(text) < 65536 else None


def node_address(text: str, resolve: Callable[[str], Iterable[IPAddress]] | None = None,
                 ) -> NodeAddress:
    """Addresses and ports of a ``hosts/NODE`` file (``Address = host [port]``, ``Port``)."""
    ips: set[IPAddress] = set()
    names: list[str] = []
    ports: set[int] = set()
    default_port = None  # tinc takes the first Port (src/conf.c lookup_config)
    for key, value in tinc_settings(text):
        if key == "port":
            default_port = default_port or _port(value)
        elif key == "address":
            parts = value.split()
            if not parts:
                continue
            if len(parts) > 1 and _port(parts[1]) is not None:
                ports.add(int(parts[1]))
            try:
                ips.add(parse_ip(parts[0]))
            except ValueError:
                names.append(parts[0])
    ports.add(default_port or DEFAULT_PORT)
    if names and resolve is not None:
        for name in names:
            ips.update(resolve(name))
    return NodeAddress(ips=frozenset(ips), ports=frozenset(ports), names=tuple(names))


def own_port(tinc_conf: str, own_host_file: str) -> int:
    """The port this tincd listens on. tinc 1.0 reads tinc.conf and hosts/NAME into one
    tree (src/net_setup.c ``setup_myself``) ordered by variable, then line number, then
    file name (src/conf.c ``config_compare``), and takes the first ``Port``."""
    found = [(number, order, value)
             for order, text in ((1, tinc_conf), (0, own_host_file))  # "hosts/" < "tinc.conf"
             for number, key, value in _numbered_settings(text) if key == "port"]
    for _, _, value in sorted(found):
        port = _port(value)
        if port is not None:
            return port
    return DEFAULT_PORT


def resolve_bounded(name: str, timeout: float = RESOLVE_TIMEOUT) -> list[IPAddress]:
    """Numeric addresses of a host name, or nothing after ``timeout`` seconds."""
    found: list[IPAddress] = []

    def work() -> None:
        with contextlib.suppress(OSError, UnicodeError):
            for info in socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP):
                with contextlib.suppress(ValueError):
                    found.append(parse_ip(str(info[4][0])))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout)
    return list(found) if not thread.is_alive() else []


# -- matching -------------------------------------------------------------------------------

def direct_links(conns: Iterable[TcpConn], nodes: Mapping[str, NodeAddress],
                 my_port: int) -> dict[str, TcpConn | None]:
    """For each node, one tincd connection joining us directly (or None)."""
    found: dict[str, TcpConn | None] = dict.fromkeys(nodes)
    for conn in conns:
        if conn.command != TINCD:
            continue
        for name, addr in nodes.items():
            if found[name] is not None or conn.remote.ip not in addr.ips:
                continue
            if conn.remote.port in addr.ports or conn.local.port == my_port:
                found[name] = conn
    return found


@dataclass
class Voter:
    """How this host reaches one voter."""

    name: str
    reachable: bool
    direct: bool | None  # None: could not tell
    link: str | None = None
    note: str | None = None

    @property
    def state(self) -> str:
        """``direct`` (a meta connection joins us), ``indirect`` (reachable only through
        another node), ``unreachable`` or ``unknown``."""
        if self.direct:
            return "direct"
        if not self.reachable:
            return "unreachable"
        return "indirect" if self.direct is False else "unknown"

    def as_json(self) -> dict[str, Any]:
        return {"reachable": self.reachable, "direct": self.direct, "state": self.state,
                "link": self.link, "note": self.note}


@dataclass
class Mesh:
    """Every other voter as this host reaches it."""

    host: str | None
    voters: list[Voter] = field(default_factory=list)
    error: str | None = None

    @property
    def indirect(self) -> list[Voter]:
        return [v for v in self.voters if v.state == "indirect"]

    @property
    def complete(self) -> bool | None:
        """Every other voter reached directly (None: could not tell)."""
        if any(v.state == "unknown" for v in self.voters):
            return None
        return all(v.state == "direct" for v in self.voters)

    def as_json(self) -> dict[str, Any]:
        return {"host": self.host, "complete": self.complete, "error": self.error,
                "voters": {v.name: v.as_json() for v in self.voters}}


def list_connections(runner: Runner, backend: str, timeout: float = 5.0) -> list[TcpConn]:
    """tincd's (and everybody's) established TCP connections, through the runner."""
    argv = COMMANDS.get(backend)
    if argv is None:
        raise MeshError(f"no way to list TCP connections on the {backend} backend")
    try:
        result = runner.run(list(argv), mutating=False, timeout=timeout)
    except CarphooksError as exc:
        raise MeshError(f"cannot list tincd's connections: {exc}") from None
    return PARSERS[backend](result.stdout)


def read_nodes(tinc_dir: Path, names: Sequence[str],
               resolve: Callable[[str], Iterable[IPAddress]] | None = resolve_bounded,
               ) -> dict[str, NodeAddress]:
    """``hosts/NODE`` of each name (a missing or unreadable file: no addresses)."""
    nodes: dict[str, NodeAddress] = {}
    for name in names:
        try:
            text = (tinc_dir / "hosts" / name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            nodes[name] = NodeAddress(missing=True)
            continue
        nodes[name] = node_address(text, resolve)
    return nodes


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def mesh(tinc_dir: Path, host: str | None, voters: Sequence[str],
         reachable: Iterable[str], conns: Sequence[TcpConn] | None, error: str | None = None,
         resolve: Callable[[str], Iterable[IPAddress]] | None = resolve_bounded) -> Mesh:
    """Combine reachability (host-up/host-down) with tincd's connections."""
    others = [v for v in voters if v != host]
    reach = set(reachable)
    result = Mesh(host=host, error=error)
    if conns is None:
        result.voters = [Voter(n, n in reach, None, note=error) for n in others]
        return result
    nodes = read_nodes(tinc_dir, others, resolve)
    port = own_port(_read(tinc_dir / "tinc.conf"), _read(tinc_dir / "hosts" / host)
                    if host else "")
    links = direct_links(conns, nodes, port)
    for name in others:
        addr = nodes[name]
        link = links[name]
        if link is not None:
            result.voters.append(Voter(name, name in reach, True,
                                       link=f"{link.local} - {link.remote}"))
        elif addr.missing or not addr.ips:
            why = (f"no {tinc_dir / 'hosts' / name}" if addr.missing
                   else f"no address of {name} known (Address in hosts/{name}"
                        + (f": {', '.join(addr.names)} did not resolve" if addr.names else "")
                        + ")")
            result.voters.append(Voter(name, name in reach, None, note=why))
        else:
            result.voters.append(Voter(name, name in reach, False))
    return result


def describe(report: Mapping[str, Any]) -> str:
    """One line for ``carphooks status``: each voter and how it is reached."""
    parts = []
    for name, v in report.get("voters", {}).items():
        state = v.get("state")
        text = {"direct": "direct", "indirect": "only through another node",
                "unreachable": "unreachable"}.get(str(state), "unknown")
        if state == "unknown" and v.get("note"):
            text += f" ({v['note']})"
        parts.append(f"{name} {text}")
    line = "tinc links: " + (", ".join(parts) or "no other voters")
    if report.get("error"):
        line += f"; {report['error']}"
    return line
