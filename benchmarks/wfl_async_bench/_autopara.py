"""The autoparallelize workload: EMT on many configurations in queued chunks.

wfl_async's ``calculate.iter`` (time to the first written result, end to end), two reruns
(the output exists; the output deleted with ``WFL_EXPYRE_NO_MARK_PROCESSED=1``), the floor
(the same rendered chunk jobs submitted by a plain loop on the cluster side) and wfl 0.3.5 +
ExPyRe on the same configurations, all in one process run. See ``docs/benchmark.md``.
"""

from __future__ import annotations

import os
import shlex
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from wfl_async.bench import poll_stats
from wfl_async.session import Session, session_scope

from ._autopara_figures import AutoparaReport, AutoparaRun, Rerun
from ._expyre import MODES, expyre_available
from ._floor import run_floor
from ._workload import fresh_root, merged_raw_config

__all__ = ["AutoparaOptions", "emt_configs", "read_output", "run_autopara_benchmark"]

NO_MARK = "WFL_EXPYRE_NO_MARK_PROCESSED"
JOB_NAME = "bench_emt"
PROPERTIES = ["energy", "forces"]


@dataclass
class AutoparaOptions:
    system: str = "slurm_ssh"
    configs: int = 2000
    per_job: int = 10
    """``num_inputs_per_queued_job``: configurations per queued job (chunk)."""
    settings: Sequence[str] = ("0",)
    """``WFL_NUM_PYTHON_SUBPROCESSES`` in each job, one full comparison per value; ``default`` sets
    nothing (the job then uses ``EXPYRE_NUM_CORES_PER_NODE`` processes, wfl's default)."""
    check_interval: float = 0.5
    floor: bool = True
    compare_expyre: bool = True
    expyre_modes: Sequence[str] = ("plain", "cm")
    expyre_check_interval: float = 1.0
    resources: dict[str, Any] = field(default_factory=lambda: {"num_nodes": 1, "max_time": "10m"})
    timeout: float = 1800.0
    repeat: int = 1
    keep: bool = False


def _say(message: str) -> None:
    print(f"[benchmark autopara] {message}", file=sys.stderr, flush=True)


def emt_configs(n: int) -> list[Any]:
    """``n`` rattled 8-atom fcc Cu cells (seeded: the same for every implementation)."""
    from ase.build import bulk

    base = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    configs = []
    for i in range(n):
        atoms = base.copy()
        atoms.rattle(stdev=0.05, seed=i)
        atoms.info["bench_index"] = i
        configs.append(atoms)
    return configs


def read_output(path: Path) -> tuple[int, float]:
    """Configurations in ``path`` having EMT energy and forces, and the sum of their energies."""
    import ase.io

    ok, total = 0, 0.0
    if not path.exists():
        return 0, 0.0
    for atoms in ase.io.iread(str(path), ":"):
        if "EMT_energy" in atoms.info and "EMT_forces" in atoms.arrays:
            ok += 1
            total += float(atoms.info["EMT_energy"])
    return ok, total


def env_vars(setting: str) -> list[str]:
    return [] if setting == "default" else [f"WFL_NUM_PYTHON_SUBPROCESSES={int(setting)}"]


@contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


def _call_kwargs(options: AutoparaOptions, setting: str) -> dict[str, Any]:
    from ase.calculators.emt import EMT

    from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo

    remote = RemoteInfo(sys_name=options.system, job_name=JOB_NAME, resources=dict(options.resources),
                        num_inputs_per_queued_job=options.per_job, check_interval=options.check_interval,
                        timeout=options.timeout, env_vars=env_vars(setting))
    return {"calculator": (EMT, [], {}), "properties": list(PROPERTIES),
            "autopara_info": AutoparaInfo(remote_info=remote)}


@dataclass
class _OurRun:
    run: AutoparaRun
    remote_root: str
    job_dirs: list[str]


async def _submitted(session: Session) -> dict[str, tuple[str | None, str]]:
    """Every job of this (fresh) project: key -> (queue id, job dir), from the jobs database."""
    return {r.key: (r.remote_id, r.job_dir) for r in await session.db.select()}


