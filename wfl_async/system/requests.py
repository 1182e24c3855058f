"""What the job layer hands a system: one job to stage and submit, one job to watch.

Both are plain data: the system's loops settle them (each carries its own completion
event, so a waiting job is woken only for itself).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..jobs.ended import EndCause
from ..jobs.job_files import JobFiles
from ..jobs.route import RouteKind
from ..jobs.states import Marker, Phase, QueueState, WatchState
from .commands import EventLogRead

__all__ = ["JobOutcome", "QueueSurvey", "Settled", "SubmitRequest", "Watch"]


class Settled:
    """Set once, awaited by one waiter: a watched job's wake-up.

    A few dozen bytes where an :class:`anyio.Event` costs about 800 (its asyncio event keeps a
    deque of waiters): with 10^5 chunks watched at once that was most of a watch's memory.
    """

    __slots__ = ("_future", "_set", "_then")

    def __init__(self) -> None:
        self._set = False
        self._future: asyncio.Future[None] | None = None
        self._then: Callable[[], None] | None = None

    def set(self) -> None:
        self._set = True
        if self._future is not None and not self._future.done():
            self._future.set_result(None)
        if self._then is not None:
            then, self._then = self._then, None
            then()

    def then(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (which must not block) once set, at once if it is: a wait that holds no
        coroutine (:class:`wfl_async.job.JobWaiter`: 10^5 chunks waiting)."""
        if self._set:
            callback()
        else:
            self._then = callback

    def forget(self) -> None:
        """Drop the callback given to :meth:`then` (its waiter gave up: nothing of it is kept)."""
        self._then = None

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        """Return once set (at once if it is); a cancelled waiter stops waiting, nothing else changes."""
        if self._set:
            return
        if self._future is None or self._future.done():
            self._future = asyncio.get_running_loop().create_future()
        await self._future


@dataclass(eq=False)
class SubmitRequest:
    """A staged job directory waiting for the next submit batch."""

    job_dir: str
    """Directory name, the same under the local stage root and the remote root."""
    job_name: str
    partition: str
    node_dict: dict[str, int]
    max_time: int
    header_extra: Sequence[str]
    body: Sequence[str]
    """Job script lines after the system's own ``commands``."""
    upload: Sequence[str]
    """Paths relative to ``local_root`` to copy (the job's task and input files)."""
    local_root: Path
    """The local stage root holding ``upload``."""
    contents: Mapping[str, bytes] = field(default_factory=dict)
    """More files to copy, by their bytes (relpath -> bytes): a packed chunk's small task is staged
    from memory, with no local file (packing uploads them; the submit loop does not)."""
    key: str = ""
    reset: bool = False
    """Remove the job's remote directory first (a job created afresh after it failed or died)."""
    done: Settled = field(default_factory=Settled)
    """Set by the loop that settles it (its one waiter is :meth:`settled`; no anyio event per chunk)."""
    remote_id: str | None = None
    error: BaseException | None = None
    attempts: int = 0
    """Submissions tried that met a transient scheduler error."""
    release_lock: bool = False
    """The previous submission of this job is known not to have queued it: try again."""
    submit: str | None = None
    """``"array"`` or ``"loop"``: the call's choice of how to submit (None: the system's ``submit``)."""
    route: RouteKind = RouteKind.DIRECT
    """How the job runs, recorded with its submission."""
    pack_id: str | None = None
    """The pack a packed chunk is queued in (recorded with its submission)."""
    mem_kb: int | None = None
    """Memory to ask the scheduler for (kB, all its nodes); None: none (its default)."""

    def fail(self, error: BaseException) -> None:
        """Settle it with ``error`` (raised to its waiter): it was not queued."""
        self.error = error
        self.done.set()

    async def settled(self) -> str:
        """Wait until the loop that took this request settles it; its queue id, or its error raised."""
        await self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.remote_id is not None
        return self.remote_id


