"""ChunkResult: one finished chunk, as yielded by ``X.iter(...)``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ChunkResult"]


@dataclass(frozen=True)
class ChunkResult:
    """The outputs of one chunk of inputs, with where those inputs were.

    Chunks arrive in the order they finish, not input order; the positions say where each
    output belongs.

    :ivar chunk_index: position of the chunk among all chunks of the call (0-based)
    :ivar item_indices: position of each input in the flat input iteration (``item_i``)
    :ivar input_locs: ``_ConfigSet_loc`` of each input (None for inputs that have none,
        e.g. items of a plain list or range)
    :ivar results: the operation's output for each input, in the same order: an Atoms, a
        list of Atoms (e.g. a trajectory), any other value, or None if it failed
    """

    chunk_index: int
    item_indices: tuple[int, ...]
    input_locs: tuple[str | None, ...]
    results: tuple[Any, ...]

    def __len__(self) -> int:
        return len(self.results)
