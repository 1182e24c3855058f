"""Exceptions raised by wfl_async.

Two families, kept apart as in httpx::

    WflAsyncError
    ├── ConfigurationError (ValueError)       bad config/arguments; raised before any submission
    ├── TransportError (OSError)              running a command or moving files failed
    │   ├── RemoteCommandError                a remote command exited non-zero
    │   └── ResultIntegrityError              a fetched result does not match its final marker
    ├── SchedulerError                        the queueing system refused or misbehaved
    ├── OutputInUseError                      another process is writing the same output file
    ├── JobDiedError                          job left the queue without a final marker
    ├── JobTimeoutError (TimeoutError)        waited past ``timeout``; the job stays resumable
    └── RemoteJobFailed                       wraps a remote exception that could not be rebuilt

Exceptions raised by the user's function in a job are re-raised locally with their own
type, not wrapped.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "JobDiedError",
    "JobTimeoutError",
    "OutputInUseError",
    "RemoteCommandError",
    "RemoteJobFailed",
    "ResultIntegrityError",
    "SchedulerError",
    "TransportError",
    "WflAsyncError",
]


class WflAsyncError(Exception):
    """Base class of every error wfl_async raises itself."""


class ConfigurationError(WflAsyncError, ValueError):
    """Configuration or arguments are wrong; the message names the problem and the fix."""


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


class OutputInUseError(WflAsyncError):
    """Another process is writing the same output file (the message names it)."""


class SchedulerError(WflAsyncError):
    """The queueing system refused a request (submit, status, cancel) or answered nonsense."""


class JobDiedError(WflAsyncError):
    """A job left the queue without writing its final marker (killed, out of time, node failure)."""


class JobTimeoutError(WflAsyncError, TimeoutError):
    """Waited longer than the job's ``timeout``; the job is left as it is and can be re-attached."""


class RemoteJobFailed(WflAsyncError):
    """The remote function raised an exception whose type cannot be rebuilt here.

    :ivar remote_type: qualified name of the remote exception's type
    :ivar remote_traceback: the formatted remote traceback
    """

    def __init__(self, remote_type: str, message: str, remote_traceback: str) -> None:
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback
        super().__init__(f"{remote_type}: {message}\n--- remote traceback ---\n{remote_traceback}")
