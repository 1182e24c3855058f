"""Kills at a job's limits met by escalation (issue 17 items 5-6), against the real schedulers.

Each test's system is copied with a grace for vanished jobs longer than the test may take, so only
the scheduler's accounting (``sacct``, ``qacct``) read within a poll can tell the job ended, and why.
Time limits: SGE kills at ``h_rt`` to the second; Slurm at whole minutes (its shortest limit, 1 min,
so its tests take about 70 s); the local runner to the second.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from ase.build import bulk

from tests.conftest import remote_system_names
from tests.helpers import remote_functions as rf
from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo, autoparallelize
from wfl_async.configset import ConfigSet, OutputSpec
from wfl_async.errors import JobDiedError
from wfl_async.job import RemoteJob
from wfl_async.jobs.escalation import Escalation
from wfl_async.jobs.states import JobStatus
from wfl_async.session import session_scope

pytestmark = pytest.mark.remote

GRACE = 900
"""Seconds a vanished job waits before it is called died: longer than any of these tests."""
SHORT_LIMIT = {"sge": (10, "10s"), "local": (3, "3s"), "slurm": (60, "1m")}
"""Per scheduler: the shortest time limit it kills at (s, and as resources' max_time)."""
SPLIT_LIMIT = {"sge": (20, "20s"), "local": (20, "20s")}
"""Per scheduler: a time limit whose 0.6 leaves room for a Python start under load (a split chunk's half)."""


def systems(*names: str) -> list[str]:
    """``names`` that the configured systems (and EXPYRE_PYTEST_SYSTEMS) have."""
    wanted = [n for n in remote_system_names() if n in names]
    return wanted or ["<none of " + ", ".join(names) + " configured>"]


def patient_copy(root: Path, system: str) -> str:
    """``system`` copied as ``<system>_patient``, with a grace longer than the test: only its accounting
    can end a killed job in time."""
    config = json.loads((root / "config.json").read_text())
    assert system in config["systems"], f"{system} is not configured: run scripts/testinfra/start_all.sh"
    config["systems"][f"{system}_patient"] = {**config["systems"][system], "died_grace_seconds": GRACE}
    (root / "config.json").write_text(json.dumps(config))
    return f"{system}_patient"


def scheduler_of(system: str) -> str:
    return "local" if system.startswith("local") else system.split("_")[0]


async def record_of(name: str) -> Any:
    async with session_scope() as rt:
        (record,) = await rt.db.select(name=f"^{re.escape(name)}$")
    return record


@pytest.mark.parametrize("system", systems("slurm", "slurm_ssh", "sge", "sge_ssh", "local"))
async def test_a_job_killed_at_its_time_limit_is_rerun_with_twice_the_time(
        fresh_expyre_root: Path, caplog: pytest.LogCaptureFixture, system: str) -> None:
    limit, max_time = SHORT_LIMIT[scheduler_of(system)]
    patient = patient_copy(fresh_expyre_root, system)
    caplog.set_level(logging.INFO, logger="wfl_async")
    name = f"esc-time-{uuid.uuid4().hex[:6]}"
    call = RemoteJob(rf.needs_more_time_than, (limit, "done"), sys_name=patient, job_name=name,
                     resources={"num_nodes": 1, "max_time": max_time}, check_interval=1)
    # on Slurm, in the same minute: the same function as a packed chunk, killed with its worker
    packed = RemoteJob(rf.needs_more_time_than, (limit, "packed done"), sys_name=patient, job_name=f"{name}-packed",
                       resources={"num_nodes": 1, "max_time": max_time}, check_interval=1, pack={"workers": 1}) \
        if scheduler_of(system) == "slurm" else None
    values: dict[str, object] = {}

    async def run(label: str, job: RemoteJob) -> None:
        values[label] = await job

    with anyio.fail_after(GRACE - 60):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run, "own", call)
            if packed is not None:
                tasks.start_soon(run, "packed", packed)
    assert values["own"] == "done"
    steps = [r.getMessage() for r in caplog.records if "escalating" in r.getMessage()]
    if packed is not None:
        assert values["packed"] == "packed done"
        packed_steps = [m for m in steps if f"{name}-packed" in m]
        assert len(packed_steps) == 1 and f"-> {_hms(2 * limit)} after a TIMEOUT" in packed_steps[0], steps
        assert "(its worker job " in packed_steps[0] and ": Slurm TIMEOUT)" in packed_steps[0], packed_steps
        record = await record_of(f"{name}-packed")
        assert record.status is JobStatus.SUCCEEDED and record.max_time == 2 * limit and record.route == "direct"
        assert Escalation.from_json(record.escalation).max_time == 2 * limit  # a rerun goes on from it
        steps = [m for m in steps if m not in packed_steps]
    assert len(steps) == 1, steps
    assert f"-> {_hms(2 * limit)} after a TIMEOUT" in steps[0], steps
    named = {"slurm": f"killed at its time limit {_hms(limit)} (Slurm TIMEOUT)",
             "sge": f"killed at its time limit {_hms(limit)} (SGE failed 37", "local": "killed at its time limit"}
    assert named[scheduler_of(system)] in steps[0], steps  # the accounting's cause, within a poll (no grace)
    record = await record_of(name)
    assert record.status is JobStatus.SUCCEEDED and record.max_time == 2 * limit
    assert Escalation.from_json(record.escalation).max_time == 2 * limit
    # what the CLI shows of it, as a user runs it
    step = f"time limit {_hms(limit)} -> {_hms(2 * limit)} after a TIMEOUT"
    assert f"escalated:  {step}" in await cli("ls", "-l", "-n", name)
    assert f"time {_hms(2 * limit)}" in await cli("ls", "-n", name)
    assert f"escalated: {step}" in await cli("log", "--no-fetch", name)


