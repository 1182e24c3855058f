"""Several operations awaited together, on different systems of one host, over ONE connection."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import anyio
import pytest
from ase.calculators.emt import EMT

from tests.conftest import remote_system_names
from tests.remote.test_autoparallelize_remote import cells
from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo
from wfl_async.calculators.generic import calculate
from wfl_async.config import load_config
from wfl_async.configset import ConfigSet, OutputSpec
from wfl_async.session import session_scope

pytestmark = pytest.mark.remote


def systems_sharing_a_host() -> list[str]:
    config = load_config()
    by_host: dict[str, list[str]] = defaultdict(list)
    for name in remote_system_names():
        host = config.systems[name].host
        if host is not None:
            by_host[host].append(name)
    best = max(by_host.values(), key=len, default=[])
    if len(best) < 2:
        pytest.skip("EXPYRE_PYTEST_SYSTEMS leaves fewer than two systems on one ssh host")
    return best


async def test_operations_on_several_systems_share_one_connection_and_stream_chunks(
        fresh_expyre_root: Path, tmp_path: Path) -> None:
    systems = systems_sharing_a_host()
    inputs = cells(24)
    results: dict[str, list[float]] = {}
    arrivals: list[tuple[str, int]] = []

    async def run(system: str) -> None:
        info = RemoteInfo(sys_name=system, job_name=f"together-{system}", check_interval=0.3,
                          resources={"num_nodes": 1, "max_time": "10m"}, num_inputs_per_queued_job=4)
        energies = [0.0] * len(inputs)
        async for chunk in calculate.iter(ConfigSet(inputs), OutputSpec(tmp_path / f"{system}.xyz"),
                                          calculator=(EMT, [], {}), properties=["energy"],
                                          autopara_info=AutoparaInfo(remote_info=info)):
            arrivals.append((system, chunk.chunk_index))
            for position, atoms in zip(chunk.item_indices, chunk.results, strict=True):
                energies[position] = atoms.info["EMT_energy"]
        results[system] = energies

    async with session_scope() as rt:
        async with anyio.create_task_group() as tg:
            for system in systems:
                tg.start_soon(run, system)
        transports = {id(rt.system(s).transport) for s in systems}
        assert len(transports) == 1
        assert rt.system(systems[0]).transport.stats.connections_opened == 1

    expected = []
    for atoms in inputs:
        atoms = atoms.copy()
        atoms.calc = EMT()
        expected.append(atoms.get_potential_energy())
    for system in systems:
        assert results[system] == pytest.approx(expected, abs=1e-8)
        assert sorted(i for s, i in arrivals if s == system) == list(range(6))
        assert (tmp_path / f"{system}.xyz").exists()
