"""The three ways to call an operation (sync, .aio, .iter) and the sync twin run_sync."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import threading
from pathlib import Path

import anyio
import numpy as np
import pytest
from ase.calculators.emt import EMT

from tests.helpers import configs as ops
from tests.helpers.configs import cu_configs
from wfl_async._sync import run_sync
from wfl_async.autoparallelize import AutoparaOperation, ChunkResult, autoparallelize
from wfl_async.calculators.generic import calculate
from wfl_async.configset import ConfigSet, OutputSpec


@pytest.fixture(autouse=True)
def _local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WFL_EXPYRE_INFO", raising=False)
    monkeypatch.delenv("WFL_NUM_PYTHON_SUBPROCESSES", raising=False)


def _energies(configs: ConfigSet | None) -> list[float]:
    assert configs is not None
    return [at.info["EMT_energy"] for at in configs]


async def test_aio_gives_the_same_result_as_the_sync_call(tmp_path: Path) -> None:
    awaited = await calculate.aio(ConfigSet(cu_configs(4)), OutputSpec(tmp_path / "a.xyz"), calculator=(EMT, [], {}))
    synced = calculate(ConfigSet(cu_configs(4)), OutputSpec(tmp_path / "s.xyz"), calculator=(EMT, [], {}))
    assert len(_energies(awaited)) == 4
    np.testing.assert_allclose(_energies(awaited), _energies(synced), atol=1e-12)


async def test_sync_call_works_inside_a_running_event_loop() -> None:
    anyio.get_current_task()  # we are on a running loop
    out = calculate(ConfigSet(cu_configs(2)), OutputSpec(), calculator=EMT())
    assert len(_energies(out)) == 2


@pytest.mark.parametrize("subprocesses", [0, 2])
async def test_iter_yields_every_chunk_with_positions_then_writes_output(tmp_path: Path, subprocesses: int) -> None:
    out = OutputSpec(tmp_path / "out.xyz")
    chunks: list[ChunkResult] = []
    async for chunk in calculate.iter(ConfigSet(cu_configs(5)), out, calculator=(EMT, [], {}),
                                      autopara_info={"num_inputs_per_python_subprocess": 2,
                                                     "num_python_subprocesses": subprocesses}):
        assert isinstance(chunk, ChunkResult)
        chunks.append(chunk)
    assert sorted(c.chunk_index for c in chunks) == [0, 1, 2]
    by_item = {i: (loc, res) for c in chunks for i, loc, res in zip(c.item_indices, c.input_locs, c.results, strict=True)}
    assert sorted(by_item) == [0, 1, 2, 3, 4]
    assert all(loc == f" / {i}" and res.info["config_i"] == i for i, (loc, res) in by_item.items())
    assert out.all_written()
    assert [at.info["config_i"] for at in out.to_ConfigSet()] == [0, 1, 2, 3, 4]


async def test_iter_on_completed_output_yields_nothing(tmp_path: Path) -> None:
    calculate(ConfigSet(cu_configs(2)), OutputSpec(tmp_path / "out.xyz"), calculator=EMT())
    chunks = [c async for c in calculate.iter(ConfigSet(cu_configs(2)), OutputSpec(tmp_path / "out.xyz"),
                                              calculator=EMT())]
    assert chunks == []


async def test_stopping_iteration_early_stops_the_pool_and_leaves_no_final_file(tmp_path: Path) -> None:
    out = OutputSpec(tmp_path / "out.xyz")
    chunks = autoparallelize.iter(ops.slow_copy, ConfigSet(cu_configs(12)), out, 0.3,
                                  autopara_info={"num_python_subprocesses": 2})
    async with contextlib.aclosing(chunks):
        async for _ in chunks:
            break
    assert not (tmp_path / "out.xyz").exists()
    assert not out.all_written()
    assert multiprocessing.active_children() == []


async def test_cancelled_aio_stops_the_pool(tmp_path: Path) -> None:
    started = anyio.Event()

    async def run() -> None:
        started.set()
        await autoparallelize.aio(ops.slow_copy, ConfigSet(cu_configs(12)), OutputSpec(tmp_path / "out.xyz"), 0.3,
                                  autopara_info={"num_python_subprocesses": 2})

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await started.wait()
        await anyio.sleep(0.5)
        tg.cancel_scope.cancel()
    assert not (tmp_path / "out.xyz").exists()
    assert multiprocessing.active_children() == []


async def test_two_operations_run_concurrently_with_aio(tmp_path: Path) -> None:
    results: dict[str, ConfigSet | None] = {}

    async def one(name: str) -> None:
        results[name] = await calculate.aio(ConfigSet(cu_configs(3)), OutputSpec(tmp_path / f"{name}.xyz"),
                                            calculator=(EMT, [], {}))

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "a")
        tg.start_soon(one, "b")
    assert _energies(results["a"]) == _energies(results["b"])
    assert len(_energies(results["a"])) == 3


def test_operations_pickle_by_reference() -> None:
    assert pickle.loads(pickle.dumps(calculate)) is calculate
    custom = AutoparaOperation(ops.tag_with_pid, name="tag_with_pid", module="tests.helpers.configs")
    assert custom.stack_label.endswith("helpers/configs.py::tag_with_pid")
    out = custom(ConfigSet(cu_configs(2)), OutputSpec(), tag="z")
    assert out is not None and {at.info["tag"] for at in out} == {"z"}


# ---- run_sync ------------------------------------------------------------------------------


async def _loop_identity() -> tuple[int, int]:
    import asyncio

    return threading.get_ident(), id(asyncio.get_running_loop())


def test_run_sync_reuses_one_loop_in_another_thread() -> None:
    first = run_sync(_loop_identity)
    second = run_sync(_loop_identity)
    assert first == second
    assert first[0] != threading.get_ident()


async def test_run_sync_refuses_to_deadlock_on_its_own_loop() -> None:
    async def nested() -> None:
        run_sync(_loop_identity)

    with pytest.raises(RuntimeError, match="await X.aio"):
        await anyio.to_thread.run_sync(run_sync, nested)


def test_ctrl_c_cancels_the_coroutine() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    started = threading.Event()
    cancelled = threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    def interrupt() -> None:
        started.wait(30)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_sync(forever)
    assert cancelled.is_set()
    assert run_sync(_loop_identity)[0] != threading.get_ident()  # the loop survives


_BUSY_LOOP_SCRIPT = """
import os, signal, threading, time
from wfl_async._sync import run_sync

