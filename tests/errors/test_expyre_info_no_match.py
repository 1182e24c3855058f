"""A WFL_EXPYRE_INFO that is set but matches no call warns once, naming its keys and the stack tried."""

from __future__ import annotations

import json
import warnings

import pytest

from wfl_async.autoparallelize import expyre_info
from wfl_async.autoparallelize.expyre_info import resolve_remote_info

INFO = {"generate/optimize.py::optimize": {"sys_name": "local", "job_name": "relax",
                                           "resources": {"num_nodes": 1, "max_time": "1h"}}}
STACK = ["/home/me/run.py::<module>", "/home/me/run.py::main", "/site/wfl_async/calculators/generic.py::calculate"]


@pytest.fixture(autouse=True)
def fresh_warning_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(expyre_info, "_warned", set())


def test_no_matching_key_warns_once_with_keys_and_stack() -> None:
    environ = {"WFL_EXPYRE_INFO": json.dumps(INFO)}
    with pytest.warns(UserWarning) as caught:
        assert resolve_remote_info(None, None, stack=STACK, environ=environ) is None
    # (only ours: a module imported for the first time in this process may warn meanwhile, e.g.
    # asyncssh's CryptographyDeprecationWarning, a UserWarning, depending on the tests run before)
    (warning,) = [w for w in caught if "WFL_EXPYRE_INFO" in str(w.message)]
    text = str(warning.message)
    assert "'generate/optimize.py::optimize'" in text and "runs locally" in text
    assert "run.py::main -> generic.py::calculate" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_remote_info(None, None, stack=STACK, environ=environ) is None  # once only


def test_a_matching_key_does_not_warn() -> None:
    environ = {"WFL_EXPYRE_INFO": json.dumps({"calculators/generic.py::calculate": INFO[next(iter(INFO))]})}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_remote_info(None, None, stack=STACK, environ=environ) is not None


def test_unset_variable_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_remote_info(None, None, stack=STACK, environ={}) is None