@dataclass(slots=True)
class JobOutcome:
    """How a watched job ended, as the poll loop saw it."""

    marker: Marker | None
    """Final marker found, or None when the job died."""
    cause: EndCause | None = field(default=None, kw_only=True)
    """Why it died, where the scheduler's accounting told (keyword only: the others go by position)."""
    queue_state: QueueState | None = None
    message: str = ""
    error: BaseException | None = None
    """Raised to its waiter: the job finished but its files could not be brought back for good (a
    full local disk), or the loop watching it stopped (a bug); either way the job is left as it
    is remotely, for a rerun."""
    files: JobFiles | None = None
    """Its fetched files, when they came in a bundle (:mod:`~wfl_async.jobs.fetched`): read from
    memory, dropped with the outcome once its waiter has the result."""


@dataclass(eq=False, slots=True)
class Watch:
    """A submitted job the poll loop keeps an eye on (slots: 10^5 of them may be watched at once)."""

    job_dir: str
    remote_id: str | None
    fetch: Sequence[str]
    """Files (relative to the job directory) to bring back once it has a final marker."""
    local_root: Path
    check_interval: float
    key: str = ""
    remote_root: str | None = None
    """The remote root the job was submitted under (None: the system's current one)."""
    outcome: JobOutcome | None = None
    """How it ended (set by the poll loop as it leaves :attr:`Phase.WATCHED <wfl_async.jobs.states.Phase>`)."""
    state: WatchState = field(default_factory=WatchState)
    """Its phase and timing in the poll loop, moved by :func:`~wfl_async.jobs.states.observe`."""
    max_time: float | None = None
    """Its time limit (s): the queue is listed at the base interval from then on, so a job the
    scheduler kills at its limit is seen in its TIMEOUT state (listed only briefly) before it goes."""
    watched_at: float | None = None
    """``time.time()`` when the poll loop took it (its polls can only look for it from then on)."""
    done: Settled = field(default_factory=Settled)
    abandoned: bool = False
    """Its waiter was cancelled: the poll loop forgets it."""
    on_abandon: Callable[[Watch], None] | None = None
    """Set by the poll loop that took it: told when its waiter gives up, so that a poll finds the
    abandoned watches without a pass over every watch."""
    in_window: bool = True
    """The job is a scheduler job of its own, so it takes room in the queue window
    (``max_queued_jobs``); a packed chunk is not (its worker job is counted instead)."""
    bundled: bool = False
    """Its finished files are kept in the fetched batch's one bundle file, not one file each
    (:mod:`~wfl_async.jobs.fetched`: every job with no output files of its own, packed or not)."""
    recorded_succeeded: bool = False
    """Its jobs database record says it succeeded (an earlier run saw its final marker) and its files
    are not here (a rerun whose local results were removed): the poll loop fetches it at once, with no
    look at its markers first. The fetch brings the final marker back with the result and checks it as
    any fetch does; a directory without one is looked at as any watched job."""

    @property
    def phase(self) -> Phase:
        return self.state.phase

    @property
    def started(self) -> bool:
        """The poll loop has seen it started."""
        return self.state.started

    def abandon(self) -> None:
        """Its waiter gave up: the poll loop forgets it (the job stays as it is), and it wakes nobody."""
        self.abandoned = True
        self.done.forget()
        if self.on_abandon is not None:
            self.on_abandon(self)

    def result(self) -> JobOutcome:
        """How it ended, once :attr:`done`; raises the error that ended its wait instead (see :attr:`JobOutcome.error`)."""
        assert self.outcome is not None
        if self.outcome.error is not None:
            raise self.outcome.error
        return self.outcome


@dataclass
class QueueSurvey:
    """One system's answer, in one command, about the queue and a set of job directories."""

    states: MutableMapping[str, QueueState] | None
    """Remote id -> state of every job of the user the scheduler lists; None if it did not answer."""
    queue_output: str
    """What the status command printed (for error messages)."""
    markers: dict[str, str]
    """Job dir -> ``succeeded``/``failed``/``started`` for those holding a marker."""
    events: EventLogRead | None = None
    """What the run's event log gained since the offset asked for (None: not asked)."""
    changed: set[str] | None = None
    """Ids whose listing line is new or gone since the root's last listing (None: any may have changed)."""
