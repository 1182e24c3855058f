"""Cancelling packed chunks: they are no scheduler jobs, so ``scancel`` cannot take them.

A packed chunk still waiting in its pack's queue is taken out of it (one command for all);
one a worker is running is left to finish, since a worker runs its chunk to the end (its
worker job can be cancelled like any job). The command line's ``cancel`` uses this.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..jobs.route import RouteKind
from .queue import NAMES_PER_COMMAND, unqueue_command

if TYPE_CHECKING:
    from ..jobs.database import JobRecord
    from ..system import System

__all__ = ["cancel_packed"]


async def cancel_packed(system: System, root: str, records: Sequence[JobRecord]) -> list[str]:
    """Take the packed chunks among ``records`` out of their queues; return the others' queue ids.

    :raises TransportError: a command could not run
    """
    by_pack: dict[str, list[str]] = {}
    for record in records:
        if record.route is RouteKind.PACKED and record.pack_id:
            by_pack.setdefault(record.pack_id, []).append(record.job_dir)
    for pid, job_dirs in by_pack.items():
        for start in range(0, len(job_dirs), NAMES_PER_COMMAND):
            await system.transport.run(
                f"cd {shlex.quote(root)} && {unqueue_command(pid, job_dirs[start:start + NAMES_PER_COMMAND])}",
                kind="cancel", retry=True)
    return [r.remote_id for r in records if r.remote_id and r.route is not RouteKind.PACKED]
