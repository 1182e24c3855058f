"""Finding real processes from /proc, to inject faults into them at the right moment (by pid, never by name)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def command_env(pid: int) -> str:
    """``$WFL_ASYNC_COMMAND`` of process ``pid``: the driver's command it runs for (asyncssh's shell session)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return ""
    found = [e for e in environ if e.startswith(b"WFL_ASYNC_COMMAND=")]
    return found[0].split(b"=", 1)[1].decode(errors="replace") if found else ""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for_process(match: Callable[[list[str]], bool], timeout: float = 120.0,
                     stop: Callable[[], bool] = lambda: False) -> int | None:
    """The pid of the first process whose argv ``match`` accepts; None if ``stop()`` or the timeout comes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop():
        for entry in Path("/proc").glob("[0-9]*"):
            argv = cmdline(int(entry.name))
            if argv and match(argv):
                return int(entry.name)
        time.sleep(0.01)
    return None


def parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def ancestor(pid: int, match: Callable[[int], bool]) -> int | None:
    """The nearest ancestor of ``pid`` that ``match`` accepts."""
    pid = parent(pid)
    while pid > 1:
        if match(pid):
            return pid
        pid = parent(pid)
    return None


_HOLD_WRITE_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def hold_sqlite_write_lock(path: Path, seconds: float) -> subprocess.Popen[bytes]:
    """Another process holding ``path``'s write transaction for ``seconds``; returns once it holds it."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_WRITE_LOCK, str(path), str(seconds)],
                              stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline().strip() == b"holding"
    return holder


def kill_during(proc: subprocess.Popen[bytes], phase: list[str], rng: random.Random, within: float = 0.3) -> str:
    """SIGKILL ``proc`` a random moment (0 to ``within`` s) after a process whose argv holds all of ``phase`` starts.

    :returns: ``"during"`` (that process still ran when ``proc`` was killed), ``"after"``, or
        ``"finished first"`` (``proc`` ended before such a process was seen)
    """
    pid = wait_for_process(lambda argv: all(any(p in a for a in argv) for p in phase), timeout=120,
                           stop=lambda: proc.poll() is not None)
    if pid is None:
        return "finished first"
    threading.Event().wait(rng.uniform(0, within))
    during = alive(pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return "during" if during else "after"


def kill_then_rerun(first: subprocess.Popen[bytes], command: list[str], *, env: dict[str, str], cwd: Path,
                    output: Path) -> subprocess.CompletedProcess[bytes]:
    """Kill -9 a workflow process mid-call (its output not written yet), run the same command again,
    and return the rerun, which must succeed (the restart tests of packing and self-tuning)."""
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert not output.exists()
    rerun = subprocess.run(command, env=env, cwd=cwd, capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
    return rerun


def writes_of(command: str, cwd: Path | None = None) -> list[tuple[float, bytes]]:
    """What ``command`` writes to its stdout, read by read as it comes (a pipe: one read a write when
    the writes are apart), each with the time it came, from the start."""
    start = time.monotonic()
    process = subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE, cwd=cwd)
    assert process.stdout is not None
    writes = []
    while chunk := os.read(process.stdout.fileno(), 65536):
        writes.append((time.monotonic() - start, chunk))
    assert process.wait() == 0
    return writes
