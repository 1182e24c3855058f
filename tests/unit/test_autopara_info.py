"""AutoparaInfo, RemoteInfo, chunking arithmetic, per-item rngs, and WFL_EXPYRE_INFO resolution."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wfl.autoparallelize.utils as wfl_utils
from ase.calculators.emt import EMT

from tests.helpers.configs import cu_configs, tag_with_pid
from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo, autoparallelize
from wfl_async.autoparallelize.expyre_info import (
    caller_stack_labels,
    load_expyre_info,
    match_key,
    resolve_remote_info,
)
from wfl_async.autoparallelize.utils import (
    grouper,
    items_inputs_generator,
    queued_job_chunk_size,
    set_autopara_per_item_info,
    split_rng,
)
from wfl_async.configset import ConfigSet, OutputSpec
from wfl_async.errors import ConfigurationError
from wfl_async.generate.optimize import optimize

RI: dict[str, Any] = {"sys_name": "cluster", "job_name": "job", "resources": {"num_nodes": 1, "max_time": "1h"}}

# ---- AutoparaInfo / RemoteInfo -------------------------------------------------------


def test_autoparainfo_user_value_beats_op_default_beats_class_default() -> None:
    info = AutoparaInfo(num_python_subprocesses=3)
    info.update_defaults({"num_inputs_per_python_subprocess": 10, "num_python_subprocesses": 7})
    assert info.num_python_subprocesses == 3
    assert info.num_inputs_per_python_subprocess == 10
    assert info.skip_failed is True and info.iterable_arg == 0 and info.initializer == (None, [])
    assert info.remote_info is None and info.remote_label is None and info.hash_ignore == []


def test_autoparainfo_rejects_unknown_fields() -> None:
    with pytest.raises(ConfigurationError, match="num_python_subprocess"):
        AutoparaInfo(num_python_subprocess=2)
    with pytest.raises(ConfigurationError, match="bogus"):
        AutoparaInfo().update_defaults({"bogus": 1})


def test_remoteinfo_defaults_match_wfl() -> None:
    ri = RemoteInfo(**RI)
    assert ri.num_inputs_per_queued_job == -100
    assert (ri.exact_fit, ri.partial_node, ri.timeout, ri.check_interval) == (True, False, 3600, 30)
    assert (ri.ignore_failed_jobs, ri.resubmit_killed_jobs) == (False, False)
    assert ri.pre_cmds == ri.post_cmds == ri.env_vars == ri.input_files == ri.output_files == []
    assert ri.header_extra == ri.hash_ignore == []
    assert RemoteInfo.from_dict(ri.to_dict()) == ri


def test_remoteinfo_unknown_field_is_named_with_valid_ones() -> None:
    with pytest.raises(ConfigurationError) as err:
        RemoteInfo(**RI, num_inputs_per_job=5)
    assert "'num_inputs_per_job'" in str(err.value) and "num_inputs_per_queued_job" in str(err.value)
    with pytest.raises(ConfigurationError, match="missing required field.*resources"):
        RemoteInfo.from_dict({"sys_name": "a", "job_name": "b"})


# ---- chunking --------------------------------------------------------------------------


def test_grouper_makes_full_groups_then_a_remainder() -> None:
    assert list(grouper(3, range(7))) == [(0, 1, 2), (3, 4, 5), (6,)]
    with pytest.raises(ValueError):
        list(grouper(0, range(3)))


@pytest.mark.parametrize(("per_job", "per_subprocess", "expected"), [(5, 3, 5), (-2, 3, 6), (-100, 1, 100), (1, 10, 1)])
def test_negative_num_inputs_per_queued_job_multiplies(per_job: int, per_subprocess: int, expected: int) -> None:
    assert queued_job_chunk_size(per_job, per_subprocess) == expected


def test_zero_num_inputs_per_queued_job_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="num_inputs_per_queued_job"):
        queued_job_chunk_size(0, 4)


def test_items_inputs_carry_index_and_location() -> None:
    cs = ConfigSet([cu_configs(2), cu_configs(1)])
    groups = list(items_inputs_generator(cs, 2, None))
    assert [len(g) for g in groups] == [2, 1]
    assert [(entry[1], entry[2], entry[3]) for g in groups for entry in g] == [
        (0, " / 0 / 0", None), (1, " / 0 / 1", None), (2, " / 1 / 0", None)]


def _draws(n_items: int, group: int, seed: int) -> list[float]:
    _, rng = split_rng({"rng": np.random.default_rng(seed)})
    return [entry[3].uniform() for g in items_inputs_generator(range(n_items), group, rng) for entry in g]


def test_per_item_rngs_are_independent_of_grouping_and_of_each_other() -> None:
    draws = _draws(6, 1, seed=42)
    assert draws == _draws(6, 4, seed=42)
    assert len(set(draws)) == 6
    assert draws != _draws(6, 1, seed=43)


def test_per_item_rngs_equal_wfl_ones() -> None:
    rng_ours = split_rng({"rng": np.random.default_rng(7)})[1]
    rng_wfl = np.random.default_rng(7).spawn(1)[0]  # what wfl's _autoparallelize_ll does
    ours = [e[3].uniform() for g in items_inputs_generator(range(5), 2, rng_ours) for e in g]
    theirs = [e[3].uniform() for g in wfl_utils.items_inputs_generator(range(5), 2, rng_wfl) for e in g]
    assert ours == theirs


def test_split_rng_leaves_callers_kwargs_alone() -> None:
    kwargs = {"rng": np.random.default_rng(0), "x": 1}
    rest, spawned = split_rng(kwargs)
    assert rest == {"x": 1} and "rng" in kwargs and spawned is not None
    assert split_rng({"x": 1}) == ({"x": 1}, None)


def test_per_item_info_only_for_ops_that_take_it() -> None:
    def takes(atoms: list[int], _autopara_per_item_info: object = None) -> None: ...
    def ignores(atoms: list[int]) -> None: ...

    kwargs: dict[str, object] = {}
    set_autopara_per_item_info(kwargs, ignores, None, [None], [3])
    assert kwargs == {}
    set_autopara_per_item_info(kwargs, takes, None, [None, None], [3, 4])
    assert kwargs["_autopara_per_item_info"] == [{"item_i": 3}, {"item_i": 4}]
    inherited = [{"item_i": i, "tag": i * 10} for i in range(6)]
    set_autopara_per_item_info(kwargs, takes, inherited, [None], [5])
    assert kwargs["_autopara_per_item_info"] == [{"item_i": 5, "tag": 50}]


# ---- WFL_EXPYRE_INFO ---------------------------------------------------------------------


def _env(value: object) -> dict[str, str]:
    return {"WFL_EXPYRE_INFO": value if isinstance(value, str) else json.dumps(value)}


STACK = ["/home/u/run.py::<module>", "/home/u/run.py::do_md_step", "/sw/wfl_async/generate/optimize.py::optimize"]


def test_explicit_remote_info_wins_over_environment() -> None:
    explicit = RemoteInfo(**RI)
    env = _env({"optimize.py::optimize": {**RI, "job_name": "from_env"}})
    assert resolve_remote_info(explicit, None, stack=STACK, environ=env) is explicit
    from_dict = resolve_remote_info(dict(RI), None, stack=STACK, environ=env)
    assert isinstance(from_dict, RemoteInfo) and from_dict.job_name == "job"


def test_no_environment_runs_locally() -> None:
    assert resolve_remote_info(None, None, stack=STACK, environ={}) is None
    assert resolve_remote_info(None, None, stack=STACK, environ={"WFL_EXPYRE_INFO": "  "}) is None


def test_json_text_keys_match_the_end_of_the_stack() -> None:
    env = _env({"other.py::optimize": {**RI, "job_name": "other"},
                "run.py::do_md_step, generate/optimize.py::optimize": {**RI, "job_name": "two_levels"},
                "optimize.py::optimize": {**RI, "job_name": "one_level"}})
    ri = resolve_remote_info(None, None, stack=STACK, environ=env)
    assert ri is not None and ri.job_name == "two_levels"
    assert resolve_remote_info(None, None, stack=STACK[:2], environ=env) is None


def test_stack_items_must_match_consecutive_innermost_frames() -> None:
    assert match_key(["run.py::<module>,optimize.py::optimize"], None, STACK) is None
    assert match_key(["run.py::<module>,run.py::do_md_step,optimize.py::optimize"], None, STACK) is not None
    assert match_key(["a.py::f,b.py::g,c.py::h,optimize.py::optimize"], None, STACK) is None


def test_json_file_path_is_read(tmp_path: Path) -> None:
    path = tmp_path / "remoteinfo.json"
    path.write_text(json.dumps({"optimize.py::optimize": RI}))
    ri = resolve_remote_info(None, None, stack=STACK, environ=_env(str(path)))
    assert ri is not None and ri.sys_name == "cluster"


def test_top_level_sys_name_applies_to_every_call() -> None:
    env = _env(RI)
    for stack in (STACK, ["x.py::y"], []):
        ri = resolve_remote_info(None, None, stack=stack, environ=env)
        assert ri is not None and ri.job_name == "job"


def test_remote_label_matches_key_or_comma_item_not_stack() -> None:
    env = _env({"optimize.py::optimize": {**RI, "job_name": "by_stack"},
                "warmup, relax": {**RI, "job_name": "by_label"}})
    ri = resolve_remote_info(None, "relax", stack=STACK, environ=env)
    assert ri is not None and ri.job_name == "by_label"


def test_remote_label_without_matching_key_is_an_error_naming_the_fix() -> None:
    env = _env({"optimize.py::optimize": RI})
    with pytest.raises(ConfigurationError, match="remote_label 'relx' matches none of the keys.*Add a key 'relx'"):
        resolve_remote_info(None, "relx", stack=STACK, environ=env)


def test_bad_value_is_a_configuration_error_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="neither JSON text.*nor the path of a readable file"):
        resolve_remote_info(None, None, stack=STACK, environ=_env("{not json"))
    with pytest.raises(ConfigurationError, match="neither JSON"):
        resolve_remote_info(None, None, stack=STACK, environ=_env(str(tmp_path / "missing.json")))
    bad_file = tmp_path / "bad.json"
    bad_file.write_text("{oops")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        load_expyre_info(str(bad_file))
    with pytest.raises(ConfigurationError, match="must be a JSON object"):
        load_expyre_info("[1, 2]")


def test_malformed_entries_fail_even_when_not_matched() -> None:
    env = _env({"optimize.py::optimize": RI, "other.py::f": {**RI, "sys_nam": "typo"}})
    with pytest.raises(ConfigurationError, match="'other.py::f'.*'sys_nam'"):
        resolve_remote_info(None, None, stack=STACK, environ=env)


def _inner_caller() -> list[str]:
    return caller_stack_labels()


def test_caller_stack_labels_end_with_the_caller() -> None:
    labels = _inner_caller()
    assert labels[-1].endswith("test_autopara_info.py::_inner_caller")
    assert labels[-2].endswith("test_autopara_info.py::test_caller_stack_labels_end_with_the_caller")


# ---- resolution through the real entry points (prepared, never run) -----------------------


def _prepared_remote_info(coro: Any) -> Any:
    """The RemoteInfo an ``X.aio(...)`` call resolved, read before the coroutine runs."""
    try:
        return coro.cr_frame.f_locals["call"].remote_info
    finally:
        coro.close()


def _workflow_step() -> Any:
    return _prepared_remote_info(optimize.aio(ConfigSet(cu_configs(1)), OutputSpec(), calculator=(EMT, [], {})))


def test_operation_call_matches_user_function_then_operation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WFL_EXPYRE_INFO", json.dumps({
        "test_autopara_info.py::_workflow_step,generate/optimize.py::optimize": {**RI, "job_name": "step"},
        "optimize.py::optimize": {**RI, "job_name": "any_optimize"}}))
    ri = _workflow_step()
    assert ri is not None and ri.job_name == "step"

    direct = _prepared_remote_info(optimize.aio(ConfigSet(cu_configs(1)), OutputSpec(), calculator=(EMT, [], {})))
    assert direct is not None and direct.job_name == "any_optimize"


def test_direct_autoparallelize_call_matches_the_calling_function(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WFL_EXPYRE_INFO", json.dumps(
        {"test_autopara_info.py::test_direct_autoparallelize_call_matches_the_calling_function": RI}))
    ri = _prepared_remote_info(autoparallelize.aio(tag_with_pid, ConfigSet(cu_configs(1)), OutputSpec()))
    assert ri is not None and ri.sys_name == "cluster"
    with pytest.raises(ConfigurationError, match="remote_label 'nothing'"):
        # a label switches stack matching off, and a label matching no key is an error
        _prepared_remote_info(autoparallelize.aio(tag_with_pid, ConfigSet(cu_configs(1)), OutputSpec(),
                                                  autopara_info={"remote_label": "nothing"}))
