"""Emulated FreeBSD kernel state for the fake ifconfig/sysctl/logger/uname.

Stdlib only, imported by the fake executables in ``tests/fakebsd/bin`` and by
``tests/fakebsd/control.py``.  The whole kernel lives in one JSON file named by
``FAKEBSD_STATE``; every tool takes an exclusive ``flock`` on ``<state>.lock`` for
its complete read-modify-write, so concurrent callers behave like one kernel.

Behaviour follows ``/work/shared/docs/freebsd-facts.md`` and the FreeBSD sources
cited there; every deliberate approximation is listed in ``tests/fakebsd/README.md``.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

# --------------------------------------------------------------------------- constants

IFF_BITS = [  # (bit value, name) in printing order (printb walks bits low -> high)
    (0x1, "UP"),
    (0x2, "BROADCAST"),
    (0x4, "DEBUG"),
    (0x8, "LOOPBACK"),
    (0x10, "POINTOPOINT"),
    (0x40, "RUNNING"),
    (0x80, "NOARP"),
    (0x100, "PROMISC"),
    (0x200, "ALLMULTI"),
    (0x400, "OACTIVE"),
    (0x800, "SIMPLEX"),
    (0x1000, "LINK0"),
    (0x2000, "LINK1"),
    (0x4000, "LINK2"),
    (0x8000, "MULTICAST"),
    (0x20000, "PPROMISC"),
    (0x40000, "MONITOR"),
    (0x80000, "STATICARP"),
    (0x100000, "STICKYARP"),
    (0x1000000, "LOWER_UP"),  # netlink ifconfig (14.0+) only
]

ND6_BITS = [
    (0x1, "PERFORMNUD"),
    (0x2, "ACCEPT_RTADV"),
    (0x4, "PREFER_SOURCE"),
    (0x8, "IFDISABLED"),
    (0x10, "DONT_SET_IFROUTE"),
    (0x20, "AUTO_LINKLOCAL"),
    (0x40, "NO_RADR"),
    (0x80, "NO_PREFER_IFACE"),
    (0x100, "NO_DAD"),
    (0x200, "IPV6_ONLY"),
    (0x400, "IPV6_ONLY_MANUAL"),
]
ND6_NO_DAD = 0x100
ND6_KEYWORDS = {  # ifconfig keyword -> nd6 flag (af_nd6.c / af_inet6.c)
    "perform_nud": 0x1,
    "accept_rtadv": 0x2,
    "prefer_source_iface": 0x4,  # not a real keyword; never matched (kept for symmetry)
    "ifdisabled": 0x8,
    "auto_linklocal": 0x20,
    "no_radr": 0x40,
    "no_prefer_iface": 0x80,
    "no_dad": 0x100,
}
ND6_KEYWORDS.pop("prefer_source_iface")

INET6_FLAG_ORDER = [
    "anycast",
    "tentative",
    "duplicated",
    "detached",
    "deprecated",
    "autoconf",
    "temporary",
    "prefer_source",
]
INET6_FLAG_KEYWORDS = {"anycast", "tentative", "deprecated", "autoconf", "prefer_source"}

CARP_STATES = ("INIT", "BACKUP", "MASTER")
CARP_MAXVHID = 255

KINDS = {
    # kind: base flags, options line, media line, default nd6
    "vtnet": (0x8843, "options=80028<VLAN_MTU,JUMBO_MTU,LINKSTATE>",
              "media: Ethernet autoselect (10Gbase-T <full-duplex>)"),
    "tap": (0x8843, "options=80000<LINKSTATE>", "media: Ethernet autoselect"),
    "tun": (0x8051, "options=80000<LINKSTATE>", None),
}
ETHER_KINDS = {"vtnet", "tap"}

SYSCTL_DEFAULTS: dict[str, int | str] = {
    "net.inet.carp.allow": 1,
    "net.inet.carp.preempt": 0,
    "net.inet.carp.demotion": 0,
    "net.inet.carp.ifdown_demotion_factor": 240,
    "net.inet.carp.senderr_demotion_factor": 240,
    "net.inet.carp.log": 1,
    "net.inet.carp.dscp": 56,
    "net.link.ether.inet.garp_rexmit_count": 0,
    "net.inet6.ip6.dad_count": 1,
    "net.inet6.ip6.forwarding": 0,  # in6_proto.c; the NA Router flag follows it
    "net.inet6.ip6.norbit_raif": 0,
    "kern.ostype": "FreeBSD",
}
SYSCTL_RELEASE_DERIVED = ("kern.osrelease", "kern.hostname")

ERRNO_TEXT = {
    "EINVAL": "Invalid argument",
    "ENOENT": "No such file or directory",
    "EADDRNOTAVAIL": "Can't assign requested address",
    "EOPNOTSUPP": "Operation not supported",
    "EPROTONOSUPPORT": "Protocol not supported",
}


class Exit(Exception):
    """Terminate the emulated command: message lines go to stderr, then exit rc."""

    def __init__(self, rc: int, message: str | None = None) -> None:
        super().__init__(message)
        self.rc = rc
        self.message = message


# --------------------------------------------------------------------------- environment

def release() -> str:
    return os.environ.get("FAKEBSD_RELEASE") or "14.1"


def release_major(rel: str | None = None) -> int:
    rel = rel or release()
    try:
        return int(rel.split(".", 1)[0])
    except ValueError:
        return 14


def state_path() -> str:
    path = os.environ.get("FAKEBSD_STATE")
    if not path:
        sys.stderr.write("fakebsd: FAKEBSD_STATE is not set (refusing to guess a kernel)\n")
        raise SystemExit(70)
    return path


def new_state(hostname: str = "fakebsd", dad: str = "instant") -> dict[str, Any]:
    return {
        "ifaces": {},
        "next_index": 1,
        "sysctl": dict(SYSCTL_DEFAULTS),
        "events": [],
        "klog": [],
        "garp": [],
        "readd": {},
        "fail": [],
        "dad": dad,
        "hostname": hostname,
        "neighbours": {},  # {ifname: {ip: mac}}: other hosts on that link (answer DAD)
        "clock": 0.0,  # seconds added to time.time(): FakeBSD.advance_clock()
    }


def now(st: dict[str, Any]) -> float:
    """The emulated kernel's clock (wall time plus the test's advance_clock offset)."""
    return time.time() + float(st.get("clock", 0.0))


@contextlib.contextmanager
def locked_state(path: str | None = None, write: bool = True) -> Iterator[dict[str, Any]]:
    """Load the state under an exclusive lock; write it back (atomically) on exit.

    The state is written back even when the body raises ``Exit``: like a real kernel,
    commands applied before an ifconfig error stay applied.
    """
    path = path or state_path()
    lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            with open(path, encoding="utf-8") as f:
                st = json.load(f)
        except FileNotFoundError:
            st = new_state()
        try:
            yield st
        finally:
            if write:
                tmp = f"{path}.tmp.{os.getpid()}"
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump(st, f, indent=1, sort_keys=False)
                os.replace(tmp, path)
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)


def log_call(argv: list[str]) -> None:
    path = os.environ.get("FAKEBSD_LOG")
    if not path:
        return
    line = json.dumps({"argv": argv, "pid": os.getpid(), "t": time.time()}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def take_injected_failure(st: dict[str, Any], argv: list[str]) -> dict[str, Any] | None:
    for i, f in enumerate(st.get("fail", [])):
        prefix = f["prefix"]
        if argv[: len(prefix)] == prefix:
            del st["fail"][i]
            return f
    return None


def run_tool(name: str, func: Any, args: list[str]) -> int:
    """Common driver: lock, log, injected failures, run, print, exit code."""
    argv = [name, *args]
    out: list[str] = []
    err: list[str] = []
    rc = 0
    with locked_state() as st:
        log_call(argv)
        inj = take_injected_failure(st, argv)
        if inj is not None:
            if inj.get("stdout"):
                out.append(inj["stdout"].rstrip("\n"))
            if inj.get("stderr"):
                err.append(inj["stderr"].rstrip("\n"))
            rc = int(inj.get("rc", 1))
        else:
            try:
                kernel_tick(st)
                func(st, args, out, err)
            except Exit as e:
                if e.message:
                    err.append(e.message)
                rc = e.rc
    if out:
        sys.stdout.write("\n".join(out) + "\n")
        sys.stdout.flush()
    if err:
        sys.stderr.write("\n".join(err) + "\n")
        sys.stderr.flush()
    return rc


# --------------------------------------------------------------------------- kernel: CARP

def _klog(st: dict[str, Any], line: str) -> None:
    st["klog"].append(line)


def carp_set_state(st: dict[str, Any], ifname: str, sc: dict[str, Any], new: str,
                   reason: str) -> None:
    """carp_set_state(): only a real change logs and emits a devd event."""
    old = sc["state"]
    if old == new:
        return
    sc["state"] = new
    if int(st["sysctl"].get("net.inet.carp.log", 1)) >= 1:
        _klog(st, f"carp: {sc['vhid']}@{ifname}: {old} -> {new} ({reason})")
    st["events"].append(f"!system=CARP subsystem={sc['vhid']}@{ifname} type={new}")


def demote_adj(st: dict[str, Any], adj: int, reason: str) -> None:
    if adj == 0:
        return
    total = int(st["sysctl"]["net.inet.carp.demotion"]) + adj
    st["sysctl"]["net.inet.carp.demotion"] = total
    _klog(st, f"carp: demoted by {adj} to {total} ({reason})")


def vhid_naddrs(iface: dict[str, Any], vhid: int) -> int:
    return sum(1 for a in iface["addrs"] if a.get("vhid") == vhid)


def carp_can_run(st: dict[str, Any], iface: dict[str, Any]) -> bool:
    return bool(iface["up"] and iface["link"] and int(st["sysctl"]["net.inet.carp.allow"]))


def carp_setrun(st: dict[str, Any], ifname: str, sc: dict[str, Any]) -> None:
    iface = st["ifaces"][ifname]
    if not carp_can_run(st, iface) or vhid_naddrs(iface, sc["vhid"]) == 0:
        return
    if sc["state"] == "INIT":
        carp_set_state(st, ifname, sc, "BACKUP", "initialization complete")


def carp_sc_state(st: dict[str, Any], ifname: str, sc: dict[str, Any]) -> None:
    """carp_sc_state(): INIT, then BACKUP at once when the vhid can run."""
    iface = st["ifaces"][ifname]
    if not carp_can_run(st, iface):
        carp_set_state(st, ifname, sc, "INIT", "hardware interface down")
        if not sc.get("suppress"):
            demote_adj(st, int(st["sysctl"]["net.inet.carp.ifdown_demotion_factor"]),
                       "interface down")
        sc["suppress"] = True
    else:
        carp_set_state(st, ifname, sc, "INIT", "hardware interface up")
        carp_setrun(st, ifname, sc)
        if sc.get("suppress"):
            demote_adj(st, -int(st["sysctl"]["net.inet.carp.ifdown_demotion_factor"]),
                       "interface up")
        sc["suppress"] = False


def carp_linkstate(st: dict[str, Any], ifname: str) -> None:
    iface = st["ifaces"][ifname]
    for key in sorted(iface["carp"], key=int):
        carp_sc_state(st, ifname, iface["carp"][key])


def carp_alloc(iface: dict[str, Any], vhid: int) -> dict[str, Any]:
    sc = {
        "vhid": vhid,
        "state": "INIT",
        "advbase": 1,
        "advskew": 0,
        "key": "",
        "peer": "224.0.0.18",
        "peer6": "ff02::12",
        "version": 2,
        "prio": 100,
        "interval": 100,
        "suppress": False,
    }
    iface["carp"][str(vhid)] = sc
    return sc


def carp_attach(st: dict[str, Any], ifname: str, vhid: int) -> None:
    sc = st["ifaces"][ifname]["carp"].get(str(vhid))
    if sc is None:  # carp_attach(): unknown vhid
        raise Exit(1, f"ifconfig: ioctl (SIOCAIFADDR): {ERRNO_TEXT['ENOENT']}")
    carp_sc_state(st, ifname, sc)


def carp_detach(st: dict[str, Any], ifname: str, vhid: int, keep: bool = False) -> None:
    iface = st["ifaces"][ifname]
    sc = iface["carp"].get(str(vhid))
    if sc is None:
        return
    if vhid_naddrs(iface, vhid) == 0 and not keep:
        carp_set_state(st, ifname, sc, "INIT", "hardware interface up")
        if sc.get("suppress"):
            demote_adj(st, -int(st["sysctl"]["net.inet.carp.ifdown_demotion_factor"]),
                       "vhid removed")
        del iface["carp"][str(vhid)]
    else:
        carp_sc_state(st, ifname, sc)


def carp_allow_changed(st: dict[str, Any]) -> None:
    for ifname in st["ifaces"]:
        carp_linkstate(st, ifname)


# --------------------------------------------------------------------------- kernel: addresses

ND6_INFINITE = 0xFFFFFFFF  # ND6_INFINITE_LIFETIME
ND6_IFDISABLED = 0x8
RETRANS_SECONDS = 1.0  # nd6_ifattach(): retrans = RETRANS_TIMER (1000 ms)
EINVAL_ADD = f"ifconfig: ioctl (SIOCAIFADDR): {ERRNO_TEXT['EINVAL']}"


def find_addr(iface: dict[str, Any], family: int, addr: str) -> int | None:
    for i, a in enumerate(iface["addrs"]):
        if a["family"] == family and a["addr"] == addr:
            return i
    return None


def default_broadcast(addr: str, plen: int) -> str:
    net = ipaddress.IPv4Network(f"{addr}/{plen}", strict=False)
    return str(net.broadcast_address)


def iface_running(iface: dict[str, Any]) -> bool:
    """IFF_UP and IFF_DRV_RUNNING (an unopened tap is not RUNNING)."""
    return bool(iface["up"] and iface.get("opened", True))


def driver_set_address(st: dict[str, Any], ifname: str) -> None:
    """The driver's SIOCSIFADDR: ether_ioctl() (vtnet, tap) or tuninit() (tun).

    Sets IFF_UP directly and runs if_init; this is not if_up(), so CARP and DAD
    hear nothing from it (see ``after_address_add``)."""
    st["ifaces"][ifname]["up"] = True


def after_address_add(st: dict[str, Any], ifname: str, was_up: bool, major: int) -> None:
    """What follows an address add that brought the interface up.

    13.x (ioctl): ifioctl() sees IFF_UP appear and calls in6_if_up() only.
    14+ (netlink): rtnl_handle_addr() calls if_up(), i.e. if_route():
    carp_linkstate() and in6_if_up().
    """
    iface = st["ifaces"].get(ifname)
    if iface is None or was_up or not iface["up"]:
        return
    if major >= 14:
        carp_linkstate(st, ifname)
    in6_if_up(st, ifname)


def add_inet(st: dict[str, Any], ifname: str, addr: str, plen: int, *, vhid: int | None = None,
             dst: str | None = None, bcast: str | None = None) -> None:
    """SIOCAIFADDR / RTM_NEWADDR for IPv4 (in_aifaddr_ioctl)."""
    iface = st["ifaces"][ifname]
    idx = find_addr(iface, 4, addr)
    if idx is not None:
        # in_aifaddr_ioctl(): in_difaddr_ioctl() first, then the address is added anew.
        old = iface["addrs"].pop(idx)
        _count_readd(st, ifname, addr)
        if old.get("vhid"):
            carp_detach(st, ifname, old["vhid"], keep=True)
    if bcast is None and iface["kind"] in ETHER_KINDS and plen != 0:
        bcast = default_broadcast(addr, plen)
    entry = {"family": 4, "addr": addr, "plen": plen, "vhid": vhid, "flags": [],
             "dst": dst if iface["kind"] == "tun" else None, "bcast": bcast}
    # Kernel order: new IPv4 addresses are appended (if_addrhead tail).
    iface["addrs"].append(entry)
    if vhid:  # carp_attach() runs before the driver ioctl, as in in_aifaddr_ioctl()
        carp_attach(st, ifname, vhid)
    driver_set_address(st, ifname)
    if not vhid and iface["kind"] in ETHER_KINDS:
        # ether_ioctl() -> arp_ifinit(): one gratuitous ARP (+ garp_rexmit_count);
        # arp_ifinit() returns early for CARP addresses.
        st["garp"].append({"if": ifname, "addr": addr,
                           "count": 1 + int(st["sysctl"]["net.link.ether.inet.garp_rexmit_count"])})


def _count_readd(st: dict[str, Any], ifname: str, addr: str) -> None:
    key = f"{ifname} {addr}"
    st["readd"][key] = st["readd"].get(key, 0) + 1


def add_inet6(st: dict[str, Any], ifname: str, addr: str, plen: int, *, vhid: int | None = None,
              flags: list[str] | None = None, dst: str | None = None,
              pltime: int = ND6_INFINITE, vltime: int = ND6_INFINITE,
              static: bool = False) -> None:
    """SIOCAIFADDR_IN6 / RTM_NEWADDR for IPv6 (in6_addifaddr -> in6_update_ifa).

    ``flags`` are the request's flags (ifconfig keywords). ``static`` (test set-up
    only) shows them as given and runs no DAD.
    """
    iface = st["ifaces"][ifname]
    req = [f for f in (flags or []) if f in INET6_FLAG_ORDER]
    if "deprecated" in req and not static:
        pltime = 0  # in6_update_ifa_internal(): a requested DEPRECATED means pltime 0
    if pltime > vltime:  # in6_validate_ifra(): lifetime consistency
        raise Exit(1, EINVAL_ADD)
    idx = find_addr(iface, 6, addr)
    if idx is None and vltime == 0:
        return  # in6_validate_ifra(): "valid lifetime is 0", nothing to do
    if idx is not None and iface["addrs"][idx]["plen"] != plen:
        # in6_validate_ifra(): the prefix length of an existing address can't change
        raise Exit(1, EINVAL_ADD)
    t = now(st)
    new = idx is None
    if new:
        entry: dict[str, Any] = {"family": 6, "addr": addr, "plen": plen, "vhid": None,
                                 "dst": dst if iface["kind"] == "tun" else None,
                                 "bcast": None}
        iface["addrs"].append(entry)  # in6_alloc_ifa(): if_addrhead tail
    else:
        entry = iface["addrs"][idx]  # type: ignore[index]
        _count_readd(st, ifname, addr)
    # in6_update_ifa_internal(): flags are the request's, DUPLICATED is cleared, and
    # only a new address becomes TENTATIVE (when in6if_do_dad()); no DAD for an update.
    entry.update(flags=list(req), dad=None, static=static, pltime=pltime, vltime=vltime,
                 updated=t)
    if not static and new and in6if_do_dad(iface) and "tentative" not in entry["flags"]:
        entry["flags"].append("tentative")
    # in6_notify_ifa(): the driver's SIOCSIFADDR for the first inet6 address (and for
    # every update, where the address count is not taken)
    if not new or sum(1 for a in iface["addrs"] if a["family"] == 6) <= 1:
        driver_set_address(st, ifname)
    if new and not static and "tentative" in entry["flags"]:
        dad_start(st, ifname, entry)  # in6_broadcast_ifa()
    # in6_addifaddr(): an existing address leaves its vhid (carp_detach, keep_cif),
    # then joins the requested one: a CARP bounce, as for IPv4.
    old_vhid = entry.get("vhid")
    if old_vhid:
        entry["vhid"] = None
        carp_detach(st, ifname, old_vhid, keep=True)
    if vhid:
        entry["vhid"] = vhid
        carp_attach(st, ifname, vhid)
    if iface["nd6"] & ND6_IFDISABLED:
        # in6_addifaddr() aifaddr_out: clear IFDISABLED (nd6_ioctl SIOCSIFINFO_FLAGS)
        nd6_set_flags(st, ifname, iface["nd6"] & ~ND6_IFDISABLED)


def in6if_do_dad(iface: dict[str, Any]) -> bool:
    """in6if_do_dad(): no DAD with IFDISABLED or NO_DAD (down interfaces still mark)."""
    return not iface["nd6"] & (ND6_IFDISABLED | ND6_NO_DAD)


def neighbour_holds(st: dict[str, Any], ifname: str, addr: str) -> bool:
    """Another host on this link answers for ``addr`` (FakeBSD.neighbour())."""
    return addr in st.get("neighbours", {}).get(ifname, {})


def dad_start(st: dict[str, Any], ifname: str, entry: dict[str, Any]) -> None:
    """nd6_dad_start() for a tentative address.

    The outcome is decided now: the first NS leaves at once (ifconfig adds pass no
    DAD delay) and a neighbour holding the address answers it (nd6_dad_na_input).
    When DAD completes depends on the emulator's ``dad`` mode (see README).
    """
    iface = st["ifaces"][ifname]
    if ("anycast" in entry["flags"] or int(st["sysctl"].get("net.inet6.ip6.dad_count", 1)) == 0
            or iface["nd6"] & ND6_NO_DAD):
        _discard(entry["flags"], "tentative")
        return
    if not iface_running(iface) or iface["nd6"] & ND6_IFDISABLED:
        return  # stays tentative; in6_if_up() or nd6_timer() starts DAD later
    if entry.get("dad"):
        return  # already in progress (nd6_dad_find)
    mode = str(iface.get("dad") or st.get("dad") or "instant")
    kind, _, n = mode.partition(":")
    dad: dict[str, Any] = {"dup": kind == "duplicated" or neighbour_holds(st, ifname,
                                                                          entry["addr"]),
                           "reads": None, "until": None}
    if kind == "tentative":
        dad["reads"] = int(n) if n else 1
    elif kind == "duplicated":
        dad["reads"] = int(n) if n else 0
    elif kind == "timed":
        count = int(st["sysctl"].get("net.inet6.ip6.dad_count", 1))
        dad["until"] = now(st) + (float(n) if n else count * RETRANS_SECONDS)
    elif kind != "manual":  # instant
        dad["reads"] = 0
    entry["dad"] = dad
    if dad["reads"] == 0:
        dad_complete(st, ifname, entry)


def dad_complete(st: dict[str, Any], ifname: str, entry: dict[str, Any]) -> None:
    """nd6_dad_timer() after the last NS: duplicated or clean.

    An interface that went down meanwhile sent no NS: DAD gives up (dad_maxtry) and
    the address stays tentative until in6_if_up() or nd6_timer() restarts DAD.
    """
    dad = entry.get("dad")
    entry["dad"] = None
    iface = st["ifaces"][ifname]
    if not dad or "tentative" not in entry["flags"] or not iface_running(iface):
        return
    if dad["dup"]:  # nd6_dad_duplicated()
        _discard(entry["flags"], "tentative")
        entry["flags"].append("duplicated")
        ip = entry["addr"]
        _klog(st, f"{ifname}: DAD detected duplicate IPv6 address {ip}: "
                  "NS in/out/loopback=0/1/0, NA in=1")
        _klog(st, f"{ifname}: DAD complete for {ip} - duplicate found")
        _klog(st, f"{ifname}: manual intervention required")
    elif not iface["nd6"] & ND6_IFDISABLED:
        _discard(entry["flags"], "tentative")


def _discard(flags: list[str], flag: str) -> None:
    while flag in flags:
        flags.remove(flag)


def in6_if_up(st: dict[str, Any], ifname: str) -> None:
    """in6_if_up(): DAD for every tentative address of the interface."""
    for entry in st["ifaces"][ifname]["addrs"]:
        if entry["family"] == 6 and not entry.get("static") and "tentative" in entry["flags"]:
            dad_start(st, ifname, entry)


def nd6_set_flags(st: dict[str, Any], ifname: str, new: int) -> None:
    """nd6_ioctl(SIOCSIFINFO_FLAGS): the IFDISABLED transitions.

    0 -> 1 marks every inet6 address tentative (unless NO_DAD); 1 -> 0 runs
    in6_if_up() when the interface is up.
    """
    iface = st["ifaces"][ifname]
    old = iface["nd6"]
    v6 = [a for a in iface["addrs"] if a["family"] == 6 and not a.get("static")]
    if old & ND6_IFDISABLED and not new & ND6_IFDISABLED:
        if any("duplicated" in a["flags"] and is_link_local(a["addr"]) for a in v6):
            _klog(st, "Cannot enable an interface with a link-local address marked duplicate.")
            iface["nd6"] = new | ND6_IFDISABLED
            return
        iface["nd6"] = new
        if iface["up"]:
            in6_if_up(st, ifname)
        return
    iface["nd6"] = new
    if (not old & ND6_IFDISABLED and new & ND6_IFDISABLED and not new & ND6_NO_DAD
            and int(st["sysctl"].get("net.inet6.ip6.dad_count", 1)) > 0):
        for entry in v6:
            if "tentative" not in entry["flags"]:
                entry["flags"].append("tentative")


def kernel_tick(st: dict[str, Any]) -> None:
    """Timers, run before every tool call: DAD completion and nd6_timer().

    nd6_timer() (every nd6_prune = 1 s in the kernel): an expired address is purged,
    an address past its pltime is DEPRECATED, a tentative one gets DAD started, and
    on an interface that is down, not running or IFDISABLED every other address is
    marked tentative again (DUPLICATED cleared) for a later DAD.
    """
    t = now(st)
    for ifname, iface in list(st["ifaces"].items()):
        for entry in list(iface["addrs"]):
            if entry["family"] != 6 or entry.get("static"):
                continue
            dad = entry.get("dad")
            if dad and dad.get("until") is not None and t >= dad["until"]:
                dad_complete(st, ifname, entry)
            age = t - float(entry.get("updated", t))
            vltime = int(entry.get("vltime", ND6_INFINITE))
            pltime = int(entry.get("pltime", ND6_INFINITE))
            if vltime != ND6_INFINITE and age > vltime:  # IFA6_IS_INVALID
                del_addr(st, ifname, 6, entry["addr"])
            elif pltime != ND6_INFINITE and age > pltime:  # IFA6_IS_DEPRECATED
                if "deprecated" not in entry["flags"]:
                    entry["flags"].append("deprecated")
            elif "tentative" in entry["flags"]:
                dad_start(st, ifname, entry)
            else:
                if not iface["nd6"] & ND6_NO_DAD and (
                        not iface_running(iface) or iface["nd6"] & ND6_IFDISABLED):
                    _discard(entry["flags"], "duplicated")
                    entry["flags"].append("tentative")
                _discard(entry["flags"], "deprecated")


def del_addr(st: dict[str, Any], ifname: str, family: int, addr: str) -> None:
    """SIOCDIFADDR(_IN6): in_difaddr_ioctl() / in6_purgeaddr() (stops DAD, leaves CARP)."""
    iface = st["ifaces"][ifname]
    idx = find_addr(iface, family, addr)
    if idx is None:
        raise Exit(1, f"ifconfig: ioctl (SIOCDIFADDR): {ERRNO_TEXT['EADDRNOTAVAIL']}")
    old = iface["addrs"].pop(idx)
    if old.get("vhid"):
        carp_detach(st, ifname, old["vhid"])


def addr_flags(entry: dict[str, Any]) -> list[str]:
    """Current inet6 flags, in ifconfig's fixed order (print_flags)."""
    flags = set(entry.get("flags", []))
    return [f for f in INET6_FLAG_ORDER if f in flags]


