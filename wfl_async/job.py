"""One queued function call as a coroutine.

hash -> claim in the jobs database (atomic) -> stage -> submit (the system's submit loop) ->
wait (the system's poll loop) -> unpickle -> return the value, or re-raise the remote
exception with its type, or raise :class:`JobDiedError` / :class:`JobTimeoutError`.

Everything that can be wrong with the arguments is checked by :meth:`RemoteJob.prepare`
before anything is submitted, so a caller launching many jobs can prepare them all first.
Every decision about a job (submitted, re-attached, died, resubmitted) is logged at INFO.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import pickle
import re
import shlex
import shutil
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from .config.expyre_env import default_system
from .config.expyre_modules import expyre_module
from .doctor.first_submission import ensure_system_ready
from .doctor.worker_log import died_job_hint
from .errors import (
    ConfigurationError,
    JobCancelledError,
    JobDiedError,
    JobTimeoutError,
    RemoteJobFailed,
    ResultIntegrityError,
    SystemNotReadyError,
)
from .jobs import layout
from .jobs.database import JobRecord
from .jobs.env_vars import export_lines
from .jobs.hashing import job_key, pickle_task
from .jobs.integrity import copy_atomic, read_verified_result
from .jobs.options import JobOptions, WithOptions
from .jobs.pack_option import PackSetting, effective_pack
from .jobs.route import RouteKind
from .jobs.states import JobStatus
from .pack.coordinator import WALLTIME_SLOT, WorkerSpec, worker_command
from .session import Session, session_scope
from .system import SubmitRequest, System, Watch
from .system.paths import job_dir_name, safe_name

__all__ = ["ArrayTask", "Direct", "JobOptions", "Packed", "PreparedJob", "RemoteJob", "Route"]

log = logging.getLogger(__name__)

_CLAIM_RECHECK = 0.5
"""Seconds between looks at a job another live process is submitting."""


@dataclass(frozen=True)
class Direct:
    """The job is a scheduler job of its own, submitted by its system's submit loop."""

    kind = RouteKind.DIRECT


@dataclass(frozen=True)
class ArrayTask:
    """A scheduler job of its own that asks to go as a task of a job array (``submit="array"``)."""

    kind = RouteKind.ARRAY


@dataclass(frozen=True)
class Packed:
    """The job is a chunk queued in its pack and run by the pack's worker jobs (docs/packing.md)."""

    setting: PackSetting
    worker: WorkerSpec
    """How the pack's worker jobs are submitted."""

    kind = RouteKind.PACKED


Route = Direct | ArrayTask | Packed
"""How a job runs, decided once by :meth:`RemoteJob.prepare` and recorded in the jobs database."""


@dataclass(init=False)
class RemoteJob(WithOptions):
    """A Python function call to run as a queued job on system ``sys_name``.

    ``await job`` (or ``await job.aio()``) runs it from async code; ``job.run()`` from plain code.
    The options (:class:`~wfl_async.jobs.options.JobOptions`) are given either as ``options=`` or
    as keywords of the same names (``resources=``, ``timeout=``, ``resubmit_killed_jobs=`` ...).
    """

    function: Callable[..., Any]
    args: Sequence[Any]
    kwargs: Mapping[str, Any]
    sys_name: str
    job_name: str
    options: JobOptions = field(default_factory=JobOptions)

    def __init__(self, function: Callable[..., Any], args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
                 sys_name: str | None = None, job_name: str = "wfl_async_job", options: JobOptions | None = None,
                 **option_values: Any) -> None:
        unknown = sorted(set(option_values) - set(JobOptions.names()))
        if unknown:
            raise ConfigurationError(f"RemoteJob got unknown option(s) {', '.join(map(repr, unknown))}; valid "
                                     f"options are {', '.join(JobOptions.names())}")
        self.function = function
        self.args = args
        self.kwargs = dict(kwargs or {})
        self.sys_name = sys_name if sys_name is not None else default_system()  # ExPyRe's EXPYRE_SYS, else local
        self.job_name = job_name
        self.options = (options or JobOptions()).replace(**option_values) if option_values else \
            (options or JobOptions())

    def __await__(self) -> Generator[Any, None, Any]:
        return self.aio().__await__()

    async def aio(self) -> Any:
        """Run the job and return the function's value (async)."""
        async with session_scope() as session:
            prepared = self.prepare(session)
            return await prepared.result()

    def run(self) -> Any:
        """Run the job and return the function's value (blocking)."""
        from ._sync import run_sync

        return run_sync(self.aio)

    def prepare(self, session: Session) -> PreparedJob:
        """Check everything and compute the job key; no I/O on any system.

        :raises ConfigurationError: unknown system, resources that fit no partition, missing input
            file, unpicklable function or arguments (malformed env_vars: when the options are made)
        """
        options = self.options
        system = session.system(self.sys_name)
        partition, node_dict, max_time = system.select_partition(
            dict(options.resources), exact_fit=options.exact_fit, partial_node=options.partial_node)
        task = pickle_task(self.function, self.args, self.kwargs)
        key = job_key(self.function, self.args, self.kwargs, name=self.job_name, hash_ignore=options.hash_ignore,
                      input_files=options.input_files, code_version=options.code_version)
        prepared = PreparedJob(self, session, system, key, job_dir_name(self.job_name, key), task,
                               partition, node_dict, max_time)
        prepared.route = prepared.decide_route()
        return prepared


