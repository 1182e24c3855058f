"""Submit batching: many jobs ready at about the same time go out in ONE remote command.

The first job ready to submit waits for others while they keep arriving (``batch_window``
at a time, at most ``max_batch_wait``: jobs of one call become ready one after another, as
each is claimed in the database first). Then one command removes directories that must
start clean, unpacks every staged job directory from one tar stream, and runs the
scheduler's batch submit command. Later arrivals form the next batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from .._coalesce import Coalescer
from ..errors import SchedulerError
from ..scheduler.base import JobScriptSpec, SubmitOutputReader, SubmitResult
from .requests import SubmitRequest

if TYPE_CHECKING:
    from .system import System

__all__ = ["MAX_BATCH", "SubmitBatcher"]

MAX_BATCH = 300
"""Job directories per submit/poll command: keeps the command line well under ARG_MAX."""


class SubmitBatcher:
    """The submit side of one :class:`System`."""

    def __init__(self, system: System, *, batch_window: float = 0.05, max_batch_wait: float = 1.0) -> None:
        self.system = system
        self.batch_window = batch_window
        self.max_batch_wait = max_batch_wait
        self._coalescer: Coalescer[SubmitRequest] = Coalescer(self._submit_batch, gather=self._gather_batch,
                                                              max_batch=MAX_BATCH)

    def pending_count(self) -> int:
        return self._coalescer.pending_count()

    async def submit(self, request: SubmitRequest, local_root: Path) -> str:
        """Stage and submit one job as part of the next batch; return its queue id.

        Each job is released as soon as the scheduler's answer for it comes back, while the
        rest of its batch is still being submitted.

        :raises SchedulerError: the scheduler refused this job
        :raises TransportError: the batch could not be sent
        """
        request.local_root = local_root
        await self._coalescer(request)
        assert request.remote_id is not None
        return request.remote_id

    async def _gather_batch(self, pending: list[SubmitRequest]) -> None:
        """Wait while jobs keep arriving (each ``batch_window`` brought more), at most ``max_batch_wait``.

        Jobs of one call become ready one after another (each is claimed in the database
        first), so a fixed window would cut a 200-job call into several batches.
        """
        waited, seen = 0.0, -1
        while len(pending) != seen and len(pending) < MAX_BATCH and waited < self.max_batch_wait:
            seen = len(pending)
            await anyio.sleep(self.batch_window)
            waited += self.batch_window

    async def _submit_batch(self, batch: list[SubmitRequest]) -> None:
        root = await self.system.remote_root()
        local_root = batch[0].local_root
        assert local_root is not None
        uploads: list[str] = []
        for item in batch:
            spec = JobScriptSpec(
                job_id=item.job_name, job_dir=f"{root}/{item.job_dir}", partition=item.partition,
                num_nodes=item.node_dict["num_nodes"], num_cores=item.node_dict["num_cores"],
                num_cores_per_node=item.node_dict["num_cores_per_node"], max_time=item.max_time,
                header=[*self.system.config.header, *item.header_extra],
                commands=[*self.system.config.commands, *item.body],
                no_default_header=self.system.config.no_default_header, script_exec=self.system.config.script_exec)
            script = self.system.scheduler.render_script(spec)
            await anyio.Path(local_root / item.job_dir / self.system.scheduler.script_name).write_text(script)
            uploads.extend([*item.upload, f"{item.job_dir}/{self.system.scheduler.script_name}"])
        submit = self.system.scheduler.submit_command([f"{root}/{item.job_dir}" for item in batch])
        self.system.stats["submit_commands"] += 1
        self.system.stats["scheduler_calls"] += 1

        def settle(index: int, outcome: SubmitResult) -> None:
            item = batch[index]
            if item.done.is_set():
                return  # the command ran again after a dropped connection: already settled
            item.remote_id = outcome.remote_id
            item.settle(None if outcome.remote_id is not None else SchedulerError(
                f"{self.system.name}: submitting job {item.job_name!r} ({item.job_dir}) failed: {outcome.error}"))

        reader = SubmitOutputReader(self.system.scheduler)

        def on_line(line: str) -> None:
            # each job is released as soon as the scheduler has taken it, while the rest of the
            # batch is still being submitted: its poller can see it finish meanwhile
            parsed = reader.feed(line)
            if parsed is not None and parsed[0] < len(batch):
                settle(*parsed)

        result = await self.system.transport.upload(
            # [io] resets go through `fresh` (emptied once even if the command is repeated after a
            # dropped connection); retry=True relies on the submit command being idempotent (lock + answer)
            local_root, uploads, root, fresh=[item.job_dir for item in batch if item.reset],
            then=f"{{ {self.system.scheduler_prefix()}{submit}; }}", on_line=on_line,
            kind="submit", retry=True)
        parsed = self.system.scheduler.parse_submit_output(result.stdout.decode(errors="replace"), len(batch))
        for index, outcome in enumerate(parsed):
            settle(index, outcome)
