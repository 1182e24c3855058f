"""Packing (``RemoteInfo(..., pack={"workers": N})``) against the real schedulers, directly and over ssh.

Each chunk appends a line to ``_completions.log`` in its own job directory when its function
finishes, read back from the system afterwards: a chunk run to completion twice (or never)
shows there, whatever the driver believed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from ase.io import read

from tests.conftest import remote_system_names
from tests.helpers import remote_functions as rf
from tests.helpers.faulty_scheduler import faulty_system, submitted
from tests.helpers.processes import kill_then_rerun
from tests.remote.test_autoparallelize_remote import cells
from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo, autoparallelize
from wfl_async.configset import ConfigSet, OutputSpec
from wfl_async.errors import SchedulerError
from wfl_async.jobs.route import RouteKind
from wfl_async.jobs.states import ACTIVE_STATES
from wfl_async.pack.coordinator import worker_remote_id
from wfl_async.pack.queue import PACK_ROOT
from wfl_async.session import Session, session_scope

pytestmark = pytest.mark.remote

PACKING_SYSTEMS = re.compile(r"^(slurm|sge)(_ssh)?$")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``pack_system``: the configured systems (``EXPYRE_PYTEST_SYSTEMS``) among slurm, slurm_ssh, sge, sge_ssh;
    ``direct_pack_system``: those of them without ssh (the queue window is the same over ssh)."""
    for fixture, direct_only in (("pack_system", False), ("direct_pack_system", True)):
        if fixture in metafunc.fixturenames:
            names = [n for n in remote_system_names() if PACKING_SYSTEMS.match(n)
                     and not (direct_only and n.endswith("_ssh"))] \
                if metafunc.config.getoption("--runremote") else ["slurm"]
            metafunc.parametrize(fixture, names)


def packed_info(system: str, **kwargs: Any) -> RemoteInfo:
    values: dict[str, Any] = {
        "sys_name": system, "job_name": f"pack-{system}-{uuid.uuid4().hex[:6]}",
        "resources": {"num_cores": 1, "max_time": "10m"}, "partial_node": True, "num_inputs_per_queued_job": 1,
        "check_interval": 0.3, "pack": {"workers": 2, "idle_seconds": 1}}
    values.update(kwargs)
    return RemoteInfo(**values)


async def completions(session: Session, system: str, job_name: str) -> dict[str, int]:
    """Chunk job dir -> lines in its ``_completions.log`` on the system."""
    records = [r for r in await session.db.select(system=system) if r.name.startswith(f"{job_name}_chunk_")]
    target = session.system(system)
    root = await target.remote_root()
    dirs = " ".join(r.job_dir for r in records)
    answer = await target.transport.run(
        f"cd {root} && for d in {dirs}; do echo \"$d $(cat $d/_completions.log 2>/dev/null | wc -l)\"; done")
    return {line.split()[0]: int(line.split()[1]) for line in answer.stdout.decode().splitlines()}


async def listed_workers(session: Session, system: str) -> dict[str, str | None]:
    """Worker (not exited of its own accord or retired) -> its queue id, as one survey lists them."""
    target = session.system(system)
    root = await target.remote_root()
    await target.survey([], root)
    listing, states = session.packing(system).listed[root]
    return {name: worker_remote_id(answer, target.scheduler, queue.own_ids.get(name), states)
            for queue in listing.packs.values() for name, answer in queue.workers.items()}


