"""A result that is not the one its job wrote is fetched again or refused: never unpickled as if right.

The faults are real files changed after a job finished: the local copy cut short (what a
driver killed mid-fetch leaves), and also the remote result changed after its worker wrote
it and its marker (a full disk, a lying file system). The rerun re-attaches to the finished
job and reads its local copy.
"""

from __future__ import annotations

import logging
import operator
import shlex
import uuid
from pathlib import Path

import pytest

from wfl_async.errors import ResultIntegrityError
from wfl_async.job import RemoteJob
from wfl_async.jobs import layout
from wfl_async.session import session_scope

pytestmark = pytest.mark.remote


async def _finished_job(system: str, tag: str) -> tuple[RemoteJob, Path, bytes]:
    """A job run to success; its local result file (cut short) and that file's right bytes.

    Its files came back in a fetched bundle: the copy cut short is put in its own directory, which wins
    over any bundle, beside its final marker, as a driver killed while fetching it again leaves it."""
    job = RemoteJob(operator.mul, (6, 7), sys_name=system, job_name=f"{tag}-{uuid.uuid4().hex[:6]}",
                    check_interval=0.3, resources={"num_cores": 1, "max_time": "5m"}, partial_node=True)
    assert await job.aio() == 42
    async with session_scope() as session:
        prepared = job.prepare(session)
        files = session.fetched.files(prepared.job_dir)
        assert files is not None
        local = prepared.local_dir / layout.RESULT
    data, marker = files.read(layout.RESULT), files.read(layout.SUCCEEDED)
    assert data is not None and marker is not None
    local.parent.mkdir(parents=True, exist_ok=True)
    (local.parent / layout.SUCCEEDED).write_bytes(marker)
    local.write_bytes(data[: len(data) // 2])  # cut short
    return job, local, data


async def test_a_local_result_cut_short_is_fetched_again(remote_system: str, fresh_expyre_root: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    job, local, data = await _finished_job(remote_system, "cut")
    caplog.set_level(logging.WARNING, logger="wfl_async")
    assert await job.aio() == 42
    assert "fetching it again" in caplog.text and local.read_bytes() == data


async def test_a_result_that_does_not_match_its_marker_on_either_side_is_refused(
        remote_system: str, fresh_expyre_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    job, _, _ = await _finished_job(remote_system, "corrupt")
    async with session_scope() as session:
        prepared = job.prepare(session)
        record = await session.db.get(prepared.key)
        assert record is not None and record.remote_root
        remote = f"{record.remote_root}/{record.job_dir}/{layout.RESULT}"
        await session.system(remote_system).transport.run(f"printf x >> {shlex.quote(remote)}")
    caplog.set_level(logging.WARNING, logger="wfl_async")
    with pytest.raises(ResultIntegrityError, match="is not the result its job wrote"):
        await job.aio()
    assert "fetching it again" in caplog.text  # the copy fetched again is refused too
