"""A system's loop that stops on an unexpected error (a bug) wakes every job waiting on it.

CI once hung twice for 600 s: a loop stopped, nobody waited for its task, and the jobs watched by
it waited forever. The error here is injected through the recorder (a scripted transport, no
daemon): any error a loop does not expect takes the same way out.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.helpers.scripted import ListRecorder, ScriptedTransport, poll_answer, slurm_config
from wfl_async.errors import LoopStoppedError
from wfl_async.jobs.states import Verdict
from wfl_async.scheduler import get_scheduler
from wfl_async.system import System
from wfl_async.system.requests import SubmitRequest, Watch


class BrokenRecorder(ListRecorder):
    """Fails as a bug would, on the first change a poll reports."""

    async def progressed(self, changes: list[tuple[Watch, Verdict]]) -> None:  # type: ignore[override]
        raise RuntimeError("a bug in the recorder")


def watch(tmp_path: Path, job_dir: str) -> Watch:
    return Watch(job_dir=job_dir, remote_id="42", fetch=[], local_root=tmp_path, check_interval=0.2)


async def test_jobs_waiting_on_a_loop_that_stopped_are_woken_with_its_error(tmp_path: Path) -> None:
    transport = ScriptedTransport(poll=lambda sent: poll_answer({"42": "RUNNING"}, {"a": "started", "b": "started"}))
    system = System(slurm_config(), transport, get_scheduler("slurm"), "project", recorder=BrokenRecorder())
    errors: list[BaseException] = []

    async def wait(job_dir: str) -> None:
        try:
            await system.wait(watch(tmp_path, job_dir))
        except LoopStoppedError as exc:
            errors.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            await tasks.start(system.serve)
            async with anyio.create_task_group() as waiters:
                waiters.start_soon(wait, "a")
                waiters.start_soon(wait, "b")
            tasks.cancel_scope.cancel()
    assert len(errors) == 2
    assert "RuntimeError: a bug in the recorder" in str(errors[0]) and "a rerun re-attaches" in str(errors[0])
    with pytest.raises(LoopStoppedError):  # a later job is refused at once, not left waiting
        await system.wait(watch(tmp_path, "c"))
    request = SubmitRequest(job_dir="d", job_name="d", partition="standard", node_dict={}, max_time=60,
                            header_extra=[], body=[], upload=[], local_root=tmp_path)
    with pytest.raises(LoopStoppedError):
        await system.submit(request)
