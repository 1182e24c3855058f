"""Exceptions raised by wfl_async.

Two families, kept apart as in httpx::

    WflAsyncError
    ├── ConfigurationError (ValueError)       bad config/arguments; raised before any submission
    │   ├── SystemNotReadyError               the first-submission check found a broken system
    │   └── UnpicklableOperationError         the operation cannot be sent to a subprocess or job
    ├── TransportError (OSError)              running a command or moving files failed
    │   ├── RemoteCommandError                a remote command exited non-zero
    │   └── ResultIntegrityError              a fetched result does not match its final marker
    ├── PermanentFailureError                 disk full, quota, read-only, denied: retrying cannot help
    ├── SchedulerError                        the queueing system refused or misbehaved
    ├── OutputInUseError                      another process is writing the same output file
    ├── DatabaseCorruptError                  the local jobs database cannot be read; says how to recover
    ├── JobDiedError                          job left the queue without a final marker
    │   └── JobCancelledError                 the user cancelled it (``wfl-async cancel``)
    ├── JobTimeoutError (TimeoutError)        waited past ``timeout``; the job stays resumable
    └── RemoteJobFailed                       wraps a remote exception that could not be rebuilt

JobDiedError and JobTimeoutError are also ExPyRe's ``ExPyReJobDiedError`` and
``ExPyReTimeoutError`` (subclasses) once a script has imported ExPyRe.

``Interrupted`` (a KeyboardInterrupt, not a WflAsyncError) is what Ctrl-C raises from a
synchronous call; uncaught, it prints its one-line message instead of a traceback.

Exceptions raised by the user's function in a job are re-raised locally with their own
type, not wrapped.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

__all__ = [
    "Interrupted",
    "ConfigurationError",
    "DatabaseCorruptError",
    "USER_FIXABLE",
    "first_failure",
    "JobCancelledError",
    "JobSplitError",
    "JobDiedError",
    "JobTimeoutError",
    "LoopStoppedError",
    "OutputInUseError",
    "PermanentFailureError",
    "RemoteCommandError",
    "RemoteJobFailed",
    "ResultIntegrityError",
    "SchedulerError",
    "SystemNotReadyError",
    "TransportError",
    "UnpicklableOperationError",
    "WflAsyncError",
]


class WflAsyncError(Exception):
    """Base class of every error wfl_async raises itself."""


class ConfigurationError(WflAsyncError, ValueError):
    """Configuration or arguments are wrong; the message names the problem and the fix."""


class SystemNotReadyError(ConfigurationError):
    """The check before a system's first submission (``wfl-async doctor``'s) found errors.

    :ivar system: the system's name
    :ivar problems: the doctor's problems (each prints as one line: the problem and the fix)
    """

    def __init__(self, system: str, problems: Sequence[object]) -> None:
        self.system = system
        self.problems = list(problems)
        lines = "\n  ".join(str(p) for p in self.problems)
        super().__init__(f"system {system!r} cannot run jobs; nothing was submitted:\n  {lines}\n"
                         f"Run 'wfl-async doctor {system}' after fixing it to check again.")


class UnpicklableOperationError(ConfigurationError):
    """The operation or its arguments cannot be pickled for a subprocess or a queued job."""


class TransportError(WflAsyncError, OSError):
    """A command could not be run, or files could not be moved, on a system."""


class RemoteCommandError(TransportError):
    """A command exited with a non-zero status.

    :ivar command: the command line that was run
    :ivar returncode: its exit status
    :ivar stdout: what it printed on stdout
    :ivar stderr: what it printed on stderr
    """

    def __init__(self, command: str, returncode: int, stdout: bytes, stderr: bytes, where: str = "") -> None:
        self.command = command
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        tail = stderr.decode(errors="replace").strip()[-2000:]
        super().__init__(f"command exited with status {returncode}{' on ' + where if where else ''}: "
                         f"{command[:500]!s}\n{tail}")


class ResultIntegrityError(TransportError):
    """A job's result file is not the one its worker wrote (size or sha256 differ from its marker).

    :ivar path: the local result file
    """

    def __init__(self, message: str, path: str) -> None:
        self.path = path
        super().__init__(message)


class PermanentFailureError(WflAsyncError):
    """A failure waiting cannot cure (no space, quota, read-only, permission denied, missing command).

    The affected jobs stop at once instead of being retried; the message names the system, the
    path, the cause and the fix (:mod:`wfl_async.failures`).

    :ivar system: the system's name (``"local"`` for this machine's stage directory)
    :ivar path: the directory the failure happened under
    :ivar cause: the cause in a few words (``"no space left on device (disk or inodes full)"``)
    """

    def __init__(self, message: str, *, system: str = "", path: str = "", cause: str = "") -> None:
        self.system = system
        self.path = path
        self.cause = cause
        super().__init__(message)


class OutputInUseError(WflAsyncError):
    """Another process is writing the same output file (the message names it)."""


class DatabaseCorruptError(WflAsyncError):
    """The jobs database file cannot be read; the message says how to recover."""


class LoopStoppedError(WflAsyncError):
    """A system's submit or poll loop stopped on an error nobody expected (a bug): the jobs that
    waited on it are woken with this, not left waiting forever; the message names the error and
    says the jobs are left as they are (a rerun re-attaches)."""


class SchedulerError(WflAsyncError):
    """The queueing system refused a request (submit, status, cancel) or answered nonsense."""


class _ExPyReCompatible(WflAsyncError):
    """Becomes a subclass of its ExPyRe counterpart once ExPyRe is imported, so ``except`` clauses
    written for ExPyRe (``except ExPyReJobDiedError``) catch it.

    ExPyRe is never imported from here: ``import expyre`` reads every ``config.json`` and opens
    ExPyRe's own jobs database. A script that names ExPyRe's exceptions has imported it before
    anything is raised, so the base is linked when an instance is made (or at our import).
    """

    _expyre_name = ""

    def __init__(self, *args: object) -> None:
        _link_expyre_bases()
        super().__init__(*args)


class _TimeoutBase(TimeoutError):
    """A Python-level TimeoutError: its layout matches ExPyReTimeoutError's, so the base can be swapped."""


