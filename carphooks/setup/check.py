"""``carphooks check``: a doctor for the set-up, one line per check.

Each check says ``OK``, ``WARN`` or ``FAIL`` and, unless OK, how to fix it. Any
FAIL makes the command exit 1. Files are looked up under ``--root`` (default
``/``); interfaces come from netifaces and sysctls from the backend's runner (on
FreeBSD ``sysctl -n``), both injectable for tests.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carphooks import config as configmod
from carphooks.config import Config
from carphooks.errors import CarphooksError, CommandError, ConfigError
from carphooks.runner import Runner
from carphooks.setup import devd, render
from carphooks.setup.devd import under
from carphooks.setup.render import KINDS, Target

if TYPE_CHECKING:
    from carphooks.backends.base import Backend

OK, WARN, FAIL = "OK", "WARN", "FAIL"
CARP_TYPES = ("MASTER", "BACKUP", "INIT")
TINC_SCRIPTS = ("tinc-up", "tinc-down", "host-up", "host-down")
MAX_READ = 1 << 20  # bytes: no file check reads more
INTERPRETER_TIMEOUT = 10.0  # seconds for one "INTERPRETER -c ..." probe
# the module a console script pip wrote imports its entry point from
_ENTRY_RE = re.compile(r"^from\s+(carphooks(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s+import\s", re.M)
_SHELLS = ("sh", "bash", "dash", "ksh", "mksh", "zsh")
_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"),
          (stat.S_ISSOCK, "a socket"))


class NotRegularFile(OSError):
    """A path that should be a file is a FIFO, a device, a directory or a socket."""


def read_bytes(path: Path, limit: int = MAX_READ) -> bytes:
    """Up to ``limit`` bytes of the regular file ``path``, without ever blocking.

    The open is non-blocking (a FIFO with no writer would hang a plain open, a
    device might do anything) and anything but a regular file is refused with
    NotRegularFile; a longer file raises OSError too.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise NotRegularFile(f"{path} is {what}, not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise OSError(f"{path} is larger than {limit} bytes")
    return b"".join(chunks)


def read_text(path: Path, errors: str = "strict") -> str:
    """A regular file's UTF-8 text (see :func:`read_bytes`; UnicodeDecodeError if not)."""
    return read_bytes(path).decode("utf-8", errors)


def unreadable(path: Path, exc: OSError | UnicodeDecodeError) -> str:
    """One line saying why ``path`` could not be read."""
    if isinstance(exc, UnicodeDecodeError):
        return f"{path} is not valid UTF-8"
    if isinstance(exc, NotRegularFile) or exc.strerror is None:
        return str(exc)
    return f"cannot read {path}: {exc.strerror}"


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: str
    message: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4} {self.name}: {self.message}"
        return f"{text}; fix: {self.fix}" if self.fix and self.status != OK else text


