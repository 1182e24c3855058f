"""How often one system's scheduler may be called: a token bucket (``aiolimiter``).

Sites limit scheduler RPCs per user (Slurm 23.02+ ``rl_enable``: a bucket of 30 with 2 tokens a
second by default) and ask users not to call ``sbatch``/``squeue`` in tight loops. Every command
that calls the scheduler (a submit batch, a poll's queue listing, the lookup of an unanswered
submission, cancel/hold/release) first takes a token here; a caller without a token waits.

Default: 20 calls at once, then one a second (:data:`DEFAULT_RATE`, :data:`DEFAULT_BURST`): half
Slurm's default per-user refill rate, so the user's own ``squeue`` and other tools keep room,
while a poll every second (with submits of 300 jobs per call) stays possible. ``local`` systems
call no scheduler daemon and are not limited unless configured. Configured per system in
config.json: ``"scheduler_rate"`` (calls per second, ``null`` or 0: unlimited) and
``"scheduler_burst"``.
"""

from __future__ import annotations

from aiolimiter import AsyncLimiter

__all__ = ["DEFAULT_BURST", "DEFAULT_RATE", "scheduler_limiter"]

DEFAULT_RATE = 1.0
"""Scheduler calls per second, sustained."""
DEFAULT_BURST = 20
"""Scheduler calls that may go at once after a quiet spell."""


def scheduler_limiter(rate: float | None, burst: int) -> AsyncLimiter | None:
    """The bucket for ``rate`` calls per second with ``burst`` at once (None: no limit).

    aiolimiter's leaky bucket of ``max_rate`` per ``time_period`` is a token bucket holding
    ``max_rate`` tokens refilled at ``max_rate / time_period`` a second.
    """
    if not rate:
        return None
    return AsyncLimiter(max_rate=burst, time_period=burst / rate)
