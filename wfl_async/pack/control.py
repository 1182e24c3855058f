"""Cancelling packed chunks: they are no scheduler jobs, so ``scancel`` cannot take them.

A packed chunk still waiting in its pack's queue is taken out of it (one command for all);
one a worker is running is left to finish, since a worker runs its chunk to the end (its
worker job can be cancelled like any job). The command line's ``cancel`` uses this.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .queue import NAMES_PER_COMMAND, parse_chunk_remote_id, unqueue_command

if TYPE_CHECKING:
    from ..system import System

__all__ = ["cancel_packed"]


async def cancel_packed(system: System, root: str, remote_ids: Sequence[str]) -> list[str]:
    """Take the packed chunks among ``remote_ids`` out of their queues; return the other ids.

    :raises TransportError: a command could not run
    """
    by_pack: dict[str, list[str]] = {}
    for rid in remote_ids:
        parsed = parse_chunk_remote_id(rid)
        if parsed is not None:
            by_pack.setdefault(parsed[0], []).append(parsed[1])
    for pid, job_dirs in by_pack.items():
        for start in range(0, len(job_dirs), NAMES_PER_COMMAND):
            await system.transport.run(
                f"cd {shlex.quote(root)} && {unqueue_command(pid, job_dirs[start:start + NAMES_PER_COMMAND])}",
                kind="cancel", retry=True)
    return [rid for rid in remote_ids if parse_chunk_remote_id(rid) is None]
