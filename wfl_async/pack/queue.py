"""The remote queue of packed chunks: its layout, the shell text that changes it, the listing parser.

Under the remote root (where the chunks' job directories are)::

    _wfl_async_pack/<pack id>/todo/<job dir>            a chunk waiting for a worker
    _wfl_async_pack/<pack id>/retry/<job dir>           a chunk given back (its worker died, or it did not fit)
    _wfl_async_pack/<pack id>/taken/<job dir>@<worker>  a chunk a worker took (atomic rename)
    _wfl_async_pack/<pack id>/gone/<job dir>            a chunk that left the queue unrun (dropped, unqueued)
    _wfl_async_pack/<pack id>/slots/<n>                 the index: the chunks queued by one command, in order
    _wfl_async_pack/<pack id>/head, tail                hints: where workers look next, the last slot
    _wfl_async_pack/<pack id>/workers/<worker>/         a worker job's own directory

A pack id names the worker job script (resources, environment, commands), so chunks of
any call with the same script share workers, and a rerun finds its queue again. A chunk is
in exactly one of: ``todo``, ``retry``, ``taken``, ``gone``, finished (its final marker), and
moves between them by one rename, so enqueueing is idempotent without a lock (an entry is
created only for a chunk in none of them) and of several workers renaming the same entry
exactly one wins.

Workers find entries through the **index**, not by listing ``todo``: each enqueue command
writes one immutable file ``slots/<n>`` (``n`` = 0, 1, 2, ... with no gap: a slot is created
by an exclusive ``ln``, so two enqueuers never share a number) holding the running total of
names indexed so far and the names it queued. A worker reads the next slot and renames the
named entries it finds (:mod:`.claims`): its claim costs the same at 100 or 100,000 queued.
The ``retry`` directory, small (put-backs are rare), is looked at before the index.

A **survey** (:func:`listing_command`) reads what stays small whatever is queued: the totals
(names indexed, names workers have passed, from the first line of two slots), ``retry``,
``taken`` (at most one entry per worker), ``gone`` and the workers. A chunk of a listed pack
is queued unless it is taken or gone: its state is looked up on demand
(:class:`ChunkStates`), not listed. Each time a dead worker's chunk is put back, a line is
appended to its entry; a chunk put back :data:`MAX_TAKES` times is dropped by the next worker
(it kills its workers: the driver calls it died). Pure functions, no I/O; imports only the floor layer.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field

from ..jobs import layout
from ..jobs.states import QueueState

__all__ = ["EXITED", "GONE", "HEAD", "HEAD_FORMAT", "JOB_ID", "KEPT", "LISTING_END", "MAX_TAKES",
           "NAMES_PER_COMMAND", "PACK_ROOT", "RETRY", "SLOTS", "TAIL", "TAKEN", "TAKEN_BACK", "TODO", "WORKERS",
           "ChunkStates", "PackListing", "PackQueue", "chunk_remote_id", "enqueue_command", "listing_command",
           "moved_by", "pack_id", "parse_chunk_remote_id", "parse_listing", "prune_gone_command", "queue_dir",
           "requeue_command", "take_back_command", "unqueue_command", "worker_dir"]

PACK_ROOT = "_wfl_async_pack"
"""Directory under the remote root holding every pack's queue."""
TODO, RETRY, TAKEN, GONE, SLOTS, WORKERS = "todo", "retry", "taken", "gone", "slots", "workers"
HEAD = "head"
"""Hint file: ``<slot> <index>``, the index position workers look at next (written by workers)."""
HEAD_FORMAT = "{:12d} {:9d}\n"
"""The hint's one line, always the same length (overwritten in place); blank-padded, as the shell
reads numbers with leading zeros as octal."""
TAIL = "tail"
"""Hint file: a slot number at most the next free one (written by enqueue commands)."""
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
    state in a survey (:class:`ChunkStates`). Nothing reads a chunk's pack from it: the jobs database
    records each job's route and pack id."""
    return f"{_REMOTE_ID_PREFIX}{pid}:{job_dir}"


def parse_chunk_remote_id(remote_id: str) -> tuple[str, str] | None:
    """``(pack id, job dir)`` of a :func:`chunk_remote_id`; None for any other id (a scheduler's)."""
    if not remote_id.startswith(_REMOTE_ID_PREFIX):
        return None
    pid, sep, job_dir = remote_id[len(_REMOTE_ID_PREFIX):].partition(":")
    return (pid, job_dir) if sep and pid and job_dir else None


def _final_test(chunk: str) -> str:
    return " || ".join(f'[ -e {chunk}/{name} ]' for name in layout.FINAL_MARKERS)


