"""Count the processes a command forks, with ``strace -f -e trace=process`` when present."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

STRACE = shutil.which("strace")
_LINE = re.compile(r"^(?P<pid>\d+)\s+(?:<\.\.\. (?P<resumed>\w+) resumed>|(?P<call>\w+)\()"
                   r"(?P<rest>.*)$")
_RET = re.compile(r"=\s+(-?\d+)(?:\s|$)")


def count_processes(argv: Sequence[str], env: dict[str, str]) -> dict[str, object]:
    """{"tool", "processes", "execs", "threads", "programs"} for one run of ``argv``.

    ``processes`` counts the command itself plus every fork/vfork/clone without
    CLONE_THREAD (detached grandchildren included); ``execs`` successful execve
    calls; ``programs`` the basenames executed, in order.
    """
    if STRACE is None:
        return {"tool": "none (strace missing)"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "trace"
        subprocess.run([STRACE, "-f", "-qq", "-s", "200", "-o", str(out), "-e",
                        "trace=process", *argv], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, timeout=600,
                       check=False)
        text = out.read_text(errors="replace")
    pending: dict[str, str] = {}
    processes = 1
    threads = 0
    execs = 0
    programs: list[str] = []
    for raw in text.splitlines():
        m = _LINE.match(raw)
        if m is None:
            continue
        pid, rest = m["pid"], m["rest"]
        if m["call"] is not None:
            call = m["call"]
            if rest.endswith("<unfinished ...>"):
                pending[pid] = call + "(" + rest
                continue
            line = call + "(" + rest
        else:
            line = pending.pop(pid, str(m["resumed"]) + "(") + rest
        name = line.split("(", 1)[0]
        ret = _RET.search(line.rsplit(")", 1)[-1] if ")" in line else line)
        ok = ret is not None and int(ret.group(1)) >= 0
        if name in ("clone", "clone3", "fork", "vfork") and ok:
            if "CLONE_THREAD" in line:
                threads += 1
            else:
                processes += 1
        elif name == "execve" and ret is not None and int(ret.group(1)) == 0:
            execs += 1
            prog = re.match(r'execve\("([^"]*)"', line)
            if prog:
                programs.append(Path(prog.group(1)).name)
    return {"tool": "strace -f -e trace=process", "processes": processes, "execs": execs,
            "threads": threads, "programs": programs}
