"""The queue window of one system: at most ``max_queued_jobs`` of this driver's jobs in the queue.

Sites cap how many jobs a user may have queued (Slurm's ``MaxSubmitJobs``, "at most 100 jobs
per user"); a submission past the cap is refused, and a workflow of thousands of chunks would
spend its time being refused. So a job takes room in the window before it is sent, and gives
it back when it has left the queue. Jobs that do not fit wait locally (shown as *waiting* by
the progress display).

:class:`QueueWindow` is the only owner of that room; the loops only tell it what happened to
a job (its key: the job directory, one per queued job), and it decides when room is taken
and given back:

* :meth:`~QueueWindow.admit` / :meth:`~QueueWindow.try_admit`: the submit loop is about to
  send the job (waits for room / takes it only if there is room);
* :meth:`~QueueWindow.queued`: a job found in the queue already (a job re-attached to, an
  earlier run's packed worker): it counts, room or not;
* :meth:`~QueueWindow.ended`: the job finished (the poll loop saw its final marker): a job
  past its marker may still be running its last lines, and counts against the site's limit
  until the queue no longer lists it active, so its room is given back at the first queue
  listing that does not (:meth:`~QueueWindow.listed`);
* :meth:`~QueueWindow.left`: the job is gone for sure (died, refused for good, its waiter gave
  up, a packed worker that exited): its room is free at once.

Each array task is a request of its own, so an array of k tasks counts k; a packed worker job
counts one, a packed chunk none (its worker is counted).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import anyio

from ..jobs.states import ACTIVE_STATES, QueueState

__all__ = ["QueueWindow"]


class QueueWindow:
    """Room for ``limit`` queued jobs (None: unlimited). Used by one system's loops."""

    def __init__(self, limit: int | None) -> None:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"max_queued_jobs must be a positive integer or null, not {limit!r}")
        self.limit = limit
        self._held: set[str] = set()
        self._leaving: dict[str, str] = {}
        """Key -> queue id of finished jobs the queue may still list (room given back at a listing)."""
        self._changed = anyio.Event()
        self.peak = 0
        """The most keys held at once (for tests and the benchmark)."""

    @property
    def used(self) -> int:
        return len(self._held)

    def full(self) -> bool:
        return self.limit is not None and len(self._held) >= self.limit

    def leaving(self) -> bool:
        """Some finished job still holds room until a queue listing no longer has it active."""
        return bool(self._leaving)

    # ------------------------------------------------------------------ taking room
    def try_admit(self, key: str) -> bool:
        """Take room for ``key`` if there is some now (a key held already takes no more); never waits."""
        if key not in self._held and self.full():
            return False
        self.queued(key)
        return True

    async def admit(self, key: str) -> None:
        """Wait until there is room for ``key``, then take it."""
        while not self.try_admit(key):
            await self._changed.wait()

    def queued(self, key: str) -> None:
        """``key`` is in the queue already (re-attached, or an earlier run's worker): it counts, room or not."""
        self._held.add(key)
        self.peak = max(self.peak, len(self._held))

    # ------------------------------------------------------------------ giving it back
    def ended(self, key: str, remote_id: str | None) -> None:
        """``key``'s job finished; its room is given back once a listing no longer has ``remote_id`` active."""
        if key in self._held and remote_id and self.limit is not None:
            self._leaving[key] = remote_id
        else:
            self.left([key])

    def listed(self, states: Mapping[str, QueueState] | None) -> None:
        """A queue listing (None: the scheduler did not answer): finished jobs it no longer has active leave."""
        if states is None:
            return
        self.left([key for key, remote_id in self._leaving.items() if states.get(remote_id) not in ACTIVE_STATES])

    def left(self, keys: Iterable[str]) -> None:
        """``keys`` are out of the queue (unknown ones are ignored): free their room, wake whoever waits for it."""
        freed = False
        for key in keys:
            self._leaving.pop(key, None)
            if key in self._held:
                self._held.discard(key)
                freed = True
        if freed:
            self._changed.set()
            self._changed = anyio.Event()