@dataclass
class Doctor:
    """Runs the checks and collects their lines."""

    config_path: Path
    root: Path = Path("/")
    host: str | None = None
    bindir: str | None = None
    prefix: str | None = None  # install prefix of the drop-ins (render.resolve_prefix)
    interfaces: Callable[[], Iterable[str]] | None = None
    sysctl: Callable[[str], int | None] | None = None
    osrelease: Callable[[], str | None] | None = None  # kern.osrelease (default: backend)
    runner: Runner | None = None  # runs the interpreter probes (default: a Runner)
    backend_name: str | None = None
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, status: str, message: str, fix: str = "") -> None:
        self.checks.append(Check(name, status, message, fix))

    @property
    def failed(self) -> bool:
        return any(c.status == FAIL for c in self.checks)

    def as_json(self) -> dict[str, Any]:
        return {"ok": not self.failed, "checks": [asdict(c) for c in self.checks]}

    # ------------------------------------------------------------------ driver
    def run(self) -> list[Check]:
        config = self.check_config()
        if config is None:
            return self.checks
        self.check_private(config)
        self.check_quorum(config)
        self.check_vhid_addresses(config)
        tgt = self.check_target(config)
        if tgt is not None:
            self.check_membership(tgt)
            self.check_binaries(tgt)
            self.check_interpreters(tgt)
            self.check_devd(tgt)
            if config.topology == "tinc":
                self.check_tinc(tgt)
                self.check_mesh(tgt)
            else:
                self.check_unicast(tgt)
            self.check_file(tgt, "sysctl.conf", WARN)
            self.check_file(tgt, "cron", WARN)
            if config.checks:
                self.check_file(tgt, "rc.d", WARN, "sysrc carphooks_enable=YES && service "
                                "carphooks start")
                self.check_watch(config)
            self.check_syslog(tgt)
        self.check_interfaces(config)
        self.check_sysctl(config)
        self.check_unicast_release(config)
        return self.checks

    # ------------------------------------------------------------------ config
    def check_config(self) -> Config | None:
        try:
            config = configmod.load(self.config_path, check_permissions=False)
        except ConfigError as exc:
            self.add("config", FAIL, str(exc), "correct the config (see carphooks.toml(5))")
            return None
        self.add("config", OK, f"{self.config_path} is valid ({len(config.groups)} group(s), "
                               f"topology {config.topology}, quorum {config.quorum})")
        return config

    def check_private(self, config: Config) -> None:
        inline = [g.name for g in config.groups if g.carp.password is not None]
        try:
            configmod.check_private(self.config_path, secret=bool(inline),
                                    label=str(self.config_path))
        except ConfigError as exc:
            self.add("config private", FAIL, str(exc).split("; run: ")[0],
                     _fix_from(exc, f"chown root {self.config_path}; chmod 0600 "
                                    f"{self.config_path}"))
        else:
            what = " (holds the CARP password of " + ", ".join(inline) + ")" if inline else ""
            self.add("config private", OK, f"{self.config_path} is not writable by others{what}")
        for group in config.groups:
            pfile = group.carp.password_file
            secret = group.carp.password
            if pfile is not None:
                name = f"password file {group.name}"
                try:
                    configmod.check_private(pfile, secret=True, label=str(pfile))
                    secret = group.carp.secret()
                except ConfigError as exc:
                    self.add(name, FAIL, str(exc).split("; run: ")[0],
                             _fix_from(exc, f"chown root {pfile}; chmod 0600 {pfile}"))
                    continue
                self.add(name, OK, f"{pfile} is private")
            if secret == configmod.SAMPLE_PASSWORD:
                self.add(f"password {group.name}", FAIL, "the CARP password is the "
                         "placeholder of carphooks.toml.sample: anyone who has read the "
                         "sample can send advertisements for this vhid",
                         f"put a password of your own ({configmod.PASSWORD_MAX} characters "
                         f"at most, from {configmod.PASSWORD_CHARS}, e.g. openssl rand -hex 8) "
                         "in password_file, the same on every host")

    def check_quorum(self, config: Config) -> None:
        """Quorum off, or counted over too few voters. Each fix is one the loader takes:
        it refuses "majority" with topology "unicast", with no voters and with two."""
        voters = len(config.voters)
        listing = ("list every host's tinc node name in tinc.nodes (three, or two plus a "
                   "small third node in tinc.witnesses)")
        if config.quorum == "none" and config.topology == "unicast":
            self.add("quorum", WARN, "topology = \"unicast\" has no quorum: when the hosts "
                     "cannot hear each other each becomes MASTER and holds the address",
                     "to rule that out, set topology = \"tinc\", " + listing +
                     " and set quorum = \"majority\"")
        elif config.quorum == "none" and voters == 2:
            self.add("quorum", WARN, "2-node cluster with quorum = \"none\": when the two "
                     "cannot hear each other both become MASTER and both hold the address",
                     "add a small third tinc node as a witness (tinc.witnesses) and set "
                     "quorum = \"majority\"")
        elif config.quorum == "none" and voters < 2:
            self.add("quorum", WARN, "quorum = \"none\": an isolated MASTER keeps the "
                     "floating addresses", f"{listing}, then set quorum = \"majority\"")
        elif config.quorum == "none":
            self.add("quorum", WARN, "quorum = \"none\": an isolated MASTER keeps the "
                     "floating addresses", "set quorum = \"majority\"")
        elif voters == 1:
            self.add("quorum", WARN, f"majority of 1 voter: {config.voters[0]} always has "
                     "quorum by itself and every other host never holds the addresses",
                     listing)
        else:
            self.add("quorum", OK, f"majority of {voters} voter(s)")

    def check_vhid_addresses(self, config: Config) -> None:
        """With topology "tinc" on kernel CARP, tinc-up creates each vhid from the group's
        carp.address: without one it fails and the vhid never exists."""
        if config.topology != "tinc" or not _kernel_carp(config):
            return
        for gi, group in enumerate(config.groups):
            if group.carp.address is None:
                self.add(f"carp {group.name}", FAIL, f"group[{gi}] ({group.name}) has no "
                         f"carp.address: tinc-up cannot create vhid {group.vhid} on "
                         f"{group.carp_interface}, so this host is never MASTER",
                         f"add [group.carp] with address = \"ADDR/PREFIX\" (the vhid's "
                         f"address on {group.carp_interface}, the same on every host) after "
                         "that [[group]]")

    def check_membership(self, tgt: Target) -> None:
        """This host's own entries: a voter (with majority), a [hosts.NAME] table and,
        for topology "tinc", a vpn_address that tinc-up puts on the tap."""
        config, host = tgt.config, tgt.host
        if host in config.witnesses and host not in config.nodes:
            self.add("this host", OK, f"{host} is a witness: it votes, it holds nothing")
            return
        problems: list[str] = []
        fixes: list[str] = []
        if config.quorum == "majority" and host not in config.voters:
            problems.append(f"{host} is not in tinc.nodes, so with quorum = \"majority\" "
                            "it never holds the addresses")
            fixes.append(f"add \"{host}\" to tinc.nodes")
        entry = config.host(host)
        if entry is None or entry.vpn_address is None:
            where = f"hosts.{host}.vpn_address is not set"
            if config.topology == "tinc":
                ifname = config.groups[0].carp_interface if config.groups else "tap0"
                # with no address of its own, CARP sends from the vhid address every host
                # shares (sys/netinet/ip_carp.c carp_best_ifa picks any of the family)
                problems.append(f"{where}: tinc-up leaves {ifname} without an address of "
                                "its own (the host has no address on the VPN and CARP "
                                "advertises from the vhid address all hosts share)")
            else:
                problems.append(f"{where}: the unicast peers cannot leave this host's own "
                                "address out")
            fixes.append(f"set vpn_address = \"ADDR/PREFIX\" under [hosts.{host}] (this "
                         "host's own address on the VPN, one per host)")
        if problems:
            self.add("this host", FAIL, "; ".join(problems), "; ".join(fixes))
        else:
            self.add("this host", OK, f"{host} is in the config with its own vpn_address")
        others = [n for n in config.nodes
                  if n != host and getattr(config.host(n), "vpn_address", None) is None]
        if config.topology == "tinc" and others:  # the same file runs there: say it here too
            self.add("hosts", WARN, ", ".join(f"hosts.{n}.vpn_address" for n in others) +
                     " not set: tinc-up leaves the tap of "
                     f"{'that host' if len(others) == 1 else 'those hosts'} without an "
                     "address", "set vpn_address under " +
                     ", ".join(f"[hosts.{n}]" for n in others))

    def check_target(self, config: Config) -> Target | None:
        try:
            tgt = render.target(config, host=self.host, bindir=self.bindir,
                                prefix=self.prefix)
        except CarphooksError as exc:
            names = render.known_hosts(config)
            if not names:
                fix = ("add a [hosts.NAME] table with vpn_address for each host (NAME: its "
                       "tinc node name) and list them in tinc.nodes")
            elif self.host and self.host not in names:
                fix = (f"add a [hosts.{self.host}] table with vpn_address and list "
                       f"\"{self.host}\" in tinc.nodes, or pass --host as one of "
                       f"{', '.join(names)}")
            else:
                fix = f"pass --host NAME (one of {', '.join(names)})"
            self.add("host", FAIL, str(exc), fix)
            return None
        self.add("host", OK, f"this host is {tgt.host}")
        return tgt

    # ------------------------------------------------------------------ binaries
    def check_binaries(self, tgt: Target) -> None:
        problems: list[str] = []
        for name in render.CONSOLE_SCRIPTS:
            path = tgt.bindir / name
            if not path.is_file():
                problems.append(f"{path} is missing" if not path.exists()
                                else f"{path} is not a regular file")
                continue
            if not os.access(path, os.X_OK):
                problems.append(f"{path} is not executable")
                continue
            shebang = _first_line(path)
            if shebang.startswith("#!"):
                interp = shebang[2:].strip().split()[0] if shebang[2:].strip() else ""
                if not interp.startswith("/") or interp.endswith("/env"):
                    problems.append(f"{path} starts with {shebang!r}: devd's PATH lacks "
                                    "/usr/local/bin")
        if not Path(sys.executable).is_absolute():
            problems.append(f"python {sys.executable!r} is not an absolute path")
        if problems:
            self.add("binaries", FAIL, "; ".join(problems),
                     "pip install carphooks with the interpreter devd/tinc should use, or set "
                     "bindir in the config")
        else:
            self.add("binaries", OK, f"console scripts in {tgt.bindir} (absolute, "
                                     f"python {sys.executable})")

    # ------------------------------------------------------------------ interpreters
    def check_interpreters(self, tgt: Target) -> None:
        """Every installed hook's ``#!`` interpreter exists and runs.

        pip writes the interpreter's absolute path into the console scripts, and devd
        and tinc ignore a hook's failure: when the ports' default Python moves on and
        the old one is removed, failover stops without a word. Each distinct
        interpreter is run once through the runner (argv only, bounded in time): a
        Python imports the module its console script imports, a shell runs ``:``.
        """
        scripts = [tgt.bindir / name for name in render.CONSOLE_SCRIPTS]
        if tgt.config.topology == "tinc":
            tinc_dir = under(self.root, str(tgt.config.tinc_dir))
            scripts += [tinc_dir / name for name in TINC_SCRIPTS]
        problems: dict[str, str] = {}  # problem -> fix
        # interpreter argv -> (scripts, modules they import): one run per interpreter
        probes: dict[tuple[str, ...], tuple[list[Path], list[str]]] = {}
        for path in scripts:
            if not path.is_file():
                continue  # missing scripts are reported by "binaries" and the tinc checks
            words = shebang_words(_first_line(path))
            if not words:
                continue  # no "#!": nothing pip or carphooks wrote
            interp = words[0]
            fix = interpreter_fix(path, tgt)
            if not os.path.isabs(interp):
                problems[f"{path} names the interpreter {interp!r}, not an absolute path"] = fix
            elif not os.path.exists(interp):
                problems[f"{path} runs {interp}, which does not exist: devd and tinc ignore "
                         "the failure, so failover stops"] = fix
            elif not os.path.isfile(interp) or not os.access(interp, os.X_OK):
                problems[f"{path} runs {interp}, which is not an executable file"] = fix
            else:
                interp_argv = interpreter_argv(words)
                if interp_argv is not None:
                    paths, modules = probes.setdefault(tuple(interp_argv), ([], []))
                    paths.append(path)
                    module = entry_module(read_text_or_empty(path))
                    if module is not None and module not in modules:
                        modules.append(module)
        runner = self.runner if self.runner is not None else Runner(
            timeout=INTERPRETER_TIMEOUT)
        ran: list[str] = []
        for interp_key, (paths, modules) in probes.items():
            argv = probe_argv(list(interp_key), modules)
            problem = run_probe(runner, argv)
            shown = " ".join(shlex.quote(a) for a in argv)
            if problem is None:
                ran.append(shown)
                continue
            names = ", ".join(str(p) for p in paths)
            problems[f"{shown} (the interpreter of {names}) {problem}"] = \
                interpreter_fix(paths[0], tgt)
        if problems:
            self.add("interpreters", FAIL, "; ".join(problems),
                     "; ".join(dict.fromkeys(problems.values())))
        else:
            self.add("interpreters", OK, "the hooks' interpreters run: " + (
                ", ".join(ran) or "none to run"))

    # ------------------------------------------------------------------ files
    def _installed(self, tgt: Target,
                   kind_name: str) -> tuple[Path, str | None, str, str | None]:
        """(path, installed text or None when missing, rendered text, why unreadable)."""
        rendered = render.render(tgt, kind_name)
        assert rendered.dest is not None
        path = under(self.root, rendered.dest)
        try:
            return path, read_text(path), rendered.text, None
        except FileNotFoundError:
            return path, None, rendered.text, None
        except (OSError, UnicodeDecodeError) as exc:
            return path, None, rendered.text, unreadable(path, exc)

    def check_file(self, tgt: Target, kind_name: str, severity: str,
                   extra_fix: str = "") -> bool:
        """Present and identical to the rendered text; returns whether it is."""
        fix = "carphooks install" + (f", then {extra_fix}" if extra_fix else "")
        try:
            path, text, want, problem = self._installed(tgt, kind_name)
        except CarphooksError as exc:
            self.add(kind_name, FAIL, f"cannot render: {exc}", "correct the config")
            return False
        if problem is not None:
            self.add(kind_name, severity, problem, f"remove it, then {fix}")
            return False
        if text is None:
            self.add(kind_name, severity, f"{path} is missing", fix)
            return False
        if text != want:
            self.add(kind_name, severity, f"{path} differs from the rendered "
                     f"{KINDS[kind_name].name} (carphooks render {kind_name})", fix)
            return False
        self.add(kind_name, OK, f"{path} is up to date")
        return True

    def check_syslog(self, tgt: Target) -> None:
        """The syslogd drop-in, its newsyslog entry, and the log file syslogd needs."""
        apply = f"newsyslog -CN {render.SYSLOG_FILE} && service syslogd reload"
        dropin = self.check_file(tgt, "syslog.conf", WARN, apply)
        self.check_file(tgt, "newsyslog.conf", WARN)
        logfile = under(self.root, render.SYSLOG_FILE)
        if dropin and not logfile.exists():
            self.add("syslog file", WARN, f"{logfile} does not exist and syslogd never creates "
                     "a log file, so carphooks' lines reach only the stock logs", apply)

    def check_devd(self, tgt: Target) -> None:
        self.check_file(tgt, "devd", FAIL, "service devd restart")
        try:
            tree = devd.load_tree(self.root)
        except (devd.DevdSyntaxError, OSError) as exc:
            self.add("devd rules", FAIL, f"cannot read the devd rules: {exc}",
                     "fix the file (devd refuses it too)")
            return
        ours_path = render.destination(KINDS["devd"], tgt.config, tgt.prefix)
        self._check_devd_directory(tree, ours_path)
        try:
            our_action = devd.parse(render.render(tgt, "devd").text, "rendered").rules[0] \
                .actions[0]
        except (CarphooksError, devd.DevdSyntaxError, IndexError):
            our_action = None
        events = [devd.carp_event(g.subsystem, t) for g in tgt.config.groups for t in CARP_TYPES]
        if not events:
            events = [devd.carp_event("1@tap0", t) for t in CARP_TYPES]
        problems: dict[str, str] = {}
        hidden: dict[str, tuple[devd.Rule, list[str]]] = {}
        merged: list[str] = []
        unmatched: list[str] = []
        ours_rules = [r for r in tree.rules if r.source == ours_path]
        ours_priority = ours_rules[0].priority if ours_rules else _template_priority()
        for event in events:
            rules = tree.all_matches(event)
            if not rules:
                unmatched.append(event.line)
                continue
            winner = rules[0]
            # devd runs only the first matching rule (sbin/devd/devd.cc
            # config::find_and_execute): every later match is silently skipped.
            for rule in rules[1:]:
                if rule.source != ours_path:
                    hidden.setdefault(rule.where(), (rule, []))[1].append(event.get("type"))
            if winner.source == ours_path:
                continue
            if our_action is not None and runs_action(winner, our_action, event):
                if winner.where() not in merged:
                    merged.append(winner.where())
                continue
            ours = next((r for r in rules if r.source == ours_path), None)
            how = (f"priority {winner.priority} >= {ours.priority} of carphooks' rule"
                   if ours is not None else f"priority {winner.priority}")
            problems.setdefault(winner.where(), f"{winner.where()} (notify {winner.priority}) "
                                                f"runs instead for '{event.line}' ({how})")
        if problems:
            self.add("devd shadowing", FAIL, "; ".join(problems.values()) +
                     ": devd runs only the highest-priority matching rule",
                     f"remove that rule, lower its priority below {ours_priority}, or merge "
                     "it (docs/walkthrough.md, 'Other CARP rules'), then service devd restart")
        elif unmatched:
            self.add("devd shadowing", FAIL, f"no devd rule matches {unmatched[0]}",
                     "carphooks install, then service devd restart")
        else:
            via = f" (through the merged rule {', '.join(merged)})" if merged else ""
            self.add("devd shadowing", OK, f"carp-event runs for all {len(events)} CARP "
                     f"event(s) of the configured groups{via}")
        if hidden:
            listed = "; ".join(
                f"{where} (notify {rule.priority}) for type "
                f"{'/'.join(dict.fromkeys(types))}" for where, (rule, types) in hidden.items())
            self.add("devd hidden rules", WARN, f"{listed}: matches the same CARP events "
                     "but ranks below the rule that runs, so devd never runs its action",
                     "merge its action into one rule that also runs carp-event, or delete it "
                     "if carphooks replaces it (docs/walkthrough.md, 'Other CARP rules'), "
                     "then service devd restart")

    def _check_devd_directory(self, tree: devd.DevdConfig, ours: str | None) -> None:
        """FAIL when carphooks' rule lies outside every directory devd reads (a
        ``--prefix`` that FreeBSD's /etc/devd.conf does not list)."""
        if ours is None:
            return
        dirs = [d.rstrip("/") or "/" for d in (tree.directories or list(devd.DEFAULT_DIRS))]
        if os.path.dirname(ours) not in dirs:
            self.add("devd directory", FAIL, f"{ours} is not in a directory devd reads "
                     f"({', '.join(dirs)}): the rule would never run",
                     "carphooks install --prefix /usr/local (or the prefix of one of "
                     "those directories), then service devd restart")

    def check_tinc(self, tgt: Target) -> None:
        config = tgt.config
        for name in TINC_SCRIPTS:
            try:
                path, text, want, problem = self._installed(tgt, name)
            except CarphooksError as exc:
                self.add(name, FAIL, f"cannot render: {exc}", "correct the config")
                continue
            if problem is not None:
                self.add(name, FAIL, problem, "remove it, then carphooks install")
                continue
            if text is None:
                self.add(name, FAIL, f"{path} is missing", "carphooks install")
                continue
            mode = path.stat().st_mode
            if not mode & stat.S_IXUSR:
                self.add(name, FAIL, f"{path} is not executable (mode "
                         f"{stat.S_IMODE(mode):04o}); tinc would fail to run it",
                         f"chmod 0755 {path} (or carphooks install)")
                continue
            if mode & (stat.S_IWGRP | stat.S_IWOTH):
                self.add(name, FAIL, f"{path} is writable by group or others (runs as root)",
                         f"chmod go-w {path}")
                continue
            if text == want:
                self.add(name, OK, f"{path} is up to date")
                continue
            targets = _exec_targets(text)
            bad = [t for t in targets if not (t.startswith("/") and os.access(t, os.X_OK))]
            if not targets or bad:
                self.add(name, FAIL, f"{path} does not run an installed carphooks binary"
                         + (f" ({', '.join(bad)})" if bad else ""), "carphooks install")
            else:
                self.add(name, WARN, f"{path} differs from the rendered script (runs "
                         f"{', '.join(targets)})", "carphooks install")
        self._check_tinc_conf(tgt, config)

    def _check_tinc_conf(self, tgt: Target, config: Config) -> None:
        dest = render.destination(KINDS["tinc.conf"], config)
        assert dest is not None
        path = under(self.root, dest)
        try:
            text = read_text(path)
        except FileNotFoundError:
            self.add("tinc.conf", FAIL, f"{path} is missing", "carphooks install")
            return
        except (OSError, UnicodeDecodeError) as exc:
            self.add("tinc.conf", FAIL, unreadable(path, exc), "fix the file")
            return
        settings = tinc_settings(text)
        mode = settings.get("mode", "router").lower()
        if mode != "switch":
            self.add("tinc.conf", FAIL, f"{path}: Mode = {mode}: CARP adverts (multicast) and "
                     "ARP cross tinc only in switch mode", f"set Mode = switch in {path} "
                     "(or carphooks install --force), then service tincd restart")
            return
        problems = []
        if settings.get("devicetype", "tap").lower() != "tap":
            problems.append(f"DeviceType = {settings['devicetype']} (switch mode needs tap)")
        if settings.get("tcponly", "no").lower() != "yes":
            problems.append("TCPOnly is not yes (UDP lost a direction after restarts in the "
                            "lab)")
        try:
            want_if = render.tinc_interface(config)
        except CarphooksError:
            want_if = None
        if want_if and settings.get("interface") not in (None, want_if):
            problems.append(f"Interface = {settings['interface']} but the groups run CARP "
                            f"on {want_if}")
        if problems:
            self.add("tinc.conf", WARN, f"{path}: " + "; ".join(problems),
                     "carphooks install (or edit tinc.conf), then service tincd restart")
        else:
            self.add("tinc.conf", OK, f"{path}: Mode = switch on a tap, TCPOnly")

    def check_mesh(self, tgt: Target) -> None:
        """Live: every other voter reached over a direct tinc connection (carphooks.mesh)."""
        warn, message, fix = mesh_verdict(tgt, self.root)
        self.add("tinc links", WARN if warn else OK, message, fix)

    def check_watch(self, config: Config) -> None:
        """Configured health checks need the ``carphooks watch`` loop: without it a
        failing service demotes nothing. Alive = a fresh record of every check."""
        from carphooks.state import StateDir

        fix = "sysrc carphooks_enable=YES && service carphooks start"
        try:
            record = StateDir(config.state_dir, dry_run=True).check_record()
        except CarphooksError as exc:
            self.add("watch", WARN, f"cannot read the health checks' record: {exc}",
                     "run check as root")
            return
        names = ", ".join(c.name for c in config.checks)
        if record is None:
            self.add("watch", WARN, f"health checks {names} are configured, but no "
                     "carphooks watch loop has run them: a failing service moves nothing",
                     fix)
            return
        age = time.time() - record.updated
        stale = [c.name for c in config.checks
                 if c.name not in record.checks or age > c.stale_after(config.lock_timeout)]
        if stale:
            self.add("watch", WARN, f"no carphooks watch loop has run {', '.join(stale)} "
                     f"for {age:.0f} s (last record by pid {record.pid}): a failing service "
                     "moves nothing", fix)
        else:
            self.add("watch", OK, f"carphooks watch (pid {record.pid}) ran {names} "
                     f"{age:.0f} s ago")

    def check_unicast(self, tgt: Target) -> None:
        config = tgt.config
        ok = self.check_file(tgt, "rc.conf", FAIL, "service netif restart IF (or reboot)")
        dest = render.destination(KINDS["rc.conf"], config)
        assert dest is not None
        path = under(self.root, dest)
        if ok or path.exists():
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                self.add("rc.conf private", FAIL, f"{path} (mode {mode:04o}) holds the CARP "
                         "password but is readable or writable by others",
                         f"chmod 0600 {path}")
        for group in config.groups:
            v4, v6 = render.unicast_peers(config, group, tgt.host)
            if len(v4) > 1 or len(v6) > 1:
                self.add(f"peers {group.name}", FAIL, "FreeBSD keeps one unicast peer per "
                         f"vhid and family, but {len(v4) + len(v6)} peers are configured for "
                         f"{tgt.host}: the others never hear its advertisements",
                         "use topology = \"tinc\" for more than two hosts")
            elif group.carp.address is None:
                self.add(f"peers {group.name}", FAIL, "carp.address is not set",
                         "set group.carp.address")
            else:
                self.add(f"peers {group.name}", OK,
                         "peer " + (", ".join(str(p) for p in [*v4, *v6]) or "multicast"))
        rc_conf = under(self.root, "/etc/rc.conf")
        try:
            text = read_text(rc_conf, errors="replace")
        except OSError:
            text = ""  # no rc.conf (or none to read): nothing can clash
        if text:
            clashes = sorted({g.carp_interface for g in config.groups
                              if f"ifconfig_{render.rc_name(g.carp_interface)}_alias" in text})
            if clashes:
                self.add("rc.conf aliases", WARN, "/etc/rc.conf also sets ifconfig_IF_aliasN "
                         f"for {', '.join(clashes)}; /etc/rc.conf.d/netif overrides the same "
                         "numbers", "move those aliases into one place")

    # ------------------------------------------------------------------ live system
    def check_interfaces(self, config: Config) -> None:
        try:
            present = set(self.interfaces() if self.interfaces is not None else _netifaces())
        except Exception as exc:  # netifaces missing or broken
            self.add("interfaces", WARN, f"cannot list interfaces: {exc}",
                     "pip install netifaces")
            return
        missing_ext = sorted({g.external_interface for g in config.groups} - present)
        missing_carp = sorted({g.carp_interface for g in config.groups} - present)
        if missing_ext:
            self.add("interfaces", FAIL, f"external interface(s) {', '.join(missing_ext)} do "
                     "not exist", "correct external_interface in the config")
        if missing_carp:
            if config.topology == "tinc":
                self.add("interfaces", WARN, f"CARP interface(s) {', '.join(missing_carp)} do "
                         "not exist (tincd creates the tap when it starts)",
                         "service tincd start")
            else:
                self.add("interfaces", FAIL, f"CARP interface(s) {', '.join(missing_carp)} do "
                         "not exist", "correct carp_interface in the config")
        if not missing_ext and not missing_carp:
            names = sorted({g.external_interface for g in config.groups}
                           | {g.carp_interface for g in config.groups})
            self.add("interfaces", OK, f"{', '.join(names) or 'none configured'} exist")

    def check_sysctl(self, config: Config) -> None:
        reader = self.sysctl
        backend = self.backend_name
        if reader is None:
            reader, backend = self._backend_sysctl(config)
        if reader is None:
            self.add("sysctl", OK, f"not checked: the {backend} backend has no kernel CARP")
            return
        preempt = reader("net.inet.carp.preempt")
        if preempt is None:
            self.add("net.inet.carp.preempt", FAIL, "does not exist: carp(4) is not loaded",
                     "kldload carp; sysrc -f /boot/loader.conf carp_load=YES")
            return
        if preempt != 1:
            self.add("net.inet.carp.preempt", FAIL, f"is {preempt}: demotion and the "
                     "preferred host's return move nothing",
                     "sysctl net.inet.carp.preempt=1 (carphooks install writes "
                     "/etc/sysctl.conf.local for boot)")
        else:
            self.add("net.inet.carp.preempt", OK, "is 1")
        garp = reader("net.link.ether.inet.garp_rexmit_count")
        if garp is not None and garp < 1:
            self.add("garp_rexmit_count", WARN, "is 0: a floating address is announced by "
                     "a single gratuitous ARP",
                     f"sysctl net.link.ether.inet.garp_rexmit_count={render.GARP_REXMIT_COUNT}")
        elif garp is not None:
            self.add("garp_rexmit_count", OK, f"is {garp}")

    def check_unicast_release(self, config: Config) -> None:
        """Unicast CARP (``peers``) needs FreeBSD 14.0+: refuse it on an older release."""
        from carphooks.backends import freebsd

        unicast = [g for g in config.groups if g.carp.peers or g.carp.peers6]
        if not unicast:
            return
        release: str | None = None
        if self.osrelease is not None:
            release = self.osrelease()
        elif self.sysctl is None:
            backend, name = self._backend(config)
            if backend is not None and name == "freebsd":
                release = backend.sysctl_str("kern.osrelease")
        problem = freebsd.unicast_refusal(unicast, release)
        if problem is not None:
            self.add("unicast CARP", FAIL, problem,
                     "remove carp.peers/peers6 (multicast CARP; with topology \"tinc\" it "
                     "crosses the VPN) or upgrade to FreeBSD 14")
        elif freebsd.release_major(release) is None:
            self.add("unicast CARP", WARN, "kern.osrelease could not be read: unicast CARP "
                     "(carp.peers) needs FreeBSD 14.0 or later",
                     "run carphooks check on the FreeBSD host itself")
        else:
            self.add("unicast CARP", OK, f"{release} has unicast CARP (peer, peer6)")

    def _backend(self, config: Config) -> tuple[Backend | None, str]:
        """The backend a hook would use here, and its name (or why there is none)."""
        from carphooks.backends import get_backend
        from carphooks.runner import Runner
        from carphooks.state import StateDir

        try:  # reads only: the state directory is opened read-only (never created)
            backend = get_backend(config.backend, Runner(), StateDir(config.state_dir,
                                                                     dry_run=True),
                                  config.demotion_file)
        except CarphooksError as exc:
            return None, f"(unavailable: {exc})"
        return backend, backend.name

    def _backend_sysctl(self, config: Config,
                        ) -> tuple[Callable[[str], int | None] | None, str]:
        backend, name = self._backend(config)
        if backend is None or name != "freebsd":
            return None, name
        return backend.sysctl, name


