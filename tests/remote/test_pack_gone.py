"""A pack's ``gone`` entries pruned on the real system (issue 16): every survey lists what is left in
``gone``, so the coordinator removes each entry whose chunk the jobs database records as ended, and keeps
the others (a rerun may still watch them). The entries are made by the queue's own shell text."""

from __future__ import annotations

import shlex
import uuid

import anyio
import pytest

from wfl_async.jobs.states import JobStatus
from wfl_async.pack.queue import GONE, enqueue_command, queue_dir, unqueue_command
from wfl_async.session import session_scope

pytestmark = pytest.mark.remote


@pytest.mark.parametrize("system", ["slurm_ssh"])
async def test_gone_entries_of_ended_chunks_are_pruned_and_the_others_kept(fresh_expyre_root: object, system: str) -> None:
    pid, tag = f"gonetest{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8]
    ended, watched = f"ended-{tag}", f"watched-{tag}"
    async with session_scope() as session:
        served = await session.serving(system)
        remote_root = await served.remote_root()
        where = shlex.quote(remote_root)
        for job_dir in (ended, watched):  # queued, then taken out unrun: into gone/
            await served.transport.run(f"mkdir -p {where}/{job_dir} && cd {where} && "
                                       f"{enqueue_command(pid, [job_dir])} && {unqueue_command(pid, [job_dir])}")
        claim = await session.db.claim(key=tag * 4, name="ended", system=system, job_dir=ended, owner=session.owner)
        await session.db.update(claim.record.key, status=JobStatus.DIED, message="left the queue unrun")
        packing = session.packing(system)
        survey = await served.machine.survey([], remote_root, queue=True, extension=packing.listings)
        assert survey.states is not None
        with anyio.fail_after(30):
            while not packing.stats["gone_pruned"]:
                await anyio.sleep(0.05)
        left = await served.transport.run(f"ls {where}/{queue_dir(pid)}/{GONE}")
        await served.transport.run(f"rm -rf {where}/{queue_dir(pid)} {where}/{ended} {where}/{watched}")
    assert left.stdout.decode().split() == [watched] and packing.stats["gone_pruned"] == 1
