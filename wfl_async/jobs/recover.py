"""``wfl-async db recover``: a new jobs database from a damaged one, keeping every row still readable.

sqlite files get damaged the ways files do: cut short (a full disk, a copy interrupted),
pages overwritten (a bad disk, two hosts writing over NFS), or their ``-wal`` lost (copied
without it). sqlite's own ``.recover`` needs a shell built with it and failed on such a file
("SQL logic error"), so this reads the ``jobs`` table row by row range instead: a range that
cannot be read is halved until only its damaged rows are skipped.

Nothing that matters is lost with a row: every job's remote directory keeps its submit answer
and its markers, so the next run of the same workflow re-attaches to a forgotten job that is
queued or finished instead of submitting it again. The damaged files are kept next to the
new one (``NAME.broken-TIME``, with its ``-wal``/``-shm``), never deleted.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from .database import _COLUMNS, _SCHEMA

__all__ = ["RecoverReport", "recover"]

_SIDE_FILES = ("-wal", "-shm", "-journal")


@dataclass(frozen=True)
class RecoverReport:
    """What :func:`recover` did."""

    kept: int
    """Jobs copied into the new database."""
    skipped: int
    """Rows (by rowid) that could not be read."""
    broken: Path
    """Where the damaged file now is."""
    readable: bool
    """The damaged file could be opened as a database at all."""


def recover(path: Path) -> RecoverReport:
    """Move the damaged ``path`` aside and write a new database there with every readable job.

    The caller makes sure no process has the file open (a workflow writing it meanwhile would
    write into the damaged file).
    """
    broken = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", *_SIDE_FILES):
        if Path(f"{path}{suffix}").exists():
            Path(f"{path}{suffix}").rename(f"{broken}{suffix}")
    rows, skipped, readable = _salvage(broken)
    fresh = path.with_name(f".{path.name}.recovering")
    fresh.unlink(missing_ok=True)
    with closing(sqlite3.connect(fresh, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        conn.execute("BEGIN")
        conn.executemany(f"INSERT OR IGNORE INTO jobs ({', '.join(_COLUMNS)}) VALUES "
                         f"({', '.join('?' * len(_COLUMNS))})", rows)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    fresh.chmod(0o600)
    fresh.rename(path)  # complete or not there at all
    for suffix in _SIDE_FILES:
        Path(f"{fresh}{suffix}").unlink(missing_ok=True)
    return RecoverReport(kept=len(rows), skipped=skipped, broken=broken, readable=readable)


def _salvage(path: Path) -> tuple[list[tuple[object, ...]], int, bool]:
    """Every readable row of ``jobs`` in ``path`` (read-only), the rowids skipped, whether it opened."""
    if not path.exists():
        return [], 0, False
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        top = _highest_rowid(conn)
        if top is None:
            return [], 0, False
        rows: list[tuple[object, ...]] = []
        skipped = 0
        for low, high, good in _ranges(conn, 1, top + 1):
            if good is None:
                skipped += high - low
            else:
                rows.extend(good)
    return rows, skipped, True


def _highest_rowid(conn: sqlite3.Connection) -> int | None:
    """The table's highest rowid, else the one an index still knows (the table's pages may be
    damaged where the index's are not); None when neither can be read."""
    for sql in ("SELECT max(rowid) FROM jobs", "SELECT max(rowid) FROM jobs INDEXED BY jobs_status"):
        try:
            return int(conn.execute(sql).fetchone()[0] or 0)
        except sqlite3.DatabaseError:
            continue
    return None


def _ranges(conn: sqlite3.Connection, low: int, high: int) -> Iterator[tuple[int, int, list[tuple[object, ...]] | None]]:
    """``(low, high, rows)`` for rowids ``[low, high)``: rows read, or None for a single damaged rowid."""
    try:
        yield low, high, conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE rowid >= ? AND rowid < ?",
                                      (low, high)).fetchall()
    except sqlite3.DatabaseError:
        if high - low <= 1:
            yield low, high, None
            return
        middle = (low + high) // 2
        yield from _ranges(conn, low, middle)
        yield from _ranges(conn, middle, high)