# -- helpers ----------------------------------------------------------------------------------

def mesh_verdict(tgt: Target, root: Path) -> tuple[bool, str, str]:
    """(warn, message, fix) for the tinc links of this host: WARN when a voter is reached
    only through another node, is unreachable, or the links cannot be read."""
    from carphooks import mesh
    from carphooks.backends import get_backend
    from carphooks.runner import Runner
    from carphooks.state import StateDir

    config = tgt.config
    others = [v for v in config.voters if v != tgt.host]
    if not others:
        return False, "no other voters", ""
    try:
        peers = StateDir(config.state_dir).peers(config.voters)
    except CarphooksError as exc:
        return True, f"cannot read the reachable peers: {exc}", "run check as root"
    if not peers.tinc_up:
        return False, "not checked: tinc-up has not run on this host (tincd stopped?)", ""
    tinc_dir = under(root, str(config.tinc_dir))
    try:
        runner = Runner()
        backend = get_backend(config.backend, runner, StateDir(config.state_dir, dry_run=True),
                              config.demotion_file)
        conns = mesh.list_connections(runner, backend.name)
    except CarphooksError as exc:
        return True, f"cannot tell which voters are reached directly: {exc}", ""
    view = mesh.mesh(tinc_dir, tgt.host, config.voters, peers.reachable, conns)
    retry = f"tincd -n {config.netname} -kALRM retries every ConnectTo at once"
    problems, fixes = [], []
    for voter in view.voters:
        if voter.state == "indirect":
            problems.append(f"{voter.name} is reached only through another node: if that "
                            f"node fails, {voter.name} and {tgt.host} lose each other and "
                            "the quorum")
            fixes.append(f"{retry}; if it stays, check ConnectTo = {voter.name} in "
                         f"{tinc_dir}/tinc.conf (carphooks install), the Address in "
                         f"{tinc_dir}/hosts/{voter.name} and that the tinc port is open "
                         "between the two hosts")
        elif voter.state == "unreachable":
            problems.append(f"{voter.name} is unreachable over tinc")
            fixes.append(f"start tincd on {voter.name} or repair the network; {retry}")
        elif voter.state == "unknown":
            problems.append(f"cannot tell how {voter.name} is reached: {voter.note}")
            fixes.append(f"give {voter.name} an Address in {tinc_dir}/hosts/{voter.name}")
    if problems:
        return True, "; ".join(problems), "; ".join(dict.fromkeys(fixes))
    return False, ", ".join(f"{v.name} ({v.link})" for v in view.voters) + \
        " reached over direct tinc connections", ""


