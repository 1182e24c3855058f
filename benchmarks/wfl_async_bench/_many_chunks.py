"""Many short chunks: one queued job per chunk, the plain submit-loop floor, arrays, and packing.

Trivial workload (``operator.add``, N chunks, each a :class:`~wfl_async.job.RemoteJob`), each
mode in a fresh project (so nothing re-attaches), all in one process run:

- ``one job per chunk``: today's default;
- ``floor``: the same rendered job scripts submitted by a plain ``sbatch`` loop on the cluster
  side (:mod:`._floor`);
- ``arrays``: ``submit="array"`` (only when this checkout has that option);
- ``packed``: ``pack={"workers": W}``; then a rerun of the same jobs with the local results
  removed (as after a driver killed before fetching): it must submit nothing.

EMT workload: ``calculate`` on C configurations in chunks of K, one job per chunk (and its
floor) against packed (the system's ``"pack"`` default set in the private config).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wfl_async.jobs import layout
from wfl_async.jobs.options import JobOptions
from wfl_async.session import Session, session_scope

from ._autopara import AutoparaOptions, _run_ours
from ._figures import RunFigures
from ._floor import run_floor
from ._ours import run_ours
from ._workload import fresh_root, merged_raw_config

__all__ = ["ManyChunksOptions", "run_many_chunks"]


@dataclass
class ManyChunksOptions:
    system: str = "slurm_ssh"
    chunks: int = 2000
    workers: int = 8
    check_interval: float = 0.5
    resources: dict[str, Any] = field(default_factory=lambda: {"num_nodes": 1, "max_time": "30m"})
    timeout: float = 3600.0
    arrays: bool = True
    emt: bool = True
    emt_configs: int = 2000
    emt_per_chunk: int = 10
    keep: bool = False


def _say(message: str) -> None:
    print(f"[benchmark many_chunks] {message}", file=sys.stderr, flush=True)


def _row(figures: RunFigures, **extra: Any) -> dict[str, Any]:
    per_poll = figures.per_poll
    return _shown({"mode": figures.implementation, "chunks": figures.jobs, "ok": figures.ok, "failed": figures.failed,
            "end to end (s)": figures.all_results_s, "first result (s)": figures.first_result_s,
            "submit all (s)": figures.submit_all_s, "jobs/s": figures.jobs_per_s,
            "submit commands with a scheduler call": figures.extra.get("submit_scheduler_calls",
                                                                       figures.scheduler_calls),
            "ssh connections": figures.ssh_connections,
            "remote commands per poll (max, mean)": None if per_poll is None else
            (per_poll.max_commands_after_submit, round(per_poll.mean_commands, 2)),
            **_lag_columns(figures.extra.get("result_lag")), **extra})


def _lag_columns(lag: dict[str, Any] | None) -> dict[str, Any]:
    """Result lag columns (:class:`wfl_async.bench.ResultLag`): marker -> poll -> result in the driver."""
    if not lag or lag.get("median_s") is None:
        return {}
    return {"marker to poll (median, max s)": (round(lag["seen_median_s"], 2), round(lag["seen_max_s"], 2)),
            "marker to result (median, max s)": (round(lag["median_s"], 2), round(lag["max_s"], 2)),
            "missed by a poll": lag["missed"], "finished before watched": lag["finished_unwatched"],
            "result_lag": lag}  # every figure, in the JSON only


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    """``row``, also said at once (a long run's figures are seen as each mode ends)."""
    _say(json.dumps(row, default=str))
    return row


async def _submissions(session: Session, pack_stats: dict[str, int], job_options: dict[str, Any]) -> int:
    """Scheduler job ids created to run the chunks: one per job, one per array (its tasks share
    it), one per worker job when packed (from the jobs database and the coordinator's count)."""
    if "pack" in job_options:
        return pack_stats["workers_submitted"]
    ids = {r.remote_id for r in await session.db.select() if r.remote_id}
    return len({re.split(r"[_\[]", rid)[0] for rid in ids})


async def _trivial(options: ManyChunksOptions, raw: dict[str, Any], mode: str, job_options: dict[str, Any],
                   floor: bool = False, rerun: bool = False) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with fresh_root("wfl_async_bench_chunks_", raw, keep=options.keep):
        _say(f"{options.system}: {mode}, {options.chunks} chunks")
        async with session_scope() as session:
            ours = await run_ours(session, options.system, options.chunks, check_interval=options.check_interval,
                                  resources=options.resources, job_timeout=options.timeout,
                                  job_options=job_options, implementation=mode)
            stats = dict(session.packing(options.system).stats)
            rows.append(_row(ours.figures, **{"scheduler submissions": await _submissions(session, stats, job_options)},
                             **({"pack": stats} if "pack" in job_options else {})))
            if floor:
                _say(f"{options.system}: floor, the same {options.chunks} job scripts by a plain submit loop")
                figures = await run_floor(session.system(options.system), ours.remote_root, ours.job_dirs,
                                          job_timeout=options.timeout, keep=options.keep)
                rows.append(_row(figures, **{"scheduler submissions": figures.scheduler_calls}))
            stage_root = session.stage_root
        if rerun:
            results = list(stage_root.glob(f"*/{layout.RESULT}"))
            for path in results:
                path.unlink()
            _say(f"{options.system}: {mode} rerun, {len(results)} local results removed first")
            async with session_scope() as session:
                again = await run_ours(session, options.system, options.chunks,
                                       check_interval=options.check_interval, resources=options.resources,
                                       job_timeout=options.timeout, job_options=job_options,
                                       implementation=f"{mode}, rerun (local results removed)")
                system = session.system(options.system)
                stats = dict(session.packing(options.system).stats)
                rows.append(_row(again.figures, **{"scheduler submissions": stats["workers_submitted"]}, pack=stats,
                                 submit_commands=system.stats["submit_commands"]))
    return rows


async def _emt(options: ManyChunksOptions, raw: dict[str, Any], packed: bool) -> list[dict[str, Any]]:
    config = {**raw, "systems": {**raw["systems"]}}
    if packed:
        config["systems"][options.system] = {**raw["systems"][options.system], "pack": {"workers": options.workers}}
    auto = AutoparaOptions(system=options.system, configs=options.emt_configs, per_job=options.emt_per_chunk,
                           check_interval=options.check_interval, timeout=options.timeout, floor=not packed,
                           compare_expyre=False, keep=options.keep)
    mode = f"EMT packed into {options.workers} workers" if packed else "EMT one job per chunk"
    rows: list[dict[str, Any]] = []
    with fresh_root("wfl_async_bench_chunks_emt_", config, keep=options.keep) as root:
        _say(f"{options.system}: {mode}, {options.emt_configs} configs in chunks of {options.emt_per_chunk}")
        ours = await _run_ours(auto, "0", root / "emt_out.xyz")
        run = ours.run
        rows.append(_shown({"mode": mode, "chunks": run.chunks, "ok configs": run.ok, "end to end (s)": run.end_to_end_s,
                     "first written (s)": run.first_written_s, "scheduler calls": run.scheduler_calls,
                     "ssh connections": run.ssh_connections, "remote commands per poll (max, mean)":
                     run.commands_per_poll}))
        if not packed:
            _say(f"{options.system}: EMT floor, the same {len(ours.job_dirs)} chunk jobs by a plain submit loop")
            async with session_scope() as session:
                floor = await run_floor(session.system(options.system), ours.remote_root, ours.job_dirs,
                                        job_timeout=options.timeout, keep=options.keep)
            rows.append(_shown({"mode": "EMT floor (plain submit loop)", "chunks": floor.jobs, "ok chunks": floor.ok,
                                "end to end (s)": floor.all_results_s, "first written (s)": floor.first_result_s,
                                "scheduler calls": floor.scheduler_calls}))
        if not options.keep:
            shutil.rmtree(Path(root), ignore_errors=True)
    return rows


def _ratio(rows: list[dict[str, Any]], slow: str, fast: str) -> float | None:
    times = {r["mode"]: r.get("end to end (s)") for r in rows}
    a, b = times.get(slow), times.get(fast)
    return a / b if a and b else None


async def run_many_chunks(options: ManyChunksOptions) -> dict[str, Any]:
    """Every mode once; the rows, the ratios and the targets (docs/packing.md)."""
    raw = merged_raw_config()
    packed_mode = f"packed into {options.workers} workers"
    floor_mode = f"floor (plain {'sbatch' if raw['systems'][options.system]['scheduler'] == 'slurm' else 'submit'} loop)"
    rows = await _trivial(options, raw, "one job per chunk", {}, floor=True)
    floor_mode = rows[1]["mode"] if len(rows) > 1 else floor_mode
    if options.arrays and "submit" in JobOptions.names():
        rows += await _trivial(options, raw, "arrays (submit=\"array\")", {"submit": "array"})
    elif options.arrays:
        _say("this checkout has no submit=\"array\" option (branch arrays not merged): arrays not run")
    rows += await _trivial(options, raw, packed_mode, {"pack": {"workers": options.workers}}, rerun=True)
    emt_rows: list[dict[str, Any]] = []
    if options.emt:
        emt_rows = await _emt(options, raw, packed=False) + await _emt(options, raw, packed=True)
    packed_row = next(r for r in rows if r["mode"] == packed_mode)
    rerun_row = next(r for r in rows if r["mode"].startswith(f"{packed_mode}, rerun"))
    ratios = {
        "floor / packed (end to end)": _ratio(rows, floor_mode, packed_mode),
        "one job per chunk / packed (end to end)": _ratio(rows, "one job per chunk", packed_mode),
        "EMT floor / EMT packed (end to end)": _ratio(emt_rows, "EMT floor (plain submit loop)",
                                                      f"EMT packed into {options.workers} workers"),
        "EMT one job per chunk / EMT packed (end to end)": _ratio(emt_rows, "EMT one job per chunk",
                                                                  f"EMT packed into {options.workers} workers"),
    }
    floor_ratio = ratios["floor / packed (end to end)"]
    targets = {
        "packed >= 5x faster than the floor (trivial)": None if floor_ratio is None else floor_ratio >= 5,
        f"<= 10 scheduler calls to submit {options.chunks} chunks by packing":
            packed_row["scheduler submissions"] <= 10 and packed_row["submit commands with a scheduler call"] <= 10,
        "a rerun submits nothing": rerun_row["submit commands with a scheduler call"] == 0
            and rerun_row["pack"]["enqueue_commands"] == 0 and rerun_row["pack"]["workers_submitted"] == 0,
        "all results correct": all(r["failed"] == 0 and r["ok"] == options.chunks for r in rows
                                   if "ok" in r and not r["mode"].startswith("floor"))
            and all(r.get("ok configs", options.emt_configs) == options.emt_configs for r in emt_rows),
    }
    return {"rows": rows, "emt_rows": emt_rows, "ratios": ratios, "targets": targets}
