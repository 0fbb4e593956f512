"""Syslog over a unix datagram socket (what ``logger -t TAG`` does), mirrored to stderr.

Changes go out at ``notice``, failures at ``err``, on the configured facility
(``daemon`` by default). A datagram is cut to :data:`MAX_DATAGRAM` bytes on a
UTF-8 character boundary and marked, since FreeBSD's syslogd reads no more than
that (and older kernels refuse a larger local datagram outright). When the socket
is missing the message still reaches stderr, with one warning that syslog is down.
"""

from __future__ import annotations

import os
import socket
import sys
import time

EMERG, ALERT, CRIT, ERR, WARNING, NOTICE, INFO, DEBUG = range(8)
_LEVEL_NAMES = {ERR: "error", WARNING: "warning", NOTICE: "notice", INFO: "info", DEBUG: "debug"}

# Facility codes as FreeBSD's <sys/syslog.h> numbers them (the names syslog.conf(5)
# accepts). "kern" is left out: syslogd files a program's kern message under user.
FACILITIES: dict[str, int] = {
    "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13,
    "console": 14, **{f"local{i}": 16 + i for i in range(8)},
}
DEFAULT_FACILITY = "daemon"
LOG_DAEMON = FACILITIES[DEFAULT_FACILITY]

# The largest datagram FreeBSD's syslogd takes whole from /var/run/log on 12-14
# (MAXLINE 2048; also net.local.dgram.maxdgram's default up to 14, above which
# send() fails). Newer releases take 8192, older ones 1024.
MAX_DATAGRAM = 2048


def fit(header: bytes, body: bytes, limit: int = MAX_DATAGRAM) -> bytes:
    """``header + body``, with ``body`` cut on a UTF-8 boundary and marked when too long."""
    if len(header) + len(body) <= limit:
        return header + body
    marker = f" [truncated, {len(body)} bytes]".encode("ascii")
    cut = max(0, limit - len(header) - len(marker))
    while cut > 0 and body[cut] & 0xC0 == 0x80:  # never split a multi-byte character
        cut -= 1
    return header + body[:cut] + marker


class Log:
    """A tiny syslog client; one instance per process."""

    def __init__(self, tag: str, socket_path: str, *, facility: str = DEFAULT_FACILITY,
                 mirror: bool | None = None, verbose: bool = False) -> None:
        if facility not in FACILITIES:
            raise ValueError(f"unknown syslog facility {facility!r}")
        self.tag = tag
        self.socket_path = socket_path
        self.facility = FACILITIES[facility]
        self.verbose = verbose
        self.mirror = (sys.stderr.isatty() or verbose) if mirror is None else mirror
        self._sock: socket.socket | None = None
        self._syslog_down = False

    def reopen(self) -> None:
        """Forget the socket (after fork) so the next message reconnects."""
        if self._sock is not None:
            self._sock.close()
        self._sock = None

    def _send(self, severity: int, message: str) -> None:
        message = "".join(c if c.isprintable() else " " for c in message)
        stamp = time.strftime("%b %e %H:%M:%S", time.localtime())
        header = f"<{self.facility * 8 + severity}>{stamp} {self.tag}[{os.getpid()}]: "
        data = fit(header.encode("utf-8"), message.encode("utf-8", "replace"))
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.setblocking(False)  # a stuck syslogd must never stall the hook
                sock.connect(self.socket_path)
                self._sock = sock
            try:
                self._sock.send(data)
            except BlockingIOError:
                time.sleep(0.01)
                self._sock.send(data)
        except OSError as exc:
            self.reopen()
            if not self._syslog_down:
                self._syslog_down = True
                self._stderr(f"warning: syslog socket {self.socket_path} unavailable "
                             f"({exc.strerror or exc}); logging to stderr")
            if not self.mirror:
                self._stderr(message, severity)

    def _stderr(self, message: str, severity: int | None = None) -> None:
        prefix = f"{self.tag}: "
        if severity is not None and severity <= WARNING:
            prefix += f"{_LEVEL_NAMES.get(severity, 'error')}: "
        try:
            sys.stderr.write(prefix + message + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    def log(self, severity: int, message: str) -> None:
        """Send ``message`` at ``severity``; mirror it to stderr when asked."""
        if severity == DEBUG and not self.verbose:
            return
        self._send(severity, message)
        if self.mirror:
            self._stderr(message, severity)

    def notice(self, message: str) -> None:
        """A change (address assigned/removed, demotion written)."""
        self.log(NOTICE, message)

    def info(self, message: str) -> None:
        """Routine information."""
        self.log(INFO, message)

    def warning(self, message: str) -> None:
        """Something odd that was handled."""
        self.log(WARNING, message)

    def error(self, message: str) -> None:
        """A failure."""
        self.log(ERR, message)

    def debug(self, message: str) -> None:
        """Only with -v."""
        self.log(DEBUG, message)
