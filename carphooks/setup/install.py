"""``carphooks install``: write the rendered files, atomically and carefully.

* Each file is written to a temporary file in its own directory, given its mode,
  flushed and renamed over the destination (``os.replace``): devd, tinc and cron
  never read a half-written file.
* A file carphooks did not write (no ``carphooks-managed`` comment line) is never
  replaced without ``--force``; the check runs for every file before anything is
  written, so a refusal leaves the host untouched.
* A replaced file is first copied to ``FILE.carphooks-bak`` (``...-bak.TIMESTAMP``
  when that exists, so no backup is ever overwritten). In directories whose
  reader takes every file name (cron.d) the backup is hidden: ``.FILE.carphooks-bak``.
* An unchanged file is left alone (no backup, no write): installing twice is a no-op.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from carphooks.errors import CarphooksError
from carphooks.runner import REDACTED, SECRET_FLAGS
from carphooks.setup.devd import under
from carphooks.setup.render import MARKER, SYSLOG_FILE, Rendered, has_marker

BACKUP_SUFFIX = ".carphooks-bak"
# the words runner.redact hides in argv, hidden the same way in text (rc.conf lines)
_SECRET_RE = re.compile(r"(\b(?:" + "|".join(map(re.escape, sorted(SECRET_FLAGS)))
                        + r")\s+)\S+?(?=[\s\"]|$)")


class InstallRefused(CarphooksError):
    """Files exist that carphooks did not write (and --force was not given)."""


@dataclass
class Planned:
    """What install does with one file."""

    rendered: Rendered
    path: Path  # under --root
    action: str  # "create" | "update" | "unchanged" | "chmod"
    old_text: str | None = None
    old_mode: int | None = None
    foreign: bool = False  # exists without the marker
    backup: Path | None = None


@dataclass
class Report:
    """The outcome of an install (or a dry run)."""

    planned: list[Planned] = field(default_factory=list)
    dry_run: bool = False

    @property
    def changed(self) -> list[Planned]:
        return [p for p in self.planned if p.action != "unchanged"]


def redact(text: str) -> str:
    """Hide CARP passwords (``pass SECRET``) in text shown on screen."""
    return _SECRET_RE.sub(lambda m: m.group(1) + REDACTED, text)


def plan(files: list[Rendered], root: Path, *, force: bool = False) -> list[Planned]:
    """Decide per file; raise InstallRefused (nothing written) for foreign files."""
    planned: list[Planned] = []
    refused: list[str] = []
    for item in files:
        if item.dest is None:
            continue
        path = under(root, item.dest)
        if path.is_symlink() or (path.exists() and not path.is_file()):
            refused.append(f"{path}: not a regular file")
            continue
        if not path.exists():
            planned.append(Planned(item, path, "create"))
            continue
        try:
            old = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CarphooksError(f"cannot read {path}: {exc}") from None
        mode = path.stat().st_mode & 0o7777
        foreign = not has_marker(old)
        if old == item.text:
            action = "unchanged" if mode == item.mode else "chmod"
            planned.append(Planned(item, path, action, old, mode))
            continue
        if foreign and not force:
            refused.append(f"{path}: not written by carphooks (no '# {MARKER}' line)")
            continue
        planned.append(Planned(item, path, "update", old, mode, foreign=foreign))
    if refused:
        raise InstallRefused(
            "refusing to replace " + "; ".join(refused)
            + ". Move the file aside, merge it by hand, or rerun with --force "
              "(the old file is kept as a backup)")
    return planned


def backup_path(path: Path, hidden: bool) -> Path:
    """A backup name that does not exist yet."""
    name = (f".{path.name}" if hidden else path.name) + BACKUP_SUFFIX
    candidate = path.with_name(name)
    if not candidate.exists():
        return candidate
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    candidate = path.with_name(f"{name}.{stamp}")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{name}.{stamp}.{n}")
        n += 1
    return candidate


def write_atomic(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to ``path`` via a temporary file and rename, with ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".carphooks-tmp",
                               dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def install(files: list[Rendered], root: Path, *, force: bool = False,
            dry_run: bool = False) -> Report:
    """Plan, then (unless ``dry_run``) back up and write every changed file."""
    report = Report(plan(files, root, force=force), dry_run=dry_run)
    for item in report.planned:
        if item.action == "update":
            item.backup = backup_path(item.path, item.rendered.kind.hidden_backup)
        if dry_run:
            continue
        try:
            if item.action == "update" and item.backup is not None:
                shutil.copy2(item.path, item.backup)
                os.chmod(item.backup, (item.old_mode or 0o600) & 0o700)
            if item.action in ("create", "update"):
                write_atomic(item.path, item.rendered.text, item.rendered.mode)
            elif item.action == "chmod":
                os.chmod(item.path, item.rendered.mode)
        except OSError as exc:
            raise CarphooksError(f"cannot write {item.path}: {exc.strerror or exc}") from None
    return report


# -- presentation -------------------------------------------------------------------------

def describe(report: Report) -> list[str]:
    """One line per file (plus a diff of each change on a dry run)."""
    verb = {"create": "would create" if report.dry_run else "created",
            "update": "would update" if report.dry_run else "updated",
            "chmod": "would set mode of" if report.dry_run else "set mode of",
            "unchanged": "unchanged"}
    lines: list[str] = []
    for item in report.planned:
        mode = f"{item.rendered.mode:04o}"
        extra = ""
        if item.backup is not None:
            extra = f"; backup {'to ' if report.dry_run else ''}{item.backup}"
        if item.foreign:
            extra += " (not written by carphooks; --force)"
        lines.append(f"{verb[item.action]} {item.path} (mode {mode}, "
                     f"{item.rendered.kind.name}){extra}")
        if report.dry_run and item.action in ("create", "update"):
            old = redact(item.old_text or "").splitlines(keepends=True)
            new = redact(item.rendered.text).splitlines(keepends=True)
            for diff_line in difflib.unified_diff(
                    old, new, fromfile=str(item.path) if item.old_text is not None else "/dev/null",
                    tofile=str(item.path)):
                lines.append(diff_line.rstrip("\n"))
    return lines


def next_steps(report: Report, netname: str, topology: str,
               interfaces: list[str]) -> list[str]:
    """What the admin runs next, for what changed."""
    kinds = {p.rendered.kind.name for p in report.changed}
    steps: list[str] = []
    if "devd" in kinds:
        steps.append("service devd restart    # devd has no reload; it reads rules at start")
    if "sysctl.conf" in kinds:
        steps.append("sysrc -f /boot/loader.conf carp_load=YES && kldload -n carp")
        steps.append("sysctl -f /etc/sysctl.conf.local    # preempt and GARP repeats, now")
    if kinds & {"tinc-up", "tinc-down", "host-up", "host-down", "tinc.conf"}:
        steps.append(f"sysrc tincd_enable=YES tincd_cfg={netname}")
        steps.append(f"tincd -n {netname} -K    # once per node; then copy every "
                     f"/usr/local/etc/tinc/{netname}/hosts/NAME (Address = public IP, key) "
                     "to all nodes")
        steps.append("service tincd restart   # tinc-up configures CARP on the tap")
    if "rc.conf" in kinds and topology == "unicast":
        for ifname in interfaces:
            steps.append(f"service netif restart {ifname}   # creates the vhids (drops "
                         f"{ifname}'s addresses briefly; or reboot)")
    if "cron" in kinds:
        steps.append("# cron picks up /usr/local/etc/cron.d/carphooks within a minute")
    if "rc.d" in kinds:
        steps.append("sysrc carphooks_enable=YES && service carphooks start   # health "
                     "checks and a reconcile loop (optional: cron reconciles without it)")
    if kinds & {"syslog.conf", "newsyslog.conf"}:
        steps.append(f"newsyslog -CN {SYSLOG_FILE}   # creates it: syslogd writes only to "
                     "existing files")
        steps.append("service syslogd reload   # reads /usr/local/etc/syslog.d/carphooks.conf")
    steps.append("carphooks check && carphooks status")
    return steps
