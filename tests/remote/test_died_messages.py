"""What a died job's error says (issue 15): killed at its time limit is named as such by the
scheduler's own account (``sacct``), at once rather than after the grace for vanished jobs, and
the advice never names an option that is already set."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import remote_functions as rf
from wfl_async.errors import JobDiedError
from wfl_async.job import RemoteJob

pytestmark = pytest.mark.remote

GRACE = 600
"""The test system's grace for vanished jobs: longer than the test may take, so only the
scheduler's account can end it in time."""


async def test_a_job_killed_at_its_time_limit_says_so_before_the_grace_without_advising_what_is_set(
        fresh_expyre_root: Path) -> None:
    config = json.loads((fresh_expyre_root / "config.json").read_text())
    config["systems"]["slurm_patient"] = {**config["systems"]["slurm"], "died_grace_seconds": GRACE}
    (fresh_expyre_root / "config.json").write_text(json.dumps(config))
    call = RemoteJob(rf.sleep_then_return, (600, "never"), sys_name="slurm_patient",
                     job_name=f"limit-{uuid.uuid4().hex[:6]}", resources={"num_nodes": 1, "max_time": "1m"},
                     check_interval=1, resubmit_killed_jobs=True, escalate=False)
    started = time.monotonic()
    with pytest.raises(JobDiedError) as info:
        await call
    took = time.monotonic() - started
    message = str(info.value)
    print(f"\nafter {took:.0f} s: {message}")
    assert "killed at its time limit" in message and "TIMEOUT" in message
    assert "Set resubmit_killed_jobs" not in message and "resubmitted once already" in message
    assert "max_time" in message
    assert took < GRACE  # two one-minute jobs (resubmitted once): never the grace
