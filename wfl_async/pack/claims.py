"""A worker's claims on its pack's queue: take the next chunk in O(1), give it back, drop it, finish it.

Runs on the cluster inside the worker (:mod:`.worker`), so it uses the standard library only.
The queue's layout is :mod:`.queue`'s. Every change of a chunk's state is ONE rename of its
entry (atomic on a POSIX filesystem, NFS included), so a claim stays exactly once however
workers race or die:

- **take** (:meth:`Claimer.claim`): first any entry in ``retry`` (small: given back), then the
  next names of the index (``slots/<n>``, read once each, from where the workers' shared
  ``head`` hint says they got to), each tried by renaming ``todo/<name>`` to
  ``taken/<name>@<worker>``. A rename that fails means another worker won that name (or it
  was unqueued, or is a name indexed twice): the next is tried. So a claim costs a few
  system calls whatever is queued, and a worker starting late skips what the others took.
  A worker killed before the rename took nothing; killed after it, its entry sits in
  ``taken`` under its name, and the driver gives it back once the worker is gone from the
  scheduler's queue (:func:`~.queue.requeue_command`, judged by :func:`~.workers.judge`).
- **release** (:meth:`Claimer.release`): give a taken chunk back, unrun (e.g. it would not fit
  the worker's time left): one rename into ``retry``, where any other worker takes it first.
  This worker does not take it again.
- **drop** (:meth:`Claimer.drop`): a chunk that must not run (its workers died
  :data:`~.queue.MAX_TAKES` times, its directory has no task) goes to ``gone``, so the driver
  sees it leave the queue and calls it died; one already finished is only unlisted.
- **done** (:meth:`Claimer.done`): after the chunk's final marker, its entry is removed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..jobs import layout
from .queue import GONE, HEAD, HEAD_FORMAT, RETRY, SLOTS, TAKEN, TODO

__all__ = ["Claim", "Claimer"]


@dataclass(frozen=True)
class Claim:
    """A chunk this worker took."""

    name: str
    """The chunk's job directory name (under the remote root)."""
    put_backs: tuple[str, ...]
    """The workers that died running it before (one line each in its entry)."""


class Claimer:
    """One worker's claims on the queue in ``queue`` (a pack's directory); see the module docstring."""

    def __init__(self, queue: Path, worker: str) -> None:
        self.queue = queue
        self.worker = worker
        self._dirs = {name: f"{queue}/{name}/" for name in (TODO, RETRY, TAKEN, SLOTS)}
        """Directory paths as strings, ready to join: a claim is a few system calls, kept cheap."""
        self._slot, self._index = 0, 0
        """Where this worker got to in the index: slot number, position among its names."""
        self._names: list[str] | None = None
        """The names of slot ``_slot`` (a slot never changes once written)."""
        self._head = f"{queue}/{HEAD}"
        self._released: set[str] = set()
        self.stats = {"renames_lost": 0, "slots_read": 0}
        """Renames another worker won, slots read: what a claim cost beyond its own rename."""

    def entry(self, name: str) -> Path:
        """The entry of a chunk this worker took."""
        return Path(self._entry(name))

    def _entry(self, name: str) -> str:
        return f"{self._dirs[TAKEN]}{name}@{self.worker}"

    def claim(self) -> Claim | None:
        """Take the next chunk (given-back ones first); None if none is waiting now."""
        while (name := self._take_given_back() or self._take_indexed()) is not None:
            try:
                with open(self._entry(name)) as entry:
                    return Claim(name, tuple(entry.read().split()))
            except FileNotFoundError:  # the driver took it back meanwhile (it thought this worker dead)
                continue
        return None

    def release(self, name: str) -> None:
        """Give a taken chunk back unrun, for another worker (one rename into ``retry``).

        For a worker that decides not to run it (it would not fit the time left): the driver
        sees it queued again, and this worker never takes it again.
        """
        self._released.add(name)
        os.rename(self.entry(name), self.queue / RETRY / name)

    def drop(self, name: str, job_dir: Path) -> None:
        """Never run a taken chunk: into ``gone`` (the driver calls it died), or only unlisted if it finished."""
        if any((job_dir / marker).exists() for marker in layout.FINAL_MARKERS):
            self.entry(name).unlink(missing_ok=True)
        else:
            os.rename(self.entry(name), self.queue / GONE / name)

    def done(self, name: str) -> None:
        """The chunk ran (its final marker is written): its entry goes."""
        try:
            os.unlink(self._entry(name))
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------------ taking
    def _take(self, source: str, name: str) -> bool:
        try:
            os.rename(source, self._entry(name))
        except FileNotFoundError:  # another worker won it (or it left the queue)
            self.stats["renames_lost"] += 1
            return False
        return True

    def _take_given_back(self) -> str | None:
        try:
            names = sorted(os.listdir(self._dirs[RETRY]))
        except FileNotFoundError:
            return None
        return next((n for n in names if not n.startswith(".") and n not in self._released
                     and self._take(self._dirs[RETRY] + n, n)), None)

    def _take_indexed(self) -> str | None:
        head = self._read_head()
        self._skip_to(head)
        try:
            while True:
                names = self._slot_names()
                if names is None:
                    return None  # the index ends here: nothing more is queued yet
                while self._index < len(names):
                    name = names[self._index]
                    self._index += 1
                    if self._take(self._dirs[TODO] + name, name):
                        return name
                self._slot, self._index, self._names = self._slot + 1, 0, None
        finally:
            if (self._slot, self._index) > head:  # also on an empty queue: a hint set back by a race heals
                self._write_head()

    def _slot_names(self) -> list[str] | None:
        if self._names is None:
            try:
                with open(f"{self._dirs[SLOTS]}{self._slot}") as slot:
                    lines = slot.read().splitlines()
            except FileNotFoundError:
                return None
            self.stats["slots_read"] += 1
            self._names = [n for n in lines[1:] if n]  # the first line is the running total
        return self._names

    def _read_head(self) -> tuple[int, int]:
        """The workers' shared position; this worker's own if the hint is missing or unreadable."""
        try:
            with open(self._head) as hint:
                slot, index = hint.read().split()
            return int(slot), int(index)
        except (FileNotFoundError, ValueError):
            return self._slot, self._index

    def _skip_to(self, position: tuple[int, int]) -> None:
        """Go to ``position`` if the other workers got further than this one."""
        if position > (self._slot, self._index):
            if position[0] != self._slot:
                self._names = None
            self._slot, self._index = position

    def _write_head(self) -> None:
        """Tell the other workers how far this one got: a hint, overwritten in place at a fixed width.

        Not by a rename over the old file: ext4 flushes a file renamed over another (10 ms
        under load, more than the rest of a claim). A late or set-back hint only costs the
        others a few lost renames.
        """
        fd = os.open(self._head, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, HEAD_FORMAT.format(self._slot, self._index).encode(), 0)
        finally:
            os.close(fd)
