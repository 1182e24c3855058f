"""A queue listing read as what changed since the last one, for schedulers that list a job per line.

A poll lists every job of the user (the scheduler cannot be asked about ids reliably: Slurm's
``squeue --jobs`` fails whole when one id was purged), so at 10^3 jobs the listing is 10^3
lines, nearly all as they were a poll ago. :class:`ListingDiff` keeps the last listing's lines
and parses only the new ones (a set difference of lines, done in C), and says which job ids
changed, so the poll loop looks only at those jobs (:mod:`.poll_loop`).
"""

from __future__ import annotations

from ..jobs.states import QueueState
from ..scheduler.base import Scheduler

__all__ = ["ListingDiff"]


class ListingDiff:
    """The last listing of one remote root's poll, line by line (one per poll loop and root).

    Only for a scheduler whose listing names each job on a line of its own, independently of the
    other lines (:attr:`Scheduler.listing_by_line <wfl_async.scheduler.base.Scheduler.listing_by_line>`);
    for any other every listing is parsed whole and reported as all changed.
    """

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self._lines: dict[str, dict[str, QueueState]] = {}
        """Each line of the last listing -> the states it names."""
        self._states: dict[str, QueueState] = {}
        self._valid = False
        """The last listing was read: the next one is told as changes from it."""

    def parse(self, text: str) -> tuple[dict[str, QueueState], set[str] | None]:
        """Every job's state in listing ``text`` (a new dict: callers may add to it), and the ids whose
        line is new or gone since the last listing (None: any may have changed)."""
        if not self.scheduler.listing_by_line:
            return self.scheduler.parse_status_output(text), None
        lines = set(text.splitlines())
        old = self._lines
        changed: set[str] = set()
        for line in old.keys() - lines:
            gone = old.pop(line)
            changed.update(gone)
            for job_id in gone:
                self._states.pop(job_id, None)
        for line in lines - old.keys():
            parsed = old[line] = self.scheduler.parse_status_output(line)
            changed.update(parsed)
            self._states.update(parsed)
        valid, self._valid = self._valid, True
        return dict(self._states), changed if valid else None

    def lost(self) -> None:
        """The scheduler did not answer: the next listing is reported as all changed."""
        self._valid = False
