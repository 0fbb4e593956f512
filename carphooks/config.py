"""Load and validate the TOML configuration into frozen dataclasses.

Every problem becomes one :class:`ConfigError` line ``FILE: KEY: problem``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from carphooks.errors import ConfigError
from carphooks.log import DEFAULT_FACILITY, FACILITIES

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_CONFIG = Path("/usr/local/etc/carphooks.toml")
CONFIG_ENV = "CARPHOOKS_CONFIG"
HOST_ENV = "CARPHOOKS_HOST"

# Interface names: what FreeBSD and Linux allow in practice, never starting with '-' (argv safety).
IFNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
# tinc node names: letters, digits and underscore (tinc's own rule).
NODE_RE = re.compile(r"[A-Za-z0-9_]{1,64}")
GROUP_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# syslog tags: what FreeBSD's syslogd takes as the program name (it stops at '.').
TAG_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
MAC_RE = re.compile(r"(?:[0-9a-f]{2}:){5}[0-9a-f]{2}")

BACKENDS = ("auto", "freebsd", "linux")
TOPOLOGIES = ("tinc", "unicast")
QUORUM_MODES = ("majority", "none")
MAX_ADVSKEW = 240

# Every key of every section, for the hint of an unknown key ("did you mean", "is a key
# of [tinc]"). Each section's reader accepts exactly its own set.
TOP_KEYS = frozenset({
    "log_tag", "backend", "state_dir", "syslog_socket", "topology", "quorum", "lock_timeout",
    "tinc", "hosts", "group", "bindir", "demotion_file", "syslog_facility", "check",
    "reconcile_interval"})
TINC_KEYS = frozenset({"netname", "nodes", "witnesses", "confbase"})
HOST_KEYS = frozenset({"vpn_address", "advskew", "mac"})
GROUP_KEYS = frozenset({"name", "vhid", "carp_interface", "external_interface", "addresses",
                        "probe", "carp"})
CARP_KEYS = frozenset({"address", "advbase", "advskew", "password", "password_file", "peers",
                       "peers6"})
CHECK_COMMON_KEYS = frozenset({"name", "type", "interval", "timeout", "fall", "rise", "weight",
                               "groups"})
CHECK_TYPE_KEYS = {"command": frozenset({"command"}), "tcp": frozenset({"address", "port"}),
                   "http": frozenset({"url", "expect_status"})}
CHECK_KEYS = CHECK_COMMON_KEYS.union(*CHECK_TYPE_KEYS.values())
SECTIONS: tuple[tuple[str, frozenset[str]], ...] = (
    ("a top-level key", TOP_KEYS), ("a key of [tinc]", TINC_KEYS),
    ("a key of [hosts.NAME]", HOST_KEYS), ("a key of [[group]]", GROUP_KEYS),
    ("a key of [group.carp]", CARP_KEYS), ("a key of [[check]]", CHECK_KEYS))


def unknown_key_hint(name: str, allowed: frozenset[str]) -> str:
    """What to say about ``name``, unknown among ``allowed``: the section it belongs to,
    or the closest key here or elsewhere ("" when nothing is close)."""
    homes = [what for what, keys in SECTIONS if name in keys and keys != allowed]
    if homes:
        return f"{name} is " + " and ".join(homes)
    import difflib  # only for a config with a mistake: the hooks' start does not pay for it

    close = difflib.get_close_matches(name, sorted(allowed), n=1, cutoff=0.7)
    if close:
        return f"did you mean {close[0]!r}?"
    for what, keys in SECTIONS:
        if keys == allowed:
            continue
        close = difflib.get_close_matches(name, sorted(keys), n=1, cutoff=0.8)
        if close:
            return f"did you mean {close[0]!r} ({what})?"
    return ""


# The CARP password. ifconfig copies it with strlcpy(carpr_key, pass, CARP_KEY_LEN)
# (sbin/ifconfig/carp.c setcarp_callback; CARP_KEY_LEN 20 in sys/netinet/ip_carp.h), so
# only the first 19 characters reach the kernel: a longer one is cut without a word.
CARP_KEY_LEN = 20
PASSWORD_MAX = CARP_KEY_LEN - 1
# rc.conf aliases go through libexec/rc/network.subr, which eval's them
# (ifalias_af_common) and expands a hex digit followed by "-" as an address range
# (ifalias_af_common_handler): no shell metacharacter, no "-", no glob character.
PASSWORD_CHARS = "A-Z a-z 0-9 _ . , : + = @ % /"  # noqa: S105 (a description)
PASSWORD_RE = re.compile(r"[A-Za-z0-9_.,:+=@%/]+")
# Words network.subr splits an alias list on (ifalias_af_common).
RC_FAMILY_WORDS = frozenset({"inet", "inet6", "link", "ether"})
# The placeholder of carphooks.toml.sample: valid, but ``carphooks check`` refuses it.
SAMPLE_PASSWORD = "change.me"  # noqa: S105 (the public placeholder)


def default_syslog_socket() -> str:
    """``/var/run/log`` on FreeBSD, ``/dev/log`` elsewhere."""
    return "/var/run/log" if sys.platform.startswith("freebsd") else "/dev/log"


@dataclass(frozen=True)
class CarpParams:
    """What tinc-up (or rc.conf) configures for a vhid on the CARP interface."""

    address: IPInterface | None = None
    advbase: int = 1
    advskew: int | None = None
    password: str | None = field(default=None, repr=False)
    password_file: Path | None = None
    peers: tuple[ipaddress.IPv4Address, ...] = ()
    peers6: tuple[ipaddress.IPv6Address, ...] = ()

    def secret(self) -> str | None:
        """The CARP password, read from ``password_file`` when one is set."""
        if self.password_file is not None:
            try:
                text = self.password_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"{self.password_file}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise ConfigError(f"{self.password_file}: not valid UTF-8") from None
            value = text.strip()
            problem = password_problem(value)
            if problem is not None:
                raise ConfigError(f"{self.password_file}: the password {problem}")
            return value
        return self.password


@dataclass(frozen=True)
class Group:
    """One CARP vhid and the floating addresses that follow its master."""

    name: str
    vhid: int
    carp_interface: str
    external_interface: str
    addresses: tuple[IPInterface, ...]
    carp: CarpParams
    probe: bool | None = None  # None: not set, on where the backend can probe (resolve_probe)

    @property
    def subsystem(self) -> str:
        """The devd subsystem string of this group, ``VHID@IF``."""
        return f"{self.vhid}@{self.carp_interface}"


@dataclass(frozen=True)
class Host:
    """Per-host values, keyed by tinc node name."""

    name: str
    vpn_address: IPInterface | None
    advskew: int
    mac: str


# -- health checks ([[check]]) -------------------------------------------------------------

CHECK_TYPES = ("command", "tcp", "http")
CHECK_NAME_RE = re.compile(r"[a-z0-9_-]{1,32}")
DEFAULT_RECONCILE_INTERVAL = 10.0
MIN_INTERVAL = 0.5  # seconds (checks and the watch loop's reconcile)
MAX_INTERVAL = 86400.0
MAX_CHECK_INTERVAL = 3600.0
MAX_ARG = 4096  # bytes of one argv element of a command check


@dataclass(frozen=True)
class Check:
    """One health check: what it probes, how often, and the CARP demotion it adds while
    it fails (after ``fall`` failures in a row, until ``rise`` successes in a row)."""

    name: str
    type: str  # one of CHECK_TYPES
    interval: float
    timeout: float  # < interval; a check still running then is killed and fails
    fall: int
    rise: int
    weight: int  # added to net.inet.carp.demotion while failing
    groups: tuple[str, ...]  # names of the groups it guards (every group when none given)
    command: tuple[str, ...] = ()  # type command: argv, absolute program path
    address: IPAddress | None = None  # type tcp
    port: int | None = None  # type tcp
    url: str | None = None  # type http: http://IP[:PORT]/PATH
    expect_status: int = 200  # type http

    @property
    def reason(self) -> str:
        """Its reason in carphooks' demotion record."""
        return f"check:{self.name}"

    def stale_after(self, lock_timeout: float) -> float:
        """Seconds after which the watch loop's record of this check says nothing any
        more (the loop that wrote it is gone): the loop records after every probe, so a
        few of its intervals, and never less than a minute (a reconcile pass may hold
        the loop while it waits up to ``lock_timeout`` for the lock)."""
        return max(60.0, 5 * (self.interval + self.timeout), lock_timeout + 2 * self.interval)

    def target(self) -> str:
        """What it probes, in words (no secret: argv is shown as configured)."""
        if self.type == "command":
            return " ".join(self.command)
        if self.type == "tcp":
            host = f"[{self.address}]" if self.address and self.address.version == 6 \
                else str(self.address)
            return f"tcp {host}:{self.port}"
        return f"GET {self.url} (expect {self.expect_status})"


