"""wfl 0.3.5 + ExPyRe running the autoparallelize workload, in its own process.

``python -I .../_autopara_expyre_child.py '<json>'`` with ``EXPYRE_ROOT`` pointing at the
benchmark's private root (``import expyre`` reads it). Reads the input configurations from
an extxyz file, calls ``wfl.calculators.generic.calculate`` with wfl's ``RemoteInfo``, then
reruns it twice (output kept; output deleted) and prints one JSON line of timings and
``calls.log`` line counts at each phase boundary (the parent splits the log by them).

A thread watches wfl's staging file (``tmp.<name>``, flushed after every store) and the
final file every 10 ms: the first time either holds data is the first written result.
Imports nothing of wfl_async.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path


def _lines(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


def _watch(paths: list[Path], t0: float, found: list[float], stop: threading.Event) -> None:
    while not stop.is_set():
        for path in paths:
            try:
                if path.stat().st_size > 0:
                    found.append(time.monotonic() - t0)
                    return
            except FileNotFoundError:
                pass
        time.sleep(0.01)


def main(argv: list[str]) -> int:
    opts = json.loads(argv[0])
    t_import = time.monotonic()
    import ase.io
    from ase.calculators.emt import EMT
    from wfl.autoparallelize import AutoparaInfo, RemoteInfo
    from wfl.calculators.generic import calculate
    from wfl.configset import ConfigSet, OutputSpec

    t_import = time.monotonic() - t_import
    output = Path(opts["output"])
    calls_log = Path(opts["calls_log"])

    def call() -> None:
        configs = ase.io.read(opts["inputs"], ":")
        remote = RemoteInfo(sys_name=opts["system"], job_name=opts["job_name"], resources=opts["resources"],
                            num_inputs_per_queued_job=opts["per_job"], check_interval=opts["check_interval"],
                            timeout=opts["timeout"], env_vars=list(opts["env_vars"]))
        calculate(ConfigSet(configs), OutputSpec(output.name, file_root=output.parent), calculator=(EMT, [], {}),
                  properties=list(opts["properties"]), autopara_info=AutoparaInfo(remote_info=remote))

    def verify() -> tuple[int, float]:
        ok, energy = 0, 0.0
        if output.exists():
            for atoms in ase.io.iread(str(output), ":"):
                if "EMT_energy" in atoms.info and "EMT_forces" in atoms.arrays:
                    ok += 1
                    energy += float(atoms.info["EMT_energy"])
        return ok, energy

    marks = {"start": _lines(calls_log)}
    found: list[float] = []
    stop = threading.Event()
    t0 = time.monotonic()
    watcher = threading.Thread(target=_watch, args=([output.parent / f"tmp.{output.name}", output], t0, found, stop),
                               daemon=True)
    watcher.start()
    error = ""
    try:
        call()
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    t_all = time.monotonic() - t0
    stop.set()
    watcher.join()
    marks["run"] = _lines(calls_log)
    ok, energy = verify()
    reruns: list[float | None] = []
    reruns_ok: list[int] = []
    if not error:
        for delete in (False, True):
            if delete:
                output.unlink()
            t = time.monotonic()
            try:
                call()
                reruns.append(time.monotonic() - t)
            except Exception as exc:
                error = f"rerun: {type(exc).__name__}: {exc}"
                reruns.append(None)
            marks[f"rerun{len(reruns)}"] = _lines(calls_log)
            reruns_ok.append(verify()[0])
    from expyre import config

    print(json.dumps({
        "import_s": t_import, "first_written_s": found[0] if found else None, "end_to_end_s": t_all,
        "reruns_s": reruns, "reruns_ok": reruns_ok, "marks": marks, "ok": ok, "energy_sum": energy, "error": error,
        "no_mark_processed": "WFL_EXPYRE_NO_MARK_PROCESSED" in os.environ,
        "remote_rundir": config.systems[opts["system"]].remote_rundir,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