def enqueue_command(pid: str, job_dirs: Sequence[str]) -> str:
    """Shell text, run in the remote root, putting each chunk not yet queued, taken or finished in ``todo``
    and indexing them in one new slot.

    Prints ``N <job dir>`` for each chunk now queued, ``E <job dir>`` for one that was already
    queued, taken or finished (a rerun's, or a repeat of this command), and only once the slot
    is written: a command cut short prints nothing and is repeated. Safe to repeat after a
    dropped connection: a second run finds each chunk where the first left it, and indexes
    again a chunk still in ``todo`` (one the cut command may have queued but not indexed; a
    name indexed twice is skipped by the worker whose rename fails).
    """
    q = shlex.quote(queue_dir(pid))
    dirs = " ".join(shlex.quote(d) for d in job_dirs)
    finished = _final_test('"$d"')
    return (f"mkdir -p {q}/{TODO} {q}/{RETRY} {q}/{TAKEN} {q}/{GONE} {q}/{SLOTS} {q}/{WORKERS} && "
            f"names=$(mktemp {q}/.enqueue.XXXXXX) && answer=\"$names.answer\" && : > \"$answer\" && for d in {dirs}; do "
            f'set -- {q}/{TAKEN}/"$d"@*; '
            f'if {finished} || [ -e {q}/{RETRY}/"$d" ] || [ -e "$1" ]; then echo "E $d" >> "$answer" || exit 1; '
            f'elif [ -e {q}/{TODO}/"$d" ]; then {{ echo "$d" >> "$names" && echo "E $d" >> "$answer"; }} || exit 1; '
            f'else {{ {{ [ ! -e {q}/{GONE}/"$d" ] || rm -f {q}/{GONE}/"$d"; }} && : > {q}/{TODO}/"$d" && echo "$d" >> "$names" && echo "N $d" >> "$answer"; }} '
            f'|| exit 1; fi; done && {_publish_slot(q)} && cat "$answer" && rm -f "$names" "$answer"')


def _publish_slot(q: str) -> str:
    """Shell text writing ``$names`` (one per line) as the next free slot, with the running total first.

    The slot is created by ``ln`` (atomic, fails if the number is taken): of two enqueuers
    racing for a number one wins, the other takes the next. Starts at the ``tail`` hint (never
    past the first free number); a failure other than a taken number stops the command.
    """
    return (f'if [ -s "$names" ]; then n=$(cat {q}/{TAIL} 2>/dev/null) ; case $n in ""|*[!0-9]*) n=0 ;; esac; '
            f"slot=$(mktemp {q}/.slot.XXXXXX) && k=$(wc -l < \"$names\") && "
            f"while :; do while [ -e {q}/{SLOTS}/$n ]; do n=$((n + 1)); done; before=0; "
            f"if [ $n -gt 0 ]; then read -r before < {q}/{SLOTS}/$((n - 1)) || exit 1; fi; "
            f'{{ echo $((before + k)); cat "$names"; }} > "$slot" || exit 1; '
            f'ln "$slot" {q}/{SLOTS}/$n 2>/dev/null && break; [ -e {q}/{SLOTS}/$n ] || exit 1; done && '
            f'rm -f "$slot" && echo $((n + 1)) > "$slot.tail" && mv -f "$slot.tail" {q}/{TAIL}; fi')


def listing_command(root: str) -> str:
    """Shell text listing every pack by what stays small: totals, given-back, taken and gone chunks, workers.

    Lines: ``P <pack id>``, ``C <names indexed> <names workers passed>``, ``R <job dir>``,
    ``T <job dir>@<worker>``, ``G <job dir>``, ``W <worker> <its own queue id or -> <submit
    answer on one line>`` (workers that exited of their own accord are left out), then
    :data:`LISTING_END`. The chunks waiting in ``todo`` are not listed: the answer's size does
    not grow with them. Reads only (the poll runs it); forks no program per chunk.
    """
    total = (f'n=$(cat "$p/{TAIL}" 2>/dev/null); case $n in ""|*[!0-9]*) n=0 ;; esac; '
             f'while [ -e "$p/{SLOTS}/$n" ]; do n=$((n + 1)); done; total=0; '
             f'[ $n -gt 0 ] && read -r total < "$p/{SLOTS}/$((n - 1))"; '
             f'read -r hs hi < "$p/{HEAD}" 2>/dev/null || {{ hs=0; hi=0; }}; passed=$hi; '
             f'[ "$hs" -gt 0 ] 2>/dev/null && read -r before < "$p/{SLOTS}/$((hs - 1))" && passed=$((before + hi)); '
             f'echo "C $total $passed"; ')
    return (f"( cd {shlex.quote(root)} 2>/dev/null && cd {PACK_ROOT} 2>/dev/null && for p in *; do "
            f"[ -d \"$p/{SLOTS}\" ] || continue; echo \"P $p\"; {total}"
            f'for f in "$p"/{RETRY}/*; do [ -e "$f" ] && echo "R ${{f##*/}}"; done; '
            f'for f in "$p"/{TAKEN}/*; do [ -e "$f" ] && echo "T ${{f##*/}}"; done; '
            f'for f in "$p"/{GONE}/*; do [ -e "$f" ] && echo "G ${{f##*/}}"; done; '
            f'for w in "$p"/{WORKERS}/*; do [ -d "$w" ] && [ ! -e "$w/{EXITED}" ] && '
            f'echo "W ${{w##*/}} $(head -c 100 "$w/{JOB_ID}" 2>/dev/null | tr -d \' \\n\' | grep . || echo -) '
            f'$(tr \'\\n\' \' \' < "$w/{layout.SUBMIT_ANSWER}" 2>/dev/null)"; done; done; '
            f"true ); echo {LISTING_END}")