@dataclass
class PreparedJob:
    """A validated job, ready to claim, submit and await."""

    spec: RemoteJob
    session: Session
    system: System
    key: str
    job_dir: str
    task: bytes
    partition: str
    node_dict: dict[str, int]
    max_time: int
    route: Route = field(default_factory=Direct)
    """How it runs (:meth:`decide_route`, once, by :meth:`RemoteJob.prepare`)."""
    predicted_seconds: float | None = None
    """A self-tuned packed chunk's predicted run time, staged for its worker's fit decision (docs/self-tuning.md)."""

    @property
    def options(self) -> JobOptions:
        return self.spec.options

    @property
    def local_dir(self) -> Path:
        return self.session.stage_root / self.job_dir

    @property
    def label(self) -> str:
        return f"{self.spec.job_name!r} ({self.key[:12]})"

    async def submit(self) -> None:
        """Claim and submit if no earlier run did, without waiting (wfl's ``wait_for_results=False``).

        A later :meth:`result` of the same job re-attaches to it.
        """
        await self._claimed()

    async def result(self) -> Any:
        """Claim, submit if needed, wait, and return the value (or raise the remote exception).

        ``timeout`` counts from when the job is first known to be queued and bounds the whole
        wait, resubmissions included; submitting itself is never cut short (a job half
        submitted would be left for the next run to resolve).

        :raises JobTimeoutError: ``timeout`` passed; the job stays queued and a rerun re-attaches
        """
        return await self._run(resubmits_left=1 if self.options.resubmit_killed_jobs else 0, deadline=None)

    async def _run(self, resubmits_left: int, deadline: float | None) -> Any:
        record = await self._claimed()
        if record.status is JobStatus.CANCELLED:
            raise JobCancelledError(self.label, self.spec.job_name)
        if record.status is JobStatus.DIED:
            if resubmits_left > 0:
                log.info("job %s: died earlier (%s); resubmitting (resubmit_killed_jobs)", self.label, record.message)
                return await self._resubmitted(resubmits_left, deadline)
            raise JobDiedError(f"job {self.label} died earlier: {record.message}.{self._died_advice(record.message)}")
        if record.status is JobStatus.SUCCEEDED and (self.local_dir / layout.RESULT).exists():
            log.info("job %s: finished earlier; using its result", self.label)
            return await self._load_result()

        system = await self.session.serving(record.system)
        if record.system != self.system.name:
            log.info("job %s: re-attaching on %s under %s, where it was submitted (not on %s)",
                     self.label, record.system, record.remote_root, self.system.name)
        packed = record.route is RouteKind.PACKED  # its worker job counts in the queue window, not the chunk
        watch = Watch(job_dir=self.job_dir, remote_id=record.remote_id, fetch=list(self.options.output_files),
                      local_root=self.session.stage_root, check_interval=self.options.check_interval, key=self.key,
                      remote_root=record.remote_root, max_time=self.max_time, in_window=not packed)
        if packed and isinstance(self.route, Packed):  # workers may be needed again (a rerun re-attaching)
            spec = self._worker_spec(system, self.route.setting)
            self.session.packing(system.name).expect(spec, record.remote_root or await system.remote_root())
        timeout = self.options.timeout
        if deadline is None:
            deadline = anyio.current_time() + (timeout if timeout is not None else math.inf)
        try:
            with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                outcome = await system.wait(watch)
        except TimeoutError:
            log.info("job %s: not finished after %s s (timeout); left as it is for a rerun", self.label, timeout)
            raise JobTimeoutError(
                f"job {self.label} ({record.remote_id} on {record.system}) not seen to end within {timeout} s; it "
                f"is left as it is (queued, running, or finished with its result not fetched yet): rerun to "
                f"re-attach, or raise timeout") from None
        if outcome.marker is None:
            now = await self.session.db.get(self.key)
            if now is not None and now.status is JobStatus.CANCELLED:  # by the user, in another process
                raise JobCancelledError(self.label, self.spec.job_name)
            if resubmits_left > 0:
                log.info("job %s: died (%s); resubmitting (resubmit_killed_jobs)", self.label, outcome.message)
                return await self._resubmitted(resubmits_left, deadline)
            hint = await died_job_hint(system, self.job_dir, self.session.stage_root)
            raise JobDiedError(f"job {self.label}: {outcome.message}.{hint} Look at {self.local_dir}."
                               f"{self._died_advice(outcome.message)}")
        return await self._load_result()

    def _died_advice(self, message: str | None) -> str:
        """What to do about a died job, never an option that is already set."""
        again = " It was resubmitted once already (resubmit_killed_jobs) and died again."
        if "killed at its time limit" in (message or ""):
            advice = f" Ask for more time (resources max_time, now {self.max_time} s) or give it less work."
            return advice + (again if self.options.resubmit_killed_jobs else "")
        return again if self.options.resubmit_killed_jobs else " Set resubmit_killed_jobs=True to resubmit it once."

    async def _resubmitted(self, resubmits_left: int, deadline: float | None) -> Any:
        await self.session.db.update(self.key, status=JobStatus.FAILED, message="died; resubmitting")
        return await self._run(resubmits_left - 1, deadline)

    async def _claimed(self) -> JobRecord:
        """The job's record once this process knows it is submitted (submitting it if it must).

        A job another live process is submitting is looked at again every half second; if that
        process dies, the next claim takes the job over.
        """
        db = self.session.db
        while True:
            # shielded: a claim is written even when its caller is cancelled meanwhile, and must then
            # still be staged and handed to the submit loop (_stage_and_submit's shield follows at once)
            with anyio.CancelScope(shield=True):
                claim = await db.claim(key=self.key, name=self.spec.job_name, system=self.system.name,
                                       job_dir=self.job_dir, owner=self.session.owner)
            if claim.fresh:
                return await self._stage_and_submit(claim.record, reset=claim.previous not in (None, JobStatus.CREATED))
            if claim.record.status is not JobStatus.CREATED:
                if claim.record.status in (JobStatus.SUBMITTED, JobStatus.STARTED):
                    log.info("job %s: already %s as %s on %s; re-attaching", self.label, claim.record.status,
                             claim.record.remote_id, claim.record.system)
                return claim.record
            if claim.record.owner == self.session.owner:
                return await self._await_own_submission()
            await anyio.sleep(_CLAIM_RECHECK)

    async def _await_own_submission(self) -> JobRecord:
        """Another coroutine of this session is submitting the same job: wait for its record."""
        while True:
            record = await self.session.db.get(self.key)
            assert record is not None
            if record.status is not JobStatus.CREATED:
                return record
            await anyio.sleep(_CLAIM_RECHECK)

    async def _stage_and_submit(self, claimed: JobRecord, reset: bool) -> JobRecord:
        # shielded up to the hand-over to the submit loop (starting the system's loops included): a
        # caller cancelled meanwhile must not leave its claim 'created' with nobody submitting it
        # (the loop records what it was given)
        with anyio.CancelScope(shield=True):
            system = await self.session.serving(claimed.system)
            try:  # once per system and session (wfl-async doctor's check): fail fast, not job by job
                await ensure_system_ready(system)
            except SystemNotReadyError as exc:  # release the claim: a rerun creates the job afresh
                await self.session.db.update(self.key, status=JobStatus.NOT_SUBMITTED, message=str(exc))
                raise
            uploads = await anyio.to_thread.run_sync(self._stage_locally)
        request = SubmitRequest(job_dir=self.job_dir, job_name=safe_name(self.spec.job_name),
                                partition=self.partition, node_dict=self.node_dict, max_time=self.max_time,
                                header_extra=list(self.options.header_extra), body=self._job_body(system),
                                upload=uploads, local_root=self.session.stage_root, key=self.key, reset=reset,
                                submit=self.options.submit, route=self.route.kind,
                                pack_id=self.route.worker.pack_id if isinstance(self.route, Packed) else None)
        # the submit loop (or the packing coordinator) records the submission itself (also when
        # this caller is cancelled)
        if isinstance(self.route, Packed):
            remote_id = await self.session.packing(system.name).submit(request, self.route.worker)
        else:
            remote_id = await system.submit(request)
        root = await system.remote_root()
        return dataclasses.replace(claimed, status=JobStatus.SUBMITTED, remote_id=remote_id, remote_root=root,
                                   route=request.route, pack_id=request.pack_id)

    def _stage_locally(self) -> list[str]:
        """Write the task and copy input files under the stage dir; return paths to upload."""
        if self.local_dir.exists():
            shutil.rmtree(self.local_dir)
        self.local_dir.mkdir(parents=True)
        (self.local_dir / layout.TASK).write_bytes(self.task)
        uploads = [f"{self.job_dir}/{layout.TASK}"]
        if self.predicted_seconds is not None:
            (self.local_dir / layout.PREDICTED).write_text(f"{self.predicted_seconds:.3f}\n")
            uploads.append(f"{self.job_dir}/{layout.PREDICTED}")
        for item in self.options.input_files:
            source = Path(item)
            if source.is_absolute() or ".." in source.parts:
                target = Path(source.name)
            else:
                target = source
            destination = self.local_dir / target
            destination.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, destination, dirs_exist_ok=True)
            else:
                shutil.copy2(source, destination)
            uploads.append(f"{self.job_dir}/{target}")
        return uploads

    def decide_route(self) -> Route:
        """How this job runs: the one place its ``pack`` option (or its system's default) is read.

        A self-tuned setting (``pack="auto"``) packs too; its call chooses the chunks
        (:mod:`wfl_async.autoparallelize.tuned`) and its coordinator the workers' walltimes.
        """
        setting = effective_pack(self.options.pack, self.system.config.pack)
        if isinstance(setting, PackSetting):
            return Packed(setting, self._worker_spec(self.system, setting))
        if (self.options.submit or self.system.config.submit) == "array":
            return ArrayTask()
        return Direct()

    def _worker_spec(self, system: System, setting: PackSetting) -> WorkerSpec:
        """How the worker jobs of this packed chunk are submitted on ``system`` (docs/packing.md)."""
        cap = self._walltime_cap(system, setting)
        run = worker_command(system.config.python, WALLTIME_SLOT if setting.tuned else self.max_time,
                             setting.idle_seconds)
        call_name = re.sub(r"_chunk_\d+$", "", self.spec.job_name)
        return WorkerSpec(job_name=call_name, partition=self.partition, node_dict=dict(self.node_dict),
                          max_time=cap, header_extra=tuple(self.options.header_extra),
                          body=tuple(self._job_body(system, run)), setting=setting,
                          local_root=self.session.stage_root)

    def _walltime_cap(self, system: System, setting: PackSetting) -> int:
        """A worker's longest walltime: the call's ``max_time``, or a self-tuned setting's ``walltime``
        within the partition's limit.

        :raises ConfigurationError: ``walltime`` is above the partition's ``max_time`` (before anything is submitted)
        """
        if not setting.tuned or setting.walltime is None:
            return self.max_time
        limits = [spec.get("max_time") for name, spec in system.config.partitions.items()
                  if spec.get("partition", name) == self.partition]
        time_to_sec = expyre_module("units").time_to_sec  # a partition's max_time in ExPyRe's forms
        limit = next((float(time_to_sec(value)) for value in limits if value), None)
        if limit is not None and setting.walltime > limit:
            raise ConfigurationError(
                f"pack: walltime = {setting.walltime:g} s is above partition {self.partition!r}'s max_time of "
                f"{limit:g} s on {system.name!r}; give a walltime of at most {limit:g} s, or choose another "
                f"partition (resources partitions)")
        return int(setting.walltime)

    def _job_body(self, system: System, run: str | None = None) -> list[str]:
        """The job script's lines after the system's ``commands``; ``run`` replaces the worker's command."""
        python = shlex.quote(system.config.python)
        run = run or f"{python} -m wfl_async.jobs.worker"
        return [
            # private by default: SGE's execd, unlike sbatch, does not pass on the submitter's umask
            "umask 077",
            # wfl's default inside a job; env_vars below may override it
            "export WFL_NUM_PYTHON_SUBPROCESSES=${EXPYRE_NUM_CORES_PER_NODE}",
            *export_lines(self.options.env_vars),
            *self.options.pre_cmds,
            f"{run} > {layout.WORKER_LOG} 2>&1",
            "wfl_async_status=$?",
            *self.options.post_cmds,
            "exit $wfl_async_status",
        ]

    async def _load_result(self) -> Any:
        path = self.local_dir / layout.RESULT
        try:
            try:
                outcome = await anyio.to_thread.run_sync(_read_verified_pickle, self.local_dir)
            except ResultIntegrityError as mismatch:
                # cut short on its way (e.g. a driver killed mid-fetch): fetch it again, once
                log.warning("job %s: %s; fetching it again", self.label, mismatch)
                await self._refetch()
                outcome = await anyio.to_thread.run_sync(_read_verified_pickle, self.local_dir)
        except FileNotFoundError:
            raise JobDiedError(f"job {self.label} has a final marker but its result file did not come back "
                               f"to {path}") from None
        if outcome[0] == "return":
            await anyio.to_thread.run_sync(self._copy_output_files)
            return outcome[1]
        _, exc, type_name, message, formatted = outcome
        if isinstance(exc, BaseException):
            if exc.__traceback__ is not None:  # rebuilt (tblib): the job's own frames print once, last
                exc.add_note(f"(raised in queued job {self.spec.job_name!r} on {self.system.name}: the last "
                             f"frames above ran there; its whole output: wfl-async log {shlex.quote(self.spec.job_name)})")
            else:
                exc.add_note(f"--- raised in queued job {self.spec.job_name!r} on {self.system.name}; remote "
                             f"traceback ---\n{formatted}")
            raise exc
        raise RemoteJobFailed(type_name, message, formatted)

    async def _refetch(self) -> None:
        """Fetch the finished job's files again, from where it ran (its recorded system and root)."""
        record = await self.session.db.get(self.key)
        system = self.session.system(record.system) if record is not None else self.system
        root = record.remote_root if record is not None and record.remote_root else await system.remote_root()
        await system.transport.download(
            root, [f"{self.job_dir}/{name}" for name in (*layout.FETCH_ON_FINISH, *self.options.output_files)],
            self.session.stage_root)

    def _copy_output_files(self) -> None:
        for name in self.options.output_files:
            source = self.local_dir / name
            if source.exists():
                copy_atomic(source, Path(name))  # each file appears whole or not at all


def _read_verified_pickle(job_dir: Path) -> Any:
    return pickle.loads(read_verified_result(job_dir))
