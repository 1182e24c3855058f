"""Shell text for questions about job directories, and the parsers of the answers.

Shared by the system's poll loop, its submit loop and the command line. Lists of job
directories always travel on the command's **stdin** (one name per line, see
:func:`dir_list`), never on its command line, so a question about 10,000 jobs is as long as
one about one job (Linux caps one ``sh -c`` argument at 128 KiB).

* :func:`marker_command` prints, for every job directory named on stdin, the marker it
  holds (final ones first). Only shell builtins run per directory: no process per job.
* :func:`event_log_command` prints what jobs appended to the run directory's event log
  (:data:`~wfl_async.jobs.layout.EVENTS`) since a byte offset, so a poll reads only what
  changed since the last one (see :mod:`wfl_async.system.poll_loop`).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import SchedulerError
from ..jobs import layout

__all__ = ["EVENTS_END", "QUEUE_END", "ROOT_OK", "EventLogRead", "dir_list", "event_log_command", "marker_command",
           "parse_event_log", "parse_markers"]

QUEUE_END = "@@wfl_async_markers@@"
"""Printed, with the status command's exit status, between the queue listing and the markers."""
EVENTS_END = "@@wfl_async_events_end@@"
"""Printed (on a line of its own, after a newline of ours) after the event log's new bytes."""
ROOT_OK = "@@wfl_async_root_ok@@"
"""Printed once the remote root was entered (a root that is gone is told from one without markers)."""
_EVENTS_SIZE = "@@wfl_async_events_size@@"


def dir_list(job_dirs: Iterable[str]) -> bytes:
    """The stdin of :func:`marker_command`: one job directory name per line.

    :raises SchedulerError: a name holds a newline (job directory names never do)
    """
    names = list(job_dirs)
    if any("\n" in d for d in names):
        raise SchedulerError(f"refusing job directory names with a newline: {[d for d in names if chr(10) in d]!r}")
    return "".join(f"{d}\n" for d in names).encode()


def marker_command(root: str, *, events_from: int | None | bool = False) -> str:
    """Shell text printing ``<state> <dir>`` for each job dir named on stdin that holds a marker.

    Enters ``root`` first and says so (:func:`parse_markers` checks it); reads the names with
    the ``read`` builtin and tests with ``[``, so no process is forked per directory.

    :param events_from: also print the event log first (:func:`event_log_command`), from this
        offset (None: its size only); False: not
    """
    events = "" if events_from is False else f"{event_log_command(None if events_from is None else int(events_from))}; "
    return (f"cd {shlex.quote(root)} && echo {ROOT_OK} && {events}while IFS= read -r d; do "
            f'if [ -e "$d/{layout.SUCCEEDED}" ]; then echo "succeeded $d"; '
            f'elif [ -e "$d/{layout.FAILED}" ]; then echo "failed $d"; '
            f'elif [ -e "$d/{layout.STARTED}" ]; then echo "started $d"; fi; done')


def parse_markers(text: str, root: str, where: str) -> dict[str, str]:
    """Job dir -> marker word, from :func:`marker_command`'s output.

    :raises SchedulerError: ``root`` could not be entered (moved or deleted: its jobs are lost)
    """
    lines = text.splitlines()
    if ROOT_OK not in lines:
        raise SchedulerError(f"{where}: cannot enter the remote job directory {root!r}; if it was moved or "
                             f"deleted, the jobs there are lost: remove them with 'wfl-async rm'")
    if EVENTS_END in lines:  # the event log's lines are parsed by parse_event_log
        lines = lines[len(lines) - lines[::-1].index(EVENTS_END):]
    return _marker_lines(lines)


def _marker_lines(lines: Iterable[str]) -> dict[str, str]:
    markers: dict[str, str] = {}
    for line in lines:
        state, _, job_dir = line.partition(" ")
        if job_dir and state in _STRENGTH:
            if _STRENGTH[state] >= _STRENGTH.get(markers.get(job_dir, ""), -1):
                markers[job_dir] = state
    return markers


_STRENGTH = {"started": 0, "failed": 1, "succeeded": 1}
"""A final marker outranks ``started`` (a log may list a job's start after its end when two
writers race); the log's last final word wins."""


def event_log_command(offset: int | None) -> str:
    """Shell text printing the event log's size, then its bytes after ``offset``, then :data:`EVENTS_END`.

    Run inside ``root`` (:func:`marker_command` includes it with ``events_from``). ``offset=None``: the size only
    (a poll's first read starts at the end: what came before is found by the marker scan).
    """
    log = shlex.quote(layout.EVENTS)
    tail = "" if offset is None else f"tail -c +{int(offset) + 1} {log} 2>/dev/null; "
    return (f"if [ -f {log} ]; then echo \"{_EVENTS_SIZE} $(wc -c < {log})\"; {tail}"
            f"else echo \"{_EVENTS_SIZE} 0\"; fi; printf '\\n%s\\n' {EVENTS_END}")


@dataclass(frozen=True)
class EventLogRead:
    """What one :func:`event_log_command` answered."""

    size: int
    """The log's size when the command looked (0: no log)."""
    consumed: int
    """Bytes of complete lines read after the offset (the next offset is the old one plus this)."""
    markers: dict[str, str]
    """Job dir -> strongest marker word the new lines name."""


def parse_event_log(data: bytes) -> EventLogRead | None:
    """Parse the part of a command's stdout that :func:`event_log_command` printed (None: not there).

    Works on bytes, so offsets stay exact whatever a garbled line holds; a last line without
    its newline (a job appending right now) is left for the next read.
    """
    head, sep, rest = data.partition(_EVENTS_SIZE.encode() + b" ")
    if not sep:
        return None
    size_text, _, rest = rest.partition(b"\n")
    body, sep, _ = rest.rpartition(b"\n" + EVENTS_END.encode())
    if not sep or not size_text.strip().isdigit():
        return None
    complete = body[:body.rfind(b"\n") + 1]
    lines = complete.decode(errors="replace").splitlines()
    return EventLogRead(int(size_text), len(complete), _marker_lines(lines))
