"""The queue window of one system: at most ``max_queued_jobs`` of this driver's jobs in the queue.

Sites cap how many jobs a user may have queued (Slurm's ``MaxSubmitJobs``, "at most 100 jobs
per user"); a submission past the cap is refused, and a workflow of thousands of chunks would
spend its time being refused. So the submit loop takes room in the window before it sends a
job, and the room is given back when the job has ended (the poll loop saw its final marker,
or saw it die), when its submission failed for good, or when its waiter gave up on it. Jobs
that do not fit wait locally (shown as *waiting* by the progress display).

The window counts *keys*, one per queued job: a job directory for an ordinary job; an array
submission of k tasks takes k keys (see :meth:`SubmitRequest.window_keys
<wfl_async.system.requests.SubmitRequest.window_keys>`), a packed worker job one. A job that
this driver did not submit but re-attached to (queued by an earlier run) takes its key when it
is first watched, even past the cap: it is in the queue already.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio

__all__ = ["QueueWindow"]


class QueueWindow:
    """Room for ``limit`` queued jobs (None: unlimited). Used by one system's two loops."""

    def __init__(self, limit: int | None) -> None:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"max_queued_jobs must be a positive integer or null, not {limit!r}")
        self.limit = limit
        self._held: set[str] = set()
        self._changed = anyio.Event()
        self.peak = 0
        """The most keys held at once (for tests and the benchmark)."""

    @property
    def used(self) -> int:
        return len(self._held)

    def full(self) -> bool:
        return self.limit is not None and len(self._held) >= self.limit

    def fits(self, keys: Sequence[str]) -> bool:
        """Whether ``keys`` can be taken now. More keys than the whole window fit an empty window
        (an array bigger than the cap is sent alone rather than never)."""
        new = [k for k in keys if k not in self._held]
        if self.limit is None or not new:
            return True
        return len(self._held) + len(new) <= self.limit or not self._held

    def try_take(self, keys: Sequence[str]) -> bool:
        """Take ``keys`` if they fit now; never waits."""
        if not self.fits(keys):
            return False
        self.hold(keys)
        return True

    async def take(self, keys: Sequence[str]) -> None:
        """Wait until ``keys`` fit, then take them."""
        while not self.try_take(keys):
            await self._changed.wait()

    def hold(self, keys: Sequence[str]) -> None:
        """Take ``keys`` whether they fit or not (jobs already in the queue)."""
        self._held.update(keys)
        self.peak = max(self.peak, len(self._held))

    def release(self, keys: Sequence[str]) -> None:
        """Give ``keys`` back (unknown ones are ignored) and wake whoever waits for room."""
        if any(k in self._held for k in keys):
            self._held.difference_update(keys)
            self._changed.set()
            self._changed = anyio.Event()