@dataclass(frozen=True)
class Config:
    """The whole, validated configuration."""

    path: Path
    log_tag: str
    backend: str
    state_dir: Path
    syslog_socket: str
    topology: str
    quorum: str
    lock_timeout: float
    netname: str
    nodes: tuple[str, ...]
    witnesses: tuple[str, ...]
    hosts: Mapping[str, Host]
    groups: tuple[Group, ...]
    bindir: Path | None = None  # console scripts' directory for templates (render/install)
    demotion_file: Path | None = None  # Linux: demotion for keepalived's track_file
    syslog_facility: str = DEFAULT_FACILITY  # a name of carphooks.log.FACILITIES
    tinc_confbase: Path | None = None  # tinc's directory; default /usr/local/etc/tinc/<netname>
    checks: tuple[Check, ...] = ()  # [[check]] health checks (carphooks watch runs them)
    reconcile_interval: float = DEFAULT_RECONCILE_INTERVAL  # seconds between watch's reconciles

    def group_for(self, vhid: int, ifname: str) -> Group | None:
        """The group run by ``vhid`` on ``ifname``, if any."""
        for group in self.groups:
            if group.vhid == vhid and group.carp_interface == ifname:
                return group
        return None

    def group_named(self, name: str) -> Group | None:
        """Look a group up by name, by ``VHID@IF`` or by bare vhid."""
        for group in self.groups:
            if name in (group.name, group.subsystem, str(group.vhid)):
                return group
        return None

    def groups_on(self, carp_interface: str) -> tuple[Group, ...]:
        """Groups whose CARP runs on ``carp_interface``."""
        return tuple(g for g in self.groups if g.carp_interface == carp_interface)

    def host(self, name: str | None) -> Host | None:
        """Per-host values for ``name`` (None when the host is not listed)."""
        if name is None:
            return None
        return self.hosts.get(name)

    def advskew_for(self, group: Group, host: str | None) -> int:
        """advskew for ``group`` on ``host``: host value, then group value, then 0."""
        entry = self.host(host)
        if entry is not None:
            return entry.advskew
        return group.carp.advskew if group.carp.advskew is not None else 0

    def peers_for(self, group: Group, host: str | None,
                  ) -> tuple[list[ipaddress.IPv4Address], list[ipaddress.IPv6Address]]:
        """The group's unicast peers as ``host`` sends to them (its own address and the
        vhid's address left out); FreeBSD keeps the first of each family."""
        entry = self.host(host)
        own = entry.vpn_address.ip if entry is not None and entry.vpn_address is not None \
            else None
        carp_ip = group.carp.address.ip if group.carp.address is not None else None
        v4 = [p for p in group.carp.peers if p not in (own, carp_ip)]
        v6 = [p for p in group.carp.peers6 if p not in (own, carp_ip)]
        return v4, v6

    @property
    def tinc_dir(self) -> Path:
        """tinc's configuration directory (tinc.conf, hosts/, scripts)."""
        return self.tinc_confbase or Path(f"/usr/local/etc/tinc/{self.netname}")

    @property
    def voters(self) -> tuple[str, ...]:
        """Every node that counts for quorum (members and witnesses)."""
        return self.nodes + tuple(w for w in self.witnesses if w not in self.nodes)