@pytest.mark.parametrize("system", systems("sge", "local"))
async def test_a_job_still_killed_at_the_partitions_limit_says_what_was_tried(
        fresh_expyre_root: Path, system: str) -> None:
    """The partition allows twice the first limit: one escalation, then the error lists it."""
    limit, max_time = SHORT_LIMIT[scheduler_of(system)]
    patient = patient_copy(fresh_expyre_root, system)
    config = json.loads((fresh_expyre_root / "config.json").read_text())
    for partition in config["systems"][patient]["partitions"].values():
        partition["max_time"] = f"{2 * limit}s"
    (fresh_expyre_root / "config.json").write_text(json.dumps(config))
    call = RemoteJob(rf.needs_more_time_than, (2 * limit, "never"), sys_name=patient,
                     job_name=f"esc-limit-{uuid.uuid4().hex[:6]}", resources={"num_nodes": 1, "max_time": max_time},
                     check_interval=1)
    with anyio.fail_after(GRACE - 60), pytest.raises(JobDiedError) as info:
        await call
    message = str(info.value)
    assert f"Escalation tried: time limit {_hms(limit)} -> {_hms(2 * limit)} after a TIMEOUT; it is at the " \
           f"partition's limit" in message, message
    assert "killed at its time limit" in message and "max_time" in message


@pytest.mark.parametrize("system", systems("slurm", "slurm_ssh", "sge", "sge_ssh"))
async def test_a_job_killed_above_its_memory_is_rerun_with_twice_the_memory(
        fresh_expyre_root: Path, caplog: pytest.LogCaptureFixture, system: str) -> None:
    """Slurm kills a job above its --mem (OverMemoryKill: FAILED 0:9, its stderr says why); SGE's
    h_vmem refuses the allocation (MemoryError). 300 MB held under a 256 MB request, then under 512 MB."""
    patient = patient_copy(fresh_expyre_root, system)
    caplog.set_level(logging.INFO, logger="wfl_async")
    name = f"esc-mem-{uuid.uuid4().hex[:6]}"
    call = RemoteJob(rf.hold_memory, (300, 3, "held"), sys_name=patient, job_name=name,
                     resources={"num_nodes": 1, "max_time": "5m", "max_mem_tot": "256MB"}, check_interval=1)
    with anyio.fail_after(120):
        assert await call == "held"
    steps = [r.getMessage() for r in caplog.records if "escalating" in r.getMessage()]
    assert len(steps) == 1 and "memory 256 MB -> 512 MB" in steps[0], steps
    if scheduler_of(system) == "slurm":  # the accounting named the kill, within a poll (no grace)
        assert "killed for exceeding its memory request (Slurm FAILED, memory limit in its stderr)" in steps[0]
    assert Escalation.from_json((await record_of(name)).escalation).mem_kb == 512 * 1024


