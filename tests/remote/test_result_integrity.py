"""A result that is not the one its job wrote is fetched again or refused: never unpickled as if right.

The faults are real files cut or changed on either side: the remote result changed after the
worker wrote it and its marker (a ``post_cmds`` line of the job itself, as a full disk or a
lying file system would), or the local copy cut short after it was fetched (what a driver
killed mid-fetch leaves).
"""

from __future__ import annotations

import logging
import operator
import uuid
from pathlib import Path

import pytest

from wfl_async.errors import ResultIntegrityError
from wfl_async.jobs import layout
from wfl_async.jobs.remote_job import RemoteJob
from wfl_async.session import session_scope

pytestmark = pytest.mark.remote

SYSTEMS = pytest.mark.parametrize("system", ["slurm", "pbs_ssh"])


def _job(system: str, name: str, **options: object) -> RemoteJob:
    return RemoteJob(operator.mul, (6, 7), sys_name=system, job_name=name, check_interval=0.3,
                     resources={"num_cores": 1, "max_time": "5m"}, partial_node=True, **options)


@SYSTEMS
async def test_a_result_changed_after_its_marker_is_refused(system: str, fresh_expyre_root: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="wfl_async")
    job = _job(system, f"corrupt-{uuid.uuid4().hex[:6]}", post_cmds=[f"printf x >> {layout.RESULT}"])
    with pytest.raises(ResultIntegrityError, match="is not the result its job wrote"):
        await job.aio()
    assert "fetching it again" in caplog.text  # fetched twice, both times refused


@SYSTEMS
async def test_a_local_result_cut_short_is_fetched_again(system: str, fresh_expyre_root: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    job = _job(system, f"cut-{uuid.uuid4().hex[:6]}")
    assert await job.aio() == 42
    async with session_scope() as session:
        local = job.prepare(session).local_dir / layout.RESULT
    data = local.read_bytes()
    local.write_bytes(data[: len(data) // 2])
    caplog.set_level(logging.WARNING, logger="wfl_async")
    assert await job.aio() == 42  # the rerun re-attaches, finds the copy cut short and fetches it again
    assert "fetching it again" in caplog.text and local.read_bytes() == data