def password_problem(value: str) -> str | None:
    """Why ``value`` cannot be a CARP password, or None; the text never quotes it."""
    hidden = " (value not shown)"
    if not value or any(c.isspace() for c in value):
        return "must be one word without spaces" + hidden
    if len(value) > PASSWORD_MAX:
        return (f"is {len(value)} characters long, but ifconfig keeps only the first "
                f"{PASSWORD_MAX} (CARP_KEY_LEN {CARP_KEY_LEN} with the final NUL): use at "
                f"most {PASSWORD_MAX}" + hidden)
    if not PASSWORD_RE.fullmatch(value):
        return (f"holds a character other than {PASSWORD_CHARS}: rc.conf's network.subr "
                "runs the ifconfig_IF_aliasN value through eval and reads a hex digit "
                "followed by '-' as an address range" + hidden)
    if value in RC_FAMILY_WORDS:
        return ("is an address-family word (inet, inet6, link, ether), which rc.conf's "
                "network.subr splits an alias list on" + hidden)
    return None


def host_candidates(explicit: str | None, environ: Mapping[str, str],
                    tinc_name: Callable[[], str | None], hostname: str,
                    ) -> Iterator[tuple[str, str]]:
    """Where this host's tinc node name comes from, in the one order every command uses:
    ``--host``, ``$CARPHOOKS_HOST``, tinc's NAME (``tinc_name()``, asked only when
    reached), the short hostname. Yields (source, name); each caller says which it takes."""
    for source, value in (("--host", explicit), (HOST_ENV, environ.get(HOST_ENV))):
        if value:
            yield source, value
    name = tinc_name()
    if name:
        yield "tinc NAME", name
    short = hostname.split(".")[0]
    if short:
        yield "hostname", short


def locate(explicit: str | os.PathLike[str] | None) -> Path:
    """The config path: ``--config``, then ``$CARPHOOKS_CONFIG``, then the default."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return DEFAULT_CONFIG


def check_private(path: Path, *, secret: bool, label: str) -> None:
    """Refuse a file writable by group/others (or, for secrets, readable by others)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(f"{label}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{label}: not a regular file")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"{label}: writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run: chmod go-w {path}"
        )
    if secret and st.st_mode & stat.S_IROTH:
        raise ConfigError(
            f"{label}: readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run: chmod o-r {path}"
        )
    if st.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"{label}: owned by uid {st.st_uid}, not root")


