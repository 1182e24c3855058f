"""``db unlock`` and ``db repair``: get a jobs database out of trouble, or say why not.

sqlite recovers by itself from a writer killed mid-transaction (the next connection rolls
the hot journal back, or replays the WAL). What can really be stuck is:

* a **live** process holding the write lock (a hung workflow): nothing can safely break
  that lock, so ``unlock`` names the processes that have the file open;
* an oversized WAL file after many crashes: ``PRAGMA wal_checkpoint(TRUNCATE)``;
* jobs left ``created`` by a submitter that died before recording the submission. A rerun
  on this host already takes those over; ``unlock`` clears their owner so that ``ls`` says
  so, and with ``--other-hosts`` also releases jobs claimed from other hosts, whose
  processes it cannot check (the only case in which a rerun would otherwise wait forever).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..jobs.database import JobStatus
from ..jobs.owner import owner_alive

__all__ = ["RepairReport", "UnlockReport", "name_list", "repair", "unlock"]


@dataclass
class UnlockReport:
    ok: bool = True
    lines: list[str] = field(default_factory=list)
    problem: str = ""


@dataclass
class RepairReport:
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    rows: int = 0


def name_list(names: Iterable[str], width: int = 100) -> str:
    """Job names as an indented list wrapped at ``width`` (80 names are not one line)."""
    return textwrap.fill(", ".join(sorted(set(names))), width=width, initial_indent="    ",
                         subsequent_indent="    ", break_on_hyphens=False)


def open_processes(path: Path) -> list[tuple[int, str]]:
    """Processes on this host with ``path`` (or its -wal/-journal) open, from ``/proc`` (Linux)."""
    targets = {str(path.resolve()) + suffix for suffix in ("", "-wal", "-journal", "-shm")}
    found: list[tuple[int, str]] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fds = list((entry / "fd").iterdir())
            if any(os.readlink(fd) in targets for fd in fds):
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                found.append((int(entry.name), cmdline[:120]))
        except OSError:
            continue
    return found


def _holders_text(path: Path) -> str:
    holders = open_processes(path)
    if not holders:
        return ("no process on this host has it open: the lock may be held from another host sharing this "
                "filesystem, or by a filesystem (NFS) lock left by a crashed client")
    return "processes with it open: " + "; ".join(f"pid {pid} ({cmd})" for pid, cmd in holders)


def unlock(path: Path, *, timeout: float = 5.0, other_hosts: bool = False) -> UnlockReport:
    """Check that the write lock can be taken, checkpoint the WAL, release abandoned ``created`` jobs."""
    report = UnlockReport()
    hot_journal = Path(f"{path}-journal").exists()
    here = socket.gethostname()
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        try:
            conn.execute("BEGIN IMMEDIATE")  # also rolls back a hot journal left by a killed writer
        except sqlite3.OperationalError as exc:
            report.ok = False
            report.problem = (
                f"the write lock of {path} is held and was not released within {timeout:g} s ({exc}); "
                f"{_holders_text(path)}. If that is a running workflow, let it finish or stop it (kill PID); a "
                f"hung one cannot be unlocked safely from outside. Then run 'wfl-async db unlock' again.")
            return report
        try:
            rows = conn.execute("SELECT key, name, owner FROM jobs WHERE status = ?",
                                (JobStatus.CREATED.value,)).fetchall()
            released, waiting = [], []
            for key, name, owner in rows:
                host = (owner or "").partition(":")[0]
                other = bool(owner) and host != here
                if not owner:
                    continue
                if (other and other_hosts) or (not other and not owner_alive(owner)):
                    released.append((key, name, owner))
                else:
                    waiting.append((key, name, owner))
            conn.executemany("UPDATE jobs SET owner = NULL, message = ? WHERE key = ? AND status = ?",
                             [(f"released by 'wfl-async db unlock' (claimed by {owner})", key,
                               JobStatus.CREATED.value) for key, _, owner in released])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        rolled_back = hot_journal and not Path(f"{path}-journal").exists()
        report.lines.append("write lock: free (took it and released it)"
                            + ("; the journal left by a killed writer was rolled back" if rolled_back else ""))
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if mode == "wal":
            busy, log_frames, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                report.lines.append(f"WAL checkpoint: {done}/{log_frames} frames copied; readers still use the "
                                    f"rest (harmless; run again when no 'wfl-async ls' or workflow is reading)")
            else:
                report.lines.append("WAL checkpoint: done, write-ahead log truncated")
        if released:
            report.lines.append(f"released {len(released)} job(s) stuck in 'created' by a submitter that is gone "
                                f"(a rerun submits them; if that submitter had already submitted them, check the "
                                f"queue for duplicates):\n{name_list(n for _, n, _ in released)}")
        for _, name, owner in waiting:
            where = "on another host (cannot check it; pass --other-hosts if no workflow runs there)" \
                if owner.partition(":")[0] != here else "and still running"
            report.lines.append(f"job {name!r} is being submitted by {owner} {where}")
        if not released and not waiting:
            report.lines.append("no job stuck in 'created'")
    finally:
        conn.close()
    return report


def repair(path: Path) -> RepairReport:
    """Run ``PRAGMA integrity_check`` read-only and check the table's shape and statuses."""
    report = RepairReport()
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        report.ok = False
        report.problems.append(f"cannot open: {exc}")
        return report
    try:
        result = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
        if result != ["ok"]:
            report.problems.extend(result)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)").fetchall()}
        if not columns:
            report.problems.append("there is no 'jobs' table")
        else:
            report.rows = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
            valid = tuple(s.value for s in JobStatus)
            bad = conn.execute(f"SELECT key, status FROM jobs WHERE status NOT IN ({', '.join('?' * len(valid))})",
                               valid).fetchall()
            report.problems.extend(f"job {key[:12]} has unknown status {status!r}" for key, status in bad)
    except sqlite3.DatabaseError as exc:
        report.problems.append(str(exc))
    finally:
        conn.close()
    report.ok = not report.problems
    return report
