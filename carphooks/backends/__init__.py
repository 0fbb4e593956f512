"""OS backends: pick one by name or by what the platform supports."""

from __future__ import annotations

from carphooks.backends.base import Backend
from carphooks.errors import ConfigError
from carphooks.runner import Runner
from carphooks.state import StateDir


def get_backend(name: str, runner: Runner, state: StateDir) -> Backend:
    """The backend called ``name`` (``auto``: the first one this platform supports)."""
    from carphooks.backends.freebsd import FreeBSDBackend
    from carphooks.backends.linux import LinuxBackend

    classes: dict[str, type[Backend]] = {"freebsd": FreeBSDBackend, "linux": LinuxBackend}
    if name == "auto":
        for cls in classes.values():
            if cls.is_supported():
                return cls(runner, state)
        raise ConfigError("backend = \"auto\": no backend supports this platform")
    if name not in classes:
        raise ConfigError(f"unknown backend {name!r}")
    return classes[name](runner, state)