def consume_dad_read(st: dict[str, Any], ifname: str, entry: dict[str, Any]) -> None:
    """Count one ``ifconfig`` read against a read-counted DAD (modes tentative/duplicated)."""
    dad = entry.get("dad")
    if not dad or dad.get("reads") is None:
        return
    dad["reads"] = max(int(dad["reads"]) - 1, 0)
    if dad["reads"] == 0:
        dad_complete(st, ifname, entry)


def complete_dad(st: dict[str, Any], ifname: str | None = None, addr: str | None = None) -> int:
    """Finish running DADs now (FakeBSD.complete_dad); return how many finished."""
    done = 0
    for name, iface in st["ifaces"].items():
        if ifname is not None and name != ifname:
            continue
        for entry in list(iface["addrs"]):
            if entry.get("dad") and (addr is None or entry["addr"] == addr):
                dad_complete(st, name, entry)
                done += 1
    return done


def is_link_local(addr: str) -> bool:
    return ipaddress.IPv6Address(addr).is_link_local


# --------------------------------------------------------------------------- formatting

def iface_flags(iface: dict[str, Any], major: int) -> int:
    flags = KINDS[iface["kind"]][0]
    if not iface["up"]:
        flags &= ~0x1
        flags &= ~0x40
    if iface.get("kind") == "tap" and not iface.get("opened", True):
        flags &= ~0x40
    if iface.get("promisc"):
        flags |= 0x100 | 0x20000
    if major >= 14 and iface["link"]:
        flags |= 0x1000000
    return flags