async def test_packed_chunks_survive_a_cancelled_worker_and_run_once_each(
        pack_system: str, fresh_expyre_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WFL_EXPYRE_NO_MARK_PROCESSED", "1")
    info = packed_info(pack_system, env_vars=["WFL_TEST_SLEEP=1.5"])
    output = tmp_path / "out.xyz"
    async with session_scope() as session:
        system = await session.serving(pack_system)
        coordinator = session.packing(pack_system)
        cancelled: list[str] = []

        async def cancel_a_worker_mid_chunk() -> None:
            # a worker is running a chunk once the poll lists a chunk as taken by it
            while True:
                await anyio.sleep(0.2)
                root = await system.remote_root()
                listing, _ = coordinator.listed.get(root, (None, None))
                busy = [worker_remote_id(queue.workers[w], system.scheduler, queue.own_ids.get(w)) for queue in
                        (listing.packs.values() if listing else ()) for w in queue.taken.values() if w in queue.workers]
                if busy and busy[0]:
                    cancelled.append(busy[0])
                    await system.control("cancel", [busy[0]])
                    return

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(cancel_a_worker_mid_chunk)
            result = await autoparallelize.aio(rf._counted_label, ConfigSet(cells(10)), OutputSpec(output),
                                               autopara_info=AutoparaInfo(remote_info=info))
            tasks.cancel_scope.cancel()
        assert [a.info["i"] for a in result] == list(range(10)) and all(a.info["labelled"] for a in result)
        assert [a.info["i"] for a in read(output, ":")] == list(range(10))
        records = await session.db.select(system=pack_system)
        assert len(records) == 10 and all(r.route is RouteKind.PACKED and r.pack_id for r in records)
        assert cancelled and coordinator.stats["chunks_put_back"] >= 1, "no chunk was taken again"
        # the chunk the cancelled worker was running ran again elsewhere, to completion once
        assert set((await completions(session, pack_system, info.job_name)).values()) == {1}
        assert system.stats["scheduler_calls"] > 0 and coordinator.stats["workers_submitted"] >= 3
        # workers exit by themselves once the queue is empty (idle_seconds=1), the cancelled one
        # was retired by the driver: none is left, and the scheduler lists none of them
        with anyio.fail_after(120):
            while await listed_workers(session, pack_system):
                await anyio.sleep(1)
        states = await system.queue_states()
        assert cancelled[0] not in states or states[cancelled[0]] not in ACTIVE_STATES


RESTART_SCRIPT = """
import json, sys
from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo, autoparallelize
from wfl_async.configset import ConfigSet, OutputSpec
from wfl_async.session import session_scope
from tests.conftest import remote_system_names
from tests.helpers import remote_functions as rf
from tests.remote.test_autoparallelize_remote import cells
import anyio

async def main():
    info = RemoteInfo(**json.loads(sys.argv[2]))
    async with session_scope() as session:
        await autoparallelize.aio(rf._counted_label, ConfigSet(cells(8)), OutputSpec(sys.argv[1]),
                                  autopara_info=AutoparaInfo(remote_info=info))
        system = session.system(info.sys_name)
        print(json.dumps({**session.packing(info.sys_name).stats, **system.stats}))

anyio.run(main)
"""


async def test_a_driver_killed_after_queueing_is_rerun_and_reattaches_without_queueing_again(
        pack_system: str, fresh_expyre_root: Path, tmp_path: Path) -> None:
    script = tmp_path / "workflow.py"
    script.write_text(RESTART_SCRIPT)
    info = packed_info(pack_system, env_vars=["WFL_TEST_SLEEP=1"])
    output = tmp_path / "out.xyz"
    env = dict(os.environ, WFL_EXPYRE_NO_MARK_PROCESSED="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    command = [sys.executable, str(script), str(output), json.dumps(info.to_dict())]
    first = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    async with session_scope() as session:
        with anyio.fail_after(120):  # until every chunk is recorded as queued in its pack
            while len([r for r in await session.db.select(system=pack_system) if r.remote_id]) < 8:
                assert first.poll() is None, first.communicate()[1].decode()[-3000:]
                await anyio.sleep(0.1)
    rerun = kill_then_rerun(first, command, env=env, cwd=tmp_path, output=output)
    stats = json.loads(rerun.stdout.decode().splitlines()[-1])
    assert stats["enqueue_commands"] == 0, "the rerun queued chunk work again"
    assert [a.info["i"] for a in read(output, ":")] == list(range(8))
    async with session_scope() as session:
        assert set((await completions(session, pack_system, info.job_name)).values()) == {1}
        root = await session.system(pack_system).remote_root()
        listing = await session.system(pack_system).transport.run(f"ls {root}/{PACK_ROOT}")
        assert len(listing.stdout.split()) == 1  # one pack: the rerun's chunks went to the same queue
    # the command line sees the pack: nothing queued or running, every chunk done
    shown = subprocess.run([sys.executable, "-m", "wfl_async.cli", "workers", "-n", f"{info.job_name}.*"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    row = next(line.split() for line in shown.stdout.splitlines() if line.startswith(pack_system))
    assert row[2:5] == ["0", "0", "8"], shown.stdout



async def test_worker_jobs_count_against_max_queued_jobs_and_packed_chunks_do_not(
        direct_pack_system: str, fresh_expyre_root: Path, tmp_path: Path) -> None:
    pack_system = direct_pack_system
    config_file = fresh_expyre_root / "config.json"
    config = json.loads(config_file.read_text())
    config["systems"][pack_system]["max_queued_jobs"] = 1
    config_file.write_text(json.dumps(config))
    info = packed_info(pack_system, pack={"workers": 3, "idle_seconds": 0.5})
    async with session_scope() as session:
        result = await autoparallelize.aio(rf._counted_label, ConfigSet(cells(6)), OutputSpec(tmp_path / "out.xyz"),
                                           autopara_info=AutoparaInfo(remote_info=info))
        assert [a.info["i"] for a in result] == list(range(6))
        system = session.system(pack_system)
        # six chunks queued at once, but never more than one worker job in the queue
        assert system.window.peak == 1 and session.packing(pack_system).stats["workers_submitted"] >= 1


async def test_a_late_queue_listing_submits_no_worker_past_the_target(
        fresh_expyre_root: Path, tmp_path: Path, direct_pack_system: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The status program answers 1 s late: a poll's listing then lacks a worker submitted while it
    # ran, though the worker's id is known by the time the driver reads the listing. A worker
    # missing from one listing is not gone (it is dead only after the grace): no replacement may
    # be submitted for it. One call queues 1 chunk (1 worker of the target 2), a second call 11
    # more of the same pack while the first is polled: its worker goes out while polls run.
    # Counted from the submit program's own log (each worker job directory it took).
    state = tmp_path / "faults"
    state.mkdir()
    system = faulty_system(fresh_expyre_root, state, direct_pack_system, mode="none", status_delay=1.0, grace=20)
    monkeypatch.setenv("WFL_EXPYRE_NO_MARK_PROCESSED", "1")
    info = packed_info(system, env_vars=["WFL_TEST_SLEEP=0.5"], check_interval=0.2)
    configs = cells(12)
    results: dict[str, list[Any]] = {}
    async with session_scope() as session:
        await session.serving(system)
        coordinator = session.packing(system)

        async def call(name: str, inputs: list[Any]) -> None:
            results[name] = await autoparallelize.aio(rf._counted_label, ConfigSet(inputs),
                                                      OutputSpec(tmp_path / f"{name}.xyz"),
                                                      autopara_info=AutoparaInfo(remote_info=info))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(call, "one", configs[:1])
            with anyio.fail_after(120):
                while not coordinator.stats["workers_submitted"]:
                    await anyio.sleep(0.05)
            tasks.start_soon(call, "more", configs[1:])
        assert [a.info["i"] for a in results["one"] + results["more"]] == list(range(12))
        assert all(a.info["labelled"] for a in results["one"] + results["more"])
        workers = [d for d in submitted(state) if f"/{PACK_ROOT}/" in d and "/workers/" in d]
        assert len(workers) == coordinator.stats["workers_submitted"] == 2, workers
        assert set((await completions(session, system, info.job_name)).values()) == {1}


HOLD_HEADER = {"slurm": "#SBATCH --hold", "sge": "#$ -h"}
"""A header line that submits a job held: the workers then start together when released."""


def worker_processes(worker_dir: str) -> list[int]:
    """Pids of the worker processes (``python -m wfl_async.pack.worker``) running in ``worker_dir`` (this host)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and os.path.realpath(entry / "cwd") == os.path.realpath(worker_dir)
                    and b"wfl_async.pack.worker" in (entry / "cmdline").read_bytes()):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


async def test_workers_started_at_once_one_killed_mid_claim_run_every_chunk_exactly_once(
        pack_system: str, fresh_expyre_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Three workers are submitted held and released together, racing for the same queue. The
    # fault: one chunk's queue entry is a named pipe, so the worker whose rename takes it blocks
    # inside its claim (reading the entry) and is killed there (kill -9): its chunk is taken but
    # never started. The driver must give it back once the worker leaves the scheduler's queue,
    # and another worker run it: each chunk's own records (its completions log, the worker its
    # started marker names) show every chunk run exactly once.
    config_file = fresh_expyre_root / "config.json"
    config = json.loads(config_file.read_text())
    config["systems"][pack_system]["died_grace_seconds"] = 5
    config_file.write_text(json.dumps(config))
    monkeypatch.setenv("WFL_EXPYRE_NO_MARK_PROCESSED", "1")
    hold = HOLD_HEADER[pack_system.removesuffix("_ssh")]
    info = packed_info(pack_system, env_vars=["WFL_TEST_SLEEP=0.3"], header_extra=[hold],
                       pack={"workers": 3, "idle_seconds": 5})
    chunks = 9
    async with session_scope() as session:
        system = await session.serving(pack_system)
        coordinator = session.packing(pack_system)
        root = await system.remote_root()
        killed: list[tuple[str, str]] = []  # (chunk, the worker killed mid-claim on it)

        async def remote(command: str) -> str:
            return (await system.transport.run(f"cd {root}/{PACK_ROOT} && {command}")).stdout.decode()

        async def trap_release_and_kill() -> None:
            with anyio.fail_after(240):  # the machine may be loaded: only a hang fails here
                while (len([r for r in await session.db.select(system=pack_system) if r.remote_id]) < chunks
                       or coordinator.stats["workers_submitted"] < 3):
                    await anyio.sleep(0.2)
                pid = (await remote("ls")).split()[0]
                trap = sorted((await remote(f"ls {pid}/todo")).split())[chunks // 2]
                await remote(f"rm {pid}/todo/{trap} && mkfifo {pid}/todo/{trap}")
                workers = await listed_workers(session, pack_system)
                assert len(workers) == 3 and all(workers.values()), workers
                await system.control("release", [w for w in workers.values() if w])  # all three at once
                while not (taken := (await remote(f"ls {pid}/taken")).split()):
                    await anyio.sleep(0.05)
                while not any(t.startswith(f"{trap}@") for t in taken):
                    await anyio.sleep(0.05)
                    taken = (await remote(f"ls {pid}/taken")).split()
                victim = next(t for t in taken if t.startswith(f"{trap}@")).rpartition("@")[2]
                processes = worker_processes(f"{root}/{PACK_ROOT}/{pid}/workers/{victim}")
                assert len(processes) == 1, processes
                os.kill(processes[0], signal.SIGKILL)
                killed.append((trap, victim))
                # the fault goes: the entry becomes what the killed worker's claim left, an empty file
                await remote(f"rm {pid}/taken/{trap}@{victim} && : > {pid}/taken/{trap}@{victim}")
            while True:  # workers submitted from now on (replacements) are held too: release them
                await anyio.sleep(1)
                held = [w for w in (await listed_workers(session, pack_system)).values() if w]
                with contextlib.suppress(SchedulerError):  # a worker already running is not held
                    await system.control("release", held)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(trap_release_and_kill)
            result = await autoparallelize.aio(rf._counted_label, ConfigSet(cells(chunks)),
                                               OutputSpec(tmp_path / "out.xyz"),
                                               autopara_info=AutoparaInfo(remote_info=info))
            tasks.cancel_scope.cancel()
        assert [a.info["i"] for a in result] == list(range(chunks)) and all(a.info["labelled"] for a in result)
        assert killed and coordinator.stats["chunks_put_back"] == 1
        assert set((await completions(session, pack_system, info.job_name)).values()) == {1}
        records = [r for r in await session.db.select(system=pack_system) if r.name.startswith(info.job_name)]
        started = (await system.transport.run(
            f"cd {root} && for d in {' '.join(r.job_dir for r in records)}; do echo \"$d $(cat $d/_wfl_async_started)\"; "
            f"done")).stdout.decode().split("\n")
        ran_by = {line.split()[0]: line.split()[-1] for line in started if line.strip()}
        assert len(ran_by) == chunks and len(set(ran_by.values())) >= 2, ran_by  # the workers raced
        trap, victim = killed[0]
        assert ran_by[trap].startswith("w") and ran_by[trap] != victim  # run once, by another worker
        # no held worker is left behind (one submitted as the call ended would wait forever); a worker
        # listed here may exit (idle) before the cancel reaches it: SGE's qdel then exits 1
        with contextlib.suppress(SchedulerError):
            await system.control("cancel", [w for w in (await listed_workers(session, pack_system)).values() if w])
