"""The package's top-level names (PEP 562): looked up only when asked for, so a queued job's worker
imports nothing heavy."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("anyio", "asyncssh", "ase", "numpy", "aiosqlite", "wfl_async.job", "wfl_async.session", "wfl_async.configset")


def test_the_remote_worker_imports_no_face_and_nothing_heavy() -> None:
    code = ("import sys, wfl_async, wfl_async.jobs.worker; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("name", "module"), [("RemoteJob", "wfl_async.job"), ("ConfigSet", "wfl_async.configset"),
                                              ("OutputSpec", "wfl_async.configset"),
                                              ("session_scope", "wfl_async.session")])
def test_each_face_is_its_module_s_object(name: str, module: str) -> None:
    import importlib

    import wfl_async

    assert getattr(wfl_async, name) is getattr(importlib.import_module(module), name)
    assert name in dir(wfl_async) and name in wfl_async.__all__


def test_an_unknown_name_is_an_attribute_error() -> None:
    import wfl_async

    with pytest.raises(AttributeError, match="no attribute 'runtime_scope'"):
        wfl_async.runtime_scope  # noqa: B018  (the old name is gone)
