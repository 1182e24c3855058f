"""wfl 0.3.5 + ExPyRe on the autoparallelize workload: the parent side.

The same private root, counting ssh/rsync wrappers and ControlMaster mode as the many-job
comparison (:mod:`._expyre`); the child runs ``wfl.calculators.generic.calculate`` with
wfl's ``RemoteInfo`` and ``WFL_EXPYRE_NO_MARK_PROCESSED=1``, like wfl_async's run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

from ._autopara import JOB_NAME, NO_MARK, PROPERTIES, AutoparaOptions, emt_configs, env_vars
from ._autopara_figures import AutoparaRun, Rerun
from ._expyre import _SCHEDULER_WORDS, MODES, _cleanup, _expyre_system, _user, _wrappers

__all__ = ["run_expyre_autopara"]


def _count(lines: list[str]) -> dict[str, int]:
    ssh = [line for line in lines if line.startswith("ssh ")]
    return {"remote_commands": len(ssh), "ssh_connections": sum(1 for line in lines if line == "connection"),
            "scheduler_calls": sum(1 for line in ssh if _SCHEDULER_WORDS.search(line)),
            "submissions": sum(1 for line in ssh if re.search(r"\b(sbatch|qsub)\b", line)),
            "polls": sum(1 for line in ssh if re.search(r"\b(squeue|qstat)\b", line)),
            "rsync": sum(1 for line in lines if line == "rsync")}


async def run_expyre_autopara(options: AutoparaOptions, setting: str, raw_config: dict[str, Any],
                              mode: str) -> tuple[AutoparaRun, list[Rerun]]:
    chunks = -(-options.configs // options.per_job)
    run = AutoparaRun(MODES[mode], options.system, setting, options.configs, chunks)
    reruns: list[Rerun] = []
    entry = raw_config["systems"][options.system]
    base_remsh = str(entry.get("remsh_cmd") or os.environ.get("EXPYRE_RSH", "ssh"))
    if len(base_remsh.split()) != 1:
        run.notes.append(f"remsh_cmd {base_remsh!r} is not one word; rsync would misread it")
        return run, reruns
    root = Path(tempfile.mkdtemp(prefix=f"wab_apx_{mode}_"))
    try:
        remsh = _wrappers(root, base_remsh, mode)
        (root / "config.json").write_text(json.dumps({"systems": {options.system: _expyre_system(entry, remsh)}}))
        import ase.io

        inputs = root / "inputs.xyz"
        await anyio.to_thread.run_sync(lambda: ase.io.write(str(inputs), emt_configs(options.configs)))
        env = dict(os.environ, EXPYRE_ROOT=str(root), RSYNC_OLD_ARGS="1", USER=os.environ.get("USER") or _user(),
                   PATH=f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}", **{NO_MARK: "1"})
        env.pop("EXPYRE_TIMING_VERBOSE", None)  # crashes ExPyRe's System.submit
        opts = {"system": options.system, "inputs": str(inputs), "output": str(root / "emt_out.xyz"),
                "calls_log": str(root / "calls.log"), "job_name": JOB_NAME, "per_job": options.per_job,
                "check_interval": options.expyre_check_interval, "timeout": int(options.timeout),
                "resources": dict(options.resources), "env_vars": env_vars(setting), "properties": PROPERTIES}
        child = Path(__file__).with_name("_autopara_expyre_child.py")
        process = await anyio.run_process([sys.executable, "-I", str(child), json.dumps(opts)], env=env, cwd=root,
                                          check=False)
        try:
            data = json.loads(process.stdout.decode().strip().splitlines()[-1])
        except (IndexError, ValueError):
            run.notes.append(f"wfl + ExPyRe failed (exit {process.returncode}): "
                             f"{process.stderr.decode().strip()[-800:]}")
            print(run.notes[-1], file=sys.stderr)
            return run, reruns
        calls = (root / "calls.log").read_text().splitlines() if (root / "calls.log").exists() else []
        marks = data["marks"]
        phase = _count(calls[marks["start"]:marks["run"]])
        run.first_written_s, run.end_to_end_s = data["first_written_s"], data["end_to_end_s"]
        run.ok, run.energy_sum = data["ok"], data["energy_sum"]
        run.failed = options.configs - run.ok
        run.submissions, run.ssh_connections = phase["submissions"], phase["ssh_connections"]
        run.remote_commands, run.scheduler_calls, run.polls = (phase["remote_commands"], phase["scheduler_calls"],
                                                               phase["polls"])
        run.extra = {"rsync_processes": phase["rsync"], "import_s": data["import_s"],
                     "check_interval_s": options.expyre_check_interval}
        if data["error"]:
            run.notes.append(data["error"])
        previous = "run"
        for index, (seconds, kind) in enumerate(zip(data["reruns_s"], ("output exists",
                                                                       f"output deleted, {NO_MARK}=1"),
                                                    strict=False), start=1):
            counts = _count(calls[marks[previous]:marks[f"rerun{index}"]])
            previous = f"rerun{index}"
            reruns.append(Rerun(MODES[mode], options.system, setting, kind, seconds=seconds,
                                submissions=counts["submissions"], ssh_connections=counts["ssh_connections"],
                                remote_commands=counts["remote_commands"],
                                ok=(data["reruns_ok"] + [0, 0])[index - 1]))
        if entry.get("host") is not None:
            await _cleanup(base_remsh, str(entry["host"]), data.get("remote_rundir"), root, mode, options.keep)
        return run, reruns
    finally:
        if not options.keep:
            shutil.rmtree(root, ignore_errors=True)
