"""The floor data layer of queued jobs: file layout, states, options, hashing, the jobs database, claim
ownership, and the remote worker. The job itself (``RemoteJob``) is :mod:`wfl_async.job`, above the session.

Kept free of imports: ``wfl_async.jobs.worker`` runs inside every queued job.
"""
