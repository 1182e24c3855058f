"""The job API on every configured system, directly and through the sshd (``--runremote``)."""

from __future__ import annotations

import operator
import os
import shlex
import signal
import subprocess
import sys
import threading
import traceback
import uuid
from pathlib import Path

import anyio
import pytest

from tests.helpers import remote_functions as rf
from tests.helpers.processes import hold_sqlite_write_lock
from wfl_async.errors import ConfigurationError, JobDiedError, JobTimeoutError
from wfl_async.job import RemoteJob
from wfl_async.jobs.database import JobStatus
from wfl_async.session import session_scope

pytestmark = pytest.mark.remote

RESOURCES = {"num_nodes": 1, "max_time": "10m"}
HOSTILE = "odd name ' \" $HOME + ü"


def job(remote_system: str, function, args=(), **kwargs) -> RemoteJob:  # type: ignore[no-untyped-def]
    kwargs.setdefault("job_name", f"t-{remote_system}-{uuid.uuid4().hex[:6]}")
    return RemoteJob(function, args, sys_name=remote_system, resources=RESOURCES, check_interval=0.3, **kwargs)


async def test_value_files_env_and_commands_round_trip(remote_system: str, fresh_expyre_root: Path,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("in put ü.txt").write_text("hello $HOME 'quoted' ü")
    value = await job(remote_system, rf.read_env_and_files, ("in put ü.txt", "out put.txt", "ODD_VALUE"),
                      job_name=f"{HOSTILE} {remote_system}",
                      input_files=["in put ü.txt"], output_files=["out put.txt"],
                      env_vars=["ODD_VALUE='a b $c ü'"], pre_cmds=["echo yes > pre_cmd_ran"],
                      post_cmds=["echo done > post_cmd_ran"], header_extra=["# header line from the test"])
    assert value["input"] == "hello $HOME 'quoted' ü"
    assert value["env"] == "a b $c ü"
    assert value["pre"] == "yes"
    # wfl's default inside a job: one python subprocess per core of the node
    assert value["subprocesses"] == value["cores_per_node"] != "<unset>"
    assert Path("out put.txt").read_text() == "HELLO $HOME 'QUOTED' Ü"
    async with session_scope() as session:  # the script as it ran (sent from memory: no local copy)
        (record,) = await session.db.select()
        system = session.system(remote_system)
        scripts = await system.transport.run(f"cat {shlex.quote(record.remote_root or '')}/"
                                             f"{shlex.quote(record.job_dir)}/job.script.*")
    script = scripts.stdout.decode()
    assert "# header line from the test" in script.split("\n\n")[0]  # in the header block
    assert "export EXPYRE_NUM_CORES_PER_NODE" in script or "EXPYRE_NUM_CORES_PER_NODE=" in script


async def test_remote_exception_is_reraised_with_type_and_traceback(remote_system: str,
                                                                     fresh_expyre_root: Path) -> None:
    with pytest.raises(rf.CustomRemoteError, match="boom on purpose") as info:
        await job(remote_system, rf.raise_custom, ("boom on purpose",))
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "raised in queued job" in notes and "wfl-async log" in notes
    # the job's own traceback, once: its frames last, not repeated in a note
    printed = "".join(traceback.format_exception(info.value))
    assert printed.count("in raise_custom") == 1 and printed.index("in raise_custom") > printed.index("job.py")
    async with session_scope() as rt:
        (record,) = await rt.db.select()
    assert record.status is JobStatus.FAILED


async def test_rerun_reattaches_and_submits_nothing(remote_system: str, fresh_expyre_root: Path) -> None:
    calls = [job(remote_system, operator.mul, (i, 7), job_name=f"reattach-{remote_system}") for i in range(5)]
    async with session_scope() as rt:
        prepared = [c.prepare(rt) for c in calls]
        first = await _gather([p.result for p in prepared])
        assert rt.system(remote_system).stats["submit_commands"] >= 1
    assert first == [i * 7 for i in range(5)]
    async with session_scope() as rt:
        second = await _gather([c.prepare(rt).result for c in calls])
        stats = rt.system(remote_system).stats
        assert {"submit_commands", "poll_commands", "fetch_commands", "scheduler_calls", "submit_retries",
                "scheduler_submissions"} <= set(stats)
        assert {name: count for name, count in stats.items() if count} == {}  # nothing at all was asked
    assert second == first


async def test_timeout_raises_and_leaves_the_job_resumable(remote_system: str, fresh_expyre_root: Path) -> None:
    call = job(remote_system, rf.sleep_then_return, (3, "late"), timeout=0.5)
    with pytest.raises(JobTimeoutError, match="rerun to re-attach"):
        await call
    async with session_scope() as rt:
        (record,) = await rt.db.select()
        remote_id = record.remote_id
    assert record.status in (JobStatus.SUBMITTED, JobStatus.STARTED)
    call.timeout = None
    assert await call == "late"
    async with session_scope() as rt:
        (record,) = await rt.db.select()
    assert record.remote_id == remote_id and record.status is JobStatus.SUCCEEDED


async def test_cancelled_job_is_called_died_after_the_grace_period(remote_system: str,
                                                                    fresh_expyre_root: Path) -> None:
    call = job(remote_system, rf.sleep_then_return, (120, "never"))
    async with session_scope() as rt, anyio.create_task_group() as tg:
        prepared = call.prepare(rt)
        outcome: list[BaseException] = []

        async def run() -> None:
            try:
                await prepared.result()
            except JobDiedError as exc:
                outcome.append(exc)

        tg.start_soon(run)
        with anyio.fail_after(60):
            while (record := await rt.db.get(prepared.key)) is None or record.remote_id is None:
                await anyio.sleep(0.2)
        await rt.system(remote_system).control("cancel", [record.remote_id])
    assert outcome and "without a final marker" in str(outcome[0])
    async with session_scope() as rt:
        assert (await rt.db.get(prepared.key)).status is JobStatus.DIED  # type: ignore[union-attr]


async def test_two_scripts_at_once_submit_the_same_call_once(remote_system: str, fresh_expyre_root: Path,
                                                              tmp_path: Path) -> None:
    script = tmp_path / "same_call.py"
    script.write_text(
        "import anyio, operator\n"
        "from wfl_async.job import RemoteJob\n"
        "from wfl_async.session import session_scope\n"
        "async def main():\n"
        "    async with session_scope() as rt:\n"
        f"        value = await RemoteJob(operator.pow, (3, 4), sys_name={remote_system!r}, job_name='same',\n"
        f"                                resources={RESOURCES!r}, check_interval=0.3).prepare(rt).result()\n"
        "        print(value, rt.system(" + repr(remote_system) + ").stats['submit_commands'])\n"
        "anyio.run(main)\n")
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=root)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(int(o[1]) for o in outputs) == [0, 1]
    assert [o[0] for o in outputs] == ["81", "81"]


