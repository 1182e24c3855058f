"""Run a fit as one queued job (or many at once), as wfl's fits do with ExPyRe.

One place for what every fit shares: which RemoteInfo applies (wfl's ``remote_info`` /
``remote_label`` arguments, the fit's own ``*_REMOTEINFO`` variable, then ``WFL_EXPYRE_INFO``),
staging the files the fit needs, bringing back the directory it writes, and running N fits
as N jobs at once (committees). The function a job runs is the fit's local body, so a fit
running in a job never submits another one (wfl's ``remote_info='_IGNORE'``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from .._sync import run_sync
from ..autoparallelize.expyre_info import resolve_remote_info
from ..autoparallelize.remote import job_from_remote_info, resources_dict
from ..autoparallelize.remoteinfo import RemoteInfo
from ..errors import first_failure
from ..job import RemoteJob
from ..placement.call import plan
from ..session import session_scope

__all__ = ["IGNORE", "FitJob", "fit_remote_info", "run_fit_jobs", "unpack_outputs"]

IGNORE = "_IGNORE"
"""wfl's marker: run here even if a variable would send the fit to a queued job."""


def fit_remote_info(remote_info: RemoteInfo | Mapping[str, Any] | str | None, remote_label: str | None,
                    env_var: str, stack: list[str]) -> RemoteInfo | None:
    """The RemoteInfo a fit call should use, or None to fit in this process.

    Order: ``remote_info='_IGNORE'`` (local), an explicit ``remote_info``, the fit's own variable
    ``env_var`` (e.g. ``WFL_GAP_SIMPLE_FIT_REMOTEINFO``) when set, else ``WFL_EXPYRE_INFO`` (as
    wfl 0.3.5's fits read it), each matched by ``remote_label`` or the call stack.
    """
    if isinstance(remote_info, str):
        if remote_info != IGNORE:
            from ..errors import ConfigurationError

            raise ConfigurationError(f"remote_info={remote_info!r}: give a RemoteInfo, a dict of its fields, "
                                     f"None, or {IGNORE!r} (fit in this process)")
        return None
    if remote_info is not None:
        return resolve_remote_info(remote_info, None, stack=stack)
    if os.environ.get(env_var, "").strip():
        return resolve_remote_info(None, remote_label, stack=stack, env_var=env_var)
    return resolve_remote_info(None, remote_label, stack=stack)


@dataclass
class FitJob:
    """One fit as a queued job: ``function(**kwargs)`` in a job directory holding ``input_files``.

    ``output_dir`` (relative, one level) is where the function writes everything it makes; it is
    copied back into the current directory when the job succeeds.
    """

    info: RemoteInfo
    function: Callable[..., Any]
    kwargs: dict[str, Any]
    output_dir: str
    input_files: Sequence[str | Path] = ()
    env_defaults: Mapping[str, str] = field(default_factory=dict)
    job_name: str | None = None

    def remote_job(self) -> RemoteJob:
        info = RemoteInfo.from_dict(self.info.to_dict())
        set_names = {assignment.split("=", 1)[0] for assignment in info.env_vars}
        info.env_vars += [f"{name}={value}" for name, value in self.env_defaults.items() if name not in set_names]
        info.input_files = [*info.input_files, *map(str, self.input_files)]
        info.output_files = [*info.output_files, self.output_dir]
        return job_from_remote_info(info, self.function, (), self.kwargs, job_name=self.job_name)


def run_fit_jobs(jobs: Sequence[FitJob], wait_for_results: bool = True) -> list[Any] | None:
    """Run every job at once; return their values in order (None if only submitting).

    All jobs are prepared (checked) before the first is submitted. With
    ``wait_for_results=False`` the jobs are submitted and the call returns; an identical later
    call re-attaches to them and collects their results, submitting nothing.
    """
    remote_jobs = [job.remote_job() for job in jobs]

    async def _run() -> list[Any] | None:
        async with session_scope() as session:
            # several systems listed: the jobs (a committee's members) are spread over the usable ones
            # as a call's chunks are (docs/multi_system.md)
            placed = await plan(session, jobs[0].info.sys_name, resources_dict(jobs[0].info.resources),
                                jobs[0].info.options) if jobs else None
            if placed is not None:
                for job, name in zip(remote_jobs, placed.spread(len(remote_jobs)), strict=True):
                    job.sys_name = name
            prepared = [job.prepare(session) for job in remote_jobs]
            values: list[Any] = [None] * len(prepared)
            call = placed.runner(prepared) if placed is not None else None

            async def _one(index: int) -> None:
                if not wait_for_results:
                    await prepared[index].submit()
                elif call is not None:
                    values[index] = await call.result(prepared[index])
                else:
                    values[index] = await prepared[index].result()

            try:
                async with anyio.create_task_group() as tg:
                    if call is not None and wait_for_results:
                        tg.start_soon(call.watch)
                    async with anyio.create_task_group() as members:
                        for index in range(len(prepared)):
                            members.start_soon(_one, index)
                    tg.cancel_scope.cancel()  # every member is in: the placement watch ends
            except BaseExceptionGroup as group:  # the job's own error, not the task group's wrapping
                raise first_failure(group) from None
            return values if wait_for_results else None

    return run_sync(_run)


def unpack_outputs(output_dir: str | Path, moves: Mapping[str, str | Path]) -> None:
    """Move a fit's products out of its copied-back ``output_dir``, then remove it.

    ``moves`` maps a file name in ``output_dir`` to its destination; a name ending in ``*``
    moves every file starting with that prefix into the destination *directory* (a GAP's
    ``.xml`` and its sparse-point files, which the ``.xml`` names relative to itself).
    """
    output_dir = Path(output_dir)
    for name, destination in moves.items():
        destination = Path(destination)
        if name.endswith("*"):
            destination.mkdir(parents=True, exist_ok=True)
            for source in sorted(output_dir.glob(name)):
                shutil.move(str(source), destination / source.name)
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(output_dir / name), destination)
    shutil.rmtree(output_dir, ignore_errors=True)
