"""Fill the shipped templates in for one host of the ONE cluster config.

Templates are plain files in the top-level ``devd/``, ``hooks/`` and
``templates/`` folders of the source tree, shipped in the wheel as the resource
packages ``carphooks.data.devd``, ``carphooks.data.hooks`` and
``carphooks.data.templates``. A placeholder is ``@NAME@`` (upper-case letters,
digits, ``_``); every placeholder must have a value, so a typo fails loudly
instead of reaching a devd rule. Values that end up in a shell command line or a
devd action (paths, names) are checked against a conservative character set.
"""

from __future__ import annotations

import importlib.resources
import ipaddress
import os
import re
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from carphooks import config as configmod
from carphooks.config import Config, Group
from carphooks.errors import CarphooksError, UsageError

MARKER = "carphooks-managed"
PLACEHOLDER_RE = re.compile(r"@([A-Z][A-Z0-9_]*)@")
# Characters allowed in paths and names substituted into shell scripts and devd actions.
SAFE_RE = re.compile(r"[A-Za-z0-9_./+:,=-]+")
GARP_REXMIT_COUNT = 4
# Where the syslogd drop-in sends every carphooks line (newsyslog creates and rotates it).
SYSLOG_FILE = "/var/log/carphooks.log"
CONSOLE_SCRIPTS = ("carphooks", "carp-event", "tinc-up", "tinc-down", "tinc-host-up",
                   "tinc-host-down")
TOPOLOGIES = ("tinc", "unicast")


class RenderError(CarphooksError):
    """A template cannot be filled in (missing value, unsafe value, wrong topology)."""


@dataclass(frozen=True)
class Kind:
    """One renderable file."""

    name: str  # what ``carphooks render KIND`` takes
    package: str  # resource package holding the template
    resource: str  # template file name
    dest: str | None  # install path ({tincdir} filled in); None: render only
    mode: int
    topologies: tuple[str, ...] = TOPOLOGIES
    script: bool = False
    hidden_backup: bool = False  # the directory's reader takes every file (cron.d)


_DEVD = "carphooks.data.devd"
_HOOKS = "carphooks.data.hooks"
_TPL = "carphooks.data.templates"
TINC_DIR = "{tincdir}"

KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("devd", _DEVD, "carphooks.conf", "/usr/local/etc/devd/carphooks.conf", 0o644),
    Kind("tinc-up", _HOOKS, "tinc-up", f"{TINC_DIR}/tinc-up", 0o755, ("tinc",), script=True),
    Kind("tinc-down", _HOOKS, "tinc-down", f"{TINC_DIR}/tinc-down", 0o755, ("tinc",),
         script=True),
    Kind("host-up", _HOOKS, "host-up", f"{TINC_DIR}/host-up", 0o755, ("tinc",), script=True),
    Kind("host-down", _HOOKS, "host-down", f"{TINC_DIR}/host-down", 0o755, ("tinc",),
         script=True),
    Kind("tinc.conf", _TPL, "tinc.conf", f"{TINC_DIR}/tinc.conf", 0o644, ("tinc",)),
    Kind("rc.conf", _TPL, "rc.conf", "/etc/rc.conf.d/netif", 0o600, ("unicast",)),
    Kind("sysctl.conf", _TPL, "sysctl.conf", "/etc/sysctl.conf.local", 0o644),
    Kind("cron", _TPL, "cron", "/usr/local/etc/cron.d/carphooks", 0o644, hidden_backup=True),
    # The watch loop (health checks, periodic reconcile) under daemon(8); off until
    # carphooks_enable=YES.
    Kind("rc.d", _TPL, "rc.d", "/usr/local/etc/rc.d/carphooks", 0o755, script=True),
    # syslogd reads only *.conf of syslog.d; older newsyslog.conf includes every
    # name of newsyslog.conf.d (glob "*", which skips dot files): hide the backups.
    Kind("syslog.conf", _TPL, "syslog.conf", "/usr/local/etc/syslog.d/carphooks.conf", 0o644,
         hidden_backup=True),
    Kind("newsyslog.conf", _TPL, "newsyslog.conf",
         "/usr/local/etc/newsyslog.conf.d/carphooks.conf", 0o644, hidden_backup=True),
    # Adapters for userland CARP/VRRP daemons (hooks/ of the lab); render only.
    Kind("ucarp-up", _HOOKS, "ucarp-up", None, 0o755, script=True),
    Kind("ucarp-down", _HOOKS, "ucarp-down", None, 0o755, script=True),
    Kind("keepalived-notify", _HOOKS, "keepalived-notify", None, 0o755, script=True),
)}


