"""OS backends: pick one by name or by what the platform supports."""

from __future__ import annotations

import sys
from pathlib import Path

from carphooks.backends.base import Backend
from carphooks.errors import ConfigError
from carphooks.runner import Runner
from carphooks.state import StateDir


def get_backend(name: str, runner: Runner, state: StateDir,
                demotion_file: Path | None = None) -> Backend:
    """The backend called ``name`` (``auto``: the first one this platform supports)."""
    if name == "auto":
        name = "freebsd" if sys.platform.startswith("freebsd") else (
            "linux" if sys.platform.startswith("linux") else "")
        if not name:
            raise ConfigError(f"backend = \"auto\": no backend supports {sys.platform}")
    cls: type[Backend]
    if name == "freebsd":  # import only the backend in use (hooks start cold)
        from carphooks.backends.freebsd import FreeBSDBackend as cls
    elif name == "linux":
        from carphooks.backends.linux import LinuxBackend as cls
    else:
        raise ConfigError(f"unknown backend {name!r}")
    return cls(runner, state, demotion_file)