def tinc_settings(text: str) -> dict[str, str]:
    """``Key = Value`` lines of a tinc.conf (keys lower-cased; last one wins)."""
    result: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" in line:
            key, _, value = line.partition("=")
        else:
            key, _, value = line.partition(" ")
        result[key.strip().lower()] = value.strip()
    return result


def _exec_targets(text: str) -> list[str]:
    """Commands of a hook script that look like carphooks console scripts."""
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            continue
        for word in line.replace(";", " ").split():
            if Path(word).name in render.CONSOLE_SCRIPTS:
                found.append(word)
    return found


def runs_action(rule: devd.Rule, action: str, event: devd.Event) -> bool:
    """Whether one of ``rule``'s commands for ``event`` is exactly ``action``'s command.

    A merged rule (``action "CARP-EVENT ... $subsystem $type; /other/script ...";``)
    runs carp-event with the same argv as carphooks' own rule."""
    try:
        want = devd.action_argv(action, event)
        return any(want in devd.action_commands(a, event) for a in rule.actions)
    except ValueError:  # unbalanced quotes: devd's sh would fail too
        return False


def _template_priority() -> int:
    """Priority of the shipped devd rule."""
    rules = devd.parse(render.template_text(KINDS["devd"]), "template").rules
    return rules[0].priority if rules else 0