def load(path: Path, *, check_permissions: bool = True) -> Config:
    """Read, permission-check and validate the config at ``path``."""
    label = str(path)
    if check_permissions:
        check_private(path, secret=False, label=label)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{label}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{label}: not valid UTF-8") from None
    except RecursionError:
        raise ConfigError(f"{label}: not valid TOML: nested too deeply") from None
    config = parse(data, path=path, check_permissions=check_permissions)
    if check_permissions and any(g.carp.password is not None for g in config.groups):
        # an inline password makes the whole file a secret
        check_private(path, secret=True, label=f"{label} (holds carp.password)")
    return config


class _Reader:
    """Typed access to a TOML table, raising errors that name the key."""

    def __init__(self, label: str, table: Mapping[str, Any], prefix: str) -> None:
        self.label = label
        self.table = table
        self.prefix = prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}" if self.prefix else name

    def fail(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.label}: {self.key(name)}: {problem}")

    def unknown(self, allowed: frozenset[str]) -> None:
        for name in self.table:
            if name not in allowed:
                hint = unknown_key_hint(str(name), allowed)
                raise self.fail(name, "unknown key" + (f"; {hint}" if hint else ""))

    def str_(self, name: str, default: str | None = None, pattern: re.Pattern[str] | None = None,
             choices: tuple[str, ...] = ()) -> str:
        value = self.table.get(name, default)
        if value is None:
            raise self.fail(name, "missing")
        if not isinstance(value, str):
            raise self.fail(name, f"expected a string, got {_tname(value)}")
        if choices and value not in choices:
            raise self.fail(name, f"{value!r} is not one of {', '.join(choices)}")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(name, f"{value!r} is not a valid value")
        return value

    def int_(self, name: str, default: int | None, lo: int, hi: int) -> int:
        value = self.table.get(name, default)
        if value is None:
            raise self.fail(name, "missing")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"expected an integer, got {_tname(value)}")
        if not lo <= value <= hi:
            raise self.fail(name, f"{value} is out of range {lo}-{hi}")
        return value

    def opt_int(self, name: str, lo: int, hi: int) -> int | None:
        if name not in self.table:
            return None
        return self.int_(name, None, lo, hi)

    def float_(self, name: str, default: float, lo: float, hi: float) -> float:
        value = self.table.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(name, f"expected a number, got {_tname(value)}")
        if not lo <= value <= hi:
            raise self.fail(name, f"{value} is out of range {lo}-{hi}")
        return float(value)

    def bool_(self, name: str, default: bool) -> bool:
        value = self.table.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, f"expected true or false, got {_tname(value)}")
        return value

    def iface(self, name: str) -> IPInterface | None:
        """An optional ``ADDR/PREFIX`` value."""
        if name not in self.table:
            return None
        try:
            return parse_interface_address(self.table[name])
        except ValueError as exc:
            raise self.fail(name, str(exc)) from None

    def list_(self, name: str) -> list[Any]:
        value = self.table.get(name, [])
        if not isinstance(value, list):
            raise self.fail(name, f"expected a list, got {_tname(value)}")
        return value

    def table_(self, name: str) -> Mapping[str, Any]:
        value = self.table.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(name, f"expected a table, got {_tname(value)}")
        return value


def _tname(value: object) -> str:
    return {
        bool: "a boolean", int: "an integer", float: "a number", str: "a string",
        list: "a list", dict: "a table",
    }.get(type(value), type(value).__name__)


def parse_interface_address(text: object) -> IPInterface:
    """Parse ``ADDR/PREFIX`` strictly; raise ValueError with the reason."""
    if not isinstance(text, str):
        raise ValueError(f"expected a string 'ADDR/PREFIX', got {_tname(text)}")
    family = "IPv6" if ":" in text else "IPv4"
    if "/" not in text:
        raise ValueError(f"{text!r} has no /PREFIX")
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an {family} interface address") from None
    if "%" in text:
        raise ValueError(f"{text!r}: a scoped address cannot float")
    return iface


