"""wfl's local-pool variables: ``WFL_TORCH_N_GPUS`` spreads the subprocesses over devices, ``WFL_MPIPOOL`` is refused.

No GPU (nor torch) is installed here, so the device test runs a real pool of real
subprocesses (started by a fork server, as with CUDA) against a stand-in ``torch`` package
put first on their path, which records the device each subprocess was put on. What a real
``torch.cuda.set_device`` then does is torch's business; which device each subprocess gets
is ours, and that is what is checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from wfl_async.calculators.generic import calculate
from wfl_async.configset import ConfigSet, OutputSpec
from wfl_async.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[2]

_TORCH = '''
class cuda:
    device = None

    @staticmethod
    def set_device(index):
        cuda.device = index

    @staticmethod
    def current_device():
        return cuda.device
'''

_SCRIPT = '''
import json, os, sys, time
from wfl_async.autoparallelize.pool import iter_pool_chunks

def where(items):
    import torch
    time.sleep(0.3)  # long enough that every subprocess takes tasks
    return [(os.getpid(), torch.cuda.current_device()) for _ in items]

if __name__ == "__main__":
    seen = []
    for chunk in iter_pool_chunks(int(sys.argv[1]), 1, range(8), where):
        seen.extend(chunk.results)
    print(json.dumps(seen))
'''


def _devices(tmp_path: Path, subprocesses: int) -> list[tuple[int, int | None]]:
    (tmp_path / "torch").mkdir(exist_ok=True)
    (tmp_path / "torch" / "__init__.py").write_text(_TORCH)
    (tmp_path / "where.py").write_text(_SCRIPT)
    env = {**os.environ, "WFL_TORCH_N_GPUS": "2", "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    done = subprocess.run([sys.executable, str(tmp_path / "where.py"), str(subprocesses)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return [tuple(pair) for pair in json.loads(done.stdout)]


def test_each_pool_subprocess_works_on_its_own_device_round_robin(tmp_path: Path) -> None:
    seen = _devices(tmp_path, 4)
    assert len(seen) == 8
    device_of: dict[int, set[int | None]] = {}
    for pid, device in seen:
        device_of.setdefault(pid, set()).add(device)
    assert all(len(devices) == 1 for devices in device_of.values())  # a subprocess keeps its device
    per_device = [sum(1 for d in device_of.values() if d == {i}) for i in (0, 1)]
    assert set().union(*device_of.values()) == {0, 1} and max(per_device) <= 2  # 4 subprocesses over 2 GPUs


def test_a_serial_run_leaves_the_device_alone(tmp_path: Path) -> None:
    assert {device for _, device in _devices(tmp_path, 0)} == {None}


@pytest.mark.parametrize("value,expected", [("two", "must be the number of GPUs"), ("0", "must be the number of GPUs"),
                                            ("2", "torch cannot be imported here; install torch")])
def test_a_bad_gpu_count_or_a_missing_torch_is_a_clear_error(value: str, expected: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WFL_TORCH_N_GPUS", value)
    with pytest.raises(ConfigurationError, match=f"WFL_TORCH_N_GPUS='{value}' .*{expected}"):
        calculate(ConfigSet([bulk("Cu", cubic=True)]), OutputSpec(), (EMT, [], {}))


def test_mpipool_is_refused_saying_why_and_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WFL_MPIPOOL", "1")
    with pytest.raises(ConfigurationError) as info:
        calculate(ConfigSet([bulk("Cu", cubic=True)]), OutputSpec(), (EMT, [], {}))
    message = str(info.value)
    assert "no MPI pool" in message and "every rank would run the whole script" in message
    assert "unset WFL_MPIPOOL" in message and "WFL_NUM_PYTHON_SUBPROCESSES" in message