def shebang_words(line: str) -> list[str]:
    """The interpreter and its arguments from a ``#!`` line (empty when there is none)."""
    return line[2:].split() if line.startswith("#!") else []


def read_text_or_empty(path: Path) -> str:
    """A small script's text, or "" when it cannot be read."""
    try:
        return read_text(path, errors="replace")
    except OSError:
        return ""


def interpreter_argv(words: list[str]) -> list[str] | None:
    """The interpreter of a ``#!`` line to probe: a Python (``python3.11``, also behind
    ``env``) or a shell, without the line's options; None for another kind (checked for
    existence only, never run)."""
    base = words[:2] if Path(words[0]).name == "env" and len(words) > 1 else words[:1]
    program = Path(base[-1]).name
    return base if program.startswith("python") or program in _SHELLS else None


def entry_module(script: str) -> str | None:
    """The carphooks module a console script pip wrote imports its entry point from."""
    match = _ENTRY_RE.search(script)
    return match.group(1) if match else None


def probe_argv(base: list[str], modules: list[str]) -> list[str]:
    """argv proving an interpreter runs: a Python imports ``modules`` (so a Python
    without carphooks or its dependencies fails too) or runs ``pass``; a shell ``:``."""
    if not Path(base[-1]).name.startswith("python"):
        return [*base, "-c", ":"]
    return [*base, "-c", f"import {', '.join(modules)}" if modules else "pass"]


