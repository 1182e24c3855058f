"""The remote queue of packed chunks: its layout, the shell text that changes it, the listing parser.

Under the remote root (where the chunks' job directories are)::

    _wfl_async_pack/<pack id>/todo/<job dir>           a chunk waiting for a worker
    _wfl_async_pack/<pack id>/taken/<job dir>@<worker>  a chunk a worker took (atomic rename)
    _wfl_async_pack/<pack id>/workers/<worker>/         a worker job's own directory

A pack id names the worker job script (resources, environment, commands), so chunks of
any call with the same script share workers, and a rerun finds its queue again. A chunk is
in exactly one of: ``todo``, ``taken``, finished (its final marker), so enqueueing is
idempotent without a lock: an entry is created only for a chunk in none of them. Each time a
dead worker's chunk is put back, a line is appended to its entry; a chunk put back
:data:`MAX_TAKES` times is dropped by the next worker (it kills its workers: the driver calls
it died). Pure functions, no I/O; imports only the floor layer.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..jobs import layout

__all__ = ["EXITED", "JOB_ID", "LISTING_END", "MAX_TAKES", "PACK_ROOT", "PackListing", "chunk_remote_id", "enqueue_command",
           "NAMES_PER_COMMAND", "listing_command", "pack_id", "take_back_command", "TAKEN_BACK", "KEPT", "unqueue_command", "parse_listing", "queue_dir", "requeue_command",
           "worker_dir"]

PACK_ROOT = "_wfl_async_pack"
"""Directory under the remote root holding every pack's queue."""
TODO, TAKEN, WORKERS = "todo", "taken", "workers"
EXITED = "_wfl_async_pack_exited"
"""Written in a worker's directory when it exits of its own accord."""
JOB_ID = "_wfl_async_pack_job_id"
"""Written by a worker as it starts: its own queue id, as the scheduler told it."""
MAX_TAKES = 3
"""A chunk whose workers died this many times while running it is not run again."""
LISTING_END = "@@wfl_async_pack_end@@"
NAMES_PER_COMMAND = 300
"""Job directory names one command of this module may carry (about 60 bytes each: well under
the transport's limit on a command's length)."""
_REMOTE_ID_PREFIX = "pack:"