_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _floating_address(reader: _Reader, name: str, text: object) -> IPInterface:
    try:
        iface = parse_interface_address(text)
    except ValueError as exc:
        raise reader.fail(name, str(exc)) from None
    ip = iface.ip
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_loopback:
        raise reader.fail(name, f"{text!r} cannot be a floating address (link-local, "
                                "multicast, unspecified or loopback)")
    if iface.network.prefixlen == 0:
        raise reader.fail(name, f"{text!r}: a /0 prefix would cover every address")
    if isinstance(ip, ipaddress.IPv4Address) and (ip.is_reserved or ip in _THIS_NETWORK):
        raise reader.fail(name, f"{text!r} cannot be a floating address (0.0.0.0/8, 240.0.0.0/4 "
                                "or the limited broadcast 255.255.255.255)")
    if isinstance(ip, ipaddress.IPv6Address) and (ip.ipv4_mapped is not None
                                                  or ip in _V4_COMPATIBLE):
        raise reader.fail(name, f"{text!r} is an IPv4-mapped or IPv4-compatible IPv6 address: "
                                "write the IPv4 address itself")
    if isinstance(iface, ipaddress.IPv4Interface) and iface.network.prefixlen < 31 and ip in (
        iface.network.network_address, iface.network.broadcast_address
    ):
        raise reader.fail(name, f"{text!r} is the network or broadcast address of its prefix")
    return iface


def derive_mac(node: str, netname: str) -> str:
    """A stable, locally administered unicast MAC derived from the node name."""
    import hashlib

    digest = hashlib.sha256(f"carphooks:{netname}:{node}".encode()).digest()
    octets = [(digest[0] & 0xFC) | 0x02, *digest[1:6]]  # locally administered, unicast
    return ":".join(f"{o:02x}" for o in octets)