@dataclass
class PackQueue:
    """One pack's queue as listed."""

    indexed: int = 0
    """Names written to the index so far (a chunk queued again counts again)."""
    passed: int = 0
    """Names of the index workers have gone past (taken, or found gone), as their hint says."""
    retry: set[str] = field(default_factory=set)
    """Chunks given back (a dead worker's, or one that did not fit a worker's time), waiting."""
    taken: dict[str, str] = field(default_factory=dict)
    """Job dir -> the worker that took it."""
    gone: set[str] = field(default_factory=set)
    """Chunks that left the queue without running to their end (dropped by a worker, unqueued)."""
    workers: dict[str, str] = field(default_factory=dict)
    """Worker -> its submit answer (exit status, then the scheduler's output), one line."""
    own_ids: dict[str, str] = field(default_factory=dict)
    """Worker -> the queue id it found in its environment (only once it has started)."""

    @property
    def queued(self) -> int:
        """Chunks waiting for a worker: the index's names no worker has reached yet, plus those given back.

        An upper estimate: a name indexed twice (a repeated enqueue command), or unqueued and not
        yet passed, counts until a worker goes past it.
        """
        return max(0, self.indexed - self.passed) + len(self.retry)

    def state(self, job_dir: str) -> QueueState | None:
        """A chunk of this pack: running if taken, None if gone, else queued (see the module docstring)."""
        if job_dir in self.taken:
            return QueueState.RUNNING
        return None if job_dir in self.gone else QueueState.QUEUED


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
        rest = rest.strip()
        if kind == "P" and rest:
            current = listing.packs.setdefault(rest, PackQueue())
        elif current is None or not rest:
            continue
        elif kind == "C":
            numbers = rest.split()
            if len(numbers) == 2 and all(n.isdigit() for n in numbers):
                current.indexed, current.passed = int(numbers[0]), int(numbers[1])
        elif kind == "R":
            current.retry.add(rest)
        elif kind == "T":
            job_dir, _, worker = rest.rpartition("@")
            if job_dir:
                current.taken[job_dir] = worker
        elif kind == "G":
            current.gone.add(rest)
        elif kind == "W":
            worker, _, rest = rest.partition(" ")
            own_id, _, answer = rest.partition(" ")
            current.workers[worker] = answer.strip()
            if own_id not in ("", "-"):
                current.own_ids[worker] = own_id
    return listing


class ChunkStates(MutableMapping[str, QueueState]):
    """The scheduler's states by remote id, and every packed chunk's of a listing (:func:`chunk_remote_id`), on demand.

    A chunk of a listed pack is queued unless the listing has it taken (running) or gone (not
    there): looking one up costs the same whatever is queued, and nothing is built per queued
    chunk. Iterating names the scheduler's jobs and the chunks listed taken only (the queued
    ones are not listed); a state set here (the poll's accounting) goes with the scheduler's.
    """

    def __init__(self, listing: PackListing, scheduler: dict[str, QueueState]) -> None:
        self.listing = listing
        self.scheduler = scheduler

    def __getitem__(self, remote_id: str) -> QueueState:
        if remote_id in self.scheduler:
            return self.scheduler[remote_id]
        parsed = parse_chunk_remote_id(remote_id)
        queue = self.listing.packs.get(parsed[0]) if parsed else None
        state = queue.state(parsed[1]) if queue is not None and parsed else None
        if state is None:
            raise KeyError(remote_id)
        return state

    def __setitem__(self, remote_id: str, state: QueueState) -> None:
        self.scheduler[remote_id] = state

    def __delitem__(self, remote_id: str) -> None:
        del self.scheduler[remote_id]

    def __iter__(self) -> Iterator[str]:
        yield from self.scheduler
        yield from (chunk_remote_id(pid, job_dir) for pid, queue in self.listing.packs.items()
                    for job_dir in queue.taken)

    def __len__(self) -> int:
        return len(self.scheduler) + sum(len(queue.taken) for queue in self.listing.packs.values())


