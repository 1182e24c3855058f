"""An error the user can fix, uncaught in a script, prints its message (what, which job, the fix)
alone; the traceback is one environment variable away."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from wfl_async.errors import ConfigurationError, first_failure

SCRIPT = """
from wfl_async.job import RemoteJob
RemoteJob(print, ("x",), sys_name="no_such_system", job_name="e").run()
"""


def run_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "EXPYRE_ROOT": "", "PYTHONPATH": str(Path.cwd()), **env})


def test_a_fixable_error_prints_one_message_and_the_traceback_on_request(tmp_path: Path) -> None:
    short = run_script(tmp_path)
    assert short.returncode == 1 and "Traceback" not in short.stderr
    lines = short.stderr.strip().splitlines()
    assert lines[0].startswith("wfl_async: ConfigurationError: unknown system 'no_such_system'") and len(lines) == 2
    assert "fix sys_name" in lines[0] and lines[1] == "(the traceback: rerun with WFL_ASYNC_TRACEBACK=1)"
    full = run_script(tmp_path, WFL_ASYNC_TRACEBACK="1")
    assert full.returncode == 1 and "Traceback (most recent call last)" in full.stderr


def test_the_first_failure_of_a_task_group_is_raised_alone_with_the_others_noted() -> None:
    async def fail(message: str) -> None:
        raise ConfigurationError(message)

    async def main() -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(fail, "first")
                tg.start_soon(fail, "second")
        except BaseExceptionGroup as group:
            raise first_failure(group) from None

    with pytest.raises(ConfigurationError) as info:
        anyio.run(main)
    assert not isinstance(info.value, BaseExceptionGroup)
    assert str(info.value) in ("first", "second")
    assert any("1 more failed at the same time: ConfigurationError" in n for n in info.value.__notes__)
