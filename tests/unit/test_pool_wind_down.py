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