def unqueue_command(pid: str, job_dirs: Sequence[str]) -> str:
    """Shell text, run in the remote root: take each of ``job_dirs`` out of pack ``pid``'s queue (into ``gone``).

    A chunk a worker has taken is left to finish (a worker runs its chunk to the end). Keep
    ``job_dirs`` to a few hundred: the names are on the command line.
    """
    q = shlex.quote(queue_dir(pid))
    lines = [f"for s in {TODO} {RETRY}; do [ -e {q}/$s/{d} ] && mv -f {q}/$s/{d} {q}/{GONE}/{d}; done"
             for d in (shlex.quote(d) for d in job_dirs)]
    return f"mkdir -p {q}/{GONE} && {{ {' ; '.join(lines)} ; }} ; true" if lines else "true"


def prune_gone_command(pid: str, job_dirs: Sequence[str]) -> str:
    """Shell text, run in the remote root: remove the ``gone`` entries of ``job_dirs`` (chunks recorded as
    ended: no run watches them again), so the survey's answer does not grow with every chunk that ever
    left the queue unrun. Repeated, it finds nothing more to do. Keep ``job_dirs`` to a few hundred."""
    q = shlex.quote(queue_dir(pid))
    return f"cd {q}/{GONE} 2>/dev/null && rm -f -- {' '.join(shlex.quote(d) for d in job_dirs)} ; true" \
        if job_dirs else "true"


TAKEN_BACK, KEPT = "B", "K"
"""What :func:`take_back_command` prints: the chunk is out of the queue for good, or a worker has it."""
MOVED = "moved"
"""Beside ``todo`` and ``taken``: entries taken back (no worker or listing looks there)."""


def take_back_command(pid: str, job_dir: str) -> str:
    """Shell text, run in the remote root: take ``job_dir``'s entry out of pack ``pid``'s ``todo`` (or
    ``retry``, where a dead worker's chunk waits) so that no worker ever runs it (placement moves the
    chunk to another system).

    The entry is renamed into ``moved/``: one rename, atomic, and a worker's claim renames the same
    entry, so exactly one of them wins (a worker reading the index skips a name no longer in ``todo``). Prints :data:`TAKEN_BACK` when the entry is in ``moved/``
    (by this command, or by an earlier one cut off with its connection: the answer repeats),
    :data:`KEPT` when it is not (a worker took it, or it finished): the chunk stays. Kept here,
    beside the queue's layout, because that layout may change.
    """
    q = shlex.quote(queue_dir(pid))
    d = shlex.quote(job_dir)
    return (f"mkdir -p {q}/{MOVED} && {{ mv -- {q}/{TODO}/{d} {q}/{MOVED}/{d} 2>/dev/null || "
            f"mv -- {q}/{RETRY}/{d} {q}/{MOVED}/{d} 2>/dev/null; "
            f"if [ -e {q}/{MOVED}/{d} ]; then echo {TAKEN_BACK}; else echo {KEPT}; fi; }}")


def requeue_command(pid: str, dead: Iterable[tuple[str, str]], workers: Iterable[str],
                    dropped: Iterable[tuple[str, str]] = ()) -> str:
    """Shell text, run in the remote root: give the chunks of dead workers back (into ``retry``), retire the workers.

    ``dead`` holds ``(job dir, worker)`` of each taken entry; ``dropped`` those that leave the
    queue instead (into ``gone``: killed with their worker at its limit, escalated by the driver,
    :mod:`.kills`). A chunk that reached its final marker meanwhile is only unlisted, never queued
    again (it ran to completion once). Each entry moves by one rename: repeated, the command finds
    nothing more to do. It prints ``retry`` or ``gone`` for each entry it moved (:func:`moved_by`):
    a listing older than an earlier requeue names the same entry again, which the command then
    finds gone, so only what it printed was put back.
    """
    q = shlex.quote(queue_dir(pid))
    lines = []
    for (job_dir, worker), into in [*((t, RETRY) for t in dead), *((t, GONE) for t in dropped)]:
        d, entry = shlex.quote(job_dir), f"{q}/{TAKEN}/{shlex.quote(f'{job_dir}@{worker}')}"
        lines.append(f"if [ -e {entry} ]; then if {_final_test(d)}; then rm -f {entry}; "
                     f"else echo {shlex.quote(worker)} >> {entry} && mv -f {entry} {q}/{into}/{d} && echo {into}; fi; fi")
    lines.extend(f"mkdir -p {q}/{WORKERS}/{shlex.quote(w)} && : > {q}/{WORKERS}/{shlex.quote(w)}/{EXITED}"
                 for w in workers)
    return f"mkdir -p {q}/{RETRY} {q}/{GONE} ; " + " ; ".join(lines) if lines else "true"


def moved_by(answer: str) -> tuple[int, int]:
    """Entries a :func:`requeue_command` moved, from its output: (put back, dropped)."""
    words = answer.split()
    return words.count(RETRY), words.count(GONE)
