"""One configured machine: transport + scheduler + partitions + run directory.

The system turns many concurrent job coroutines into few remote round trips:

* **submit batching** — the first job ready to submit waits for others while they keep
  arriving (``batch_window`` at a time, at most ``max_batch_wait``), then one command unpacks every staged directory (a single tar stream) and submits every
  job script; later arrivals form the next batch.
* **coalesced polling** — one waiting job at a time is the *poll leader*: per interval it
  runs one command that lists the user's queue and which job directories hold a marker,
  then fetches every job that finished in one tar stream. When the leader's own job is
  done it steps down and another waiter takes over, so results stream out as jobs finish
  and there is never a background task to clean up.

A job missing from the queue is not done until its marker says so; without a marker it
is called died after ``died_grace_seconds``.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from ..config.expyre_modules import expyre_module
from ..config.system_config import SystemConfig
from ..errors import ConfigurationError, RemoteCommandError, SchedulerError, TransportError
from ..jobs import layout
from ..scheduler.base import JobScriptSpec, Scheduler
from ..scheduler.states import ACTIVE_STATES, QueueState
from ..transport.base import Transport
from .requests import JobOutcome, QueueSurvey, SubmitRequest, Watch

__all__ = ["System"]

log = logging.getLogger(__name__)

_MARKER_SEP = "@@wfl_async_markers@@"
_MAX_BATCH = 300
"""Job directories per submit/poll command: keeps the command line well under ARG_MAX."""

ProgressCallback = Callable[[Sequence[Watch]], Awaitable[None]]


class System:
    """A machine jobs run on. Shared by every coroutine using it; see the module docstring."""

    def __init__(self, config: SystemConfig, transport: Transport, scheduler: Scheduler, project: str, *,
                 batch_window: float = 0.05, max_batch_wait: float = 1.0) -> None:
        self.config = config
        self.transport = transport
        self.scheduler = scheduler
        self.project = project
        self.batch_window = batch_window
        self.max_batch_wait = max_batch_wait
        self.on_progress: ProgressCallback | None = None
        self.stats = {"submit_commands": 0, "poll_commands": 0, "fetch_commands": 0, "scheduler_calls": 0}
        self._remote_root: str | None = None
        self._root_lock = anyio.Lock()
        self._pending: list[SubmitRequest] = []
        self._submit_lock = anyio.Lock()
        self._watches: dict[str, Watch] = {}
        self._leader = False
        self._last_poll = -float("inf")
        """When the last poll ended (monotonic); the next is due one interval later."""
        self._changed = anyio.Condition()

    def __repr__(self) -> str:
        return (f"<System {self.config.name} [{self.config.scheduler} via {self.transport.where} | "
                f"pending submit: {len(self._pending)} | watched: {len(self._watches)}]>")

    @property
    def name(self) -> str:
        return self.config.name

    def watched_count(self) -> int:
        """Jobs submitted and not yet seen to finish."""
        return len(self._watches)

    def running_count(self) -> int:
        """Watched jobs whose worker has started."""
        return sum(1 for w in self._watches.values() if w.started)

    # ------------------------------------------------------------------ resources
    def select_partition(self, resources: dict[str, Any], *, exact_fit: bool = True,
                         partial_node: bool = False) -> tuple[str, dict[str, int], int]:
        """Partition, node counts and max time (s) for ``resources`` (ExPyRe ``Resources`` keys).

        :raises ConfigurationError: the resources are malformed or no partition fits them
        """
        resources_cls = expyre_module("resources").Resources
        try:
            res = resources_cls(**resources)
            partition, node_dict = res.find_nodes(self.config.partitions, exact_fit=exact_fit,
                                                  partial_node=partial_node)
        except TypeError as exc:
            raise ConfigurationError(f"bad resources {resources!r} for system {self.name!r}: {exc}. Valid keys: "
                                     f"max_time, num_nodes or num_cores, max_mem_tot or max_mem_per_core, "
                                     f"partitions") from exc
        except (RuntimeError, ValueError) as exc:
            raise ConfigurationError(
                f"no partition of system {self.name!r} fits resources {resources!r} "
                f"(exact_fit={exact_fit}, partial_node={partial_node}): {exc}. Partitions: "
                f"{ {k: {kk: v.get(kk) for kk in ('num_cores', 'max_time', 'max_mem')} for k, v in self.config.partitions.items()} }. "
                f"Ask for fewer cores/time/memory, set partial_node=True, or exact_fit=False.") from exc
        spec = self.config.partitions[partition]
        max_time = res.max_time if res.max_time is not None else (spec.get("max_time") or 24 * 3600)
        return spec.get("partition", partition), node_dict, int(max_time)

    # ------------------------------------------------------------------ paths
    async def remote_root(self) -> str:
        """Absolute directory holding this project's job directories (created on first use)."""
        async with self._root_lock:
            if self._remote_root is None:
                rundir = self.config.rundir or ("run_wfl_async" if self.config.host else "~/.wfl_async/run")
                if rundir.startswith("~/"):
                    rundir = rundir[2:]
                target = f"{rundir.rstrip('/')}/{self.project}"
                result = await self.transport.run(f"mkdir -p {shlex.quote(target)} && cd {shlex.quote(target)} && pwd -P")
                self._remote_root = result.stdout.decode().strip().splitlines()[-1]
            return self._remote_root

    def _scheduler_prefix(self) -> str:
        """``pre_submit_cmds`` run before every scheduler command (submit, status, cancel)."""
        return "".join(f"{cmd} && " for cmd in self.config.pre_submit_cmds)

    # ------------------------------------------------------------------ submit
    async def submit(self, request: SubmitRequest, local_root: Path) -> str:
        """Stage and submit one job as part of the next batch; return its queue id.

        :raises SchedulerError: the scheduler refused this job
        :raises TransportError: the batch could not be sent
        """
        self._pending.append(request)
        async with self._submit_lock:
            if not request.done.is_set():
                await self._gather_batch()
                batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
                try:
                    await self._submit_batch(batch, local_root)
                except BaseException as exc:
                    for item in batch:
                        if not item.done.is_set():
                            item.error = exc if isinstance(exc, Exception) else TransportError(str(exc))
                            item.done.set()
                    raise
        await request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.remote_id is not None
        return request.remote_id

    async def _gather_batch(self) -> None:
        """Wait while jobs keep arriving (each ``batch_window`` brought more), at most ``max_batch_wait``.

        Jobs of one call become ready one after another (each is claimed in the database
        first), so a fixed window would cut a 200-job call into several batches.
        """
        waited, seen = 0.0, -1
        while len(self._pending) != seen and len(self._pending) < _MAX_BATCH and waited < self.max_batch_wait:
            seen = len(self._pending)
            await anyio.sleep(self.batch_window)
            waited += self.batch_window

    async def _submit_batch(self, batch: list[SubmitRequest], local_root: Path) -> None:
        root = await self.remote_root()
        uploads: list[str] = []
        for item in batch:
            spec = JobScriptSpec(
                job_id=item.job_name, job_dir=f"{root}/{item.job_dir}", partition=item.partition,
                num_nodes=item.node_dict["num_nodes"], num_cores=item.node_dict["num_cores"],
                num_cores_per_node=item.node_dict["num_cores_per_node"], max_time=item.max_time,
                header=[*self.config.header, *item.header_extra], commands=[*self.config.commands, *item.body],
                no_default_header=self.config.no_default_header, script_exec=self.config.script_exec)
            script = self.scheduler.render_script(spec)
            await anyio.Path(local_root / item.job_dir / self.scheduler.script_name).write_text(script)
            uploads.extend([*item.upload, f"{item.job_dir}/{self.scheduler.script_name}"])
        submit = self.scheduler.submit_command([f"{root}/{item.job_dir}" for item in batch])
        self.stats["submit_commands"] += 1
        self.stats["scheduler_calls"] += 1
        resets = [shlex.quote(f"{root}/{item.job_dir}") for item in batch if item.reset]
        result = await self.transport.upload(local_root, uploads, root,
                                             before=f"rm -rf -- {' '.join(resets)}" if resets else "",
                                             then=f"{{ {self._scheduler_prefix()}{submit}; }}")
        parsed = self.scheduler.parse_submit_output(result.stdout.decode(errors="replace"), len(batch))
        for item, outcome in zip(batch, parsed, strict=True):
            if outcome.remote_id is None:
                item.error = SchedulerError(f"{self.name}: submitting job {item.job_name!r} ({item.job_dir}) "
                                            f"failed: {outcome.error}")
            item.remote_id = outcome.remote_id
            item.done.set()

    # ------------------------------------------------------------------ wait
    def poll_interval(self) -> float:
        intervals = [w.check_interval for w in self._watches.values()]
        return max(0.2, min(intervals)) if intervals else 1.0

    async def wait(self, watch: Watch) -> JobOutcome:
        """Wait until ``watch``'s job has a final marker (its files fetched) or has died.

        Cancellation (including a caller's timeout) leaves the job queued and resumable.
        """
        self._watches[watch.job_dir] = watch
        try:
            while watch.outcome is None:
                if not self._leader:
                    self._leader = True
                    try:
                        await self._lead(watch)
                    finally:
                        self._leader = False
                        async with self._changed:
                            self._changed.notify_all()
                else:
                    async with self._changed:
                        if watch.outcome is None and self._leader:
                            await self._changed.wait()
            return watch.outcome
        finally:
            self._watches.pop(watch.job_dir, None)

    async def _lead(self, own: Watch) -> None:
        while own.outcome is None:
            # a waiter taking over from a leader whose job just finished waits out the interval
            # its predecessor began: one status command per interval, whoever leads
            due = self._last_poll + self.poll_interval() - time.monotonic()
            if due > 0:
                await anyio.sleep(due)
            try:
                changed = await self._poll_once()
            except (TransportError, SchedulerError) as exc:
                log.warning("%s: polling failed (%s); retrying", self.name, exc)
                changed = []
            finally:
                self._last_poll = time.monotonic()
            if changed:
                if self.on_progress is not None:
                    await self.on_progress(changed)
                async with self._changed:
                    self._changed.notify_all()

    async def survey(self, job_dirs: Sequence[str], root: str | None = None) -> QueueSurvey:
        """In ONE command: the scheduler's listing of the user's jobs, and the markers in ``job_dirs``.

        :param root: remote directory holding ``job_dirs`` (default: this project's)
        :raises SchedulerError: ``root`` cannot be entered (the jobs' directories are gone)
        """
        root = root or await self.remote_root()
        command = (f"( {self._scheduler_prefix()}{self.scheduler.status_command()} ) 2>&1; "
                   f"echo \"{_MARKER_SEP} $?\"; {_marker_command(root, job_dirs)}")
        self.stats["scheduler_calls"] += 1
        result = await self.transport.run(command, check=False)
        queue_text, _, rest = result.stdout.decode(errors="replace").partition(_MARKER_SEP)
        status_rc, _, marker_text = rest.partition("\n")
        if status_rc.strip() != "0":
            log.warning("%s: status command failed: %s", self.name, queue_text.strip()[-500:])
            states = None
        else:
            states = self.scheduler.parse_status_output(queue_text)
        return QueueSurvey(states, queue_text, _parse_markers(marker_text, root, self.name))

    async def _poll_once(self) -> list[Watch]:
        """One status round trip for every watched job, then one fetch for the finished ones."""
        root = await self.remote_root()
        watches = [w for w in self._watches.values() if w.outcome is None][:_MAX_BATCH * 10]
        if not watches:
            return []
        self.stats["poll_commands"] += 1
        found = await self.survey([w.job_dir for w in watches], root)
        queue_ok = found.states is not None
        queue = found.states or {}
        markers = found.markers

        finished: list[Watch] = []
        changed: list[Watch] = []
        now = time.monotonic()
        for watch in watches:
            marker = markers.get(watch.job_dir)
            if marker in ("succeeded", "failed"):
                finished.append(watch)
                continue
            if marker == "started" and not watch.started:
                watch.started = True
                changed.append(watch)
            state = queue.get(watch.remote_id or "")
            if state in ACTIVE_STATES or not queue_ok:
                watch.missing_since = None
                continue
            # gone from the queue (or ended there) without a final marker: grace period, then died
            if watch.missing_since is None:
                watch.missing_since = now
            elif now - watch.missing_since > self.config.died_grace_seconds:
                watch.outcome = JobOutcome(None, state, f"job {watch.remote_id} left the queue of {self.name} "
                                           f"({state.value if state else 'no longer listed'}) without a final "
                                           f"marker for {self.config.died_grace_seconds:.0f} s")
                changed.append(watch)
        if finished:
            await self._fetch(root, finished, markers)
            changed.extend(finished)
        return changed

    async def _fetch(self, root: str, finished: list[Watch], markers: dict[str, str]) -> None:
        by_local_root: dict[Path, list[Watch]] = {}
        for watch in finished:
            by_local_root.setdefault(watch.local_root, []).append(watch)
        for local_root, group in by_local_root.items():
            paths = [f"{w.job_dir}/{name}" for w in group for name in
                     (layout.RESULT, layout.WORKER_LOG, *w.fetch)]
            self.stats["fetch_commands"] += 1
            await self.transport.download(root, paths, local_root)
        for watch in finished:
            watch.outcome = JobOutcome(markers[watch.job_dir], QueueState.FINISHED)

    # ------------------------------------------------------------------ control
    async def control(self, action: str, remote_ids: Sequence[str]) -> None:
        """Cancel, hold or release jobs in one scheduler command."""
        if not remote_ids:
            return
        builders = {"cancel": self.scheduler.cancel_command, "hold": self.scheduler.hold_command,
                    "release": self.scheduler.release_command}
        self.stats["scheduler_calls"] += 1
        try:
            await self.transport.run(f"{self._scheduler_prefix()}{builders[action](list(remote_ids))}")
        except RemoteCommandError as exc:
            raise SchedulerError(f"{self.name}: {action} of {list(remote_ids)} failed: {exc}") from exc

    async def queue_states(self) -> dict[str, QueueState]:
        """The scheduler's view of every job of this user (one command)."""
        self.stats["scheduler_calls"] += 1
        result = await self.transport.run(f"{self._scheduler_prefix()}{self.scheduler.status_command()}")
        return self.scheduler.parse_status_output(result.stdout.decode(errors="replace"))

    async def markers(self, job_dirs: Sequence[str], root: str | None = None) -> dict[str, str]:
        """Which of ``job_dirs`` hold a started/final marker (one command)."""
        if not job_dirs:
            return {}
        root = root or await self.remote_root()
        result = await self.transport.run(_marker_command(root, job_dirs))
        return _parse_markers(result.stdout.decode(errors="replace"), root, self.name)

    async def remove_dirs(self, job_dirs: Sequence[str]) -> None:
        """Delete job directories on the system (one command)."""
        if not job_dirs:
            return
        root = await self.remote_root()
        await self.transport.run(f"cd {shlex.quote(root)} && rm -rf -- "
                                 + " ".join(shlex.quote(d) for d in job_dirs))


_ROOT_OK = "@@wfl_async_root_ok@@"


def _marker_command(root: str, job_dirs: Sequence[str]) -> str:
    """Shell text printing ``<state> <dir>`` for each job dir holding a marker (final ones first)."""
    dirs = " ".join(shlex.quote(d) for d in job_dirs)
    return (f"cd {shlex.quote(root)} && echo {_ROOT_OK} && for d in {dirs}; do "
            f'if [ -e "$d/{layout.SUCCEEDED}" ]; then echo "succeeded $d"; '
            f'elif [ -e "$d/{layout.FAILED}" ]; then echo "failed $d"; '
            f'elif [ -e "$d/{layout.STARTED}" ]; then echo "started $d"; fi; done')


def _parse_markers(text: str, root: str, where: str) -> dict[str, str]:
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