def printb(label: str, value: int, bits: list[tuple[int, str]]) -> str:
    names = [n for b, n in bits if value & b]
    return f"{label}={value:x}<{','.join(names)}>"


def fmt_inet(iface: dict[str, Any], a: dict[str, Any]) -> str:
    plen = a["plen"]
    mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF if plen else 0
    s = f"\tinet {a['addr']}"
    if iface["kind"] == "tun":
        s += f" --> {a.get('dst') or '0.0.0.0'}"
    s += f" netmask 0x{mask:x}"
    if iface["kind"] in ETHER_KINDS and plen != 0 and a.get("bcast"):
        s += f" broadcast {a['bcast']}"
    if a.get("vhid"):
        s += f" vhid {a['vhid']}"
    return s


def fmt_inet6(ifname: str, iface: dict[str, Any], a: dict[str, Any], major: int = 14,
              lifetimes: bool = False, t: float | None = None) -> str:
    """af_inet6.c: in6_status_nl() (14+) / in6_status() (ioctl, 13.x)."""
    ll = is_link_local(a["addr"])
    s = f"\tinet6 {a['addr']}" + (f"%{ifname}" if ll else "")
    if a.get("dst"):
        s += f" --> {a['dst']}"
    s += f" prefixlen {a['plen']}"
    for f in addr_flags(a):
        s += f" {f}"
    if ll:
        s += f" scopeid 0x{iface['index']:x}"
    s += fmt_lifetime(a, major, lifetimes, t)
    if a.get("vhid"):
        s += f" vhid {a['vhid']}"
    return s


