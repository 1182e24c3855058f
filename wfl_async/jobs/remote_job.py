"""One queued function call as a coroutine.

hash -> claim in the jobs database (atomic) -> stage -> submit (system's batcher) ->
wait (system's poller) -> fetch -> unpickle -> return the value, or re-raise the remote
exception with its type, or raise :class:`JobDiedError` / :class:`JobTimeoutError`.

Everything that can be wrong with the arguments is checked by :meth:`RemoteJob.prepare`
before anything is submitted, so a caller launching many jobs can prepare them all first.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import shlex
import shutil
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from ..config.expyre_env import default_system
from ..doctor.first_submission import ensure_system_ready
from ..doctor.worker_log import died_job_hint
from ..errors import JobDiedError, JobTimeoutError, RemoteJobFailed, ResultIntegrityError
from ..runtime import Runtime, runtime_scope
from ..system import SubmitRequest, System, Watch
from ..system.paths import job_dir_name, safe_name
from . import layout
from .database import JobRecord, JobStatus
from .env_vars import check_env_vars, export_lines
from .hashing import job_key, pickle_task
from .integrity import copy_atomic, read_verified_result

__all__ = ["RemoteJob"]

log = logging.getLogger(__name__)


@dataclass
class RemoteJob:
    """A Python function call to run as a queued job on system ``sys_name``.

    ``await job`` (or ``await job.aio()``) runs it from async code; ``job.run()`` from plain code.
    Arguments follow ExPyRe/wfl ``RemoteInfo``: ``resources`` are ExPyRe ``Resources`` keys
    (``max_time``, ``num_nodes`` or ``num_cores``, ...); ``env_vars`` are ``NAME=value`` shell
    assignments (the value may use ``$EXPYRE_NUM_CORES_PER_NODE`` etc., as in ExPyRe);
    ``input_files`` are copied next to the job (relative paths keep their relative location,
    absolute ones land at the top); ``output_files`` are copied back to the current directory on
    success; ``timeout`` (s) gives up waiting (the job stays queued and a rerun re-attaches);
    ``check_interval`` (s) is the longest acceptable delay between a job finishing and being seen.
    ``code_version`` adds the function's module source (``True``) or a string to the job key.
    """

    function: Callable[..., Any]
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    sys_name: str = field(default_factory=default_system)
    """Default ``$EXPYRE_SYS``, else the built-in ``local`` system (ExPyRe's default system variable)."""
    job_name: str = "wfl_async_job"
    resources: Mapping[str, Any] = field(default_factory=lambda: {"num_cores": 1, "max_time": "1h"})
    input_files: Sequence[str | Path] = ()
    output_files: Sequence[str] = ()
    env_vars: Sequence[str] = ()
    pre_cmds: Sequence[str] = ()
    post_cmds: Sequence[str] = ()
    header_extra: Sequence[str] = ()
    exact_fit: bool = True
    partial_node: bool = False
    timeout: float | None = None
    check_interval: float = 30.0
    hash_ignore: Sequence[int | str] = ()
    code_version: bool | str | None = None
    resubmit_died: bool = False
    """Create the job afresh if a previous run of it died (wfl's ``resubmit_killed_jobs``)."""

    def __await__(self) -> Generator[Any, None, Any]:
        return self.aio().__await__()

    async def aio(self) -> Any:
        """Run the job and return the function's value (async)."""
        async with runtime_scope() as runtime:
            prepared = self.prepare(runtime)
            return await prepared.result()

    def run(self) -> Any:
        """Run the job and return the function's value (blocking)."""
        from .._sync import run_sync

        return run_sync(self.aio)

    def prepare(self, runtime: Runtime) -> PreparedJob:
        """Check everything and compute the job key; no I/O on any system.

        :raises ConfigurationError: unknown system, resources that fit no partition, missing input
            file, unpicklable function or arguments, malformed env_vars
        """
        system = runtime.system(self.sys_name)
        partition, node_dict, max_time = system.select_partition(
            dict(self.resources), exact_fit=self.exact_fit, partial_node=self.partial_node)
        check_env_vars(self.env_vars)  # [io] one rule, next to where the export lines are built
        task = pickle_task(self.function, self.args, self.kwargs)
        key = job_key(self.function, self.args, self.kwargs, name=self.job_name, hash_ignore=self.hash_ignore,
                      input_files=self.input_files, code_version=self.code_version)
        return PreparedJob(self, runtime, system, key, job_dir_name(self.job_name, key), task,
                           partition, node_dict, max_time)


@dataclass
class PreparedJob:
    """A validated job, ready to claim, submit and await."""

    spec: RemoteJob
    runtime: Runtime
    system: System
    key: str
    job_dir: str
    task: bytes
    partition: str
    node_dict: dict[str, int]
    max_time: int

    @property
    def local_dir(self) -> Path:
        return self.runtime.stage_root / self.job_dir

    async def submit(self) -> None:
        """Claim and submit if no earlier run did, without waiting (wfl's ``wait_for_results=False``).

        A later :meth:`result` of the same job re-attaches to it.
        """
        claim = await self.runtime.db.claim(key=self.key, name=self.spec.job_name, system=self.system.name,
                                            job_dir=self.job_dir, owner=self.runtime.owner)
        if claim.fresh:
            await self._stage_and_submit(claim.record, reset=claim.previous not in (None, JobStatus.CREATED))

    async def result(self) -> Any:
        """Claim, submit if needed, wait, and return the value (or raise the remote exception)."""
        db = self.runtime.db
        await ensure_system_ready(self.system)  # once per system and session: fail fast, not job by job
        claim = await db.claim(key=self.key, name=self.spec.job_name, system=self.system.name,
                               job_dir=self.job_dir, owner=self.runtime.owner)
        record = claim.record
        if not claim.fresh and record.status is JobStatus.DIED and self.spec.resubmit_died:
            await db.update(self.key, status=JobStatus.FAILED, message="died; resubmitting")
            return await self.result()
        if claim.fresh:
            record = await self._stage_and_submit(record, reset=claim.previous not in (None, JobStatus.CREATED))
        elif record.status is JobStatus.CREATED:
            record = await self._await_other_submitter()

        if record.status is JobStatus.DIED:
            raise JobDiedError(f"job {self.spec.job_name!r} ({self.key[:12]}) died earlier: {record.message}. "
                               f"Set resubmit_killed_jobs=True (RemoteInfo) to resubmit it.")
        if record.status is JobStatus.SUCCEEDED and (self.local_dir / layout.RESULT).exists():
            return await self._load_result()

        watch = Watch(job_dir=self.job_dir, remote_id=record.remote_id, fetch=list(self.spec.output_files),
                      local_root=self.runtime.stage_root, check_interval=self.spec.check_interval, key=self.key)
        try:
            with anyio.fail_after(self.spec.timeout):
                outcome = await self.system.wait(watch)
        except TimeoutError:
            raise JobTimeoutError(
                f"job {self.spec.job_name!r} ({record.remote_id} on {self.system.name}) not finished after "
                f"{self.spec.timeout} s; it is still queued: rerun to re-attach, or raise timeout") from None
        if outcome.marker is None:
            if self.spec.resubmit_died:
                await db.update(self.key, status=JobStatus.FAILED, message="died; resubmitting")
                return await self.result()
            hint = await died_job_hint(self.system, self.job_dir, self.runtime.stage_root)
            raise JobDiedError(f"job {self.spec.job_name!r} ({self.key[:12]}): {outcome.message}.{hint} "
                               f"Look at {self.local_dir}; set resubmit_killed_jobs=True to resubmit.")
        return await self._load_result()

    async def _stage_and_submit(self, claimed: JobRecord, reset: bool) -> JobRecord:
        uploads = await anyio.to_thread.run_sync(self._stage_locally)
        request = SubmitRequest(job_dir=self.job_dir, job_name=safe_name(self.spec.job_name),
                                partition=self.partition, node_dict=self.node_dict, max_time=self.max_time,
                                header_extra=list(self.spec.header_extra), body=self._job_body(), upload=uploads,
                                reset=reset)
        remote_id = await self.system.submit(request, self.runtime.stage_root)
        root = await self.system.remote_root()
        # batched with the other jobs' updates; the record is known, so no read back
        await self.runtime.db.update(self.key, status=JobStatus.SUBMITTED, remote_id=remote_id, remote_root=root)
        return dataclasses.replace(claimed, status=JobStatus.SUBMITTED, remote_id=remote_id, remote_root=root)

    def _stage_locally(self) -> list[str]:
        """Write the task and copy input files under the stage dir; return paths to upload."""
        if self.local_dir.exists():
            shutil.rmtree(self.local_dir)
        self.local_dir.mkdir(parents=True)
        (self.local_dir / layout.TASK).write_bytes(self.task)
        uploads = [f"{self.job_dir}/{layout.TASK}"]
        for item in self.spec.input_files:
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

    def _job_body(self) -> list[str]:
        python = shlex.quote(self.system.config.python)
        return [
            # [io] private by default: SGE's execd, unlike sbatch, does not pass on the submitter's umask
            "umask 077",
            # wfl's default inside a job; env_vars below may override it
            "export WFL_NUM_PYTHON_SUBPROCESSES=${EXPYRE_NUM_CORES_PER_NODE}",
            *export_lines(self.spec.env_vars),
            *self.spec.pre_cmds,
            f"{python} -m wfl_async.jobs.worker > {layout.WORKER_LOG} 2>&1",
            "wfl_async_status=$?",
            *self.spec.post_cmds,
            "exit $wfl_async_status",
        ]

    async def _await_other_submitter(self) -> JobRecord:
        """Another live process claimed this job a moment ago: wait until it has submitted it."""
        while True:
            record = await self.runtime.db.get(self.key)
            assert record is not None
            if record.status is not JobStatus.CREATED:
                return record
            await anyio.sleep(0.5)

    async def _load_result(self) -> Any:
        path = self.local_dir / layout.RESULT
        try:
            try:
                outcome = await anyio.to_thread.run_sync(_read_verified_pickle, self.local_dir)
            except ResultIntegrityError as mismatch:
                # [io] cut short on its way (e.g. a driver killed mid-fetch): fetch it again, once
                log.warning("job %r: %s; fetching it again", self.spec.job_name, mismatch)
                await self.system.transport.download(
                    await self.system.remote_root(),
                    [f"{self.job_dir}/{name}" for name in (*layout.FETCH_ON_FINISH, *self.spec.output_files)],
                    self.runtime.stage_root)
                outcome = await anyio.to_thread.run_sync(_read_verified_pickle, self.local_dir)
        except FileNotFoundError:
            raise JobDiedError(f"job {self.spec.job_name!r} ({self.key[:12]}) has a final marker but its "
                               f"result file did not come back to {path}") from None
        if outcome[0] == "return":
            await anyio.to_thread.run_sync(self._copy_output_files)
            return outcome[1]
        _, exc, type_name, message, formatted = outcome
        if isinstance(exc, BaseException):
            exc.add_note(f"--- raised in queued job {self.spec.job_name!r} on {self.system.name}; remote "
                         f"traceback ---\n{formatted}")
            raise exc
        raise RemoteJobFailed(type_name, message, formatted)

    def _copy_output_files(self) -> None:
        for name in self.spec.output_files:
            source = self.local_dir / name
            if source.exists():
                copy_atomic(source, Path(name))  # [io] each file appears whole or not at all


def _read_verified_pickle(job_dir: Path) -> Any:
    return pickle.loads(read_verified_result(job_dir))
