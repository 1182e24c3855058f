"""The local pool (also what every queued chunk job runs) ends without killing a subprocess.

``Pool.terminate()`` can hang for ever when it kills a subprocess that is writing its result to the
pool's result queue (cpython#96995): a queued chunk job did, in CI, after its first group raised while
its second was sending its result, and ran until its time limit. A pool that never kills cannot hit
it; these check, on a real pool of real subprocesses, that however the iteration ends the group
running then finishes (not killed), no other starts, and no subprocess is left.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from tests.helpers import pool_faults
from wfl_async.autoparallelize import pool
from wfl_async.autoparallelize.pool import iter_pool_chunks


def _ran(where: Path, what: str) -> list[int]:
    return sorted(int(p.stem) for p in where.glob(f"*.{what}"))


def test_a_group_that_raises_lets_the_running_group_finish_and_starts_no_more(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on purpose"):
        for _ in iter_pool_chunks(2, 1, list(range(20)), pool_faults.record, args=(str(tmp_path),)):
            pass
    assert 1 in _ran(tmp_path, "done")  # running when item 0 raised: finished, not killed
    assert len(_ran(tmp_path, "started")) < 10, f"the other groups were not skipped: {_ran(tmp_path, 'started')}"
    assert multiprocessing.active_children() == []


def test_a_pool_told_to_stop_lets_the_running_groups_finish(tmp_path: Path) -> None:
    chunks = iter_pool_chunks(2, 1, list(range(1, 21)), pool_faults.record, args=(str(tmp_path),),
                              should_stop=(tmp_path / "1.started").exists)
    got = [chunk.results for chunk in chunks]
    assert _ran(tmp_path, "done") == _ran(tmp_path, "started")  # each one started also ended
    assert 1 in _ran(tmp_path, "done") and len(got) < 10
    assert multiprocessing.active_children() == []


def test_a_wind_down_that_waits_says_what_it_waits_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A running group may take hours: the pool then waits for it, and says so (here after 0.2 s)."""
    monkeypatch.setattr(pool, "_WIND_DOWN_NOTICE_SECONDS", 0.2)
    with pytest.raises(ValueError, match="on purpose"):
        for _ in iter_pool_chunks(2, 1, list(range(20)), pool_faults.record, args=(str(tmp_path),)):
            pass
    said = capsys.readouterr().err
    assert "waiting for the groups running in its python subprocesses to finish" in said, said
    assert 1 in _ran(tmp_path, "done") and multiprocessing.active_children() == []


def test_a_quick_wind_down_says_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="on purpose"):
        for _ in iter_pool_chunks(2, 1, list(range(20)), pool_faults.record, args=(str(tmp_path),)):
            pass
    assert "Stopping the local pool" not in capsys.readouterr().err


_CTRL_C_SCRIPT = """
import multiprocessing, os, signal, sys, threading, time
from pathlib import Path
from tests.helpers import pool_faults
from wfl_async.autoparallelize.pool import iter_pool_chunks

where = Path(sys.argv[1])
stopped = threading.Event()

def ctrl_c() -> None:  # as a terminal does: the subprocesses get SIGINT; the driver's loop asks the pool to stop
    # both subprocesses running a group: a SIGINT to one still starting kills it before the pool's
    # initializer (a traceback from its bootstrap, and a new subprocess forked in its place)
    while not ((where / "1.started").exists() and (where / "2.started").exists()):
        time.sleep(0.01)
    for child in multiprocessing.active_children():
        os.kill(child.pid, signal.SIGINT)
    stopped.set()

threading.Thread(target=ctrl_c, daemon=True).start()
got = [chunk.results for chunk in iter_pool_chunks(2, 1, list(range(1, 21)), pool_faults.record, args=(str(where),),
                                                   should_stop=stopped.is_set)]
print("chunks", len(got), "children", len(multiprocessing.active_children()))
"""


def test_ctrl_c_to_the_subprocesses_ends_the_pool_at_once_without_a_traceback(tmp_path: Path) -> None:
    """Ctrl-C in a terminal reaches the pool's subprocesses as well as the driver: the running groups end
    (item 1 never finishes its second), no other starts, and the pool ends (a subprocess that died of the
    KeyboardInterrupt left its group unanswered and the pool waiting for ever)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "ctrl_c.py"
    script.write_text(_CTRL_C_SCRIPT)
    (tmp_path / "run").mkdir()
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 0 and "children 0" in done.stdout, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert 1 not in _ran(tmp_path / "run", "done")  # interrupted, not run to its end
    assert len(_ran(tmp_path / "run", "started")) <= 4
