"""wfl + ExPyRe on the same calls, in a subprocess with its own ``EXPYRE_ROOT``.

The system's entry is copied from our configuration, keeping only the keys ExPyRe knows,
with a run directory of its own and ``remsh_cmd`` replaced by a one-word counting wrapper
around the configured one (ExPyRe also hands it to rsync as ``-e``, so it must be one
word). The wrapper logs every ssh process; an ``rsync`` wrapper early on ``PATH`` logs every
rsync. Mode ``cm`` adds OpenSSH connection sharing (``ControlMaster=auto``, a private
``ControlPath``, ``ControlPersist``); a connection is counted whenever the control socket
does not exist yet when ssh starts (ExPyRe runs one ssh at a time, so that is exact).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from ._figures import RunFigures
from ._workload import BASE, TRIVIAL_FUNCTION_NAME

__all__ = ["expyre_available", "run_expyre"]

_EXPYRE_KEYS = ("host", "scheduler", "partitions", "queues", "header", "no_default_header", "script_exec",
                "pre_submit_cmds", "commands", "rundir")
_SCHEDULER_WORDS = re.compile(r"\b(sbatch|squeue|scancel|sacct|qsub|qstat|qdel|qacct)\b")
MODES = {"plain": "wfl + ExPyRe (plain ssh)", "cm": "wfl + ExPyRe (ssh ControlMaster)"}


def expyre_available() -> bool:
    """Whether expyre-wfl (and wfl) are importable, without importing them (import has side effects)."""
    import importlib.util

    return importlib.util.find_spec("expyre") is not None and importlib.util.find_spec("wfl") is not None


def _wrappers(root: Path, remsh: str, mode: str) -> str:
    """Write the counting ssh and rsync wrappers under ``root/bin``; return the ssh one."""
    bin_dir = root / "bin"
    bin_dir.mkdir()
    log = shlex.quote(str(root / "calls.log"))
    control = shlex.quote(str(root / "cm-%C"))
    socket_glob = str(root / "cm-*")
    rsync = shutil.which("rsync") or "rsync"
    extra = ""
    count_connection = f"echo connection >> {log}"
    if mode == "cm":
        extra = f" -o ControlMaster=auto -o ControlPath={control} -o ControlPersist=120"
        count_connection = f"ls {socket_glob} >/dev/null 2>&1 || echo connection >> {log}"
    ssh = bin_dir / "remsh"
    ssh.write_text(f"""#!/bin/sh
printf 'ssh %s\\n' "$(printf '%s ' "$@" | tr '\\n' ' ')" >> {log}
( {count_connection} )
exec {remsh}{extra} "$@"
""")
    (bin_dir / "rsync").write_text(f"""#!/bin/sh
echo rsync >> {log}
exec {shlex.quote(rsync)} "$@"
""")
    for path in (ssh, bin_dir / "rsync"):
        path.chmod(0o755)
    return str(ssh)


def _expyre_system(entry: Mapping[str, Any], remsh: str) -> dict[str, Any]:
    system = {k: v for k, v in entry.items() if k in _EXPYRE_KEYS}
    rundir = str(entry.get("rundir") or "run_expyre").rstrip("/")
    system["rundir"] = f"{rundir}_expyre_bench"
    system["remsh_cmd"] = remsh
    return system


async def run_expyre(system_name: str, raw_config: Mapping[str, Any], n_jobs: int, *, mode: str,
                     check_interval: float, resources: Mapping[str, Any], job_timeout: float,
                     keep: bool = False) -> RunFigures:
    """Run ``n_jobs`` trivial calls through ExPyRe (as wfl drives it) and measure."""
    figures = RunFigures(implementation=MODES[mode], system=system_name, jobs=n_jobs)
    entry = raw_config["systems"][system_name]
    if entry.get("host") is None:
        figures.notes.append("system has no host: ExPyRe runs its commands locally, nothing to count")
    base_remsh = str(entry.get("remsh_cmd") or os.environ.get("EXPYRE_RSH", "ssh"))
    if len(base_remsh.split()) != 1:
        figures.notes.append(f"remsh_cmd {base_remsh!r} is not one word; rsync would misread it")
        return figures
    root = Path(tempfile.mkdtemp(prefix=f"wfl_async_bench_expyre_{mode}_"))
    try:
        remsh = _wrappers(root, base_remsh, mode)
        system = _expyre_system(entry, remsh)
        (root / "config.json").write_text(json.dumps({"systems": {system_name: system}}, indent=2))
        env = dict(os.environ, EXPYRE_ROOT=str(root), RSYNC_OLD_ARGS="1",
                   USER=os.environ.get("USER") or _user(), PATH=f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}")
        env.pop("EXPYRE_TIMING_VERBOSE", None)  # crashes ExPyRe's System.submit
        opts = {"function": TRIVIAL_FUNCTION_NAME, "base": BASE, "jobs": n_jobs, "system": system_name, "resources": dict(resources), "timeout": int(job_timeout),
                "check_interval": check_interval}
        child = Path(__file__).with_name("_expyre_child.py")
        process = await anyio.run_process([sys.executable, "-I", str(child), json.dumps(opts)], env=env, cwd=root,
                                          check=False)
        lines = process.stdout.decode().strip().splitlines()
        try:
            data = json.loads(lines[-1])
        except (IndexError, ValueError):
            figures.notes.append(f"ExPyRe run failed (exit {process.returncode}): "
                                 f"{process.stderr.decode().strip()[-800:]}")
            print(figures.notes[-1], file=sys.stderr)
            return figures
        calls = (root / "calls.log").read_text().splitlines() if (root / "calls.log").exists() else []
        ssh_calls = [line for line in calls if line.startswith("ssh ")]
        figures.submit_all_s, figures.first_result_s = data["submit_all_s"], data["first_result_s"]
        figures.all_results_s, figures.ok, figures.failed = data["all_results_s"], data["ok"], data["failed"]
        figures.remote_commands = len(ssh_calls)
        figures.ssh_connections = sum(1 for line in calls if line == "connection")
        figures.scheduler_calls = sum(1 for line in ssh_calls if _SCHEDULER_WORDS.search(line))
        figures.polls = sum(1 for line in ssh_calls if re.search(r"\b(squeue|qstat)\b", line))
        figures.peak_rss_bytes = data["peak_rss_bytes"]
        figures.extra = {"ssh_processes": len(ssh_calls), "rsync_processes": calls.count("rsync"),
                         "check_interval_s": check_interval, "import_s": data["import_s"]}
        if data["first_error"]:
            figures.notes.append(data["first_error"])
        if entry.get("host") is not None:
            await _cleanup(base_remsh, str(entry["host"]), data.get("remote_rundir"), root, mode, keep)
        return figures
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


async def _cleanup(remsh: str, host: str, remote_rundir: str | None, root: Path, mode: str, keep: bool) -> None:
    """Remove ExPyRe's remote run directory and close the shared connection (not counted)."""
    if remote_rundir and not keep:
        await anyio.run_process([remsh, host, f"rm -rf {shlex.quote(remote_rundir)}"], check=False)
    if mode == "cm":
        await anyio.run_process([remsh, "-o", f"ControlPath={root / 'cm-%C'}", "-O", "exit", host], check=False)


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name