def fmt_lifetime(a: dict[str, Any], major: int, lifetimes: bool, t: float | None) -> str:
    """`` pltime P vltime V`` or nothing.

    14+ show_lifetime(): whenever a lifetime is finite, the configured values the
    kernel exports (export_cache_info6), an infinite one as 0; -L is not needed.
    13.x in6_status(): only with -L, the seconds left (0 when past), ``infty``.
    """
    pl = int(a.get("pltime", ND6_INFINITE))
    vl = int(a.get("vltime", ND6_INFINITE))
    if pl == ND6_INFINITE and vl == ND6_INFINITE:
        return ""
    if major >= 14:
        return (f" pltime {0 if pl == ND6_INFINITE else pl}"
                f" vltime {0 if vl == ND6_INFINITE else vl}")
    if not lifetimes:
        return ""
    elapsed = int((t if t is not None else time.time()) - float(a.get("updated", 0.0)))

    def left(value: int) -> str:
        return "infty" if value == ND6_INFINITE else str(max(value - elapsed, 0))

    return f" pltime {left(pl)} vltime {left(vl)}"


def fmt_carp(iface: dict[str, Any], major: int) -> list[str]:
    lines = []
    for key in sorted(iface["carp"], key=int):
        sc = iface["carp"][key]
        if sc.get("version") == 3:
            lines.append(f"\tvrrp: {sc['state']} vrid {sc['vhid']} prio {sc['prio']} "
                         f"interval {sc['interval']}")
            continue
        lines.append(f"\tcarp: {sc['state']} vhid {sc['vhid']} advbase {sc['advbase']} "
                     f"advskew {sc['advskew']}")
        if major >= 14:
            lines.append(f"\t      peer {sc['peer']} peer6 {sc['peer6']}")
    return lines


