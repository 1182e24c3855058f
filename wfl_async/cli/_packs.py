"""``wfl-async workers``: packed chunks queued / running / done per system and pack, and workers alive.

One survey per system and remote root (the poll's own command, which carries the packs'
listing), read only: it works while a workflow runs, and changes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import anyio
from rich.table import Table

from ..errors import WflAsyncError
from ..jobs.database import JobRecord, JobStatus
from ..jobs.route import RouteKind
from ..pack.coordinator import PackSummary
from ..session import Session
from ._display import _table, plain

__all__ = ["packs_table", "survey_packs"]

_DONE = (JobStatus.SUCCEEDED, JobStatus.PROCESSED, JobStatus.CLEANED)


async def survey_packs(session: Session, records: Sequence[JobRecord]) -> tuple[list[tuple[str, PackSummary, int]],
                                                                               list[str]]:
    """``(system, pack summary, chunks done)`` for every pack holding one of ``records``, and errors."""
    done: Counter[tuple[str, str]] = Counter()
    roots: set[tuple[str, str]] = set()
    for record in records:
        if record.route is not RouteKind.PACKED or record.pack_id is None or record.remote_root is None:
            continue
        roots.add((record.system, record.remote_root))
        if record.status in _DONE:
            done[(record.system, record.pack_id)] += 1
    rows: list[tuple[str, PackSummary, int]] = []
    errors: list[str] = []

    async def one(name: str, root: str) -> None:
        try:
            system = session.system(name)
            await system.survey([], root)
        except WflAsyncError as exc:
            errors.append(f"{name}: {exc}")
            return
        rows.extend((name, summary, done[(name, summary.pack_id)])
                    for summary in session.packing(name).summary(root))

    async with anyio.create_task_group() as tasks:
        for name, root in sorted(roots):
            tasks.start_soon(one, name, root)
    return sorted(rows, key=lambda row: (row[0], row[1].pack_id)), errors


def packs_table(rows: Sequence[tuple[str, PackSummary, int]]) -> Table:
    table = _table("SYSTEM", "PACK", "QUEUED", "RUNNING", "DONE", "WORKERS ALIVE")
    for name, summary, done in rows:
        table.add_row(plain(name), summary.pack_id, str(summary.queued), str(summary.running), str(done),
                      str(summary.workers_alive))
    return table
