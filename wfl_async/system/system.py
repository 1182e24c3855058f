"""One configured machine: transport + scheduler + partitions + run directory.

The system turns many concurrent job coroutines into few remote round trips, through two
helpers that share its transport: the :class:`~.batcher.SubmitBatcher` (one command stages
and submits every job that became ready together) and the :class:`~.poller.Poller` (one
status command per interval for every outstanding job, one fetch stream for those that
finished). The system itself answers questions about its jobs in single commands.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from ..config.expyre_modules import expyre_module
from ..config.system_config import SystemConfig
from ..doctor.problems import rundir_problem
from ..errors import ConfigurationError, RemoteCommandError, SchedulerError
from ..scheduler.base import Scheduler
from ..scheduler.states import QueueState
from ..transport.base import Transport
from .batcher import SubmitBatcher
from .commands import QUEUE_END, marker_command, parse_markers
from .poller import Poller, ProgressCallback
from .requests import JobOutcome, QueueSurvey, SubmitRequest, Watch

__all__ = ["System"]

log = logging.getLogger(__name__)


class System:
    """A machine jobs run on. Shared by every coroutine using it; see the module docstring."""

    def __init__(self, config: SystemConfig, transport: Transport, scheduler: Scheduler, project: str, *,
                 batch_window: float = 0.05, max_batch_wait: float = 1.0) -> None:
        self.config = config
        self.transport = transport
        self.scheduler = scheduler
        self.project = project
        self.stats = {"submit_commands": 0, "poll_commands": 0, "fetch_commands": 0, "scheduler_calls": 0}
        self.batcher = SubmitBatcher(self, batch_window=batch_window, max_batch_wait=max_batch_wait)
        self.poller = Poller(self)
        self._remote_root: str | None = None
        self._root_lock = anyio.Lock()

    def __repr__(self) -> str:
        return (f"<System {self.config.name} [{self.config.scheduler} via {self.transport.where} | "
                f"pending submit: {self.batcher.pending_count()} | watched: {self.poller.watched_count()}]>")

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def on_progress(self) -> ProgressCallback | None:
        """Called once per poll with the jobs whose state moved (the runtime records them)."""
        return self.poller.on_progress

    @on_progress.setter
    def on_progress(self, callback: ProgressCallback | None) -> None:
        self.poller.on_progress = callback

    def watched_count(self) -> int:
        """Jobs submitted and not yet seen to finish."""
        return self.poller.watched_count()

    def running_count(self) -> int:
        """Watched jobs whose worker has started."""
        return self.poller.running_count()

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
                target = self.rundir_path()
                try:
                    result = await self.transport.run(
                        f"mkdir -p {shlex.quote(target)} && cd {shlex.quote(target)} && pwd -P", kind="probe")
                except RemoteCommandError as exc:
                    detail = exc.stderr.decode(errors="replace") or f"exit status {exc.returncode}"
                    raise ConfigurationError(str(rundir_problem(self.name, target, detail))) from exc
                self._remote_root = result.stdout.decode().strip().splitlines()[-1]
            return self._remote_root

    def rundir_path(self) -> str:
        """``<rundir>/<project>`` as given (relative paths are relative to the remote home)."""
        rundir = self.config.rundir or ("run_wfl_async" if self.config.host else "~/.wfl_async/run")
        if rundir.startswith("~/"):
            rundir = rundir[2:]
        return f"{rundir.rstrip('/')}/{self.project}"

    def scheduler_prefix(self) -> str:
        """``pre_submit_cmds`` run before every scheduler command (submit, status, cancel)."""
        return "".join(f"{cmd} && " for cmd in self.config.pre_submit_cmds)

    # ------------------------------------------------------------------ submit
    async def submit(self, request: SubmitRequest, local_root: Path) -> str:
        """Stage and submit one job as part of the next batch; return its queue id (see :mod:`.batcher`).

        :raises SchedulerError: the scheduler refused this job
        :raises TransportError: the batch could not be sent
        """
        return await self.batcher.submit(request, local_root)

    # ------------------------------------------------------------------ wait
    async def wait(self, watch: Watch) -> JobOutcome:
        """Wait until ``watch``'s job has a final marker (its files fetched) or has died (see :mod:`.poller`).

        Cancellation (including a caller's timeout) leaves the job queued and resumable.
        """
        return await self.poller.wait(watch)

    async def survey(self, job_dirs: Sequence[str], root: str | None = None) -> QueueSurvey:
        """In ONE command: the scheduler's listing of the user's jobs, and the markers in ``job_dirs``.

        :param root: remote directory holding ``job_dirs`` (default: this project's)
        :raises SchedulerError: ``root`` cannot be entered (the jobs' directories are gone)
        """
        root = root or await self.remote_root()
        command = (f"( {self.scheduler_prefix()}{self.scheduler.status_command()} ) 2>&1; "
                   f"echo \"{QUEUE_END} $?\"; {marker_command(root, job_dirs)}")
        self.stats["scheduler_calls"] += 1
        result = await self.transport.run(command, check=False, kind="poll")
        queue_text, _, rest = result.stdout.decode(errors="replace").partition(QUEUE_END)
        status_rc, _, marker_text = rest.partition("\n")
        if status_rc.strip() != "0":
            log.warning("%s: status command failed: %s", self.name, queue_text.strip()[-500:])
            states = None
        else:
            states = self.scheduler.parse_status_output(queue_text)
        return QueueSurvey(states, queue_text, parse_markers(marker_text, root, self.name))

    # ------------------------------------------------------------------ control
    async def control(self, action: str, remote_ids: Sequence[str]) -> None:
        """Cancel, hold or release jobs in one scheduler command."""
        if not remote_ids:
            return
        builders = {"cancel": self.scheduler.cancel_command, "hold": self.scheduler.hold_command,
                    "release": self.scheduler.release_command}
        self.stats["scheduler_calls"] += 1
        try:
            await self.transport.run(f"{self.scheduler_prefix()}{builders[action](list(remote_ids))}", kind="cancel")
        except RemoteCommandError as exc:
            raise SchedulerError(f"{self.name}: {action} of {list(remote_ids)} failed: {exc}") from exc

    async def queue_states(self) -> dict[str, QueueState]:
        """The scheduler's view of every job of this user (one command)."""
        self.stats["scheduler_calls"] += 1
        result = await self.transport.run(f"{self.scheduler_prefix()}{self.scheduler.status_command()}", kind="poll")
        return self.scheduler.parse_status_output(result.stdout.decode(errors="replace"))

    async def markers(self, job_dirs: Sequence[str], root: str | None = None) -> dict[str, str]:
        """Which of ``job_dirs`` hold a started/final marker (one command)."""
        if not job_dirs:
            return {}
        root = root or await self.remote_root()
        result = await self.transport.run(marker_command(root, job_dirs), kind="poll")
        return parse_markers(result.stdout.decode(errors="replace"), root, self.name)

    async def remove_dirs(self, job_dirs: Sequence[str]) -> None:
        """Delete job directories on the system (one command)."""
        if not job_dirs:
            return
        root = await self.remote_root()
        await self.transport.run(f"cd {shlex.quote(root)} && rm -rf -- "
                                 + " ".join(shlex.quote(d) for d in job_dirs))