async def test_bad_input_fails_before_anything_is_submitted(remote_system: str, fresh_expyre_root: Path,
                                                             tmp_path: Path) -> None:
    bad = {
        "unknown system": (RemoteJob(operator.add, (1, 2), sys_name="no_such_system"), "unknown system"),
        "no partition fits": (job(remote_system, operator.add, (1, 2)), "no partition"),
        "missing input": (job(remote_system, operator.add, (1, 2), input_files=[str(tmp_path / "nope.xyz")]),
                          "does not exist"),
        "unpicklable": (job(remote_system, operator.add, (threading.Lock(), 2)), "cannot pickle"),
    }
    bad["no partition fits"][0].resources = {"num_nodes": 1000, "max_time": "1000d"}
    async with session_scope() as rt:
        for what, (call, message) in bad.items():
            with pytest.raises(ConfigurationError, match=message):
                call.prepare(rt)
            assert await rt.db.select() == [], what
        assert rt.system(remote_system).stats["submit_commands"] == 0


async def _gather(factories):  # type: ignore[no-untyped-def]
    results = [None] * len(factories)
    async with anyio.create_task_group() as tg:
        for i, factory in enumerate(factories):
            async def one(i=i, factory=factory):  # type: ignore[no-untyped-def]
                results[i] = await factory()
            tg.start_soon(one)
    return results


