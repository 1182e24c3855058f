"""Self-tuned calls (``pack="auto"`` or a dict of tuning keys) against the real schedulers, directly and over ssh.

Each configuration appends its index to ``_completions.log`` in its chunk's job directory when it
finishes (read back from the system afterwards): a configuration run twice, or never, shows there
whatever grouping the driver chose and whatever it believed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from ase.io import read

from tests.helpers import remote_functions as rf
from tests.helpers.processes import kill_then_rerun
from tests.remote.test_autoparallelize_remote import cells
from tests.remote.test_packing import pytest_generate_tests  # noqa: F401 (pack_system: slurm/sge, direct and ssh)
from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo, autoparallelize
from wfl_async.configset import ConfigSet, OutputSpec
from wfl_async.errors import ConfigurationError
from wfl_async.pack.queue import PACK_ROOT
from wfl_async.session import Session, session_scope

pytestmark = pytest.mark.remote


def timed_cells(seconds: list[float]) -> list[Any]:
    configs = cells(len(seconds))
    for atoms, s in zip(configs, seconds, strict=True):
        atoms.info["seconds"] = s
    return configs


def tuned_info(system: str, pack: Any, **kwargs: Any) -> RemoteInfo:
    values: dict[str, Any] = {
        "sys_name": system, "job_name": f"tuned-{system}-{uuid.uuid4().hex[:6]}",
        "resources": {"num_cores": 1, "max_time": "10m"}, "partial_node": True, "check_interval": 0.3,
        "pack": pack}
    values.update(kwargs)
    return RemoteInfo(**values)


async def runs_per_configuration(session: Session, system: str, job_name: str) -> Counter[int]:
    """Configuration index -> how many times it ran to completion on the system (all chunks of the call)."""
    records = [r for r in await session.db.select(system=system) if r.name.startswith(f"{job_name}_chunk_")]
    target = session.system(system)
    root = await target.remote_root()
    dirs = " ".join(r.job_dir for r in records)
    answer = await target.transport.run(f"cd {root} && cat {dirs.replace(' ', '/_completions.log ')}/_completions.log "
                                        f"2>/dev/null; true")
    return Counter(int(line) for line in answer.stdout.decode().split())


async def test_a_self_tuned_call_starts_small_and_grows_its_chunks_from_the_first_results(
        pack_system: str, fresh_expyre_root: Path, tmp_path: Path) -> None:
    configs = timed_cells([0.1] * 48)
    info = tuned_info(pack_system, {"max_workers": 2, "target_chunk_seconds": 2, "walltime": 300})
    output = tmp_path / "out.xyz"
    async with session_scope() as session:
        result = await autoparallelize.aio(rf._timed_label, ConfigSet(configs), OutputSpec(output),
                                           autopara_info=AutoparaInfo(remote_info=info))
        assert [a.info["i"] for a in result] == list(range(48)) and all(a.info["labelled"] for a in result)
        assert [a.info["i"] for a in read(output, ":")] == list(range(48))
        assert await runs_per_configuration(session, pack_system, info.job_name) == Counter(range(48))
        async with session.db.conn.execute("SELECT DISTINCT call FROM groups") as cursor:
            calls = [row[0] for row in await cursor.fetchall()]
        assert len(calls) == 1
        groups = await session.db.groups(calls[0])
        sizes = [count for _, count in groups]
        assert sum(sizes) == 48 and [first for first, _ in groups] == [sum(sizes[:i]) for i in range(len(sizes))]
        assert sizes[:4] == [1, 1, 1, 1], f"nothing measured: the first tasks hold one configuration each ({sizes})"
        assert max(sizes) > 1, f"the chunks never grew after the first results ({sizes})"
        measured = await session.db.measured_times(info.job_name, pack_system)
        assert len(measured) == len(sizes) and sum(n for _, n in measured) == 48
        assert all(0.1 * n <= s for s, n in measured), measured  # a chunk's run time covers its sleeps


async def test_a_task_that_does_not_fit_a_workers_time_left_waits_for_a_worker_it_fits(
        pack_system: str, fresh_expyre_root: Path, tmp_path: Path) -> None:
    # earlier calls measured 20 s a configuration: with a 45 s walltime a worker takes a task only
    # while 25 s are left, so after a few 3 s tasks it gives the next one back and exits
    info = tuned_info(pack_system, {"max_workers": 1, "target_chunk_seconds": 1, "walltime": 45})
    configs = timed_cells([3.0] * 8)
    async with session_scope() as session:
        session.db.record_times_soon(info.job_name, pack_system, [(20.0, 1)] * 50)
        result = await autoparallelize.aio(rf._timed_label, ConfigSet(configs), OutputSpec(tmp_path / "out.xyz"),
                                           autopara_info=AutoparaInfo(remote_info=info))
        assert [a.info["i"] for a in result] == list(range(8))
        assert await runs_per_configuration(session, pack_system, info.job_name) == Counter(range(8))
        coordinator = session.packing(pack_system)
        assert coordinator.stats["workers_submitted"] >= 2, "one worker ran every task: nothing was left to fit"
        assert coordinator.stats["chunks_put_back"] == 0, "a worker died running a task (killed at its walltime?)"
        target = session.system(pack_system)
        root = await target.remote_root()
        logs = await target.transport.run(f"cat {root}/{PACK_ROOT}/*/workers/*/_wfl_async_worker.log")
        assert "giving it back" in logs.stdout.decode(), "no worker refused a task that did not fit its time left"


def test_a_walltime_above_the_partitions_limit_fails_before_anything_is_submitted(
        fresh_expyre_root: Path, tmp_path: Path) -> None:
    info = tuned_info("slurm", {"walltime": "2h"})  # the test partitions allow 1 h
    with pytest.raises(ConfigurationError, match="walltime = 7200 s is above partition"):
        autoparallelize(rf._timed_label, ConfigSet(timed_cells([0.0])), OutputSpec(tmp_path / "out.xyz"),
                        autopara_info=AutoparaInfo(remote_info=info))


RESTART_SCRIPT = """
import json, sys
import anyio
from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo, autoparallelize
from wfl_async.configset import ConfigSet, OutputSpec
from tests.helpers import remote_functions as rf
from tests.remote.test_self_tuning import timed_cells

