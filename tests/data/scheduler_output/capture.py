"""Capture real scheduler output for tests/unit/test_schedulers.py.

Run with the test daemons up (scripts/testinfra/start_all.sh)::

    python tests/data/scheduler_output/capture.py slurm sge pbs local

For each scheduler it submits a few real jobs built by wfl_async's own scheduler classes
(hostile job names, a submission that fails, held, running, finished, failed jobs), runs the
status command, and writes beside this file:

- ``<name>_submit.txt``: stdout of ``submit_command`` (one line per job directory)
- ``<name>_status.txt``: stdout of ``status_command``
- ``<name>_expected.json``: what the capture did to each job: ``{"submit": [id or null, ...],
  "states": {id: expected state}}``; written from the actions, never from the parser.

Every job it submits is cancelled at the end.  Slurm TIMEOUT needs a one-minute job, so
``slurm_timeout`` is a separate, slow target.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from wfl_async.scheduler import JobScriptSpec, Scheduler, get_scheduler  # noqa: E402

HERE = Path(__file__).resolve().parent
PBS_PATH = "export PATH=/opt/wfl_async_testinfra/pbs/bin:$PATH; "
HOSTILE_DIR = "dir with space 'q' \"dq\" | ü"


def sh(cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, errors="replace", check=False)


def write_job(sched: Scheduler, root: Path, name: str, body: list[str], header: tuple[str, ...] | list[str] = (),
              max_time: int = 300) -> str:
    d = root / name
    d.mkdir(parents=True)
    spec = JobScriptSpec(job_id=name.split()[0], job_dir=str(d), partition="debug", num_nodes=1, num_cores=1,
                         num_cores_per_node=1, max_time=max_time, header=header, commands=body)
    (d / sched.script_name).write_text(sched.render_script(spec))
    return str(d)


def need(ids: list[str | None]) -> list[str]:
    """The ids, with failed submissions (None) as "" so that unpacking keeps positions."""
    return [i or "" for i in ids]


def save(name: str, submit: str, status: str, submit_ids: list[str | None], states: dict[str, str]) -> None:
    (HERE / f"{name}_submit.txt").write_text(submit)
    (HERE / f"{name}_status.txt").write_text(status)
    (HERE / f"{name}_expected.json").write_text(
        json.dumps({"submit": submit_ids, "states": states}, indent=1, ensure_ascii=False) + "\n")
    print(f"{name}: saved ({len(states)} jobs)")


def capture_slurm(prefix: str = "", name: str = "slurm") -> None:
    sched = get_scheduler("slurm")
    root = Path(tempfile.mkdtemp(prefix=f"wfa_capture_{name}_"))
    hostile = "#SBATCH --job-name=\"we|rd 'q' ü %x\""
    dirs = [
        write_job(sched, root, "run", ["sleep 120"], [hostile.replace("%x", "run")]),
        write_job(sched, root, HOSTILE_DIR, ["sleep 120"], [hostile.replace("%x", "held")]),
        write_job(sched, root, "bad", ["true"], ["#SBATCH --time=bogus"]),
        write_job(sched, root, "fail", ["exit 3"]),
        write_job(sched, root, "ok", ["true"]),
        write_job(sched, root, "cancel", ["sleep 120"]),
        write_job(sched, root, "userhold", ["sleep 120"], ["#SBATCH --hold"]),
        write_job(sched, root, "later", ["sleep 120"], ["#SBATCH --begin=now+3600"]),
    ]
    sub = sh(prefix + sched.submit_command(dirs))
    ids = [r.remote_id for r in sched.parse_submit_output(sub.stdout, len(dirs))]
    run, held, _bad, fail, ok, cancel, userhold, later = need(ids)
    assert ids[2] is None and all(i for i in ids[:2] + ids[3:]), sub
    sh(prefix + sched.hold_command([held]))
    time.sleep(3)
    sh(prefix + sched.cancel_command([cancel]))
    time.sleep(2)
    status = sh(prefix + sched.status_command())
    states = {run: "running", held: "held", fail: "failed", ok: "finished", cancel: "failed",
              userhold: "held", later: "queued"}
    save(name, sub.stdout, status.stdout, ids, states)
    # The same jobs with the hostile names appended after the separator: pins that the
    # parser never reads past the reason, whatever follows it.
    with_names = sh(prefix + sched.status_command().replace("%r'", "%r|%j'"))
    (HERE / f"{name}_status_with_names.txt").write_text(with_names.stdout)
    sh(prefix + sched.cancel_command([i for i in need(ids) if i]))


def capture_slurm_timeout() -> None:
    sched = get_scheduler("slurm")
    root = Path(tempfile.mkdtemp(prefix="wfa_capture_slurm_timeout_"))
    dirs = [write_job(sched, root, "timeout", ["sleep 600"], max_time=60)]
    sub = sh(sched.submit_command(dirs))
    (jid,) = need([r.remote_id for r in sched.parse_submit_output(sub.stdout, 1)])
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status = sh(sched.status_command())
        if any(line.startswith(f"{jid}|TIMEOUT") for line in status.stdout.splitlines()):
            save("slurm_timeout", sub.stdout, status.stdout, [jid], {jid: "failed"})
            return
        time.sleep(2)
    raise SystemExit("no TIMEOUT seen")


def capture_sge() -> None:
    sched = get_scheduler("sge")
    root = Path(tempfile.mkdtemp(prefix="wfa_capture_sge_"))
    # SGE refuses job names with spaces or non-ASCII ("Unable to run job: Error reading
    # answer list from qmaster"): that is the failed submission; the other hostile
    # characters are accepted.
    dirs = [
        write_job(sched, root, "run", ["sleep 120"], ["#$ -N we|rd'q\"<x>&run"]),
        write_job(sched, root, HOSTILE_DIR, ["sleep 120"], ["#$ -N we|rd'q\"<x>&held", "#$ -h"]),
        write_job(sched, root, "runhold", ["sleep 120"]),
        write_job(sched, root, "bad", ["true"], ["#$ -N 'with space'"]),
        write_job(sched, root, "queued", ["sleep 120"], ["#$ -a 210001010000"]),
        write_job(sched, root, "error", ["true"], ["#$ -o /nonexistent/dir/out"]),
    ]
    sub = sh(sched.submit_command(dirs))
    ids = [r.remote_id for r in sched.parse_submit_output(sub.stdout, len(dirs))]
    run, held, runhold, _bad, queued, error = need(ids)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = sh(sched.status_command())
        now = sched.parse_status_output(status.stdout)  # only to know when to go on
        if now.get(runhold) == "running" and now.get(run) == "running" and now.get(error) == "failed":
            sh(sched.hold_command([runhold]))
            time.sleep(1)
            status = sh(sched.status_command())
            break
        time.sleep(1)
    # a hold on a running job ("hr") does not stop it
    states = {run: "running", held: "held", runhold: "running", queued: "queued", error: "failed"}
    save("sge", sub.stdout, status.stdout, ids, states)
    sh(sched.cancel_command([i for i in need(ids) if i]))


def capture_pbs() -> None:
    sched = get_scheduler("pbs")
    root = Path(tempfile.mkdtemp(prefix="wfa_capture_pbs_"))
    dirs = [
        write_job(sched, root, "run", ["sleep 120"], ["#PBS -N \"we|rd 'q' ü run\""]),
        write_job(sched, root, HOSTILE_DIR, ["sleep 120"], ["#PBS -N \"we|rd 'q' ü held\""]),
        write_job(sched, root, "bad", ["true"], ["#PBS -N we|rd\"unmatched"]),
        write_job(sched, root, "done", ["true"]),
    ]
    sub = sh(PBS_PATH + sched.submit_command(dirs))
    ids = [r.remote_id for r in sched.parse_submit_output(sub.stdout, len(dirs))]
    run, held, _bad, done = need(ids)
    sh(PBS_PATH + sched.hold_command([held]))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = sh(PBS_PATH + sched.status_command())
        now = sched.parse_status_output(status.stdout)  # only to know when to go on
        if now.get(run) == "running" and now.get(done) == "finished":
            break
        time.sleep(0.5)
    # The Torque-style wrappers on Slurm print a held job as Q (they have no H) and a
    # finished one as C while Slurm still lists it.
    states = {run: "running", held: "queued", done: "finished"}
    save("pbs", sub.stdout, status.stdout, ids, states)
    sh(PBS_PATH + sched.cancel_command([i for i in need(ids) if i]))


def capture_local() -> None:
    root = Path(tempfile.mkdtemp(prefix="wfa_capture_local_"))
    sched = get_scheduler("local", slot_dir=str(root / "slots"), max_jobs=2)
    dirs = [write_job(sched, root, n, ["sleep 30"]) for n in ("a", HOSTILE_DIR, "c")]
    sub = sh(sched.submit_command(dirs))
    ids = [r.remote_id for r in sched.parse_submit_output(sub.stdout, len(dirs))]
    time.sleep(1)
    status = sh(sched.status_command())
    a, b, c = need(ids)
    save("local", sub.stdout, status.stdout, ids, {a: "running", b: "running", c: "queued"})
    sh(sched.cancel_command([i for i in need(ids) if i]))


TARGETS = {"slurm": capture_slurm, "slurm_timeout": capture_slurm_timeout, "sge": capture_sge,
           "pbs": capture_pbs, "local": capture_local}

if __name__ == "__main__":
    os.environ.setdefault("SGE_ROOT", "/var/lib/gridengine")
    for target in sys.argv[1:] or ["slurm", "sge", "pbs", "local"]:
        TARGETS[target]()
