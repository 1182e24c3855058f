"""Packing: the chunks of a call run one after another inside a few ordinary worker jobs.

``RemoteInfo(..., pack={"workers": 8})`` (or ``"pack"`` in a system's config.json): each
chunk keeps its own job directory, job key, database record, markers and result, but it is
not a queued job. Its directory is staged as today and a task entry is put in a queue
directory under the remote run directory; a few worker jobs (ordinary queued jobs with the
call's resources) take entries by atomic rename, found through an index of numbered slots,
and run them. Nothing but the cluster's shared filesystem and scheduler is needed.

Modules, one job each:

- :mod:`wfl_async.jobs.pack_option` (in the floor data layer, since the job options use it): the
  ``pack`` option (``{"workers": N}``, ``"auto"``, off), checked;
- :mod:`.tuning`: self-tuning's rules (``pack="auto"``): chunk size, a task's predicted time, whether
  it fits a worker's time left, workers' count and walltime (docs/self-tuning.md);
- :mod:`.queue`: the remote queue layout, the shell text that enqueues, lists and requeues
  entries, and the parser of the listing (pure functions, no I/O);
- :mod:`.worker`: ``python -m wfl_async.pack.worker``, the remote worker loop;
- :mod:`.claims`: a worker's claims on its queue (remote, standard library only): the next chunk in
  O(1) of the queue's size, and giving a chunk back, dropping it, finishing it;
- :mod:`.coordinator`: the driver side, one per system: enqueues chunk batches, reads the
  poll's listing, submits workers while chunks remain, puts back the chunks of dead workers.
"""
