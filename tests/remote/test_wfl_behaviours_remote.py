"""wfl call behaviours on the real systems: wait_for_results=False, an empty input, map in jobs."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from ase.build import bulk

from tests.helpers.configs import cu_configs
from wfl_async.configset import ConfigSet, OutputSpec
from wfl_async.map import map as wfl_map

pytestmark = pytest.mark.remote


def _info(system: str, job_name: str) -> dict[str, Any]:
    return {"sys_name": system, "job_name": job_name, "resources": {"num_cores": 1, "max_time": "10m"},
            "partial_node": True, "check_interval": 0.3, "num_inputs_per_queued_job": 2,
            "env_vars": ["WFL_NUM_PYTHON_SUBPROCESSES=0"]}


def _jobs(root: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(root / "wfl_async_jobs.db") as db:
        return sorted(db.execute("SELECT name, status, remote_id FROM jobs").fetchall())


async def test_wait_for_results_false_submits_and_a_later_call_collects(
        remote_system: str, fresh_expyre_root: Path, tmp_path: Path) -> None:
    configs = cu_configs(5)
    outputs = tmp_path / "shifted.xyz"

    def call(**kwargs: Any) -> Any:
        return wfl_map(ConfigSet(configs), OutputSpec(outputs), displaced, args=[0.1], autopara_info={
            "remote_info": _info(remote_system, "nowait")}, **kwargs)

    assert await anyio.to_thread.run_sync(lambda: call(wait_for_results=False)) is None
    submitted = _jobs(fresh_expyre_root)
    assert [j[0] for j in submitted] == [f"nowait_chunk_{i}" for i in range(3)]
    assert all(j[2] for j in submitted) and not outputs.exists()
    result = await anyio.to_thread.run_sync(call)
    assert len(list(result)) == 5 and outputs.is_file()
    assert [j[2] for j in _jobs(fresh_expyre_root)] == [j[2] for j in submitted]  # collected, none resubmitted


async def test_an_empty_input_submits_nothing(remote_system: str, fresh_expyre_root: Path, tmp_path: Path) -> None:
    result = await anyio.to_thread.run_sync(lambda: wfl_map(
        range(0), OutputSpec(tmp_path / "none.xyz"), displaced, args=[0.1], autopara_info={"remote_info": _info(remote_system, "empty")}))
    assert list(result) == []
    assert not (fresh_expyre_root / "wfl_async_jobs.db").exists() or _jobs(fresh_expyre_root) == []


def displaced(at: Any, dx: float) -> Any:
    at = at.copy()
    at.positions[:, 0] += dx
    return at


async def test_map_runs_a_users_function_in_queued_jobs(remote_system: str, fresh_expyre_root: Path) -> None:
    configs = [bulk("Cu", cubic=True) for _ in range(3)]
    result = await anyio.to_thread.run_sync(lambda: list(wfl_map(
        ConfigSet(configs), OutputSpec(), displaced, args=[0.25], autopara_info={"remote_info": _info(remote_system, "map")})))
    for before, after in zip(configs, result, strict=True):
        np.testing.assert_allclose(after.positions[:, 0] - before.positions[:, 0], 0.25)
    assert [j[0] for j in _jobs(fresh_expyre_root)] == ["map_chunk_0", "map_chunk_1"]