async def run_split_call(system: str, name: str) -> list[int]:
    """The split workload of the tests below (4 configurations of 0.3 x the limit, one chunk): the
    indices of the configurations that came back labelled."""
    limit, max_time = SPLIT_LIMIT[scheduler_of(system.removesuffix("_patient"))]
    inputs = []
    for i in range(4):
        atoms = bulk("Cu", "fcc", a=3.6)
        atoms.info.update(i=i, seconds=0.3 * limit)
        inputs.append(atoms)
    info = AutoparaInfo(num_inputs_per_python_subprocess=1, remote_info=RemoteInfo(
        sys_name=system, job_name=name, num_inputs_per_queued_job=4, resources={"num_nodes": 1, "max_time": max_time},
        check_interval=0.5, env_vars=["WFL_NUM_PYTHON_SUBPROCESSES=1"]))
    out = await autoparallelize.aio(rf._label_after_sleeping, ConfigSet(inputs), OutputSpec(), autopara_info=info)
    return [a.info["i"] for a in out if a.info.get("labelled")]


@pytest.mark.parametrize("system", systems("sge", "sge_ssh", "local"))
async def test_a_chunk_killed_at_its_time_limit_is_split_and_a_rerun_recomputes_nothing(
        fresh_expyre_root: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
        system: str) -> None:
    """Four configurations of 0.3 x the time limit each: the chunk is killed, its halves fit (under a heavy
    load a half may be split or given more time again: each split leaves its died chunk)."""
    monkeypatch.setenv("WFL_EXPYRE_NO_MARK_PROCESSED", "1")
    patient = patient_copy(fresh_expyre_root, system)
    caplog.set_level(logging.INFO, logger="wfl_async")
    name = f"esc-split-{uuid.uuid4().hex[:6]}"
    with anyio.fail_after(150):
        assert await run_split_call(patient, name) == [0, 1, 2, 3]  # every configuration, labelled
    assert sum("split in two (4 configurations) after a TIMEOUT" in r.getMessage() for r in caplog.records) == 1
    splits = sum("split in two" in r.getMessage() for r in caplog.records)
    async with session_scope() as rt:
        records = await rt.db.select(system=patient)
    statuses = [r.status for r in records]
    assert statuses.count(JobStatus.DIED) == splits and statuses.count(JobStatus.SUCCEEDED) == len(records) - splits
    assert len(records) == 1 + 2 * splits
    submitted = sorted((r.key, r.remote_id) for r in records)

    caplog.clear()  # a rerun: the whole chunk split at once, its halves re-attached, nothing submitted
    with anyio.fail_after(60):
        assert await run_split_call(patient, name) == [0, 1, 2, 3]
    async with session_scope() as rt:
        assert sorted((r.key, r.remote_id) for r in await rt.db.select(system=patient)) == submitted
    assert not any("escalating" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("system", systems("sge"))
async def test_a_driver_killed_after_a_split_reruns_the_halves_exactly_once(
        fresh_expyre_root: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
        system: str) -> None:
    """kill -9 of the workflow once the chunk was split and its halves submitted: the rerun splits the
    chunk at once (recorded in the jobs database), never submits it again, and takes the halves' results."""
    monkeypatch.setenv("WFL_EXPYRE_NO_MARK_PROCESSED", "1")
    patient = patient_copy(fresh_expyre_root, system)
    name = f"esc-kill-{uuid.uuid4().hex[:6]}"
    script = f"import anyio\nfrom tests.remote.test_escalation import run_split_call\n" \
             f"print(anyio.run(run_split_call, {patient!r}, {name!r}))\n"
    driver = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with anyio.fail_after(150):
            while True:
                async with session_scope() as rt:
                    records = await rt.db.select(name=name)
                split = [r for r in records if Escalation.from_json(r.escalation).split]
                if split and sum(1 for r in records if r.remote_id and r is not split[0]) >= 2:
                    break
                await anyio.sleep(0.3)
    finally:
        driver.kill()  # SIGKILL: no clean-up of any kind
        driver.wait()
    before = {r.key: r.remote_id for r in records}
    parent = split[0]

    caplog.set_level(logging.INFO, logger="wfl_async")
    with anyio.fail_after(120):
        assert await run_split_call(patient, name) == [0, 1, 2, 3]
    async with session_scope() as rt:
        after = {r.key: r for r in await rt.db.select(name=name)}
    assert after[parent.key].remote_id == parent.remote_id and after[parent.key].status is JobStatus.DIED
    assert set(before) <= set(after)  # the same halves (more only if a half was split again)
    assert not any("split in two (4 configurations)" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("system", systems("sge", "sge_ssh"))
async def test_with_escalation_off_a_kill_at_the_time_limit_is_named_within_a_poll(
        fresh_expyre_root: Path, caplog: pytest.LogCaptureFixture, system: str) -> None:
    limit, max_time = SHORT_LIMIT[scheduler_of(system)]
    patient = patient_copy(fresh_expyre_root, system)
    caplog.set_level(logging.INFO, logger="wfl_async")
    call = RemoteJob(rf.needs_more_time_than, (limit, "never"), sys_name=patient,
                     job_name=f"esc-off-{uuid.uuid4().hex[:6]}", resources={"num_nodes": 1, "max_time": max_time},
                     check_interval=1, escalate=False)
    with anyio.fail_after(GRACE - 60), pytest.raises(JobDiedError) as info:
        await call
    message = str(info.value)
    assert f"killed at its time limit {_hms(limit)} (" in message, message
    assert "SGE failed 37" in message
    assert "max_time" in message
    assert not any("escalating" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("system", systems("slurm", "sge"))
async def test_a_users_cancel_is_told_apart_within_a_poll(fresh_expyre_root: Path, system: str) -> None:
    """Cancelled with the scheduler's own command (as the user at a shell): the job's error says cancelled,
    long before the grace, and nothing escalates."""
    patient = patient_copy(fresh_expyre_root, system)
    name = f"esc-cancel-{uuid.uuid4().hex[:6]}"
    call = RemoteJob(rf.sleep_then_return, (600, "never"), sys_name=patient, job_name=name,
                     resources={"num_nodes": 1, "max_time": "10m"}, check_interval=1)
    died: list[BaseException] = []

    async def run() -> None:
        try:
            await call
        except JobDiedError as exc:
            died.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(60):
            while (remote_id := (await _maybe_record(name) or {}).get("remote_id")) is None:
                await anyio.sleep(0.3)
        command = ["scancel", remote_id] if system == "slurm" else ["qdel", remote_id]
        await anyio.to_thread.run_sync(lambda: subprocess.run(command, check=True, capture_output=True))
        with anyio.fail_after(60):
            while not died:
                await anyio.sleep(0.3)
    assert "cancelled (by a user or an administrator)" in str(died[0]), died[0]


async def _maybe_record(name: str) -> dict[str, Any] | None:
    async with session_scope() as rt:
        records = await rt.db.select(name=name)
    return {"remote_id": records[0].remote_id} if records and records[0].remote_id else None


async def cli(*args: str) -> str:
    """``wfl-async ARGS`` in a process of its own (as a user runs it); its output."""
    done = await anyio.run_process([sys.executable, "-m", "wfl_async.cli", *args], check=False,
                                   env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]), COLUMNS="250"))
    assert done.returncode == 0, (done.stdout + done.stderr).decode()
    return done.stdout.decode()


def _hms(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{(seconds // 60) % 60:02d}:{seconds % 60:02d}"
