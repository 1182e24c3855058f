"""Building one batch submit command: pure functions of the scheduler, the config and the requests.

One command empties directories that must start clean, releases submit locks known to be
stale (each only once, however often the command is repeated after a dropped connection), unpacks every staged job directory from one tar stream, and runs the scheduler's
batch submit command (:meth:`~wfl_async.scheduler.base.Scheduler.submit_command`).

Jobs asking for arrays (``submit="array"`` for the call, or the system's ``"submit": "array"``)
are grouped by job script header (same resources and directives; the job's name left out, as
each chunk has its own): each group of two or more, at most ``max_array_size`` at a time, is one
array submission (:meth:`~wfl_async.scheduler.base.Scheduler.array_submit_command`); the rest go
through the loop, in the same command.
"""

from __future__ import annotations

import dataclasses
import os
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from ..config.system_config import SystemConfig
from ..scheduler.arrays import ARRAYS_DIR, DEFAULT_MAX_ARRAY_SIZE
from ..scheduler.base import ErrorKind, JobScriptSpec, Scheduler
from ..scheduler.submit_lock import release_locks_command
from .requests import SubmitRequest

__all__ = ["BatchCommand", "array_groups", "array_name", "batch_command", "retry_delay", "scheduler_prefix"]

TRANSIENT_BACKOFF = (0.5, 60.0)
"""First and longest pause (s) before retrying a submission the scheduler could not answer."""
LIMIT_BACKOFF = (15.0, 300.0)
"""First and longest pause (s) before retrying a submission refused for the user's job limit."""


@dataclass(frozen=True)
class BatchCommand:
    """Everything one batch submit needs: scripts and files to send, shell text."""

    scripts: dict[str, str]
    """Path relative to the stage root -> job script text (sent from memory, with the requests' ``contents``)."""
    uploads: list[str]
    before: str
    then: str
    fresh: list[str]
    """Job directories (relative to the root) emptied before the files land: once, even if repeated."""
    submissions: int = 0
    """Scheduler submissions the command makes at most: one per job of the loop, one per array."""


def scheduler_prefix(config: SystemConfig) -> str:
    """``pre_submit_cmds`` run before every scheduler command (submit, status, cancel)."""
    return "".join(f"{cmd} && " for cmd in config.pre_submit_cmds)


def batch_command(scheduler: Scheduler, config: SystemConfig, root: str,
                  batch: Sequence[SubmitRequest]) -> BatchCommand:
    """The scripts and the one command that stage and submit ``batch`` under the remote ``root``."""
    scripts: dict[str, str] = {}
    uploads: list[str] = []
    specs: list[JobScriptSpec] = []
    for item in batch:
        spec = JobScriptSpec(
            job_id=item.job_name, job_dir=f"{root}/{item.job_dir}", partition=item.partition,
            num_nodes=item.node_dict["num_nodes"], num_cores=item.node_dict["num_cores"],
            num_cores_per_node=item.node_dict["num_cores_per_node"], max_time=item.max_time,
            header=[*config.header, *item.header_extra], commands=[*config.commands, *item.body],
            no_default_header=config.no_default_header, script_exec=config.script_exec, mem_kb=item.mem_kb)
        script_path = f"{item.job_dir}/{scheduler.script_name}"
        scripts[script_path] = scheduler.render_script(spec)
        uploads.extend(item.upload)
        specs.append(spec)
    released = [f"{root}/{item.job_dir}" for item in batch if item.release_lock and not item.reset]
    groups = array_groups(scheduler, config, batch, specs)
    in_arrays = {index for group in groups for index in group}
    looped = [index for index in range(len(batch)) if index not in in_arrays]
    token = uuid.uuid4().hex[:16]
    commands = [scheduler.submit_command([specs[i].job_dir for i in looped], looped)] if looped else []
    for number, group in enumerate(groups):
        array_dir = f"{root}/{ARRAYS_DIR}/{token}-{number}"
        script = scheduler.render_array_script(
            dataclasses.replace(specs[group[0]], job_id=array_name([batch[i].job_name for i in group])), array_dir)
        commands.append(scheduler.array_submit_command(array_dir, script, [specs[i].job_dir for i in group], group))
    submit = "; ".join(commands)
    return BatchCommand(scripts, uploads, release_locks_command(released),
                        f"{{ {scheduler_prefix(config)}{{ {submit}; }}; }}",
                        fresh=[item.job_dir for item in batch if item.reset], submissions=len(looped) + len(groups))


def array_groups(scheduler: Scheduler, config: SystemConfig, batch: Sequence[SubmitRequest],
                 specs: Sequence[JobScriptSpec]) -> list[list[int]]:
    """Indices of ``batch`` to submit together as arrays: jobs asking for arrays whose headers are
    the same but for the job's name (each chunk of a call has its own), in batch order, at most
    ``max_array_size`` each; groups of one are left to the loop."""
    if not scheduler.supports_arrays:
        return []
    size = config.max_array_size or DEFAULT_MAX_ARRAY_SIZE
    by_header: dict[tuple[str, ...], list[int]] = {}
    for index, item in enumerate(batch):
        if (item.submit or config.submit) == "array":
            header = scheduler.render_header(dataclasses.replace(specs[index], job_id=_ANY_NAME))
            by_header.setdefault(tuple(header), []).append(index)
    groups = [indices[start:start + size] for indices in by_header.values()
              for start in range(0, len(indices), size)]
    return [group for group in groups if len(group) > 1]


_ANY_NAME = "wfl_async_array"
"""The job name headers are compared with: tasks of one array share the array's name."""


def array_name(job_names: Sequence[str]) -> str:
    """The name of an array in the queue: what its tasks' names share (``relax`` of ``relax_chunk_0``, ...)."""
    return os.path.commonprefix(list(job_names)).rstrip("_-0123456789") or job_names[0]


def retry_delay(kind: ErrorKind, attempts: int) -> float:
    """Jittered exponential backoff before the ``attempts``-th retry (1 = first)."""
    first, longest = TRANSIENT_BACKOFF if kind == "transient" else LIMIT_BACKOFF
    return min(longest, first * 2 ** (attempts - 1)) * (0.5 + random.random())