def parse(data: Mapping[str, Any], *, path: Path, check_permissions: bool = True) -> Config:
    """Validate a decoded TOML document."""
    label = str(path)
    top = _Reader(label, data, "")
    top.unknown(TOP_KEYS)
    log_tag = top.str_("log_tag", "carphooks")
    if not TAG_RE.fullmatch(log_tag):
        raise top.fail("log_tag", f"{log_tag!r}: use 1 to 32 letters, digits, _ or - "
                                  "(syslogd does not recognise a tag with other characters)")
    backend = top.str_("backend", "auto", choices=BACKENDS)
    state_dir = top.str_("state_dir", "/var/db/carphooks")
    if not state_dir.startswith("/"):
        raise top.fail("state_dir", f"{state_dir!r} is not an absolute path")
    syslog_socket = top.str_("syslog_socket", default_syslog_socket())
    syslog_facility = top.str_("syslog_facility", DEFAULT_FACILITY, choices=tuple(FACILITIES))
    topology = top.str_("topology", "tinc", choices=TOPOLOGIES)
    quorum = top.str_("quorum", "majority", choices=QUORUM_MODES)
    lock_timeout = top.float_("lock_timeout", 5.0, 0.0, 600.0)
    demotion_file = None
    if "demotion_file" in data:
        demotion_file = Path(top.str_("demotion_file"))
        if not demotion_file.is_absolute():
            raise top.fail("demotion_file", f"{str(demotion_file)!r} is not an absolute path")
    bindir = None
    if "bindir" in data:
        bindir = Path(top.str_("bindir"))
        if not bindir.is_absolute():
            raise top.fail("bindir", f"{str(bindir)!r} is not an absolute path")

    tinc = _Reader(label, top.table_("tinc"), "tinc.")
    tinc.unknown(TINC_KEYS)
    netname = tinc.str_("netname", "carp", NODE_RE)
    confbase = None
    if "confbase" in tinc.table:
        confbase = Path(tinc.str_("confbase"))
        if not confbase.is_absolute():
            raise tinc.fail("confbase", f"{str(confbase)!r} is not an absolute path")
    nodes: list[str] = []
    for i, node in enumerate(tinc.list_("nodes")):
        if not isinstance(node, str) or not NODE_RE.fullmatch(node):
            raise tinc.fail(f"nodes[{i}]", f"{node!r} is not a tinc node name")
        if node in nodes:
            raise tinc.fail(f"nodes[{i}]", f"{node!r} is listed twice")
        nodes.append(node)
    witnesses: list[str] = []
    for i, node in enumerate(tinc.list_("witnesses")):
        if not isinstance(node, str) or not NODE_RE.fullmatch(node):
            raise tinc.fail(f"witnesses[{i}]", f"{node!r} is not a tinc node name")
        if node in nodes or node in witnesses:
            raise tinc.fail(f"witnesses[{i}]", f"{node!r} is listed twice")
        witnesses.append(node)
    if quorum == "majority" and topology == "unicast":
        raise top.fail(
            "quorum",
            "topology = \"unicast\" has no tinc host-up/host-down to count votes: "
            "set quorum = \"none\" (and accept the split-brain risk) or use topology = \"tinc\"",
        )
    if quorum == "majority" and len(nodes) + len(witnesses) == 2:
        raise top.fail(
            "quorum",
            "a 2-node cluster has no majority after one failure: add a witness "
            "(tinc.witnesses) or set quorum = \"none\" and accept the split-brain risk",
        )

    hosts: dict[str, Host] = {}
    hosts_table = top.table_("hosts")
    step = MAX_ADVSKEW // max(1, len(nodes) - 1) if len(nodes) > 1 else 0
    step = min(step, 100)
    for name, raw in hosts_table.items():
        key = f"hosts.{name}"
        if not NODE_RE.fullmatch(name):
            raise ConfigError(f"{label}: {key}: {name!r} is not a tinc node name")
        if not isinstance(raw, dict):
            hint = (f"; {name} is a key of [hosts.NAME]: put it under [hosts.NODE], NODE "
                    "being the host's tinc node name") if name in HOST_KEYS else ""
            raise ConfigError(f"{label}: {key}: expected a table{hint}")
        hr = _Reader(label, raw, key + ".")
        hr.unknown(HOST_KEYS)
        vpn = hr.iface("vpn_address")
        derived = nodes.index(name) * step if name in nodes else 0
        advskew = hr.int_("advskew", derived, 0, MAX_ADVSKEW)
        mac = hr.str_("mac", derive_mac(name, netname)).lower()
        if not MAC_RE.fullmatch(mac):
            raise hr.fail("mac", f"{mac!r} is not a MAC address")
        if int(mac[:2], 16) & 1:
            raise hr.fail("mac", f"{mac!r} is a multicast MAC")
        hosts[name] = Host(name=name, vpn_address=vpn, advskew=advskew, mac=mac)
    for name in nodes:
        if name not in hosts:
            hosts[name] = Host(name=name, vpn_address=None, advskew=nodes.index(name) * step,
                               mac=derive_mac(name, netname))
    _refuse_ties(label, hosts, nodes or [h for h in hosts if h not in witnesses],
                 hosts_table)

    raw_groups = top.table.get("group", [])
    if not isinstance(raw_groups, list):
        raise top.fail("group", "expected [[group]] tables")
    groups: list[Group] = []
    seen_addr: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {}
    seen_names: set[str] = set()
    for gi, raw in enumerate(raw_groups):
        gkey = f"group[{gi}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{label}: {gkey}: expected a table")
        gr = _Reader(label, raw, gkey + ".")
        gr.unknown(GROUP_KEYS)
        vhid = gr.int_("vhid", None, 1, 255)
        carp_if = gr.str_("carp_interface", None, IFNAME_RE)
        ext_if = gr.str_("external_interface", None, IFNAME_RE)
        name = gr.str_("name", f"vhid{vhid}", GROUP_NAME_RE)
        if name in seen_names:
            raise gr.fail("name", f"{name!r} is used by another group")
        seen_names.add(name)
        for other in groups:
            if other.vhid == vhid and other.carp_interface == carp_if:
                raise gr.fail("vhid", f"vhid {vhid} on {carp_if} is used by group {other.name!r}")
        addresses: list[IPInterface] = []
        for ai, text in enumerate(gr.list_("addresses")):
            iface = _floating_address(gr, f"addresses[{ai}]", text)
            if iface.ip in seen_addr:
                raise gr.fail(f"addresses[{ai}]",
                              f"{iface.ip} is already listed in {seen_addr[iface.ip]}")
            seen_addr[iface.ip] = f"{gkey}"
            addresses.append(iface)
        probe = gr.bool_("probe", False) if "probe" in raw else None
        carp = _carp_params(label, gr.table_("carp"), gkey + ".carp.", check_permissions)
        groups.append(Group(name=name, vhid=vhid, carp_interface=carp_if,
                            external_interface=ext_if, addresses=tuple(addresses),
                            carp=carp, probe=probe))

    _refuse_own_addresses(label, hosts, groups)
    if quorum == "majority" and not nodes and not witnesses and groups:
        # majority of nobody: no host would ever count as having quorum, so every MASTER
        # event would release (the minimal one-group config lands here)
        key, what = (("quorum", "quorum = \"majority\"") if "quorum" in data
                     else ("tinc.nodes", "quorum = \"majority\" (the default)"))
        raise top.fail(
            key,
            f"{what} counts the votes of tinc.nodes, which is empty, so no host would "
            "ever hold the addresses: list the hosts' tinc node names in tinc.nodes "
            "(three, or two plus a tinc.witnesses node), or set quorum = \"none\" to let "
            "CARP alone decide",
        )
    checks = _checks(top, groups)
    reconcile_interval = top.float_("reconcile_interval", DEFAULT_RECONCILE_INTERVAL,
                                    MIN_INTERVAL, MAX_INTERVAL)
    return Config(
        path=path, log_tag=log_tag, backend=backend, state_dir=Path(state_dir),
        syslog_socket=syslog_socket, topology=topology, quorum=quorum,
        lock_timeout=lock_timeout, netname=netname, nodes=tuple(nodes),
        witnesses=tuple(witnesses), hosts=hosts, groups=tuple(groups), bindir=bindir,
        demotion_file=demotion_file, syslog_facility=syslog_facility,
        tinc_confbase=confbase, checks=checks, reconcile_interval=reconcile_interval,
    )


