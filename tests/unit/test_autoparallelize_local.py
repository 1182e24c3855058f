"""autoparallelize in local mode: serial and process-pool runs give wfl's results."""

from __future__ import annotations

import os
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.calculators.emt import EMT

from tests.helpers import configs as ops
from tests.helpers.configs import cu_configs
from wfl_async.autoparallelize import AutoparaInfo, autoparallelize
from wfl_async.autoparallelize.pool import do_in_pool
from wfl_async.calculators.generic import calculate
from wfl_async.configset import ConfigSet, OutputSpec
from wfl_async.errors import ConfigurationError


@pytest.fixture(autouse=True)
def _no_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WFL_EXPYRE_INFO", raising=False)
    monkeypatch.delenv("WFL_NUM_PYTHON_SUBPROCESSES", raising=False)


def _energies_forces(configs: ConfigSet) -> tuple[np.ndarray, np.ndarray]:
    ats = list(configs)
    return (np.array([at.info["EMT_energy"] for at in ats]),
            np.concatenate([at.arrays["EMT_forces"] for at in ats]))


def test_pool_with_two_subprocesses_equals_serial(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    serial = calculate(ConfigSet(cu_configs(7)), OutputSpec(tmp_path / "serial.xyz"), calculator=(EMT, [], {}),
                       autopara_info={"num_inputs_per_python_subprocess": 2})
    monkeypatch.setenv("WFL_NUM_PYTHON_SUBPROCESSES", "2")
    pooled = calculate(ConfigSet(cu_configs(7)), OutputSpec(tmp_path / "pool.xyz"), calculator=(EMT, [], {}),
                       autopara_info={"num_inputs_per_python_subprocess": 2})
    assert serial is not None and pooled is not None
    e_serial, f_serial = _energies_forces(serial)
    e_pool, f_pool = _energies_forces(pooled)
    assert len(e_serial) == 7
    np.testing.assert_allclose(e_pool, e_serial, rtol=0, atol=1e-8)
    np.testing.assert_allclose(f_pool, f_serial, rtol=0, atol=1e-8)
    assert [at.info["config_i"] for at in pooled] == list(range(7))


def test_pool_runs_in_subprocesses_with_requested_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WFL_NUM_PYTHON_SUBPROCESSES", "2")
    out = autoparallelize(ops.tag_with_pid, ConfigSet(cu_configs(5)), OutputSpec(),
                          autopara_info=AutoparaInfo(num_inputs_per_python_subprocess=2))
    assert out is not None
    results = list(out)
    assert all(at.info["pid"] != os.getpid() for at in results)
    assert [at.info["chunk_len"] for at in results] == [2, 2, 2, 2, 1]
    assert [at.info["config_i"] for at in results] == list(range(5))


def test_serial_mode_runs_in_this_process() -> None:
    out = autoparallelize(ops.tag_with_pid, ConfigSet(cu_configs(3)), OutputSpec())
    assert out is not None
    assert {at.info["pid"] for at in out} == {os.getpid()}


@pytest.mark.parametrize("subprocesses", [0, 2])
def test_per_item_rng_same_serial_and_pooled(subprocesses: int) -> None:
    out = autoparallelize(ops.draw_random, ConfigSet(cu_configs(6)), OutputSpec(), rng=np.random.default_rng(3),
                          autopara_info={"num_python_subprocesses": subprocesses, "num_inputs_per_python_subprocess": 4})
    assert out is not None
    draws = [at.info["draw"] for at in out]
    assert [at.info["item_i"] for at in out] == list(range(6))
    assert len(set(draws)) == 6
    reference = np.random.default_rng(3).spawn(1)[0]
    assert draws == [reference.spawn(1)[0].uniform() for _ in range(6)]


def test_skip_failed_drops_none_outputs() -> None:
    out = autoparallelize(ops.fail_on_odd, ConfigSet(cu_configs(5)), OutputSpec())
    assert out is not None
    assert [at.info["config_i"] for at in out] == [0, 2, 4]


def test_op_exception_propagates_from_pool_and_serial(tmp_path: Path) -> None:
    for subprocesses in (0, 2):
        with pytest.raises(ValueError, match="on purpose"):
            autoparallelize(ops.raise_value_error, ConfigSet(cu_configs(3)), OutputSpec(tmp_path / "out.xyz"),
                            autopara_info={"num_python_subprocesses": subprocesses})
        assert not (tmp_path / "out.xyz").exists()


def test_initializer_runs_in_each_subprocess_only() -> None:
    info = {"initializer": (ops.mark_initialized, ["yes"]), "num_python_subprocesses": 2}
    pooled = autoparallelize(ops.report_initialized, ConfigSet(cu_configs(3)), OutputSpec(), autopara_info=info)
    assert pooled is not None and {at.info["initialized"] for at in pooled} == {"yes"}
    serial = autoparallelize(ops.report_initialized, ConfigSet(cu_configs(3)), OutputSpec(),
                             autopara_info={**info, "num_python_subprocesses": 0})
    assert serial is not None and {at.info["initialized"] for at in serial} == {"no"}


def test_completed_output_is_skipped_without_running(tmp_path: Path) -> None:
    ase.io.write(tmp_path / "done.xyz", cu_configs(2))
    out = autoparallelize(ops.raise_value_error, ConfigSet(cu_configs(2)), OutputSpec(tmp_path / "done.xyz"))
    assert out is not None and len(list(out)) == 2
    with pytest.raises(ValueError, match="on purpose"):  # overwrite=True does run
        autoparallelize(ops.raise_value_error, ConfigSet(cu_configs(2)),
                        OutputSpec(tmp_path / "done.xyz", overwrite=True))


def test_wfl_call_styles_and_nested_trajectories(tmp_path: Path) -> None:
    cs = ConfigSet([cu_configs(2), cu_configs(1)])
    out = autoparallelize(ops.trajectory_of_two, inputs=cs, outputs=OutputSpec(tmp_path / "traj.xyz"))
    assert out is not None
    assert [at.info["_ConfigSet_loc"] for at in out] == [
        " / 0 / 0 / 0", " / 0 / 0 / 1", " / 0 / 1 / 0", " / 0 / 1 / 1", " / 1 / 0 / 0", " / 1 / 0 / 1"]
    by_keyword = autoparallelize(ops.tag_with_pid, ConfigSet(cu_configs(2)), OutputSpec(), tag="y",
                                 autopara_info={"iterable_arg": "atoms"})
    assert by_keyword is not None and {at.info["tag"] for at in by_keyword} == {"y"}


def test_no_outputs_returns_none_and_empty_output_is_empty_configset() -> None:
    assert autoparallelize(ops.tag_with_pid, ConfigSet(cu_configs(2)), None) is None
    empty = autoparallelize(ops.fail_on_odd, ConfigSet(cu_configs(2)[1:]), OutputSpec())
    assert empty is not None and empty.items is None


def test_bad_arguments_fail_before_running() -> None:
    with pytest.raises(ConfigurationError, match="OutputSpec"):
        autoparallelize(ops.tag_with_pid, ConfigSet(cu_configs(1)), "out.xyz")
    with pytest.raises(ConfigurationError, match="inputs and outputs are both required"):
        autoparallelize(ops.tag_with_pid, ConfigSet(cu_configs(1)))
    with pytest.raises(ConfigurationError, match="unknown field"):
        autoparallelize(ops.tag_with_pid, ConfigSet(cu_configs(1)), OutputSpec(), autopara_info={"nproc": 2})


def test_do_in_pool_is_usable_directly_as_in_wfl() -> None:
    out = do_in_pool(2, 2, ConfigSet(cu_configs(3)), OutputSpec(), ops.tag_with_pid)
    assert out is not None and [at.info["config_i"] for at in out] == [0, 1, 2]


def test_pool_and_operations_import_without_anyio_or_asyncssh() -> None:
    import subprocess
    import sys

    code = ("import sys; import wfl_async.autoparallelize.pool, wfl_async.generate.optimize, "
            "wfl_async.generate.md, wfl_async.calculators.generic; "
            "print(sorted(m for m in ('anyio', 'asyncssh') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["wfl_async.configset", "wfl_async.autoparallelize",
                                    "wfl_async.autoparallelize.pool", "wfl_async.autoparallelize.utils",
                                    "wfl_async.autoparallelize.expyre_info", "wfl_async.calculators.generic",
                                    "wfl_async.generate.optimize", "wfl_async.generate.md", "wfl_async._sync"])