async def test_cancelling_one_caller_mid_batch_fails_no_other_caller(remote_system: str,
                                                                      fresh_expyre_root: Path) -> None:
    # the first caller's request opens the submit batch; it is cancelled while the batch is
    # still gathering: every other job of that batch must still be submitted and return
    calls = [job(remote_system, operator.add, (i, 100), job_name=f"cancel-one-{remote_system}-{i}")
             for i in range(6)]
    results: dict[int, int] = {}
    async with session_scope() as rt:
        prepared = [c.prepare(rt) for c in calls]
        scopes = [anyio.CancelScope() for _ in prepared]

        async def run(index: int) -> None:
            with scopes[index]:
                results[index] = await prepared[index].result()

        async with anyio.create_task_group() as tg:
            for index in range(len(prepared)):
                tg.start_soon(run, index)
            await anyio.sleep(0.02)
            scopes[0].cancel()
    assert results == {i: i + 100 for i in range(1, 6)}
    async with session_scope() as rt:
        record = await rt.db.get(prepared[0].key)
        # the cancelled caller's job was submitted all the same (its batch was not its own), and recorded
        assert record is not None and record.status in (JobStatus.SUBMITTED, JobStatus.STARTED, JobStatus.SUCCEEDED)
    assert await calls[0] == 100


_CLAIM_AND_HANG = """
import anyio, operator, sys
from wfl_async.job import RemoteJob
from wfl_async.session import session_scope

async def main():
    async with session_scope() as session:
        for i in range(4):
            prepared = RemoteJob(operator.mul, (i, 3), sys_name=sys.argv[1], job_name=sys.argv[2],
                                 resources={"num_nodes": 1, "max_time": "10m"}).prepare(session)
            await session.db.claim(key=prepared.key, name=sys.argv[2], system=sys.argv[1],
                                   job_dir=prepared.job_dir, owner=session.owner)
        print("claimed", flush=True)
        await anyio.sleep_forever()

anyio.run(main)
"""