def render_iface(st: dict[str, Any], ifname: str, major: int, family: str | None = None,
                 consume: bool = True, lifetimes: bool = False) -> list[str]:
    iface = st["ifaces"][ifname]
    kind = iface["kind"]
    _, options, media = KINDS[kind]
    out = [f"{ifname}: {printb('flags', iface_flags(iface, major), IFF_BITS)} "
           f"metric 0 mtu {iface['mtu']}"]
    if iface.get("description"):
        out.append(f"\tdescription: {iface['description']}")
    out.append(f"\t{options}")
    if kind in ETHER_KINDS and family in (None, "ether", "link", "lladdr"):
        out.append(f"\tether {iface['mac']}")
        if iface.get("hwaddr") and iface["hwaddr"] != iface["mac"]:
            out.append(f"\thwaddr {iface['hwaddr']}")
    if family in (None, "inet"):
        out.extend(fmt_inet(iface, a) for a in iface["addrs"] if a["family"] == 4)
    if family in (None, "inet6"):
        for a in iface["addrs"]:
            if a["family"] == 6:
                out.append(fmt_inet6(ifname, iface, a, major, lifetimes, now(st)))
                if consume:
                    consume_dad_read(st, ifname, a)
    if family not in (None,):
        if family == "inet6":
            out.append(f"\tnd6 {printb('options', iface['nd6'], ND6_BITS)}")
        return out
    carp = fmt_carp(iface, major)
    nd6 = f"\tnd6 {printb('options', iface['nd6'], ND6_BITS)}"
    status = "\tstatus: " + ("active" if iface["link"] else "no carrier")
    groups = [f"\tgroups: {kind}"] if kind in ("tap", "tun") else []
    if major <= 13:
        # ioctl-era order as in facts sample (a): nd6, media, status, carp
        out.append(nd6)
        out.extend(groups)
        if media:
            out.append(f"\t{media}")
        out.append(status)
        out.extend(carp)
    else:
        # netlink-era order as in facts sample (f): carp, media, status, nd6
        out.extend(carp)
        out.extend(groups)
        if media:
            out.append(f"\t{media}")
        out.append(status)
        out.append(nd6)
    if kind in ("tap", "tun") and iface.get("opened_by"):
        out.append(f"\tOpened by PID {iface['opened_by']}")
    return out


# --------------------------------------------------------------------------- ifconfig

FAMILIES = {"inet", "inet6", "link", "ether", "lladdr"}
IFCONFIG_USAGE = ("usage: ifconfig [-j jail] [-f type:format] [-L] [-C] [-g groupname] "
                  "interface address_family [address [dest_address]] [parameters]")


def _parse_int(word: str) -> int:
    """atoi(): leading integer, 0 when none."""
    s = word.strip()
    sign = 1
    if s[:1] in "+-" and s[:1]:
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    digits = ""
    for ch in s:
        if not ch.isdigit():
            break
        digits += ch
    return sign * int(digits) if digits else 0


def _parse_inet(word: str) -> tuple[str, int | None]:
    addr, plen = word, None
    if "/" in word:
        addr, _, width = word.rpartition("/")
        if not width[:1].isdigit():
            raise Exit(1, f"ifconfig: {word}: bad value (width invalid)")
        try:
            plen = int(width)
        except ValueError:
            raise Exit(1, f"ifconfig: {word}: bad value (width invalid)") from None
        if plen > 32:
            raise Exit(1, f"ifconfig: {word}: bad value (width too large)")
    try:
        return str(ipaddress.IPv4Address(addr)), plen
    except ValueError:
        raise Exit(1, f"ifconfig: {addr}: bad value") from None


def _parse_inet6(word: str) -> tuple[str, int | None]:
    addr, plen = word, None
    if "/" in word:
        addr, _, width = word.rpartition("/")
        try:
            plen = int(width)
        except ValueError:
            raise Exit(1, f"ifconfig: {width}: bad value") from None
        if not 0 <= plen <= 128:
            raise Exit(1, f"ifconfig: {width}: bad value")
    addr = addr.split("%", 1)[0]
    try:
        return str(ipaddress.IPv6Address(addr)), plen
    except ValueError:
        raise Exit(1, f"ifconfig: {word}: bad value") from None


def _parse_mask(word: str) -> int:
    try:
        if word.lower().startswith("0x"):
            value = int(word, 16)
        else:
            value = int(ipaddress.IPv4Address(word))
    except ValueError:
        raise Exit(1, f"ifconfig: {word}: bad value") from None
    return bin(value).count("1")


def _parse_mac(word: str) -> str:
    parts = word.replace("-", ":").replace(".", ":").split(":")
    try:
        if len(parts) != 6 or not all(1 <= len(p) <= 2 for p in parts):
            raise ValueError
        return ":".join(f"{int(p, 16):02x}" for p in parts)
    except ValueError:
        raise Exit(1, "ifconfig: malformed link-level address") from None


def classful_plen(addr: str) -> int:
    first = int(ipaddress.IPv4Address(addr)) >> 24
    if first < 128:
        return 8
    if first < 192:
        return 16
    return 24


def ifconfig(st: dict[str, Any], args: list[str], out: list[str], err: list[str]) -> None:
    major = release_major()
    opts: set[str] = set()
    i = 0
    while i < len(args) and args[i].startswith("-") and len(args[i]) > 1:
        w = args[i]
        if w in ("-f", "-g", "-G", "-j"):
            raise Exit(1, f"ifconfig: fakebsd does not emulate {w}")
        for ch in w[1:]:
            if ch not in "adlukmnvCL":
                raise Exit(1, f"ifconfig: illegal option -- {ch}\n{IFCONFIG_USAGE}")
            opts.add(ch)
        i += 1
    rest = args[i:]
    if "l" in opts and "a" in opts:  # ifconfig.c args_parse: -l cannot be used with -a
        raise Exit(1, IFCONFIG_USAGE)
    if ("a" in opts or "l" in opts) and rest:  # args_parse: at most an address family
        if len(rest) > 1:
            raise Exit(1, IFCONFIG_USAGE)
        if rest[0] not in FAMILIES:
            raise Exit(1, f"ifconfig: Address family '{rest[0]}' unknown.\n{IFCONFIG_USAGE}")
    if "l" in opts:
        names = [n for n, f in st["ifaces"].items() if _updown_ok(f, opts)]
        out.append(" ".join(names))
        return
    if "a" in opts or not rest:
        family = rest[0] if rest and rest[0] in FAMILIES else None
        for name, iface in st["ifaces"].items():
            if _updown_ok(iface, opts):
                out.extend(render_iface(st, name, major, family, lifetimes="L" in opts))
        return
    ifname, rest = rest[0], rest[1:]
    if ifname not in st["ifaces"]:
        if rest and rest[0] == "create":
            _create(st, ifname, rest[1:], out, err, major)
            return
        raise Exit(1, f"ifconfig: interface {ifname} does not exist")
    if rest and rest[0] == "create" and len(rest) == 1:
        raise Exit(1, f"ifconfig: interface {ifname} already exists")
    family = None
    if rest and rest[0] in FAMILIES:
        family = rest[0]
        rest = rest[1:]
    if not rest:
        out.extend(render_iface(st, ifname, major, family, lifetimes="L" in opts))
        return
    _configure(st, ifname, family or "inet", rest, err, major)