def resolve_probe(config: Config, problem: str | None) -> Config:
    """Settle each group's ``probe``: unset means on exactly where the backend can probe
    (``problem`` is None); ``probe = true`` where it cannot is a ConfigError naming why."""
    groups = []
    for gi, group in enumerate(config.groups):
        if group.probe and problem is not None:
            raise ConfigError(f"{config.path}: group[{gi}].probe: true, but {problem}; "
                              "set probe = false to take addresses without probing")
        if group.probe is None:
            group = replace(group, probe=problem is None)
        groups.append(group)
    return replace(config, groups=tuple(groups))


def _refuse_ties(label: str, hosts: Mapping[str, Host], members: list[str],
                 raw: Mapping[str, Any]) -> None:
    """CARP hosts at the same advskew (and advbase) tie: a MASTER that hears an equal
    advertisement steps down and a BACKUP preempts only a slower master
    (sys/netinet/ip_carp.c carp_input_c), so neither is preferred and failback is a
    coin toss. The members are tinc.nodes, else every [hosts.NAME] but the witnesses."""
    skews: dict[int, str] = {}
    for name in members:
        skew = hosts[name].advskew
        if skew in skews:
            given = isinstance(raw.get(name), dict) and "advskew" in raw[name]
            taken = {hosts[m].advskew for m in members}
            free = next((v for v in range(0, MAX_ADVSKEW + 1, 10) if v not in taken),
                        MAX_ADVSKEW)
            why = "" if given else " (not set: the default)"
            raise ConfigError(
                f"{label}: hosts.{name}.advskew: {skew}{why} ties with {skews[skew]}, so "
                f"CARP prefers neither host: set advskew = {free} under [hosts.{name}] "
                "(each host its own, lower wins)")
        skews[skew] = name


def _refuse_own_addresses(label: str, hosts: Mapping[str, Host],
                          groups: list[Group]) -> None:
    """A floating address must not be an address a host keeps: a release would remove it."""
    own: dict[IPAddress, str] = {}
    for name, host in hosts.items():
        if host.vpn_address is not None:
            own.setdefault(host.vpn_address.ip, f"hosts.{name}.vpn_address")
    for gi, group in enumerate(groups):
        carp = group.carp
        if carp.address is not None:
            own.setdefault(carp.address.ip, f"group[{gi}].carp.address")
        for pi, peer in enumerate(carp.peers):
            own.setdefault(peer, f"group[{gi}].carp.peers[{pi}]")
        for pi, peer6 in enumerate(carp.peers6):
            own.setdefault(peer6, f"group[{gi}].carp.peers6[{pi}]")
    for gi, group in enumerate(groups):
        for ai, address in enumerate(group.addresses):
            if address.ip in own:
                raise ConfigError(
                    f"{label}: group[{gi}].addresses[{ai}]: {address.ip} is also "
                    f"{own[address.ip]}: a host's own address cannot float (releasing it "
                    "would take it from the host)")


def _carp_params(label: str, table: Mapping[str, Any], prefix: str,
                 check_permissions: bool) -> CarpParams:
    cr = _Reader(label, table, prefix)
    cr.unknown(CARP_KEYS)
    address = cr.iface("address")
    advbase = cr.int_("advbase", 1, 1, 255)
    advskew = cr.opt_int("advskew", 0, MAX_ADVSKEW)
    password = None
    password_file = None
    if "password" in table and "password_file" in table:
        raise cr.fail("password", "set password or password_file, not both")
    if "password" in table:
        password = cr.str_("password")
        problem = password_problem(password)
        if problem is not None:
            raise cr.fail("password", problem)
    if "password_file" in table:
        password_file = Path(cr.str_("password_file"))
        if not password_file.is_absolute():
            # not echoed: a password pasted here by mistake must not reach a log
            raise cr.fail("password_file", "is not an absolute path (value not shown)")
        if check_permissions:
            check_private(password_file, secret=True, label=f"{label}: {cr.key('password_file')}")
            CarpParams(password_file=password_file).secret()  # valid content, or ConfigError
    peers: list[ipaddress.IPv4Address] = []
    for i, text in enumerate(cr.list_("peers")):
        try:
            peers.append(ipaddress.IPv4Address(text))
        except (ValueError, TypeError):
            raise cr.fail(f"peers[{i}]", f"{text!r} is not an IPv4 address") from None
    peers6: list[ipaddress.IPv6Address] = []
    for i, text in enumerate(cr.list_("peers6")):
        try:
            peers6.append(ipaddress.IPv6Address(text))
        except (ValueError, TypeError):
            raise cr.fail(f"peers6[{i}]", f"{text!r} is not an IPv6 address") from None
    return CarpParams(address=address, advbase=advbase, advskew=advskew, password=password,
                      password_file=password_file, peers=tuple(peers), peers6=tuple(peers6))