@dataclass(frozen=True)
class Target:
    """Who and where a rendering is for."""

    config: Config
    host: str
    bindir: Path
    config_path: Path


@dataclass(frozen=True)
class Rendered:
    """One filled-in template."""

    kind: Kind
    host: str
    text: str
    dest: str | None  # absolute path on the host (before --root)
    mode: int


# -- templates ------------------------------------------------------------------------------

# Source folders of the resource packages. setuptools' editable finder cannot map a
# nested namespace package (carphooks.data.devd -> devd/) onto another directory, so
# an editable install reads the templates from the source tree instead.
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
_SOURCE_DIRS = {_DEVD: "devd", _HOOKS: "hooks", _TPL: "templates"}


def template_text(kind: Kind) -> str:
    """The raw template shipped in the package (or, editable, in the source tree)."""
    try:
        return importlib.resources.files(kind.package).joinpath(kind.resource).read_text(
            encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError) as exc:
        source = _SOURCE_ROOT / _SOURCE_DIRS[kind.package] / kind.resource
        if (_SOURCE_ROOT / "pyproject.toml").is_file() and source.is_file():
            return source.read_text(encoding="utf-8")
        raise RenderError(f"template {kind.resource} is missing from the carphooks package "
                          f"({kind.package}): {exc}; reinstall carphooks") from None


def substitute(text: str, values: Mapping[str, str], *, source: str) -> str:
    """Replace every ``@NAME@``; an unknown name is an error, not left in place."""
    missing = sorted({m.group(1) for m in PLACEHOLDER_RE.finditer(text)} - set(values))
    if missing:
        names = ", ".join(f"@{n}@" for n in missing)
        raise RenderError(f"template {source}: no value for {names}")
    return PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], text)


def placeholders(text: str) -> set[str]:
    """Names of the placeholders in ``text``."""
    return {m.group(1) for m in PLACEHOLDER_RE.finditer(text)}


def has_marker(text: str) -> bool:
    """Whether a file says carphooks wrote it (a comment line holding the marker)."""
    return any(line.lstrip().startswith("#") and MARKER in line for line in text.splitlines())


# -- host, bindir, config path ---------------------------------------------------------------

def known_hosts(config: Config) -> list[str]:
    """Every name a host may have: nodes, witnesses and [hosts.*] tables."""
    names = list(config.nodes) + [w for w in config.witnesses if w not in config.nodes]
    names += [h for h in config.hosts if h not in names]
    return names


def resolve_host(config: Config, explicit: str | None = None, *,
                 environ: Mapping[str, str] | None = None,
                 hostname: str | None = None) -> str:
    """This host's node name in :func:`config.host_candidates`' order (tinc's NAME from
    ``$NAME``); an explicit one must be a host of the config, others are skipped if not."""
    env = os.environ if environ is None else environ
    names = known_hosts(config)
    listing = ", ".join(names) or "none"
    if explicit and explicit not in names:
        raise UsageError(f"host {explicit!r} is not in tinc.nodes, tinc.witnesses or "
                         f"[hosts] of {config.path} (hosts: {listing})")
    short = (hostname if hostname is not None else socket.gethostname()).split(".")[0]
    for _source, name in configmod.host_candidates(explicit, env, lambda: env.get("NAME"),
                                                   short):
        if name in names:
            return name
    raise UsageError(f"cannot tell which host this is (hostname {short!r} is not one of "
                     f"{listing}): pass --host NAME")


