"""The packs' queues as the last surveys listed them: the query side of packing.

A :class:`PackListings` is the system's survey extension (:class:`~wfl_async.system.machine.SurveyExtension`):
every survey that lists the queue also lists the packs' queues in the same command (what
stays small whatever is queued: counts, given-back, taken and gone chunks, workers;
:func:`~.queue.listing_command`), and :meth:`PackListings.survey_states` adds each packed
chunk's state (queued or running, looked up on demand: :class:`~.queue.ChunkStates`) to the
scheduler's, so the poll loop judges packed chunks by the same rules as any job. It only
reads and remembers: acting on a listing (putting a dead worker's chunks back, submitting
workers) is the coordinator's loop's work (:mod:`.coordinator`), which waits on
:meth:`PackListings.fresh`. A survey from the command line therefore changes nothing.
"""

from __future__ import annotations

from collections.abc import MutableMapping

import anyio

from ..jobs.states import QueueState
from ..scheduler.base import Accounted
from .queue import LISTING_END, ChunkStates, PackListing, listing_command, parse_listing

__all__ = ["Listed", "PackListings"]

Listed = tuple[PackListing, dict[str, QueueState] | None]
"""One remote root's packs as listed, with the scheduler's states from the same command (None: no answer)."""


class PackListings:
    """The last listing of every remote root's packs (one per system)."""

    end = LISTING_END
    """Ends the listing's part of the survey's output."""

    def __init__(self) -> None:
        self.listed: dict[str, Listed] = {}
        """Remote root -> the last survey's listing of its packs and the scheduler's states."""
        self._fresh: dict[str, Listed] = {}
        self._arrived = anyio.Event()
        self.ended: dict[str, Accounted] = {}
        """Packed chunk's remote id -> how it ended: killed with its worker at a limit (:mod:`.kills`)."""

    def accounted(self, remote_id: str) -> Accounted | None:
        """How a packed chunk that left its queue ended, where the coordinator knows (its worker's kill)."""
        return self.ended.get(remote_id)

    def survey_shell(self, root: str) -> str:
        """Added to the system's survey command (read only): every pack's queue under ``root``."""
        return listing_command(root)

    def survey_states(self, root: str, text: str,
                      states: dict[str, QueueState] | None) -> MutableMapping[str, QueueState] | None:
        """The scheduler's states plus each packed chunk's (queued/running); remembers the listing.

        ``text`` is the listing part of the survey's output (up to :data:`~.queue.LISTING_END`).
        Nothing is built per queued chunk: a packed chunk's state is looked up when asked for.
        """
        listing = parse_listing(text)
        self.listed[root] = self._fresh[root] = (listing, states)
        self._arrived.set()
        if states is None:
            return None
        return ChunkStates(listing, dict(states))

    async def fresh(self) -> dict[str, Listed]:
        """Wait for listings not taken yet; take them (remote root -> listing), oldest first."""
        await self._arrived.wait()
        self._arrived = anyio.Event()
        fresh, self._fresh = self._fresh, {}
        return fresh
