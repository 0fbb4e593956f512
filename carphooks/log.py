"""Syslog over a unix datagram socket (what ``logger -t TAG`` does), mirrored to stderr.

Changes go out at ``user.notice``, failures at ``user.err``. When the socket is
missing the message still reaches stderr, with one warning that syslog is down.
"""

from __future__ import annotations

import os
import socket
import sys
import time

LOG_USER = 1
EMERG, ALERT, CRIT, ERR, WARNING, NOTICE, INFO, DEBUG = range(8)
_LEVEL_NAMES = {ERR: "error", WARNING: "warning", NOTICE: "notice", INFO: "info", DEBUG: "debug"}


class Log:
    """A tiny syslog client; one instance per process."""

    def __init__(self, tag: str, socket_path: str, *, mirror: bool | None = None,
                 verbose: bool = False) -> None:
        self.tag = tag
        self.socket_path = socket_path
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
        packet = f"<{LOG_USER * 8 + severity}>{stamp} {self.tag}[{os.getpid()}]: {message}"
        data = packet.encode("utf-8", "replace")
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