class JobDiedError(_ExPyReCompatible):
    """A job left the queue without writing its final marker (killed, out of time, node failure)."""

    _expyre_name = "ExPyReJobDiedError"


class JobSplitError(JobDiedError):
    """A chunk of several configurations was killed at its time limit and is to be split in two: its
    caller (autoparallelize) runs the halves instead (:mod:`wfl_async.jobs.escalation`)."""


class JobCancelledError(JobDiedError):
    """The user cancelled the job (``wfl-async cancel``): not a death to resubmit automatically.

    A JobDiedError subclass, so scripts written for ExPyRe's ``ExPyReJobDiedError`` still catch it.

    :ivar job: the job's label (name and key)
    """

    def __init__(self, job: str, name: str) -> None:
        self.job = job
        super().__init__(f"job {job} was cancelled by the user (wfl-async cancel), so it is not resubmitted "
                         f"by itself; to run it again: wfl-async rerun -n {shlex.quote(name)}, then rerun the "
                         f"workflow")


class JobTimeoutError(_ExPyReCompatible, _TimeoutBase):
    """Waited longer than the job's ``timeout``; the job is left as it is and can be re-attached."""

    _expyre_name = "ExPyReTimeoutError"


def _link_expyre_bases() -> None:
    import sys

    func = sys.modules.get("expyre.func")
    if func is None:
        return
    for cls in (JobDiedError, JobTimeoutError):
        expyre_cls = getattr(func, cls._expyre_name, None)
        if isinstance(expyre_cls, type) and not issubclass(cls, expyre_cls):
            placeholder = _TimeoutBase if cls is JobTimeoutError else None
            cls.__bases__ = tuple(b for b in cls.__bases__ if b is not placeholder) + (expyre_cls,)


class RemoteJobFailed(WflAsyncError):
    """The remote function raised an exception whose type cannot be rebuilt here.

    :ivar remote_type: qualified name of the remote exception's type
    :ivar remote_traceback: the formatted remote traceback
    """

    def __init__(self, remote_type: str, message: str, remote_traceback: str) -> None:
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback
        super().__init__(f"{remote_type}: {message}\n--- remote traceback ---\n{remote_traceback}")


def first_failure(group: BaseExceptionGroup) -> BaseException:
    """The first error of a task group's ExceptionGroup, raised instead of the group: a job's own
    exception (its traceback once) is what the user reads, not 70 lines of task-group wrapping.
    The others are named in a note."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    first = leaves[0] if leaves else group
    if len(leaves) > 1:
        others = "; ".join(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}" for e in leaves[1:4])
        first.add_note(f"({len(leaves) - 1} more failed at the same time: {others}"
                       f"{' ...' if len(leaves) > 4 else ''})")
    return first


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a synchronous call; its queued jobs were left queued (a rerun re-attaches)."""


USER_FIXABLE: tuple[type[Exception], ...] = (ConfigurationError, JobDiedError, JobTimeoutError, OutputInUseError)
"""Errors whose message names the problem and the fix: uncaught from a synchronous call, they
print that message alone (``WFL_ASYNC_TRACEBACK=1`` shows the traceback)."""

_link_expyre_bases()