def resolve_bindir(config: Config, explicit: str | os.PathLike[str] | None = None) -> Path:
    """Directory of the installed console scripts: ``--bindir``, config ``bindir``,
    then the directory of the running interpreter (where pip put the scripts)."""
    chosen = explicit or config.bindir or Path(sys.executable).parent
    path = Path(chosen)
    where = ("--bindir" if explicit
             else "bindir" if config.bindir else "the interpreter's directory")
    if not path.is_absolute():
        raise UsageError(f"{where} {str(path)!r} is not an absolute path "
                         "(devd, tinc and cron run with a minimal PATH)")
    _safe(str(path), where)
    return path


def _safe(value: str, what: str) -> str:
    if not SAFE_RE.fullmatch(value):
        raise RenderError(f"{what} {value!r} holds characters that are unsafe in a shell "
                          "command (allowed: letters, digits and _ . / + : , = -)")
    return value


def target(config: Config, *, host: str | None = None,
           bindir: str | os.PathLike[str] | None = None,
           config_path: str | os.PathLike[str] | None = None,
           environ: Mapping[str, str] | None = None, hostname: str | None = None) -> Target:
    """Resolve host, bindir and the config path written into hooks."""
    path = Path(config_path) if config_path is not None else config.path
    path = path if path.is_absolute() else Path(os.path.abspath(path))
    _safe(str(path), "config path")
    return Target(config=config,
                  host=resolve_host(config, host, environ=environ, hostname=hostname),
                  bindir=resolve_bindir(config, bindir), config_path=path)


# -- per-kind values ---------------------------------------------------------------------------

def tinc_interface(config: Config) -> str:
    """The one interface tinc serves (the CARP interface of the groups)."""
    names = list(dict.fromkeys(g.carp_interface for g in config.groups))
    if not names:
        return "tap0"
    if len(names) > 1:
        raise RenderError(f"topology \"tinc\": the groups use several CARP interfaces "
                          f"({', '.join(names)}), but a tinc network has one interface")
    return names[0]


def connect_to(config: Config, host: str) -> str:
    """``ConnectTo = NODE`` for every other voter."""
    others = [n for n in config.voters if n != host]
    if not others:
        return "# (no other nodes in tinc.nodes)"
    return "\n".join(f"ConnectTo = {n}" for n in others)


def unicast_peers(config: Config, group: Group, host: str,
                  ) -> tuple[list[ipaddress.IPv4Address], list[ipaddress.IPv6Address]]:
    """The group's unicast peers as seen from ``host`` (its own address left out)."""
    return config.peers_for(group, host)


def rc_name(ifname: str) -> str:
    """An interface name as rc.conf variables spell it: ``.-/+`` become ``_``
    (libexec/rc/network.subr, get_if_var: ``_punct=".-/+"``)."""
    return "".join("_" if c in ".-/+" else c for c in ifname)


