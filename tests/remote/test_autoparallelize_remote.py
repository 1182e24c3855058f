"""The reference's scenarios, as queued jobs on every configured system (``--runremote``)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import read, write

import wfl_async.job
from tests.helpers import remote_functions as rf
from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo, autoparallelize
from wfl_async.calculators.generic import calculate
from wfl_async.configset import ConfigSet, OutputSpec
from wfl_async.errors import JobDiedError
from wfl_async.generate.optimize import optimize
from wfl_async.jobs.database import JobStatus
from wfl_async.jobs.hashing import pickle_task
from wfl_async.session import session_scope

pytestmark = pytest.mark.remote


def cells(n: int, seed: int = 1) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.05, rng=rng)
        atoms.info["i"] = i
        out.append(atoms)
    return out


def remote_info(system: str, extra: dict[str, Any], **kwargs: Any) -> RemoteInfo:
    values: dict[str, Any] = {"sys_name": system, "job_name": f"ap-{system}-{uuid.uuid4().hex[:6]}",
                              "resources": {"num_nodes": 1, "max_time": "10m"}, "check_interval": 0.5}
    values.update(kwargs)
    values.update(extra)
    return RemoteInfo(**values)


async def submits(system: str) -> int:
    async with session_scope() as rt:
        return len([r for r in await rt.db.select(system=system)])


async def test_1000_configs_in_chunks_of_36_match_a_serial_run_and_rerun_submits_nothing(
        remote_system: str, fresh_expyre_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        wfl_pytest_expyre_info: dict[str, Any]) -> None:
    monkeypatch.setenv("WFL_EXPYRE_NO_MARK_PROCESSED", "1")
    pickled: list[int] = []  # the tasks pickled, by their chunk's first config: a rerun re-attaching pickles none

    def counted(function: Any, args: Any, kwargs: Any, once: Any = None) -> bytes:
        pickled.append(kwargs["iterable"].items[0].info["i"])
        return pickle_task(function, args, kwargs, once)

    monkeypatch.setattr(wfl_async.job, "pickle_task", counted)
    inputs = cells(1000)
    info = remote_info(remote_system, wfl_pytest_expyre_info, num_inputs_per_queued_job=-36)
    out_file = tmp_path / "calc.xyz"
    # -36 means 36 * num_inputs_per_python_subprocess inputs per job
    autopara = AutoparaInfo(remote_info=info, num_inputs_per_python_subprocess=1)
    result = await calculate.aio(ConfigSet(inputs), OutputSpec(out_file), calculator=(EMT, [], {}),
                                 properties=["energy", "forces"], output_prefix="calc_", autopara_info=autopara)
    remote = list(result)
    assert len(remote) == 1000 and [a.info["i"] for a in remote] == list(range(1000))
    for atoms, got in zip(inputs, remote, strict=True):
        atoms = atoms.copy()
        atoms.calc = EMT()
        assert abs(atoms.get_potential_energy() - got.info["calc_energy"]) < 1e-8
        assert np.abs(atoms.get_forces() - got.arrays["calc_forces"]).max() < 1e-8
    assert [a.info["i"] for a in read(out_file, ":")] == list(range(1000))
    async with session_scope() as rt:
        jobs = await rt.db.select(system=remote_system)
    assert len(jobs) == 28  # ceil(1000 / 36)
    assert sorted(pickled) == list(range(0, 1000, 36))  # each chunk's task once
    pickled.clear()

    # rerun after deleting the output: every chunk re-attached, nothing submitted
    out_file.unlink()
    async with session_scope() as rt:
        again = await calculate.aio(ConfigSet(inputs), OutputSpec(out_file), calculator=(EMT, [], {}),
                                    properties=["energy", "forces"], output_prefix="calc_",
                                    autopara_info=autopara)
        assert rt.system(remote_system).stats["submit_commands"] == 0
    assert pickled == []  # every chunk recorded: no task pickled for nothing (issue 16: 10^5 of them)
    assert [a.info["calc_energy"] for a in again] == [a.info["calc_energy"] for a in remote]

    # a completely written output is reused without contacting any system
    async with session_scope() as rt:
        await calculate.aio(ConfigSet(inputs), OutputSpec(out_file), calculator=(EMT, [], {}),
                            properties=["energy", "forces"], output_prefix="calc_", autopara_info=autopara)
        assert rt.systems == {} or rt.system(remote_system).transport.stats.commands_run == 0


async def test_optimising_two_files_gives_two_ordered_files_matching_a_local_run(
        remote_system: str, fresh_expyre_root: Path, tmp_path: Path,
        wfl_pytest_expyre_info: dict[str, Any]) -> None:
    inputs = cells(6, seed=2)
    for atoms in inputs:
        atoms.info["keep_me"] = f"cell {atoms.info['i']}"
    write(tmp_path / "a.xyz", inputs[:3])
    write(tmp_path / "b.xyz", inputs[3:])
    in_files = [tmp_path / "a.xyz", tmp_path / "b.xyz"]
    local = optimize(ConfigSet(in_files), OutputSpec(["la.xyz", "lb.xyz"], file_root=tmp_path),
                     calculator=(EMT, [], {}), fmax=0.05, steps=20)
    info = remote_info(remote_system, wfl_pytest_expyre_info, num_inputs_per_queued_job=2)
    remote = await optimize.aio(ConfigSet(in_files), OutputSpec(["ra.xyz", "rb.xyz"], file_root=tmp_path),
                                calculator=(EMT, [], {}), fmax=0.05, steps=20,
                                autopara_info=AutoparaInfo(remote_info=info))
    for name_l, name_r in (("la.xyz", "ra.xyz"), ("lb.xyz", "rb.xyz")):
        got_l, got_r = read(tmp_path / name_l, ":"), read(tmp_path / name_r, ":")
        assert len(got_l) == len(got_r) > 0
        assert [a.info["keep_me"] for a in got_r] == [a.info["keep_me"] for a in got_l]
        for a, b in zip(got_l, got_r, strict=True):
            assert np.abs(a.positions - b.positions).max() < 1e-8
            assert a.info["last_op__optimize_energy"] == pytest.approx(b.info["last_op__optimize_energy"], abs=1e-8)
    assert len(list(remote)) == len(list(local))


async def test_a_chunk_that_raises_propagates_its_exception(remote_system: str, fresh_expyre_root: Path,
                                                            wfl_pytest_expyre_info: dict[str, Any]) -> None:
    inputs = cells(6)
    inputs[4].info["bad"] = True
    info = remote_info(remote_system, wfl_pytest_expyre_info, num_inputs_per_queued_job=2)
    with pytest.raises(rf.CustomRemoteError, match="bad configuration 4"):
        await anyio.to_thread.run_sync(lambda: rf.label_or_raise(
            ConfigSet(inputs), OutputSpec(), autopara_info=AutoparaInfo(remote_info=info)))


async def test_ignore_failed_jobs_writes_failed_inputs_marked(remote_system: str, fresh_expyre_root: Path,
                                                              tmp_path: Path,
                                                              wfl_pytest_expyre_info: dict[str, Any]) -> None:
    inputs = cells(6)
    inputs[4].info["bad"] = True
    info = remote_info(remote_system, wfl_pytest_expyre_info, num_inputs_per_queued_job=2,
                       ignore_failed_jobs=True)
    with pytest.warns(UserWarning, match="failed"):
        out = await autoparallelize.aio(rf._label_or_raise, ConfigSet(inputs), OutputSpec(tmp_path / "o.xyz"),
                                        autopara_info=AutoparaInfo(remote_info=info))
    got = list(out)
    assert [a.info["i"] for a in got] == list(range(6))
    assert [bool(a.info.get("EXPYRE_REMOTE_JOB_FAILED")) for a in got] == [False] * 4 + [True] * 2
    assert [bool(a.info.get("labelled")) for a in got] == [True] * 4 + [False] * 2


async def test_resubmit_killed_jobs_resubmits_a_job_that_died(remote_system: str, fresh_expyre_root: Path,
                                                              tmp_path: Path,
                                                              wfl_pytest_expyre_info: dict[str, Any]) -> None:
    inputs = cells(2)
    job_name = f"killed-{remote_system}-{uuid.uuid4().hex[:6]}"
    slow = remote_info(remote_system, wfl_pytest_expyre_info, job_name=job_name, num_inputs_per_queued_job=2,
                       env_vars=["WFL_TEST_SLEEP=300"])
    died: list[BaseException] = []

    async def first_run() -> None:
        try:
            await autoparallelize.aio(rf._label_or_raise, ConfigSet(inputs), OutputSpec(),
                                      autopara_info=AutoparaInfo(remote_info=slow))
        except JobDiedError as exc:
            died.append(exc)

    async with session_scope() as rt, anyio.create_task_group() as tg:
        tg.start_soon(first_run)
        with anyio.fail_after(120):
            while not (jobs := await rt.db.select(status=["submitted", "started"])):
                await anyio.sleep(0.2)
        # kill it the way a time limit would: the scheduler ends it, no marker is written
        await rt.system(remote_system).control("cancel", [jobs[0].remote_id or ""])
    assert died, "the first run should have raised JobDiedError"

    fast = remote_info(remote_system, wfl_pytest_expyre_info, job_name=job_name, num_inputs_per_queued_job=2,
                       resubmit_killed_jobs=True)
    with pytest.raises(JobDiedError):  # without resubmit_killed_jobs the died job is not rerun
        await autoparallelize.aio(rf._label_or_raise, ConfigSet(inputs), OutputSpec(),
                                  autopara_info=AutoparaInfo(remote_info=remote_info(
                                      remote_system, wfl_pytest_expyre_info, job_name=job_name,
                                      num_inputs_per_queued_job=2)))
    out = await autoparallelize.aio(rf._label_or_raise, ConfigSet(inputs), OutputSpec(),
                                    autopara_info=AutoparaInfo(remote_info=fast))
    assert [a.info["labelled"] for a in out] == [True, True]
    async with session_scope() as rt:
        (record,) = await rt.db.select()
    assert record.status is JobStatus.PROCESSED