def _updown_ok(iface: dict[str, Any], opts: set[str]) -> bool:
    if "u" in opts and not iface["up"]:
        return False
    return not ("d" in opts and iface["up"])


def _create(st: dict[str, Any], ifname: str, rest: list[str], out: list[str], err: list[str],
            major: int) -> None:
    base = ifname.rstrip("0123456789")
    if base not in ("tap", "tun"):
        raise Exit(1, "ifconfig: SIOCIFCREATE2 (tap): Invalid argument")
    if base == ifname:  # "ifconfig tap create": pick the next free unit, print its name
        n = 0
        while f"{base}{n}" in st["ifaces"]:
            n += 1
        ifname = f"{base}{n}"
        out.append(ifname)
    create_iface(st, ifname, kind=base, up=False)
    if rest:
        _configure(st, ifname, "inet", rest, err, major)


def create_iface(st: dict[str, Any], name: str, *, kind: str = "vtnet", mac: str | None = None,
                 up: bool = True, link: bool = True, mtu: int = 1500, nd6: int | None = None,
                 opened_by: int | None = None) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"unknown interface kind {kind!r}")
    index = st["next_index"]
    st["next_index"] = index + 1
    if mac is None and kind in ETHER_KINDS:
        mac = f"58:9c:fc:00:{index >> 8 & 0xff:02x}:{index & 0xff:02x}"
    iface = {
        "index": index,
        "kind": kind,
        "mac": mac,
        "hwaddr": mac,
        "up": up,
        "link": link,
        "mtu": mtu,
        "description": None,
        "promisc": False,
        "nd6": 0x21 if nd6 is None else nd6,
        "addrs": [],
        "carp": {},
        "opened_by": opened_by,
    }
    st["ifaces"][name] = iface
    return iface


CARP_MCAST, CARP_MCAST6 = "224.0.0.18", "ff02::12"  # INADDR_CARP_GROUP, its IPv6 twin
CARP_CMDS_ALL = {"vhid", "advbase", "advskew", "pass", "state"}
CARP_CMDS_14 = {"peer", "peer6"}
CARP_FLAGS_14 = {"mcast", "mcast6"}
CARP_CMDS_15 = {"carpver", "vrrpprio", "vrrpinterval"}


def _configure(st: dict[str, Any], ifname: str, family: str, words: list[str],
               err: list[str], major: int) -> None:
    iface = st["ifaces"][ifname]
    setaddr = 0
    doalias = 0
    clearaddr = False
    newaddr = True
    addr: tuple[str, int | None] | None = None
    rid: tuple[str, int | None] | None = None
    dst: str | None = None
    mask_plen: int | None = None
    bcast: str | None = None
    v6flags_set: set[str] = set()
    lifetimes: dict[str, int] = {}
    explicit_prefix = False
    carp: dict[str, Any] = {"vhid": -1, "advskew": -1, "advbase": -1, "state": -1, "key": None,
                            "peer": None, "peer6": None, "version": 0, "prio": 0,
                            "interval": 0}
    if major == 14:
        # 14.x ifconfig: carp_ctor() presets the multicast peers (setcarp_mcast,
        # setcarp_mcast6) and setcarp_callback() sends them with EVERY vhid command, so
        # "vhid N advskew S" without peer/peer6 turns a unicast vhid back to multicast.
        # Later ifconfig (15.x here) only sends the peers the command names.
        carp["peer"], carp["peer6"] = CARP_MCAST, CARP_MCAST6
    carp_cmds = set(CARP_CMDS_ALL)
    carp_flags: set[str] = set()
    if major >= 14:
        carp_cmds |= CARP_CMDS_14
        carp_flags |= CARP_FLAGS_14
    if major >= 15:
        carp_cmds |= CARP_CMDS_15
    lladdr: str | None = None

    def parse_addr(word: str) -> tuple[str, int | None]:
        if family == "inet6":
            return _parse_inet6(word)
        return _parse_inet(word)

    def need_arg(k: int, word: str) -> str:
        if k + 1 >= len(words):
            raise Exit(1, f"ifconfig: '{word}' requires argument")
        return words[k + 1]

    k = 0
    while k < len(words):
        w = words[k]
        if w == "up":
            if not iface["up"]:  # SIOCSIFFLAGS -> if_up() -> if_route()
                iface["up"] = True
                carp_linkstate(st, ifname)
                in6_if_up(st, ifname)
        elif w == "down":
            if iface["up"]:
                iface["up"] = False
                carp_linkstate(st, ifname)
        elif w in ("promisc", "-promisc"):
            iface["promisc"] = w == "promisc"
        elif w in ("arp", "-arp", "debug", "-debug"):
            pass
        elif w in ("description", "descr"):
            iface["description"] = need_arg(k, w) or None
            k += 1
        elif w in ("-description", "-descr"):
            iface["description"] = None
        elif w in ("add", "alias", "-alias", "delete", "remove"):
            param = 1 if w in ("add", "alias") else -1
            if setaddr and doalias == 0 and param < 0:
                rid = addr
            doalias = param
            if param < 0:
                clearaddr = True
                newaddr = False
            else:
                clearaddr = False
        elif w == "netmask":
            mask_plen = _parse_mask(need_arg(k, w))
            k += 1
        elif w == "broadcast":
            bcast = _parse_inet(need_arg(k, w))[0]
            k += 1
        elif w == "metric":
            need_arg(k, w)
            k += 1
        elif w == "mtu":
            iface["mtu"] = _parse_int(need_arg(k, w))
            k += 1
        elif w == "prefixlen":
            val = need_arg(k, w)
            k += 1
            if family == "inet6":
                try:
                    mask_plen = int(val)
                except ValueError:
                    raise Exit(1, f"ifconfig: {val}: bad value") from None
                explicit_prefix = True
        elif w in INET6_FLAG_KEYWORDS or (w.startswith("-") and w[1:] in INET6_FLAG_KEYWORDS):
            # af_inet6.c setip6flags(): request flags (``tentative`` included)
            if w.startswith("-"):
                v6flags_set.discard(w[1:])
            else:
                v6flags_set.add(w)
        elif w in ("pltime", "vltime"):
            lifetimes[w] = _parse_lifetime(w, need_arg(k, w), family)
            k += 1
        elif w in ND6_KEYWORDS or (w.startswith("-") and w[1:] in ND6_KEYWORDS):
            # af_nd6.c setnd6flags() -> nd6_ioctl(SIOCSIFINFO_IN6), applied at once
            bit = ND6_KEYWORDS[w.lstrip("-")]
            nd6_set_flags(st, ifname, iface["nd6"] & ~bit if w.startswith("-")
                          else iface["nd6"] | bit)
        elif w in carp_cmds:
            val = need_arg(k, w)
            k += 1
            _carp_word(carp, w, val)
        elif w in carp_flags:
            if w == "mcast":
                carp["peer"] = CARP_MCAST
            else:
                carp["peer6"] = CARP_MCAST6
        elif w == "destroy":
            if iface["kind"] not in ("tap", "tun"):
                raise Exit(1, "ifconfig: SIOCIFDESTROY: Invalid argument")
            for key in list(iface["carp"]):
                del iface["carp"][key]
            del st["ifaces"][ifname]
            return
        elif family in ("link", "ether", "lladdr"):
            if not setaddr:
                setaddr = 1
                lladdr = _parse_mac(w)
            else:
                raise Exit(1, "ifconfig: can't set link-level netmask or broadcast")
        elif not setaddr:
            setaddr = 1
            if doalias == 0:
                clearaddr = True
            parsed = parse_addr(w)
            if parsed[1] is not None and family == "inet6":
                explicit_prefix = True
            if doalias >= 0:
                addr = parsed
            else:
                rid = parsed
        else:
            dst = parse_addr(w)[0]
        k += 1

    # ---- deferred work, in ifconfig_ioctl() order: postproc, callbacks, delete, add
    if lladdr is not None:
        if iface["kind"] not in ETHER_KINDS:
            raise Exit(1, f"ifconfig: ioctl (SIOCSIFLLADDR): {ERRNO_TEXT['EINVAL']}")
        iface["mac"] = lladdr
        return

    plen: int | None = None
    if addr is not None:
        plen = addr[1] if addr[1] is not None else mask_plen
        if family == "inet" and plen is None and newaddr:
            if iface["kind"] != "tun":
                err.append("ifconfig: WARNING: setting interface address without mask is "
                           "deprecated,\ndefault mask may not be correct.")
            plen = classful_plen(addr[0])
        if family == "inet6" and not explicit_prefix and plen is None:
            plen = 64

    if carp["vhid"] != -1:
        _setcarp_callback(st, ifname, carp)

    if clearaddr:
        fam = 6 if family == "inet6" else 4
        if rid is not None:
            if doalias < 0:
                del_addr(st, ifname, fam, rid[0])
            else:
                with contextlib.suppress(Exit):
                    del_addr(st, ifname, fam, rid[0])
        elif fam == 4 and doalias >= 0:
            # Replacing the primary address: delete the first IPv4 address, if any.
            first = next((a for a in iface["addrs"] if a["family"] == 4), None)
            if first is not None:
                del_addr(st, ifname, 4, first["addr"])
        elif doalias < 0:
            raise Exit(1, f"ifconfig: ioctl (SIOCDIFADDR): {ERRNO_TEXT['EADDRNOTAVAIL']}")

    if newaddr and addr is not None:
        vhid = carp["vhid"] if carp["vhid"] > 0 else None
        assert plen is not None
        was_up = bool(iface["up"])
        if family == "inet6":
            add_inet6(st, ifname, addr[0], plen, vhid=vhid, flags=sorted(v6flags_set), dst=dst,
                      pltime=lifetimes.get("pltime", ND6_INFINITE),
                      vltime=lifetimes.get("vltime", ND6_INFINITE))
        else:
            add_inet(st, ifname, addr[0], plen, vhid=vhid, dst=dst, bcast=bcast)
        after_address_add(st, ifname, was_up, major)