def _checks(top: _Reader, groups: list[Group]) -> tuple[Check, ...]:
    """The ``[[check]]`` tables (their ``groups`` must name groups of the config)."""
    raw = top.table.get("check", [])
    if not isinstance(raw, list):
        raise top.fail("check", "expected [[check]] tables")
    names = [g.name for g in groups]
    checks: list[Check] = []
    for ci, table in enumerate(raw):
        key = f"check[{ci}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{top.label}: {key}: expected a table")
        checks.append(_check(_Reader(top.label, table, key + "."), names, checks))
    return tuple(checks)


def _check(cr: _Reader, group_names: list[str], before: list[Check]) -> Check:
    kind = cr.str_("type", None, choices=CHECK_TYPES)
    for key in cr.table:
        if key in CHECK_COMMON_KEYS or key in CHECK_TYPE_KEYS[kind]:
            continue
        owner = next((t for t, keys in CHECK_TYPE_KEYS.items() if key in keys), None)
        if owner:
            raise cr.fail(key, f"belongs to a type = {owner!r} check, not {kind!r}")
        cr.unknown(CHECK_COMMON_KEYS | CHECK_TYPE_KEYS[kind])
    name = cr.str_("name")
    if not CHECK_NAME_RE.fullmatch(name):
        raise cr.fail("name", f"{name!r}: use 1 to 32 of a-z, 0-9, _ and -")
    if any(c.name == name for c in before):
        raise cr.fail("name", f"{name!r} is used by another check")
    interval = cr.float_("interval", 2.0, MIN_INTERVAL, MAX_CHECK_INTERVAL)
    timeout = cr.float_("timeout", min(1.0, interval / 2), 0.1, MAX_CHECK_INTERVAL)
    if timeout >= interval:
        raise cr.fail("timeout", f"{timeout:g} s is not shorter than the interval "
                                 f"{interval:g} s")
    fall = cr.int_("fall", 3, 1, 100)
    rise = cr.int_("rise", 2, 1, 100)
    weight = cr.int_("weight", MAX_ADVSKEW, 1, MAX_ADVSKEW)
    guarded: list[str] = []
    for gi, group in enumerate(cr.list_("groups")):
        if not isinstance(group, str) or group not in group_names:
            raise cr.fail(f"groups[{gi}]", f"{group!r} is not the name of a [[group]] "
                                           f"(groups: {', '.join(group_names) or 'none'})")
        if group in guarded:
            raise cr.fail(f"groups[{gi}]", f"{group!r} is listed twice")
        guarded.append(group)
    if "groups" in cr.table and not guarded:
        raise cr.fail("groups", "empty: leave it out to guard every group")
    base = Check(name=name, type=kind, interval=interval, timeout=timeout, fall=fall,
                 rise=rise, weight=weight, groups=tuple(guarded or group_names))
    if kind == "command":
        return replace(base, command=_check_command(cr))
    if kind == "tcp":
        text = cr.str_("address", "127.0.0.1")
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise cr.fail("address", f"{text!r} is not an IP address (no name lookups: "
                                     "one could hang past the timeout)") from None
        return replace(base, address=address, port=cr.int_("port", None, 1, 65535))
    url = cr.str_("url")
    problem = http_url_problem(url)
    if problem is not None:
        raise cr.fail("url", f"{url!r} {problem}")
    return replace(base, url=url, expect_status=cr.int_("expect_status", 200, 100, 599))


def _check_command(cr: _Reader) -> tuple[str, ...]:
    argv = cr.list_("command")
    if not argv:
        raise cr.fail("command", "missing: an argv list such as "
                                 "[\"/usr/local/bin/curl\", \"-fsS\", \"http://127.0.0.1/\"]")
    for i, arg in enumerate(argv):
        if not isinstance(arg, str):
            raise cr.fail(f"command[{i}]", f"expected a string, got {_tname(arg)}")
        if "\0" in arg or len(arg.encode()) > MAX_ARG:
            raise cr.fail(f"command[{i}]", f"holds a NUL character or is longer than "
                                           f"{MAX_ARG} bytes")
    if not argv[0].startswith("/"):
        raise cr.fail("command[0]", f"{argv[0]!r} is not an absolute path (the check runs "
                                    "as root with a minimal PATH)")
    return tuple(argv)


def http_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an http check's URL, or None: ``http://IP[:PORT]/PATH``."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme != "http":
        return "must start with http:// (a local check needs no TLS)"
    if parts.username is not None or parts.password is not None:
        return "must not hold a user or password"
    if parts.fragment:
        return "must not hold a #fragment"
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return (f"names the host {host!r}: use an IP address (no name lookups: one could "
                "hang past the timeout)")
    if port == 0:
        return "has port 0"
    if any(c.isspace() or ord(c) < 32 for c in url):
        return "holds white space or a control character"
    return None