def run_probe(runner: Runner, argv: list[str]) -> str | None:
    """Run one probe; None when it exited 0, else what went wrong (one line)."""
    try:
        result = runner.run(argv, mutating=False, check=False)
    except CommandError as exc:  # not in a trusted place, timed out, killed
        return f"does not run: {exc.stderr or f'exit status {exc.returncode}'}"
    if result.returncode == 0:
        return None
    lines = (result.stderr or result.stdout).strip().splitlines()
    return f"exits {result.returncode}" + (f": {lines[-1]}" if lines else "")


def interpreter_fix(script: Path, tgt: Target) -> str:
    """How to repair a hook whose interpreter is gone or broken."""
    if script.parent == tgt.bindir:
        return ("reinstall carphooks for the Python that exists now: pkg install -f "
                "the carphooks package, or pip install --force-reinstall carphooks "
                "with that python3; then carphooks install")
    return "carphooks install"


def _first_line(path: Path) -> str:
    try:
        head = read_bytes(path, limit=MAX_READ)[:200]
    except OSError:
        return ""
    return head.split(b"\n", 1)[0].decode("utf-8", "replace")


def _fix_from(exc: ConfigError, default: str) -> str:
    text = str(exc)
    return text.split("; run: ", 1)[1] if "; run: " in text else default


def _kernel_carp(config: Config) -> bool:
    """Whether the hooks run FreeBSD's kernel CARP (which tinc-up configures)."""
    return config.backend == "freebsd" or (config.backend == "auto"
                                           and sys.platform.startswith("freebsd"))


def _netifaces() -> list[str]:
    import netifaces

    return [str(n) for n in netifaces.interfaces()]


def run(config_path: Path, *, root: Path = Path("/"), host: str | None = None,
        bindir: str | None = None, interfaces: Callable[[], Iterable[str]] | None = None,
        sysctl: Callable[[str], int | None] | None = None,
        osrelease: Callable[[], str | None] | None = None,
        prefix: str | None = None) -> Doctor:
    """Run every check; inspect ``.checks``, ``.failed`` and ``.as_json()``."""
    doctor = Doctor(config_path=config_path, root=root, host=host, bindir=bindir,
                    prefix=prefix, interfaces=interfaces, sysctl=sysctl, osrelease=osrelease)
    doctor.run()
    return doctor
