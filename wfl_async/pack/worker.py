"""The remote worker: ``python -m wfl_async.pack.worker <queue dir> --max-time S`` in a worker job.

It takes chunk entries from its pack's queue (:class:`~.claims.Claimer`: the next name of the
queue's index, renamed from ``todo`` into ``taken``; rename is atomic: of several workers,
exactly one gets each entry, and a claim costs the same whatever is queued), runs each chunk in its own job
directory exactly as a one-chunk job does (:func:`wfl_async.jobs.worker.main`, the same
task, log, result and marker files), then drops the entry. The worker stays in one Python
process, so the function's modules are imported once, not once per chunk: that is what
makes short chunks cheap. It exits when the queue stays empty for ``--idle`` seconds, or
when too little of ``--max-time`` is left to run another chunk as long as the longest so far.
A self-tuned chunk carries its predicted time (:data:`~wfl_async.jobs.layout.PREDICTED`): the
worker runs it only if it :func:`fits` the time left, else gives it back and, after
:data:`MAX_REFUSALS` such chunks in a row, exits (the driver submits a worker it fits). The first
chunk a worker takes always runs: no worker has more time than a fresh one, so a start slower
than the walltime's margin (a loaded node) must not leave a chunk no worker ever takes.

Killed mid-claim or mid-chunk, it leaves its entry in ``taken``: the driver sees the worker gone
from the queue and puts the chunk back (:func:`wfl_async.pack.queue.requeue_command`). A worker
that decides not to run a chunk it took (it would not fit the time left) gives it back with
:meth:`Claimer.release <wfl_async.pack.claims.Claimer.release>` (one rename: another worker takes it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..jobs import layout
from ..jobs import worker as one_chunk
from ..jobs.run_record import PACK_WORKER_ENV
from .claims import Claimer
from .queue import EXITED, JOB_ID, MAX_TAKES
from .tuning import fits as fits_time_left

_JOB_ID_VARIABLES = ("SLURM_JOB_ID", "JOB_ID", "PBS_JOBID")
"""Where Slurm, SGE and PBS tell a job its own id."""

MIN_MARGIN = 30.0
"""Seconds of ``max_time`` kept free at least when deciding to take another chunk."""
_IDLE_STEP = 0.2
MAX_REFUSALS = 3
"""Chunks in a row that do not fit the time left before the worker exits (claims stay O(1))."""


def predicted_seconds(job_dir: Path) -> float | None:
    """The chunk's predicted run time as the driver staged it; None: not self-tuned (or unreadable)."""
    try:
        return float((job_dir / layout.PREDICTED).read_text().strip())
    except (OSError, ValueError):
        return None


def fits(job_dir: Path, left: float, longest: float) -> bool:
    """Whether the chunk in ``job_dir`` can finish in the ``left`` s of this worker's walltime."""
    return fits_time_left(predicted_seconds(job_dir), left, longest, MIN_MARGIN)


def job_started(now_monotonic: float, now_epoch: float) -> float:
    """When this worker's job started, on the ``time.monotonic()`` clock.

    From the job script's first line (:data:`~wfl_async.jobs.layout.JOB_STARTED_ENV`, whole
    seconds: taken one second earlier), so the Python start, slow on a loaded node, is counted in
    the time used; without it, from now.
    """
    try:
        stamp = float(os.environ[layout.JOB_STARTED_ENV]) - 1.0
    except (KeyError, ValueError):
        return now_monotonic
    return now_monotonic - max(0.0, now_epoch - stamp)


def run_chunk(job_dir: Path) -> None:
    """Run one chunk as its own job would, its output going to the chunk's own log."""
    log_fd = os.open(job_dir / layout.WORKER_LOG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    saved = [os.dup(1), os.dup(2)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    here = os.getcwd()
    try:
        one_chunk.main(str(job_dir))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved_fd in zip((1, 2), saved, strict=True):
            os.dup2(saved_fd, fd)
            os.close(saved_fd)
        os.close(log_fd)
        os.chdir(here)


def _finished(job_dir: Path) -> bool:
    return any((job_dir / name).exists() for name in layout.FINAL_MARKERS)


def serve(queue: Path, max_time: float, idle: float, worker: str) -> int:
    """Take and run chunks until the queue stays empty or time runs short; return how many ran."""
    root = queue.parent.parent
    claimer = Claimer(queue, worker)
    started = job_started(time.monotonic(), time.time())
    longest = 0.0
    ran = refused = 0
    while refused < MAX_REFUSALS:
        taken = claimer.claim()
        waited = 0.0
        while taken is None and waited < idle:
            time.sleep(_IDLE_STEP)
            waited += _IDLE_STEP
            taken = claimer.claim()
        if taken is None:
            break
        name, job_dir = taken.name, root / taken.name
        puts_back = len(taken.put_backs)
        if _finished(job_dir) or puts_back >= MAX_TAKES or not (job_dir / layout.TASK).exists():
            # ran already, or killed MAX_TAKES workers (the driver calls it died), or its
            # directory is gone: not run (again)
            print(f"not running {name}: " + ("it finished already" if _finished(job_dir) else
                                             f"{puts_back} workers died running it" if puts_back >= MAX_TAKES
                                             else "its directory has no task"), flush=True)
            claimer.drop(name, job_dir)
            continue
        left = max_time - (time.monotonic() - started)
        if not fits(job_dir, left, longest) and (ran or predicted_seconds(job_dir) is None):
            print(f"not running {name}: predicted {predicted_seconds(job_dir)} s, {left:.0f} s left; giving it back",
                  flush=True)
            claimer.release(name)
            refused += 1
            continue
        refused = 0
        began = time.monotonic()
        print(f"running {name}", flush=True)
        try:
            run_chunk(job_dir)
        except SystemExit as exc:  # the function ended the process: as a one-chunk job, it died
            print(f"{name}: the function called exit({exc.code}); no result", flush=True)
        claimer.done(name)  # after the marker: a chunk is always queued, taken or finished
        longest = max(longest, time.monotonic() - began)
        ran += 1
    return ran


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wfl_async.pack.worker")
    parser.add_argument("queue", type=Path, help="the pack's queue directory")
    parser.add_argument("--max-time", type=float, required=True, help="the worker job's time limit (s)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds to wait for more work (s)")
    args = parser.parse_args(argv)
    os.umask(0o077)
    worker = Path.cwd().name
    os.environ[PACK_WORKER_ENV] = worker  # each chunk's started marker names the worker that ran it
    # its own queue id, for the driver when the submission's answer was lost (a driver killed mid-sbatch)
    own_id = next((os.environ[v] for v in _JOB_ID_VARIABLES if os.environ.get(v)), "")
    (Path.cwd() / JOB_ID).write_text(own_id + "\n")
    queue = args.queue.resolve()
    ran = serve(queue, args.max_time, args.idle, worker)
    print(f"worker {worker}: ran {ran} chunk(s); exiting", flush=True)
    (Path.cwd() / EXITED).touch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