async def test_jobs_claimed_by_a_process_that_died_are_taken_over(remote_system: str,
                                                                   fresh_expyre_root: Path) -> None:
    name = f"orphans-{remote_system}-{uuid.uuid4().hex[:6]}"
    claimer = subprocess.Popen([sys.executable, "-c", _CLAIM_AND_HANG, remote_system, name], stdout=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        assert claimer.stdout is not None and claimer.stdout.readline().strip() == b"claimed"
        claimer.send_signal(signal.SIGSTOP)  # alive but stuck: its claims are waited on
        calls = [RemoteJob(operator.mul, (i, 3), sys_name=remote_system, job_name=name, resources=RESOURCES,
                           check_interval=0.3) for i in range(4)]
        async with session_scope() as rt:
            prepared = [c.prepare(rt) for c in calls]
            values: list[int] = []
            async with anyio.create_task_group() as tg:
                async def all_of_them() -> None:
                    values.extend(await _gather([p.result for p in prepared]))
                tg.start_soon(all_of_them)
                await anyio.sleep(2)
                assert values == [] and rt.system(remote_system).stats["submit_commands"] == 0
                claimer.kill()  # now gone: its claims are taken over
                await anyio.to_thread.run_sync(claimer.wait)
            assert values == [i * 3 for i in range(4)]
            assert sorted(r.status for r in await rt.db.select(name=name)) == [JobStatus.SUCCEEDED] * 4
    finally:
        claimer.kill()
        claimer.wait()


async def test_a_rerun_on_another_system_name_reattaches_where_the_job_was_submitted(
        fresh_expyre_root: Path) -> None:
    # interrupted on slurm, rerun with sys_name="slurm_ssh": the job is waited for on slurm,
    # under the remote root recorded for it, not called died on slurm_ssh
    name = f"moved-{uuid.uuid4().hex[:6]}"
    first = job("slurm", rf.sleep_then_return, (3, "moved"), job_name=name, timeout=0.5)
    with pytest.raises(JobTimeoutError):
        await first
    again = job("slurm_ssh", rf.sleep_then_return, (3, "moved"), job_name=name)
    assert await again == "moved"
    async with session_scope() as rt:
        (record,) = await rt.db.select(name=name)
    assert record.system == "slurm" and record.status is JobStatus.SUCCEEDED


@pytest.mark.parametrize("system", ["slurm", "local", "local_ssh"])
async def test_a_job_that_always_hits_its_time_limit_is_resubmitted_once_and_says_why_it_died(
        fresh_expyre_root: Path, caplog: pytest.LogCaptureFixture, system: str) -> None:
    """Slurm kills at whole minutes; the local runner enforces ``max_time`` to the second (its
    system here copied with a short ``died_grace_seconds``, so the test stays short)."""
    import json
    import logging

    max_time = "1m"
    if system.startswith("local"):
        config = json.loads((fresh_expyre_root / "config.json").read_text())
        config["systems"][f"{system}_limit"] = {**config["systems"][system], "died_grace_seconds": 2}
        (fresh_expyre_root / "config.json").write_text(json.dumps(config))
        system, max_time = f"{system}_limit", "3s"
    caplog.set_level(logging.INFO, logger="wfl_async")
    call = RemoteJob(rf.sleep_then_return, (600, "never"), sys_name=system, job_name=f"limit-{uuid.uuid4().hex[:6]}",
                     resources={"num_nodes": 1, "max_time": max_time}, check_interval=1, resubmit_killed_jobs=True,
                     timeout=900, escalate=False)
    with pytest.raises(JobDiedError, match="time limit"):
        await call
    assert caplog.text.count("resubmitting (resubmit_killed_jobs)") == 1


async def test_another_process_writing_to_the_jobs_database_for_two_minutes_delays_a_workflow_only(
        fresh_expyre_root: Path) -> None:
    """Jobs running on slurm while another process holds the jobs database's write lock for 125 s:
    their results still reach the caller (a fetch queues its update, it does not wait for the
    writer: issue 16), their status updates wait (no 'database is locked'), `wfl-async ls` keeps
    reading meanwhile, and every update is applied once the lock is released."""
    import json

    name = f"dblock-{uuid.uuid4().hex[:6]}"
    calls = [job("slurm", rf.sleep_then_return, (2, i), job_name=name) for i in range(4)]
    holder: subprocess.Popen[bytes] | None = None
    try:
        async with session_scope() as rt:
            values: list[object] = []
            async with anyio.create_task_group() as tg:
                async def all_of_them() -> None:
                    values.extend(await _gather([c.prepare(rt).result for c in calls]))
                tg.start_soon(all_of_them)
                with anyio.fail_after(120):
                    while len([r for r in await rt.db.select(name=name) if r.status is JobStatus.SUBMITTED]) < 4:
                        await anyio.sleep(0.2)
                holder = hold_sqlite_write_lock(rt.db.path, 125)
                await anyio.sleep(15)  # the jobs finish meanwhile; recording that has to wait
                listing = await anyio.run_process([sys.executable, "-m", "wfl_async.cli", "ls", "--json"],
                                                  check=False)
                assert listing.returncode == 0, listing.stderr.decode()
                rows = [r for r in json.loads(listing.stdout) if r.get("name") == name]
                assert len(rows) == 4
                with anyio.fail_after(90):
                    while len(values) < 4:
                        await anyio.sleep(0.2)
                assert holder.poll() is None  # the results came while the lock was still held
            assert values == [0, 1, 2, 3]
            # a read waits for this process's queued updates: they waited for the holder's commit
            assert sorted(r.status for r in await rt.db.select(name=name)) == [JobStatus.SUCCEEDED] * 4
            assert holder.wait(timeout=30) == 0  # it has committed; its exit may come a moment later
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