def pack_id(script_spec: object) -> str:
    """The id of the worker job script described by ``script_spec`` (JSON-able)."""
    return hashlib.sha256(json.dumps(script_spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def queue_dir(pid: str) -> str:
    """The pack's queue directory, relative to the remote root."""
    return f"{PACK_ROOT}/{pid}"


def worker_dir(pid: str, worker: str) -> str:
    """A worker job's directory, relative to the remote root."""
    return f"{PACK_ROOT}/{pid}/{WORKERS}/{worker}"


def chunk_remote_id(pid: str, job_dir: str) -> str:
    """What a packed chunk records as its remote id (it is no scheduler job of its own): the key of its
    state in a survey (:mod:`.listings`). Nothing reads a chunk's pack from it: the jobs database
    records each job's route and pack id."""
    return f"{_REMOTE_ID_PREFIX}{pid}:{job_dir}"


def _final_test(chunk: str) -> str:
    return " || ".join(f'[ -e {chunk}/{name} ]' for name in layout.FINAL_MARKERS)


def enqueue_command(pid: str, job_dirs: Sequence[str]) -> str:
    """Shell text, run in the remote root, putting each chunk not yet queued, taken or finished in ``todo``.

    Prints ``N <job dir>`` for each chunk now queued, ``E <job dir>`` for one that was already
    queued, taken or finished (a rerun's, or a repeat of this command). Safe to
    repeat after a dropped connection: a second run finds each chunk where the first left it.
    """
    q = shlex.quote(queue_dir(pid))
    dirs = " ".join(shlex.quote(d) for d in job_dirs)
    finished = _final_test('"$d"')
    return (f"mkdir -p {q}/{TODO} {q}/{TAKEN} {q}/{WORKERS} && for d in {dirs}; do "
            f'set -- {q}/{TAKEN}/"$d"@*; '
            f'if {finished} || [ -e {q}/{TODO}/"$d" ] || [ -e "$1" ]; then echo "E $d"; '
            f'else : > {q}/{TODO}/"$d" && echo "N $d" || exit 1; fi; done')


def listing_command(root: str) -> str:
    """Shell text listing every pack: queued and taken chunks, live workers.

    Lines: ``P <pack id>``, ``Q <job dir>``, ``T <job dir>@<worker>``, ``W <worker> <its own
    queue id or -> <submit answer on one line>`` (workers that exited of their own accord are left out), then
    :data:`LISTING_END`. Reads only (the poll runs it).
    """
    return (f"( cd {shlex.quote(root)} 2>/dev/null && cd {PACK_ROOT} 2>/dev/null && for p in *; do [ -d \"$p/{TODO}\" ] || continue; echo \"P $p\"; "
            f'for f in "$p"/{TODO}/*; do [ -e "$f" ] && echo "Q ${{f##*/}}"; done; '
            f'for f in "$p"/{TAKEN}/*; do [ -e "$f" ] && echo "T ${{f##*/}}"; done; '
            f'for w in "$p"/{WORKERS}/*; do [ -d "$w" ] && [ ! -e "$w/{EXITED}" ] && '
            f'echo "W ${{w##*/}} $(head -c 100 "$w/{JOB_ID}" 2>/dev/null | tr -d \' \\n\' | grep . || echo -) '
            f'$(tr \'\\n\' \' \' < "$w/{layout.SUBMIT_ANSWER}" 2>/dev/null)"; done; done; '
            f"true ); echo {LISTING_END}")


@dataclass
class PackQueue:
    """One pack's queue as listed."""

    queued: set[str] = field(default_factory=set)
    taken: dict[str, str] = field(default_factory=dict)
    """Job dir -> the worker that took it."""
    workers: dict[str, str] = field(default_factory=dict)
    """Worker -> its submit answer (exit status, then the scheduler's output), one line."""
    own_ids: dict[str, str] = field(default_factory=dict)
    """Worker -> the queue id it found in its environment (only once it has started)."""


@dataclass
class PackListing:
    """Every pack's queue under one remote root."""

    packs: dict[str, PackQueue] = field(default_factory=dict)


def parse_listing(text: str) -> PackListing:
    """The listing printed by :func:`listing_command` (up to :data:`LISTING_END`)."""
    listing = PackListing()
    current: PackQueue | None = None
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "P" and rest:
            current = listing.packs.setdefault(rest.strip(), PackQueue())
        elif current is None or not rest:
            continue
        elif kind == "Q":
            current.queued.add(rest.strip())
        elif kind == "T":
            job_dir, _, worker = rest.strip().rpartition("@")
            if job_dir:
                current.taken[job_dir] = worker
        elif kind == "W":
            worker, _, rest = rest.partition(" ")
            own_id, _, answer = rest.partition(" ")
            current.workers[worker] = answer.strip()
            if own_id not in ("", "-"):
                current.own_ids[worker] = own_id
    return listing


def unqueue_command(pid: str, job_dirs: Sequence[str]) -> str:
    """Shell text, run in the remote root: take each of ``job_dirs`` out of pack ``pid``'s ``todo``.

    A chunk a worker has taken is left to finish (a worker runs its chunk to the end). Keep
    ``job_dirs`` to a few hundred: the names are on the command line.
    """
    names = " ".join(shlex.quote(d) for d in job_dirs)
    return f"cd {shlex.quote(queue_dir(pid))}/{TODO} 2>/dev/null && rm -f -- {names}; true" if names else "true"


TAKEN_BACK, KEPT = "B", "K"
"""What :func:`take_back_command` prints: the chunk is out of the queue for good, or a worker has it."""
MOVED = "moved"
"""Beside ``todo`` and ``taken``: entries taken back (no worker or listing looks there)."""


def take_back_command(pid: str, job_dir: str) -> str:
    """Shell text, run in the remote root: take ``job_dir``'s entry out of pack ``pid``'s ``todo`` so
    that no worker ever runs it (placement moves the chunk to another system).

    The entry is renamed into ``moved/``: one rename, atomic, and a worker's claim renames the same
    entry, so exactly one of them wins. Prints :data:`TAKEN_BACK` when the entry is in ``moved/``
    (by this command, or by an earlier one cut off with its connection: the answer repeats),
    :data:`KEPT` when it is not (a worker took it, or it finished): the chunk stays. Kept here,
    beside the queue's layout, because that layout may change.
    """
    q = shlex.quote(queue_dir(pid))
    d = shlex.quote(job_dir)
    return (f"mkdir -p {q}/{MOVED} && {{ mv -- {q}/{TODO}/{d} {q}/{MOVED}/{d} 2>/dev/null; "
            f"if [ -e {q}/{MOVED}/{d} ]; then echo {TAKEN_BACK}; else echo {KEPT}; fi; }}")


def requeue_command(pid: str, dead: Iterable[tuple[str, str]], workers: Iterable[str]) -> str:
    """Shell text, run in the remote root: put the chunks of dead workers back, retire the workers.

    ``dead`` holds ``(job dir, worker)`` of each taken entry; a chunk that reached its final
    marker meanwhile is only unlisted, never queued again (it ran to completion once).
    """
    q = shlex.quote(queue_dir(pid))
    lines = []
    for job_dir, worker in dead:
        d, entry = shlex.quote(job_dir), f"{q}/{TAKEN}/{shlex.quote(f'{job_dir}@{worker}')}"
        lines.append(f"if [ -e {entry} ]; then if {_final_test(d)}; then rm -f {entry}; "
                     f"else echo {shlex.quote(worker)} >> {entry} && mv -f {entry} {q}/{TODO}/{d}; fi; fi")
    lines.extend(f"mkdir -p {q}/{WORKERS}/{shlex.quote(w)} && : > {q}/{WORKERS}/{shlex.quote(w)}/{EXITED}"
                 for w in workers)
    return " ; ".join(lines) if lines else "true"