async def hogs_the_loop():
    started.set()
    time.sleep(30)  # the event loop cannot answer for 30 s (a loaded machine, a long step)

def ctrl_c_twice():
    started.wait(30)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGINT)

started = threading.Event()
threading.Thread(target=ctrl_c_twice, daemon=True).start()
run_sync(hogs_the_loop)
"""


def test_a_second_ctrl_c_stops_at_once_while_the_loop_is_busy(tmp_path: Path) -> None:
    """The first Ctrl-C asks the loop to cancel without waiting for it to answer; the second, while
    the loop is still busy, ends the script with the one line, not a traceback after the loop's
    30 s (when the cancel waited for the loop, the second Ctrl-C landed in anyio's frames)."""
    import subprocess
    import sys
    import time

    script = tmp_path / "busy.py"
    script.write_text(_BUSY_LOOP_SCRIPT)
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert time.monotonic() - started < 20, "the second Ctrl-C waited for the busy loop"
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr
    assert "wfl_async: stopping:" in done.stderr and "wfl_async: interrupted;" in done.stderr


def test_base_exception_in_coroutine_reaches_caller_and_loop_survives() -> None:
    async def exits() -> None:
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        run_sync(exits)
    assert run_sync(_loop_identity)[0] != threading.get_ident()


def test_exception_in_coroutine_is_raised_in_caller() -> None:
    async def fails() -> None:
        raise ValueError("from the loop")

    with pytest.raises(ValueError, match="from the loop"):
        run_sync(fails)
