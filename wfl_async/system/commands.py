"""Shell text for questions about job directories, and the parsers of the answers.

Shared by the system's poller and the command line: one command prints, for every job
directory asked about, the marker it holds (final ones first).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from ..errors import SchedulerError
from ..jobs import layout

__all__ = ["QUEUE_END", "marker_command", "parse_markers"]

QUEUE_END = "@@wfl_async_markers@@"
"""Printed, with the status command's exit status, between the queue listing and the markers."""
_ROOT_OK = "@@wfl_async_root_ok@@"


def marker_command(root: str, job_dirs: Sequence[str]) -> str:
    """Shell text printing ``<state> <dir>`` for each job dir holding a marker (final ones first)."""
    dirs = " ".join(shlex.quote(d) for d in job_dirs)
    return (f"cd {shlex.quote(root)} && echo {_ROOT_OK} && for d in {dirs}; do "
            f'if [ -e "$d/{layout.SUCCEEDED}" ]; then echo "succeeded $d"; '
            f'elif [ -e "$d/{layout.FAILED}" ]; then echo "failed $d"; '
            f'elif [ -e "$d/{layout.STARTED}" ]; then echo "started $d"; fi; done')


def parse_markers(text: str, root: str, where: str) -> dict[str, str]:
    lines = text.splitlines()
    if _ROOT_OK not in lines:
        raise SchedulerError(f"{where}: cannot enter the remote job directory {root!r}; if it was moved or "
                             f"deleted, the jobs there are lost: remove them with 'wfl-async rm'")
    markers: dict[str, str] = {}
    for line in lines:
        state, _, job_dir = line.partition(" ")
        if job_dir:
            markers[job_dir] = state
    return markers