def _parse_lifetime(word: str, val: str, family: str) -> int:
    """af_inet6.c setip6lifetime(): strtoul(val, &ep, 0); inet6 only."""
    text = val.strip()
    base = 10
    if text[:2].lower() == "0x":
        base, text = 16, text[2:]
    elif text[:1] == "0" and len(text) > 1:
        base, text = 8, text[1:]
    digits = ""
    for ch in text:
        if ch.lower() not in "0123456789abcdef"[:base]:
            break
        digits += ch
    if not digits and not (base == 8 and val.strip().startswith("0")):
        raise Exit(1, f"ifconfig: invalid {word}")
    if family != "inet6":
        raise Exit(1, f"ifconfig: {word} not allowed for the AF")
    return int(digits, base) if digits else 0


def _carp_word(carp: dict[str, Any], word: str, val: str) -> None:
    if word == "vhid":
        vhid = _parse_int(val)
        if vhid <= 0 or vhid > CARP_MAXVHID:
            raise Exit(1, f"ifconfig: vhid must be greater than 0 and less than {CARP_MAXVHID}")
        carp["vhid"] = vhid
        return
    if word in ("advskew", "advbase", "pass", "state") and carp["vhid"] == -1:
        # sbin/ifconfig/carp.c setcarp_passwd says "passwd", the others their own word
        raise Exit(1, f"ifconfig: {'passwd' if word == 'pass' else word} requires vhid")
    if word == "advskew":
        carp["advskew"] = _parse_int(val)
    elif word == "advbase":
        carp["advbase"] = _parse_int(val)
    elif word == "pass":
        carp["key"] = val[:19]
    elif word == "state":
        for idx, name in enumerate(CARP_STATES):
            if name.lower() == val.lower():
                carp["state"] = idx
                return
        raise Exit(1, "ifconfig: unknown state")
    elif word == "peer":
        try:
            carp["peer"] = str(ipaddress.IPv4Address(val))
        except ValueError:
            carp["peer"] = "255.255.255.255"  # inet_addr() returns INADDR_NONE
    elif word == "peer6":
        try:
            carp["peer6"] = str(ipaddress.IPv6Address(val))
        except ValueError:
            raise Exit(1, f"ifconfig: Invalid IPv6 address {val}") from None
    elif word == "carpver":
        ver = _parse_int(val)
        if ver not in (2, 3):
            raise Exit(1, "ifconfig: version must be 2 or 3")
        carp["version"] = ver
    elif word == "vrrpprio":
        carp["prio"] = _parse_int(val)
    elif word == "vrrpinterval":
        iv = _parse_int(val)
        if iv <= 0 or iv > 4095:
            raise Exit(1, "ifconfig: vrrpinterval must be greater than 0 and less than 4095")
        carp["interval"] = iv


def _setcarp_callback(st: dict[str, Any], ifname: str, carp: dict[str, Any]) -> None:
    """setcarp_callback() + kernel SIOCSVH (carp_ioctl_set)."""
    iface = st["ifaces"][ifname]
    if iface["kind"] not in ETHER_KINDS:
        raise Exit(1, f"ifconfig: SIOCSVH: {ERRNO_TEXT['EOPNOTSUPP']}")
    vhid = carp["vhid"]
    sc = iface["carp"].get(str(vhid))
    req = dict(sc) if sc else {"state": "INIT", "advskew": 0, "advbase": 0}
    if carp["advskew"] > -1:
        req["advskew"] = carp["advskew"]
    if carp["advbase"] > -1:
        req["advbase"] = carp["advbase"]
    if carp["state"] > -1:
        req["state"] = CARP_STATES[carp["state"]]
    # kernel: SIOCSVH on an unknown vhid creates it (carp_alloc), state INIT
    if sc is None:
        sc = carp_alloc(iface, vhid)
        if carp["version"]:
            sc["version"] = carp["version"]
    elif carp["version"] and carp["version"] != sc.get("version", 2):
        raise Exit(1, f"ifconfig: SIOCSVH: {ERRNO_TEXT['EINVAL']}")
    if req["advbase"] > 0:
        if req["advbase"] > 255:
            raise Exit(1, f"ifconfig: SIOCSVH: {ERRNO_TEXT['EINVAL']}")
        sc["advbase"] = req["advbase"]
    if req["advskew"] >= 255:
        raise Exit(1, f"ifconfig: SIOCSVH: {ERRNO_TEXT['EINVAL']}")
    sc["advskew"] = req["advskew"]
    if carp["key"] is not None:
        sc["key"] = carp["key"]
    if carp["peer"] is not None:
        sc["peer"] = carp["peer"]
    if carp["peer6"] is not None:
        sc["peer6"] = carp["peer6"]
    if carp["prio"]:
        sc["prio"] = carp["prio"]
    if carp["interval"]:
        sc["interval"] = carp["interval"]
    if sc["state"] != "INIT" and req["state"] != sc["state"]:
        if req["state"] in ("BACKUP", "MASTER"):
            carp_set_state(st, ifname, sc, req["state"], "user requested via ifconfig")


