"""The remote side: ``python -m wfl_async.jobs.worker`` in a job directory.

Reads the staged task, marks the job started, calls the function, writes the outcome
atomically, then the final marker. Its imports are kept minimal on purpose: every queued
job pays for them, and on a small node the jobs' own Python start-up is what end-to-end
time cannot go below. The function's own module (and cloudpickle, if the task needs it) is
imported by unpickling.
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback

from . import layout


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _touch(path: str) -> None:
    with open(path, "w"):
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
    os.chdir(job_dir)
    _touch(layout.STARTED)
    try:
        with open(layout.TASK, "rb") as handle:
            function, args, kwargs = pickle.load(handle)
        value = function(*args, **kwargs)
        payload = pickle.dumps(("return", value), protocol=pickle.HIGHEST_PROTOCOL)
        marker = layout.SUCCEEDED
    except Exception as exc:
        traceback.print_exc()
        payload = _pickle_exception(exc)
        marker = layout.FAILED
    _write_atomic(layout.RESULT, payload)
    _touch(marker)
    return 0 if marker == layout.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
