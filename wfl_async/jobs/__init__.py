"""Queued function calls: hashing, the jobs database, the job coroutine, the remote worker.

Kept free of imports: ``wfl_async.jobs.worker`` runs inside every queued job.
"""
