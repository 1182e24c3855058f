"""Per-function variables (wfl's ``WFL_GAP_SIMPLE_FIT_REMOTEINFO`` mechanism) on real systems."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from tests.helpers import remote_functions as rf

pytestmark = pytest.mark.remote


async def test_function_runs_locally_without_its_variable_and_as_a_job_with_it(
        remote_system: str, fresh_expyre_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WFL_TEST_FIT_REMOTEINFO", raising=False)
    assert await anyio.to_thread.run_sync(rf.fit_like, 3) == {"n": 6, "in_job": False}
    monkeypatch.setenv("WFL_TEST_FIT_REMOTEINFO", json.dumps(
        {"sys_name": remote_system, "job_name": f"fit-{remote_system}",
         "resources": {"num_nodes": 1, "max_time": "10m"}, "check_interval": 0.3}))
    assert await anyio.to_thread.run_sync(rf.fit_like, 3) == {"n": 6, "in_job": True}