async def _run_ours(options: AutoparaOptions, setting: str, output: Path) -> _OurRun:
    """One fresh ``calculate.iter`` over the workload, measured from the transport's own records."""
    from wfl_async.calculators.generic import calculate
    from wfl_async.configset import ConfigSet, OutputSpec

    configs = emt_configs(options.configs)
    kwargs = _call_kwargs(options, setting)
    partial = output.parent / f".{output.name}.wfl_async_partial"
    chunks = -(-options.configs // options.per_job)
    run = AutoparaRun("wfl_async", options.system, setting, options.configs, chunks)
    async with session_scope() as session:
        system = session.system(options.system)
        first_record = len(system.transport.stats.records)
        t0 = time.monotonic()
        first: float | None = None
        seen = 0
        async for chunk in calculate.iter(ConfigSet(configs), OutputSpec(output), **kwargs):
            if first is None:  # yielded after it was stored: it is in the partial file now
                first = time.monotonic() - t0
                if not (partial.exists() and partial.stat().st_size > 0):  # noqa: ASYNC240  # one stat, after timing
                    run.notes.append("first chunk yielded before the partial file had data")
            seen += len(chunk)
        run.end_to_end_s = time.monotonic() - t0
        run.first_written_s = first
        records = system.transport.stats.records[first_record:]
        submits = [r.started + r.duration for r in records if r.kind == "submit"]
        per_poll = poll_stats(records, max(submits) if submits else None)
        jobs = await _submitted(session)
        transport = system.transport.stats
        run.submissions = sum(1 for remote_id, _ in jobs.values() if remote_id)
        run.ssh_connections, run.remote_commands = transport.connections_opened, transport.commands_run
        run.scheduler_calls = system.stats.get("scheduler_calls")
        run.polls = system.stats.get("poll_commands")
        run.commands_per_poll = (per_poll.max_commands_after_submit, round(per_poll.mean_commands, 2))
        run.extra = {"commands_by_kind": per_poll.by_kind, "chunk_items_yielded": seen,
                     "check_interval_s": options.check_interval,
                     "commands": [[round(r.started - t0, 3), round(r.duration, 3), r.kind] for r in records]}
        remote_root = await system.remote_root()
    run.ok, run.energy_sum = await anyio.to_thread.run_sync(read_output, output)
    run.failed = options.configs - run.ok
    return _OurRun(run, remote_root, [job_dir for remote_id, job_dir in jobs.values() if remote_id])


async def _rerun_ours(options: AutoparaOptions, setting: str, output: Path, kind: str) -> Rerun:
    """The same call again, in a fresh session (no connection kept from the run), timed whole."""
    from wfl_async.calculators.generic import calculate
    from wfl_async.configset import ConfigSet, OutputSpec

    configs = emt_configs(options.configs)
    kwargs = _call_kwargs(options, setting)
    rerun = Rerun("wfl_async", options.system, setting, kind)
    t0 = time.monotonic()
    async with session_scope() as session:
        system = session.system(options.system)
        before = await _submitted(session)
        await calculate.aio(ConfigSet(configs), OutputSpec(output), **kwargs)
        after = await _submitted(session)
        # a job submitted again has a new queue id (or is new): nothing else counts as a submission
        rerun.submissions = sum(1 for key, (remote_id, _) in after.items()
                                if remote_id and before.get(key, (None, ""))[0] != remote_id)
        rerun.ssh_connections = system.transport.stats.connections_opened
        rerun.remote_commands = system.transport.stats.commands_run
    rerun.seconds = time.monotonic() - t0
    rerun.ok, _ = await anyio.to_thread.run_sync(read_output, output)
    return rerun


async def _ours_floor_reruns(options: AutoparaOptions, setting: str, raw_config: dict[str, Any],
                             do_floor: bool) -> tuple[list[AutoparaRun], list[Rerun]]:
    runs: list[AutoparaRun] = []
    reruns: list[Rerun] = []
    with fresh_root("wfl_async_bench_autopara_", raw_config, keep=options.keep) as root, _environ(NO_MARK, "1"):
        output = root / "emt_out.xyz"
        _say(f"{options.system}: wfl_async, {options.configs} configs in chunks of {options.per_job}, "
             f"WFL_NUM_PYTHON_SUBPROCESSES={setting}")
        ours = await _run_ours(options, setting, output)
        runs.append(ours.run)
        async with session_scope() as session:
            system = session.system(options.system)
            if do_floor:
                _say(f"{options.system}: floor, the same {len(ours.job_dirs)} chunk jobs by a plain submit loop")
                floor = await run_floor(system, ours.remote_root, ours.job_dirs, job_timeout=options.timeout,
                                        keep=options.keep)
                runs.append(AutoparaRun(floor.implementation, options.system, setting, options.configs,
                                        len(ours.job_dirs), first_written_s=floor.first_result_s,
                                        end_to_end_s=floor.all_results_s, ok=floor.ok, failed=floor.failed,
                                        submissions=floor.scheduler_calls, scheduler_calls=floor.scheduler_calls,
                                        notes=floor.notes, extra={"submit_all_s": floor.submit_all_s}))
        _say(f"{options.system}: wfl_async reruns")
        reruns.append(await _rerun_ours(options, setting, output, "output exists"))
        output.unlink()
        reruns.append(await _rerun_ours(options, setting, output, f"output deleted, {NO_MARK}=1"))
        if not options.keep:
            async with session_scope() as session:
                await session.system(options.system).transport.run(f"rm -rf {shlex.quote(ours.remote_root)}",
                                                                   check=False)
    return runs, reruns


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _summary(options: AutoparaOptions, report: AutoparaReport) -> list[dict[str, Any]]:
    """Per setting: medians over repeats, ratios, and each target met or missed."""
    summary: list[dict[str, Any]] = []
    for setting in options.settings:
        runs = [r for r in report.runs if r.setting == setting]
        ours = [r for r in runs if r.implementation == "wfl_async"]
        floors = [r for r in runs if r.implementation.startswith("floor")]
        pairs = [(o, f) for o, f in zip(ours, floors, strict=False) if o.end_to_end_s and f.end_to_end_s]
        ours_e2e = _median([r.end_to_end_s for r in ours])
        entry: dict[str, Any] = {
            "setting": setting, "repeats": len(ours),
            "wfl_async end to end (s), median": ours_e2e,
            "wfl_async first written (s), median": _median([r.first_written_s for r in ours]),
            "first written / end to end, median": _median([r.first_fraction for r in ours]),
            "floor end to end (s), median": _median([r.end_to_end_s for r in floors]),
            "wfl_async / floor, median of pairs": _median([o.end_to_end_s / f.end_to_end_s  # type: ignore[operator]
                                                           for o, f in pairs]),
        }
        for kind in ("output exists", f"output deleted, {NO_MARK}=1"):
            mine = [r for r in report.reruns if r.setting == setting and r.implementation == "wfl_async"
                    and r.kind == kind]
            entry[f"rerun ({kind}) s, median"] = _median([r.seconds for r in mine])
            entry[f"rerun ({kind}) s, max"] = max((r.seconds for r in mine if r.seconds is not None), default=None)
            entry[f"rerun ({kind}) submissions, total"] = sum(r.submissions or 0 for r in mine) if mine else None
        for run in runs:
            if run.implementation not in MODES.values():
                continue
            if run.ok != run.configs or not run.end_to_end_s or not ours_e2e:
                entry[f"{run.implementation}"] = f"failed ({run.ok} of {run.configs} configs written): no ratio"
                continue
            entry[f"{run.implementation} end to end (s)"] = run.end_to_end_s
            entry[f"{run.implementation} first written (s)"] = run.first_written_s
            entry[f"{run.implementation} / wfl_async (end to end)"] = run.end_to_end_s / ours_e2e
        ratio, fraction = entry["wfl_async / floor, median of pairs"], entry["first written / end to end, median"]
        reruns = [r for r in report.reruns if r.setting == setting and r.implementation == "wfl_async"]
        entry["targets"] = {
            "end to end <= 1.3x floor": None if ratio is None else ratio <= 1.3,
            "first written < 1/4 of end to end": None if fraction is None else fraction < 0.25,
            "rerun < 2 s (median of each kind) with 0 submissions": (
                all(entry[f"rerun ({k}) s, median"] is not None and entry[f"rerun ({k}) s, median"] < 2
                    for k in ("output exists", f"output deleted, {NO_MARK}=1"))
                and all(r.submissions == 0 for r in reruns)) if reruns else None,
            "every rerun < 2 s": all(r.seconds is not None and r.seconds < 2 for r in reruns) if reruns else None,
        }
        summary.append(entry)
    return summary


async def run_autopara_benchmark(options: AutoparaOptions) -> AutoparaReport:
    """Every setting: wfl_async (+ floor + reruns) ``repeat`` times, then wfl + ExPyRe per mode.

    Call it with no wfl_async session open on the event loop.
    """
    from ._autopara_expyre import run_expyre_autopara

    raw_config = merged_raw_config()
    report = AutoparaReport()
    do_floor = options.floor and raw_config["systems"][options.system].get("scheduler") != "local"
    for setting in options.settings:
        for _ in range(options.repeat):
            runs, reruns = await _ours_floor_reruns(options, setting, raw_config, do_floor)
            report.runs.extend(runs)
            report.reruns.extend(reruns)
        if not options.compare_expyre:
            continue
        if not expyre_available():
            _say("wfl / expyre-wfl not installed: no comparison (pip install wfl expyre-wfl)")
            continue
        for mode in options.expyre_modes:
            _say(f"{options.system}: {MODES[mode]}, {options.configs} configs "
                 f"(wfl + ExPyRe submits one job at a time: minutes over plain ssh)")
            run, reruns = await run_expyre_autopara(options, setting, raw_config, mode)
            report.runs.append(run)
            report.reruns.extend(reruns)
    report.summary = _summary(options, report)
    return report
