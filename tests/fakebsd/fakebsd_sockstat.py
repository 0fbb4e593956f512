"""Fake FreeBSD sockstat(1) over the emulator's socket table (``st["sockets"]``).

Modelled on usr.bin/sockstat/sockstat.c (main, gather_inet, printaddr, display,
displaysock) of current FreeBSD: options ``-46CcfIij:Llnp:P:qSsUuvw``; without -4/-6
and with -P, both families; without -c/-l, both; only TCP and UDP sockets exist here.
Columns: USER (padded to 9), COMMAND (``%.10s``, to 20), PID (``%5lu``, to 26), FD
(``%-3d``), PROTO at 30 (``tcp4``, ``tcp6``, ``tcp46``), LOCAL at 37, FOREIGN at 59
(``-w``: 83), at least one blank between; addresses ``A:PORT`` (IPv6 unbracketed,
``*`` unspecified, ``:*`` port 0); with ``-s`` a TCP socket's state follows at 94.
Sockets without a process print ``?`` in the first four columns. A bad option prints
getopt's ``sockstat: illegal option -- X`` then the usage line, exit 1.
"""

from __future__ import annotations

import ipaddress
from typing import Any

try:
    from . import fakebsd_kernel as kernel
except ImportError:  # run as a plain module by bin/sockstat
    import fakebsd_kernel as kernel  # type: ignore[no-redef]

OPTSTRING = "46CcfIij:Llnp:P:qSsUuvw"
USAGE = "sockstat: usage: sockstat [-46CcfIiLlnqSsUuvw] [-j jid] [-p ports] [-P protocols]"
TCP_STATES = ("CLOSED", "LISTEN", "SYN_SENT", "SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT",
              "FIN_WAIT_1", "CLOSING", "LAST_ACK", "FIN_WAIT_2", "TIME_WAIT")


def add_socket(bsd: Any, *, local: str, foreign: str = "*:*", proto: str = "tcp",
               state: str = "ESTABLISHED", command: str | None = "tincd", pid: int = 1234,
               fd: int = 5, user: str = "root", family: str | None = None) -> None:
    """Add a socket to a FakeBSD host: ``local``/``foreign`` as ``ADDR:PORT``
    (``[v6]:port`` accepted); ``command=None`` for one without a process."""
    loc_ip, loc_port = _split(local)
    for_ip, for_port = _split(foreign)
    if state not in TCP_STATES:
        raise ValueError(f"unknown TCP state {state}")
    fam = family or ("6" if ":" in (loc_ip if loc_ip != "*" else for_ip) else "4")
    with bsd._locked() as st:
        st.setdefault("sockets", []).append({
            "user": user, "command": command, "pid": pid, "fd": fd, "proto": proto,
            "family": fam, "laddr": loc_ip, "lport": loc_port, "faddr": for_ip,
            "fport": for_port, "state": state,
        })


def clear_sockets(bsd: Any) -> None:
    with bsd._locked() as st:
        st["sockets"] = []


def _split(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if host != "*":
        ipaddress.ip_address(host)
    return host, 0 if port == "*" else int(port)


def _getopt(args: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    opts: dict[str, list[str]] = {}
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        if args[i] == "--":
            i += 1
            break
        word = args[i][1:]
        j = 0
        while j < len(word):
            ch = word[j]
            pos = OPTSTRING.find(ch)
            if pos < 0 or ch == ":":
                raise kernel.Exit(1, f"sockstat: illegal option -- {ch}\n{USAGE}")
            if pos + 1 < len(OPTSTRING) and OPTSTRING[pos + 1] == ":":
                value = word[j + 1:]
                if not value:
                    i += 1
                    if i >= len(args):
                        raise kernel.Exit(1, f"sockstat: option requires an argument -- "
                                             f"{ch}\n{USAGE}")
                    value = args[i]
                opts.setdefault(ch, []).append(value)
                break
            opts.setdefault(ch, []).append("")
            j += 1
        i += 1
    return opts, args[i:]


def _ports(spec: str) -> set[int]:
    ports: set[int] = set()
    for part in spec.split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise kernel.Exit(1, "sockstat: syntax error in port range")
        first, last = int(lo), int(hi or lo)
        if first > 65535 or last > 65535 or last < first:
            raise kernel.Exit(1, "sockstat: invalid port number")
        ports.update(range(first, last + 1))
    return ports


def _addr(ip: str, port: int) -> str:
    host = "*" if ip == "*" or ipaddress.ip_address(ip).is_unspecified else ip
    return f"{host}:*" if port == 0 else f"{host}:{port}"


def _pad(line: str, col: int) -> str:
    """sockstat's ``do xprintf(" ") while (pos < col)``: at least one blank."""
    line += " "
    return line + " " * max(0, col - len(line))


def sockstat(st: dict[str, Any], args: list[str], out: list[str], err: list[str]) -> None:
    opts, rest = _getopt(args)
    if rest:
        raise kernel.Exit(1, USAGE)
    opt_4, opt_6 = "4" in opts, "6" in opts
    protos = None
    if "P" in opts:
        protos = {p for spec in opts["P"] for p in spec.split(",") if p}
        if not opt_4 and not opt_6:
            opt_4 = opt_6 = True
    if not opt_4 and not opt_6 and "u" not in opts:
        opt_4 = opt_6 = True
    if protos is None:
        protos = {"sctp", "tcp", "udp", "divert"}
    opt_c, opt_l = "c" in opts, "l" in opts
    if not opt_c and not opt_l:
        opt_c = opt_l = True
    ports = set().union(*(_ports(p) for p in opts.get("p", []))) if "p" in opts else None
    wide = "w" in opts
    width = 45 if wide else 21
    if "q" not in opts:
        head = (f"{'USER':<8} {'COMMAND':<10} {'PID':<5} {'FD':<3} {'PROTO':<6} "
                f"{'LOCAL ADDRESS':<{width}} {'FOREIGN ADDRESS':<{width}}")
        if "s" in opts:
            head += f" {'PATH STATE':<12} {'CONN STATE':<12}"
        out.append(head)
    for sock in st.get("sockets", []):
        if sock["proto"] not in protos:
            continue
        fam = sock["family"]
        if not ((opt_4 and "4" in fam) or (opt_6 and "6" in fam)):
            continue
        if (sock["fport"] == 0 and not opt_l) or (sock["fport"] != 0 and not opt_c):
            continue
        if ports is not None and sock["lport"] not in ports and sock["fport"] not in ports:
            continue
        if sock["command"] is None:
            line = f"{'?':<8} {'?':<10} {'?':<5} {'?':<3}"
        else:
            line = _pad(sock["user"], 9) + sock["command"][:10]
            line = _pad(line, 20) + f"{sock['pid']:5d}"
            line = _pad(line, 26) + f"{sock['fd']:<3d}"
        line = _pad(line, 30) + sock["proto"] + fam + " "
        line += " " * max(0, 37 - len(line))
        line += _addr(sock["laddr"], sock["lport"])
        line = _pad(line, 37 + (46 if wide else 22))
        line += _addr(sock["faddr"], sock["fport"])
        if "s" in opts and sock["proto"] == "tcp":
            offset = 37 + 2 * (46 if wide else 22) + 13
            line = _pad(line, offset) + sock["state"]
        out.append(line)
