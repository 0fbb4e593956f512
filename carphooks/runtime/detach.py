"""Run slow work in a detached grandchild so the hook returns to devd/tinc/ucarp at once."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from carphooks.log import Log

DETACH_ENV = "CARPHOOKS_NO_DETACH"  # set to 1 to run the work inline (debugging)


def spawn(work: Callable[[], None], log: Log) -> None:
    """Double-fork, detach from the caller's session and stdio, run ``work``."""
    if os.environ.get(DETACH_ENV) == "1":
        work()
        return
    try:
        pid = os.fork()
    except OSError as exc:
        log.warning(f"cannot fork for announcements: {exc.strerror}")
        return
    if pid:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        return
    code = 0
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        log.reopen()
        log.mirror = False
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.closerange(3, 1024)  # the state lock and the caller's pipes
        work()
    except BaseException as exc:  # the child must never return into the caller's code
        with contextlib.suppress(BaseException):
            log.error(f"announcer failed: {exc}")
        code = 1
    finally:
        os._exit(code)
