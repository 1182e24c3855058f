"""GAP fits (and committees) as queued jobs on every real system, against the same fit run here."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from tests.helpers.gap_data import al_training_configs, energies, multistage_params, simple_fit_dict
from wfl_async.configset import ConfigSet
from wfl_async.fit.committee import fit_gap_committee
from wfl_async.fit.gap import multistage
from wfl_async.fit.gap.simple import run_gap_fit

pytestmark = pytest.mark.remote

_VARIABLES = ("WFL_EXPYRE_INFO", "WFL_GAP_SIMPLE_FIT_REMOTEINFO", "WFL_GAP_MULTISTAGE_FIT_REMOTEINFO")


def _info(system: str, job_name: str) -> dict[str, Any]:
    return {"sys_name": system, "job_name": job_name, "resources": {"num_cores": 1, "max_time": "10m"},
            "partial_node": True, "check_interval": 0.3, "timeout": 300,
            "env_vars": ["WFL_GAP_FIT_OMP_NUM_THREADS=1"]}


def _jobs(root: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(root / "wfl_async_jobs.db") as db:
        return sorted(db.execute("SELECT name, status, remote_id FROM jobs").fetchall())


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in _VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # gap_fit's sums depend (in the last digits) on its thread count: one thread here and in the jobs
    monkeypatch.setenv("WFL_GAP_FIT_OMP_NUM_THREADS", "1")
    return tmp_path


async def test_simple_fit_as_a_queued_job_gives_the_local_potential(
        remote_system: str, fresh_expyre_root: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configs = al_training_configs()
    local = await anyio.to_thread.run_sync(lambda: run_gap_fit(ConfigSet(configs), simple_fit_dict("local/Al.xml"),
                                                               "local/stdout", verbose=False))
    monkeypatch.setenv("WFL_GAP_SIMPLE_FIT_REMOTEINFO", json.dumps(_info(remote_system, "gap_simple")))

    def queued() -> str | None:
        return run_gap_fit(ConfigSet(configs), simple_fit_dict("queued/Al.xml"), "queued/stdout", verbose=False)

    assert await anyio.to_thread.run_sync(queued) == "queued/Al.xml"
    assert len(list(Path("queued").glob("Al.xml.sparseX.*"))) == 2  # the sparse files came back beside it
    assert "libAtoms::Finalise" in Path("queued/stdout").read_text()
    assert not list(clean_env.glob("_*.fit_files"))
    np.testing.assert_allclose(energies("queued/Al.xml", configs), energies(local, configs), rtol=1e-8, atol=0)
    (job,) = _jobs(fresh_expyre_root)
    assert job[:2] == ("gap_simple", "succeeded")

    # a rerun of the same call re-attaches to the finished job: nothing new is submitted
    Path("queued/Al.xml").unlink()
    assert await anyio.to_thread.run_sync(queued) == "queued/Al.xml"
    assert _jobs(fresh_expyre_root) == [job]
    np.testing.assert_allclose(energies("queued/Al.xml", configs), energies(local, configs), rtol=1e-8, atol=0)


async def test_multistage_fit_as_one_job_and_with_each_stage_its_own_job(
        remote_system: str, fresh_expyre_root: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configs = al_training_configs()

    def multistage_fit(run_dir: str) -> Any:
        return multistage.fit(ConfigSet(configs), "AlGAP", multistage_params(), seeds=[1, 2], run_dir=run_dir)

    local, _ = await anyio.to_thread.run_sync(multistage_fit, "local")
    monkeypatch.setenv("WFL_GAP_MULTISTAGE_FIT_REMOTEINFO", json.dumps(_info(remote_system, "gap_multistage")))
    whole, name = await anyio.to_thread.run_sync(multistage_fit, "whole")
    assert (whole, name) == ("whole/AlGAP.xml", "AlGAP")
    assert [j[:2] for j in _jobs(fresh_expyre_root)] == [("gap_multistage", "succeeded")]
    monkeypatch.delenv("WFL_GAP_MULTISTAGE_FIT_REMOTEINFO")
    monkeypatch.setenv("WFL_GAP_SIMPLE_FIT_REMOTEINFO", json.dumps(_info(remote_system, "gap_stage")))
    staged, _ = await anyio.to_thread.run_sync(multistage_fit, "staged")
    assert [j[:2] for j in _jobs(fresh_expyre_root)] == [
        ("gap_multistage", "succeeded"), ("gap_stage", "succeeded"), ("gap_stage", "succeeded")]
    for path in (whole, staged):
        assert Path(path.replace("AlGAP.xml", "AlGAP.stage_0.xml")).is_file()
        np.testing.assert_allclose(energies(path, configs), energies(local, configs), rtol=1e-8, atol=0)


async def test_committee_is_submitted_at_once_and_a_rerun_submits_nothing(
        remote_system: str, fresh_expyre_root: Path, clean_env: Path) -> None:
    configs = al_training_configs()
    info = _info(remote_system, "committee")

    def committee(**kwargs: Any) -> list[str] | None:
        return fit_gap_committee(configs, simple_fit_dict("c/Al.xml"), 3, stdout_file="c/stdout", bootstrap=True,
                                 remote_info=info, **kwargs)

    assert await anyio.to_thread.run_sync(lambda: committee(wait_for_results=False)) is None
    submitted = _jobs(fresh_expyre_root)
    assert [j[0] for j in submitted] == [f"committee_committee_{i}" for i in range(3)]
    assert len({j[2] for j in submitted}) == 3 and all(j[2] for j in submitted)
    assert not Path("c").exists()  # nothing waited for, nothing copied back yet

    files = await anyio.to_thread.run_sync(committee)
    assert files == [f"c/Al.committee_{i}.xml" for i in range(3)]
    after = _jobs(fresh_expyre_root)
    assert [j[2] for j in after] == [j[2] for j in submitted]  # the same three jobs were collected
    assert {j[1] for j in after} == {"succeeded"}
    local = await anyio.to_thread.run_sync(lambda: fit_gap_committee(
        configs, simple_fit_dict("l/Al.xml"), 3, stdout_file="l/stdout", bootstrap=True, remote_info="_IGNORE"))
    assert local is not None
    for queued_file, local_file in zip(files, local, strict=True):
        np.testing.assert_allclose(energies(queued_file, configs), energies(local_file, configs), rtol=1e-8, atol=0)
    assert not np.allclose(energies(files[0], configs), energies(files[1], configs))


async def test_ace_fit_as_a_queued_job_with_a_stand_in_command(
        remote_system: str, fresh_expyre_root: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wfl_async.fit import ace

    shutil.copy(Path(__file__).parents[1] / "helpers" / "ace_standin.py", "ace_standin.py")
    info = dict(_info(remote_system, "ace_fit"), input_files=["ace_standin.py"],
                env_vars=["WFL_ACE_FIT_COMMAND='python ace_standin.py'"])
    monkeypatch.setenv("WFL_ACE_FIT_REMOTEINFO", json.dumps(info))
    params = {"basis": {"ace": {"type": "ace", "species": ["Al"], "N": 3, "maxdeg": 6}}, "solver": {"type": "lsqr"}}
    result = await anyio.to_thread.run_sync(lambda: ace.fit(al_training_configs(6), "ACE.Al", params, run_dir="run",
                                                            verbose=False))
    assert result == Path("run/ACE.Al.json")
    potential = json.loads(result.read_text())
    assert potential["in_queued_job"] is True and potential["n_configs"] == 7
    for name in ("fit_params_ACE.Al.yaml", "ACE.Al_fitting_database.extxyz", "ACE.Al.stdout", "ACE.Al.stderr"):
        assert (Path("run") / name).is_file(), name
    assert [j[:2] for j in _jobs(fresh_expyre_root)] == [("ace_fit", "succeeded")]