# --------------------------------------------------------------------------- sysctl

def sysctl_value(st: dict[str, Any], name: str) -> int | str | None:
    if name == "kern.osrelease":
        return f"{release()}-RELEASE"
    if name == "kern.hostname":
        return str(st.get("hostname", "fakebsd"))
    return st["sysctl"].get(name)


def sysctl_names(st: dict[str, Any]) -> list[str]:
    return sorted([*st["sysctl"], *SYSCTL_RELEASE_DERIVED])


def sysctl_write(st: dict[str, Any], name: str, value: int | str) -> None:
    """Kernel-side write handler (demotion is additive, allow re-evaluates vhids)."""
    if name == "net.inet.carp.demotion":
        demote_adj(st, int(value), "sysctl")
        return
    if name in ("kern.osrelease", "kern.ostype"):
        raise Exit(1, f"sysctl: oid '{name}' is read only")
    old = st["sysctl"].get(name)
    if name == "kern.hostname":
        st["hostname"] = str(value)
        return
    st["sysctl"][name] = value
    if name == "net.inet.carp.allow" and bool(int(old or 0)) != bool(int(value)):
        carp_allow_changed(st)


def sysctl(st: dict[str, Any], args: list[str], out: list[str], err: list[str]) -> None:
    nflag = qflag = iflag = False
    i = 0
    while i < len(args) and args[i].startswith("-") and len(args[i]) > 1:
        for ch in args[i][1:]:
            if ch == "n":
                nflag = True
            elif ch == "q":
                qflag = True
            elif ch == "i":
                iflag = True
            elif ch in "ahNdeWTbo":
                if ch == "a":
                    args = [*args, ""]
            else:
                raise Exit(1, f"sysctl: illegal option -- {ch}\nusage: sysctl [-bdehiNnoqTtWx] "
                              "[ -B <bufsize> ] [-f filename] name[=value] ...\n"
                              "       sysctl [-bdehNnoqTtWx] [ -B <bufsize> ] -a")
        i += 1
    names = args[i:]
    if not names:
        raise Exit(1, "usage: sysctl [-bdehiNnoqTtWx] [ -B <bufsize> ] [-f filename] "
                      "name[=value] ...\n       sysctl [-bdehNnoqTtWx] [ -B <bufsize> ] -a")
    rc = 0
    for arg in names:
        name, eq, newval = arg.partition("=")
        name = name.strip()
        known = sysctl_names(st)
        if arg == "":
            for n in known:
                out.append(_show(st, n, nflag))
            continue
        if name not in known:
            children = [n for n in known if n.startswith(name + ".")]
            if children and not eq:
                out.extend(_show(st, n, nflag) for n in children)
                continue
            if children:
                err.append(f"sysctl: oid '{name}' isn't a leaf node")
                rc = 1
                continue
            if iflag:
                continue
            if not qflag:
                err.append(f"sysctl: unknown oid '{name}'")
            rc = 1
            continue
        if not eq:
            out.append(_show(st, name, nflag))
            continue
        old = sysctl_value(st, name)
        newval = newval.strip()
        if len(newval) >= 2 and newval[0] in "'\"" and newval[-1] == newval[0]:
            newval = newval[1:-1]
        value: int | str
        if isinstance(old, int):
            try:
                value = int(newval, 0)
            except ValueError:
                err.append(f"sysctl: invalid integer '{newval}'")
                rc = 1
                continue
        else:
            value = newval
        sysctl_write(st, name, value)
        prefix = "" if nflag else f"{name}: "
        out.append(f"{prefix}{old} -> {sysctl_value(st, name)}")
    if rc:
        raise Exit(rc)


def _show(st: dict[str, Any], name: str, nflag: bool) -> str:
    value = sysctl_value(st, name)
    return f"{value}" if nflag else f"{name}: {value}"


# --------------------------------------------------------------------------- logger

def logger(st: dict[str, Any], args: list[str], out: list[str], err: list[str]) -> None:
    tag = os.environ.get("USER") or os.environ.get("LOGNAME") or "root"
    pri = "user.notice"
    to_stderr = False
    from_file: str | None = None
    i = 0
    while i < len(args):
        w = args[i]
        if w == "--":
            i += 1
            break
        if not w.startswith("-") or w == "-":
            break
        opt = w[1:2]
        if opt in ("t", "p", "h", "P", "f", "S"):
            val = w[2:] if len(w) > 2 else (args[i + 1] if i + 1 < len(args) else None)
            if val is None:
                raise Exit(1, f"logger: option requires an argument -- {opt}\n"
                              "usage: logger [-46Ais] [-f file] [-h host] [-P port] "
                              "[-p pri] [-t tag] [message ...]")
            if len(w) == 2:
                i += 1
            if opt == "t":
                tag = val
            elif opt == "p":
                pri = val
            elif opt == "f":
                from_file = val
        else:
            for ch in w[1:]:
                if ch == "s":
                    to_stderr = True
                elif ch not in "46Ai":
                    raise Exit(1, f"logger: illegal option -- {ch}\n"
                                  "usage: logger [-46Ais] [-f file] [-h host] [-P port] "
                                  "[-p pri] [-t tag] [message ...]")
        i += 1
    words = args[i:]
    if words:
        messages = [" ".join(words)]
    else:
        try:
            if from_file:
                with open(from_file, encoding="utf-8", errors="replace") as f:
                    text = f.read()
            else:
                text = sys.stdin.read()
        except OSError as e:
            raise Exit(1, f"logger: {from_file}: {e.strerror}") from None
        messages = [line for line in text.splitlines() if line]
    path = os.environ.get("FAKEBSD_SYSLOG") or (state_path() + ".syslog")
    with open(path, "a", encoding="utf-8") as f:
        for msg in messages:
            f.write(json.dumps({"t": time.time(), "pri": pri, "tag": tag,
                                "pid": os.getppid(), "msg": msg}) + "\n")
            if to_stderr:
                err.append(f"{tag}: {msg}")


# --------------------------------------------------------------------------- uname

def uname(st: dict[str, Any], args: list[str], out: list[str], err: list[str]) -> None:
    rel = f"{release()}-RELEASE"
    fields = {
        "s": "FreeBSD",
        "n": str(st.get("hostname", "fakebsd")),
        "r": rel,
        "v": f"FreeBSD {rel} releng/{release()}-n0-0000000000 GENERIC",
        "m": "amd64",
        "p": "amd64",
        "i": "GENERIC",
        "K": f"{release_major()}0{release().partition('.')[2] or '0'}000",
        "U": f"{release_major()}0{release().partition('.')[2] or '0'}000",
        "o": "FreeBSD",
    }
    wanted: list[str] = []
    for w in args:
        if not w.startswith("-") or len(w) < 2:
            raise Exit(1, "usage: uname [-abiKmnoprsUv]")
        for ch in w[1:]:
            if ch == "a":
                wanted.extend("snrvm")
            elif ch in fields:
                wanted.append("s" if ch == "o" else ch)
            else:
                raise Exit(1, f"uname: illegal option -- {ch}\nusage: uname [-abiKmnoprsUv]")
    if not wanted:
        wanted = ["s"]
    order = "snrvmpiKU"
    out.append(" ".join(fields[c] for c in order if c in wanted))
