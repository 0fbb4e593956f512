"""What a devd event loads: ``carp-event`` imports the hook path and nothing else.

The status model, the health checks and their watch loop, the mesh view, the setup
code, click and the admin CLI serve ``carphooks``; an event (which devd waits for)
pays for none of them, nor for ``secrets``/``hashlib`` (temporary state file names)
or ``difflib`` (hints for a config with a mistake). Timings are in ``bench/``; this
checks the modules, from ``python -X importtime`` of the real console script.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import addrs, run_script
from fakebsd.control import FakeBSD

NOT_FOR_HOOKS = ("click", "carphooks.cli.admin", "carphooks.runtime.status",
                 "carphooks.runtime.health", "carphooks.runtime.watch", "carphooks.mesh",
                 "carphooks.setup", "secrets", "hashlib", "difflib", "http.client")
_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", re.MULTILINE)


def imported(stderr: str) -> set[str]:
    """The modules a ``PYTHONPROFILEIMPORTTIME=1`` run imported."""
    return set(_LINE.findall(stderr))


@pytest.mark.parametrize("state", ["MASTER", "BACKUP"])
def test_a_carp_event_imports_only_the_hook_path(bsd: FakeBSD, config: Path,
                                                  state: str) -> None:
    bsd.set_carp_state("tap0", 1, state)
    env = {**bsd.env(), "PYTHONPROFILEIMPORTTIME": "1"}
    res = run_script("carp-event", "1@tap0", state, env=env, config=config)
    assert res.code == 0, res.err[-2000:]
    held = {"203.0.113.10/24", "2001:db8:10::10/64"} & addrs(bsd, "vtnet0")
    assert held == ({"203.0.113.10/24", "2001:db8:10::10/64"} if state == "MASTER" else set())
    mods = imported(res.err)
    assert {"carphooks.runtime.actions", "carphooks.backends.freebsd"} <= mods
    extra = sorted(m for m in mods if any(m == n or m.startswith(n + ".")
                                          for n in NOT_FOR_HOOKS))
    assert extra == []
