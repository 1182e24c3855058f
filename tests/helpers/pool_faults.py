"""Operations for the local pool's wind-down tests (tests/unit/test_pool_wind_down.py); they run in
the pool's real subprocesses, so they live in an importable module."""

from __future__ import annotations

import time
from pathlib import Path


def record(items: list[int], where: str) -> list[int]:
    """Item 0 raises once item 1 has started; item 1 runs for a second; others for half a second. Each item
    writes ``<i>.started`` as it starts and ``<i>.done`` as it ends."""
    directory = Path(where)
    for i in items:
        (directory / f"{i}.started").touch()
        if i == 0:
            while not (directory / "1.started").exists():
                time.sleep(0.01)
            raise ValueError("item 0 fails on purpose")
        time.sleep(1.0 if i == 1 else 0.5)
        (directory / f"{i}.done").touch()
    return items