def test_public_modules_declare_all(module: str) -> None:
    import importlib

    mod = importlib.import_module(module)
    assert mod.__all__ and all(hasattr(mod, name) for name in mod.__all__)


def _wfl_style_wrapper(*args: object, **kwargs: object) -> ConfigSet | None:
    return autoparallelize(ops.tag_with_pid, *args, default_autopara_info={"num_inputs_per_python_subprocess": 2},
                           **kwargs)


def test_wfl_style_wrapper_with_autoparallelize_docstring() -> None:
    from wfl_async.autoparallelize import autoparallelize_docstring

    autoparallelize_docstring(_wfl_style_wrapper, ops.tag_with_pid, "Atoms")
    assert _wfl_style_wrapper.__doc__ is not None and "inputs" in _wfl_style_wrapper.__doc__
    out = _wfl_style_wrapper(ConfigSet(cu_configs(3)), OutputSpec(), tag="w")
    assert out is not None and [at.info["chunk_len"] for at in out] == [2, 2, 1]


def test_output_spec_with_the_wrong_number_of_files_fails_before_running(tmp_path: Path) -> None:
    from ase.build import bulk
    from ase.io import write

    from wfl_async.errors import ConfigurationError

    for name in ("a.xyz", "b.xyz"):
        write(tmp_path / name, [bulk("Cu")])
    inputs = ConfigSet([tmp_path / "a.xyz", tmp_path / "b.xyz"])
    outputs = OutputSpec(["x.xyz", "y.xyz", "z.xyz"], file_root=tmp_path)
    with pytest.raises(ConfigurationError, match=r"3 output file\(s\) but the ConfigSet has 2 input files"):
        autoparallelize(_label_for_count_test, inputs, outputs)
    assert not any((tmp_path / n).exists() for n in ("x.xyz", "y.xyz", "z.xyz"))
    assert not list(tmp_path.glob(".*partial"))


def _label_for_count_test(atoms_list):  # type: ignore[no-untyped-def]
    return atoms_list
