"""wfl_async: wfl-style operations as many concurrent queued jobs.

This top-level module is deliberately empty of imports: the remote worker imports
``wfl_async.jobs.worker`` inside every queued job, and each job's Python start-up is the
floor of end-to-end time, so nothing here may pull in anyio, asyncssh or ase.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
