"""A project whose jobs database holds jobs recorded directly (nothing ran): for the CLI's tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from wfl_async.jobs.database import JobsDatabase
from wfl_async.session import DB_NAME


def recorded_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                     jobs: Sequence[tuple[str, str, Mapping[str, Any]]]) -> Path:
    """``$EXPYRE_ROOT`` set to a new project whose database holds ``jobs`` (name, system, fields to
    record), keyed ``key0``, ``key1``..."""
    root = tmp_path / "_expyre"
    root.mkdir()
    monkeypatch.setenv("EXPYRE_ROOT", str(root))

    async def fill() -> None:
        async with JobsDatabase(root / DB_NAME) as db:
            for i, (name, system, fields) in enumerate(jobs):
                await db.claim(key=f"key{i}", name=name, system=system, job_dir=f"{name}-key{i}", owner=None)
                if fields:
                    await db.update(f"key{i}", **fields)

    anyio.run(fill)
    return root