info = RemoteInfo(**json.loads(sys.argv[2]))
autoparallelize(rf._timed_label, ConfigSet(timed_cells([0.5] * 16)), OutputSpec(sys.argv[1]),
                autopara_info=AutoparaInfo(remote_info=info))
"""


async def test_a_self_tuned_call_killed_mid_way_is_rerun_with_every_configuration_once(
        pack_system: str, fresh_expyre_root: Path, tmp_path: Path) -> None:
    script = tmp_path / "workflow.py"
    script.write_text(RESTART_SCRIPT)
    info = tuned_info(pack_system, {"max_workers": 2, "target_chunk_seconds": 1.5, "walltime": 300})
    output = tmp_path / "out.xyz"
    env = dict(os.environ, WFL_EXPYRE_NO_MARK_PROCESSED="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    command = [sys.executable, str(script), str(output), json.dumps(info.to_dict())]
    first = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    async with session_scope() as session:
        with anyio.fail_after(300):  # until the first run has measured some chunks and planned more (a bound)
            while len(await session.db.measured_times(info.job_name, pack_system)) < 5:
                assert first.poll() is None, first.communicate()[1].decode()[-3000:]
                await anyio.sleep(0.1)
    kill_then_rerun(first, command, env=env, cwd=tmp_path, output=output)
    assert [a.info["i"] for a in read(output, ":")] == list(range(16)) and all(
        a.info["labelled"] for a in read(output, ":"))
    async with session_scope() as session:
        assert await runs_per_configuration(session, pack_system, info.job_name) == Counter(range(16))
        records = [r for r in await session.db.select(system=pack_system) if r.name.startswith(info.job_name)]
        async with session.db.conn.execute("SELECT DISTINCT call FROM groups") as cursor:
            calls = [row[0] for row in await cursor.fetchall()]
        assert len(calls) == 1, "the rerun's inputs did not find the first run's grouping"
        groups = await session.db.groups(calls[0])
        assert len(records) == len(groups) and sum(n for _, n in groups) == 16  # one chunk per recorded group