def rc_aliases(tgt: Target) -> str:
    """``ifconfig_IF_aliasN="inet vhid ... alias A/P"`` lines for every group."""
    config, host = tgt.config, tgt.host
    lines: list[str] = []
    counters: dict[str, int] = {}
    for group in config.groups:
        carp = group.carp
        if carp.address is None:
            raise RenderError(f"group {group.name}: carp.address is required for "
                              "topology \"unicast\" (the vhid's address on "
                              f"{group.carp_interface})")
        secret = carp.secret()  # config.password_problem() made it safe for network.subr
        v4, v6 = unicast_peers(config, group, host)
        index = counters.get(group.carp_interface, 0)
        counters[group.carp_interface] = index + 1
        family = "inet6" if carp.address.version == 6 else "inet"
        words = [family, "vhid", str(group.vhid), "advbase", str(carp.advbase),
                 "advskew", str(config.advskew_for(group, host))]
        if secret:
            words += ["pass", secret]
        lines.append(f"# group {group.name}: vhid {group.vhid} on {group.carp_interface}, "
                     f"floating {', '.join(a.with_prefixlen for a in group.addresses) or '-'}"
                     f" on {group.external_interface}")
        for fam, peers, word in (("IPv4", v4, "peer"), ("IPv6", v6, "peer6")):
            if len(peers) > 1:
                lines.append(f"# WARNING: FreeBSD keeps ONE unicast {fam} peer per vhid: "
                             f"only {peers[0]} hears this host's\n# advertisements, not "
                             f"{', '.join(str(p) for p in peers[1:])}. With more than two "
                             "hosts use topology = \"tinc\"\n# (multicast over the VPN).")
            if peers:
                words += [word, str(peers[0])]
        if not v4 and not v6:
            lines.append("# no peers configured: advertisements go to the CARP multicast "
                         "group")
        words += ["alias", carp.address.with_prefixlen]
        lines.append(f'ifconfig_{rc_name(group.carp_interface)}'
                     f'_alias{index}="{" ".join(words)}"')
    if not lines:
        lines.append("# (no [[group]] in the config)")
    return "\n".join(lines)


def values(tgt: Target, kind: Kind) -> dict[str, str]:
    """Placeholder values for ``kind`` (computed only when the template uses them)."""
    config = tgt.config
    text = template_text(kind)
    used = placeholders(text)
    result: dict[str, str] = {
        "BINDIR": str(tgt.bindir),
        "CARPHOOKS_BINDIR": str(tgt.bindir),
        "CONFIG": str(tgt.config_path),
        "NAME": tgt.host,
        "NETNAME": config.netname,
        "TINC_DIR": _safe(str(config.tinc_dir), "tinc.confbase"),
        "TOPOLOGY": config.topology,
        "GARP_REXMIT_COUNT": str(GARP_REXMIT_COUNT),
        "LOG_TAG": config.log_tag,
        "SYSLOG_FILE": SYSLOG_FILE,
        "MARKER": MARKER,
    }
    if "INTERFACE" in used:
        result["INTERFACE"] = _safe(tinc_interface(config), "interface")
    if "CONNECT_TO" in used:
        result["CONNECT_TO"] = connect_to(config, tgt.host)
    if "RC_ALIASES" in used:
        result["RC_ALIASES"] = rc_aliases(tgt)
    return result


# -- rendering ----------------------------------------------------------------------------------

def kind_named(name: str) -> Kind:
    """Look a kind up by name (UsageError listing the kinds)."""
    try:
        return KINDS[name]
    except KeyError:
        raise UsageError(f"unknown template {name!r} (one of {', '.join(KINDS)})") from None


def destination(kind: Kind, config: Config) -> str | None:
    """Where ``carphooks install`` puts ``kind`` on the host."""
    return kind.dest.format(tincdir=config.tinc_dir) if kind.dest else None


def render(tgt: Target, kind: Kind | str) -> Rendered:
    """Fill ``kind`` in for the target host."""
    k = kind_named(kind) if isinstance(kind, str) else kind
    config = tgt.config
    if config.topology not in k.topologies:
        other = "unicast" if config.topology == "tinc" else "tinc"
        raise UsageError(f"{k.name} is for topology = \"{other}\"; {config.path} has "
                         f"topology = \"{config.topology}\"")
    text = substitute(template_text(k), values(tgt, k), source=k.resource)
    return Rendered(kind=k, host=tgt.host, text=text, dest=destination(k, config), mode=k.mode)


def install_set(config: Config) -> list[Kind]:
    """The kinds ``carphooks install`` writes for the config's topology."""
    return [k for k in KINDS.values() if k.dest is not None and config.topology in k.topologies]


def render_install_set(tgt: Target) -> list[Rendered]:
    """Every file ``carphooks install`` writes for this host."""
    return [render(tgt, k) for k in install_set(tgt.config)]
