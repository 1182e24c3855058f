"""Names of the files in a job directory, shared by the driver and the remote worker.

The worker writes ``RESULT`` atomically (temporary name, fsync, rename) and only then the
final marker, whose content is the result's size and sha256 as JSON
(``{"size": N, "sha256": "..."}``), so a marker always means a complete result and the
driver can check the copy it fetched (:mod:`wfl_async.jobs.integrity`). This module imports nothing:
it is loaded in every queued job.
"""

TASK = "_wfl_async_task.pkl"
"""The pickled ``(function, args, kwargs)``."""
RESULT = "_wfl_async_result.pkl"
"""The pickled outcome: ``("return", value)`` or ``("raise", exception-or-None, type, message, traceback)``."""
STARTED = "_wfl_async_started"
SUCCEEDED = "_wfl_async_succeeded"
FAILED = "_wfl_async_failed"
FINAL_MARKERS = (SUCCEEDED, FAILED)
SUBMIT_LOCK = "_wfl_async_submit.lock"
"""File created with O_EXCL (the shell's noclobber) before submitting: only one submitter ever wins."""
SUBMIT_ANSWER = "_wfl_async_submit.out"
"""What the scheduler answered to the submission, written by the submitter that won the lock."""
SUBMIT_RELEASED = "_wfl_async_submit.released"
"""Token of the last command that released a stale submit lock (so a repeated command does not again)."""
PREDICTED = "_wfl_async_predicted_seconds"
"""A self-tuned packed chunk's predicted run time (s, text), staged with its task: a worker takes the
chunk only if it fits the time the worker has left (docs/self-tuning.md)."""
JOB_STARTED_ENV = "WFL_ASYNC_JOB_STARTED"
"""Environment variable the job script sets first, to the epoch second it started (``date +%s``): a
packed worker counts its time left from it, not from its own Python start (slow under load)."""
WORKER_LOG = "_wfl_async_worker.log"
"""stdout and stderr of the worker (the function's prints, the remote traceback)."""
FETCH_ON_FINISH = (RESULT, WORKER_LOG, STARTED, *FINAL_MARKERS)
"""Brought back from a finished job's directory (missing ones are skipped): the marker with the result;
the started marker's time with the result's gives the chunk's run time (``pack="auto"``)."""
EVENTS = "_wfl_async_events.log"
"""In the remote root (the parent of every job directory): one line ``<marker> <job dir>`` appended
by each job as it writes its started and final markers (after the marker file), so a poll reads
what changed since its last offset instead of testing every watched directory."""
