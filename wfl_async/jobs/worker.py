"""The remote side: ``python -m wfl_async.jobs.worker`` in a job directory.

Reads the staged task, marks the job started, calls the function, writes the outcome
atomically (temporary name, fsync, rename), then the final marker recording the outcome's
size and sha256 (see :mod:`wfl_async.jobs.integrity`). Its imports are kept minimal on purpose: every queued
job pays for them, and on a small node the jobs' own Python start-up is what end-to-end
time cannot go below. The function's own module (and cloudpickle, if the task needs it) is
imported by unpickling.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
import traceback

from .._configset._in_job import IN_JOB
from . import layout
from .integrity import marker_content, write_atomic
from .run_record import started_marker_text


def record_event(marker: str, job_dir: str = ".") -> None:
    """Append ``<marker word> <job dir name>`` to the run directory's event log, after the marker file.

    ``job_dir`` is the job's directory (a child of the run directory, where the log lives). One
    ``write`` of a short line to a file opened with O_APPEND: lines of concurrent jobs do not
    interleave on a local filesystem. Best effort: a line lost (a full disk, a filesystem whose
    appends are not atomic across hosts) only delays the driver until its marker scan.
    """
    word = {layout.STARTED: "started", layout.SUCCEEDED: "succeeded", layout.FAILED: "failed"}[marker]
    path = os.path.abspath(job_dir)
    line = f"{word} {os.path.basename(path)}\n".encode()
    try:
        fd = os.open(os.path.join(os.path.dirname(path), layout.EVENTS), os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                     0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError:
        pass


def _pickle_exception(exc: BaseException) -> bytes:
    formatted = "".join(traceback.format_exception(exc))
    type_name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    try:
        from tblib import pickling_support  # carries the traceback across the wire

        pickling_support.install(exc)
        payload = pickle.dumps(("raise", exc, type_name, str(exc), formatted))
        pickle.loads(payload)  # an exception that pickles but cannot be rebuilt is sent as text
        return payload
    except Exception:
        return pickle.dumps(("raise", None, type_name, str(exc), formatted))


def main(job_dir: str = ".") -> int:
    os.umask(0o077)  # results are their owner's only, whatever umask the scheduler gave the job
    os.chdir(job_dir)
    os.environ[IN_JOB] = "1"  # before unpickling: our ConfigSet then skips wfl's bases (their imports)
    with open(layout.STARTED, "w") as started:  # where it runs, for the run report
        started.write(started_marker_text())
    record_event(layout.STARTED)
    began = time.monotonic()
    try:
        with open(layout.TASK, "rb") as handle:
            function, args, kwargs = pickle.load(handle)
        began = time.monotonic()  # the function's own time: imports made by unpickling are a worker's once
        value = function(*args, **kwargs)
        payload = pickle.dumps(("return", value), protocol=pickle.HIGHEST_PROTOCOL)
        marker = layout.SUCCEEDED
    except Exception as exc:
        traceback.print_exc()
        payload = _pickle_exception(exc)
        marker = layout.FAILED
    seconds = time.monotonic() - began
    write_atomic(layout.RESULT, payload)
    # written last, and itself atomically: a marker means a complete result of this size and hash
    write_atomic(marker, marker_content(payload, seconds))
    record_event(marker)
    return 0 if marker == layout.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
