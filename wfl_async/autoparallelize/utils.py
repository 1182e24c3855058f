"""Splitting inputs into chunks, and the per-item info (index, rng) an operation may ask for.

Kept identical to wfl 0.3.5 where it decides results: the order in which per-item random
generators are spawned fixes every random number an operation draws, so a given ``rng``
gives the same results here as in wfl, locally or remotely, whatever the chunk sizes.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ase.atoms import Atoms

from ..configset import ConfigSet
from ..errors import ConfigurationError

__all__ = [
    "ItemInput",
    "grouper",
    "items_inputs_generator",
    "queued_job_chunk_size",
    "set_autopara_per_item_info",
    "split_rng",
]

# (item, item_i, item's _ConfigSet_loc or None, its own rng or None)
ItemInput = tuple[Any, int, str | None, Any]


def grouper(n: int, iterable: Iterable[Any]) -> Iterator[tuple[Any, ...]]:
    """Consecutive tuples of ``n`` items (the last may be shorter).

    :raises ValueError: ``n`` < 1
    """
    if n < 1:
        raise ValueError(f"group size must be >= 1, got {n}")
    it = iter(iterable)
    while chunk := tuple(itertools.islice(it, n)):
        yield chunk


def _item_loc(item: Any) -> str | None:
    if isinstance(item, Atoms):
        return item.info.get("_ConfigSet_loc")
    if isinstance(item, ConfigSet):
        return item._enclosing_loc
    return None


def items_inputs_generator(iterable: Iterable[Any], num_inputs_per_group: int,
                           rng: Any = None) -> Iterator[tuple[ItemInput, ...]]:
    """Groups of ``(item, item_i, loc, item_rng)`` tuples, ``num_inputs_per_group`` at a time.

    ``item_rng`` is ``rng.spawn(1)[0]``, drawn once per item in input order (as wfl does),
    so each item gets an independent generator that does not depend on the grouping.
    """
    return grouper(num_inputs_per_group,
                   ((item, item_i, _item_loc(item), rng.spawn(1)[0] if rng is not None else None)
                    for item_i, item in enumerate(iterable)))


def takes_per_item_info(op: Callable[..., Any]) -> bool:
    """Whether ``op`` takes ``_autopara_per_item_info`` (its signature read: once per call, not per chunk)."""
    return "_autopara_per_item_info" in inspect.signature(op).parameters


def set_autopara_per_item_info(kwargs: dict[str, Any], op: Callable[..., Any],
                               inherited_per_item_info: list[dict[str, Any]] | None,
                               rng_list: list[Any], item_i_list: list[int], takes_it: bool | None = None) -> None:
    """Set ``kwargs["_autopara_per_item_info"]`` for the items of one group, if ``op`` takes it.

    Each entry is ``{"item_i": i}`` plus ``"rng"`` when generators were spawned. If the
    caller already had per-item info for the whole input (a remote chunk running its own
    local pool), the entries for these items are picked out of it instead.

    :param takes_it: :func:`takes_per_item_info` of ``op``, if known already
    """
    if not (takes_it if takes_it is not None else takes_per_item_info(op)):
        return
    if inherited_per_item_info is not None:
        kwargs["_autopara_per_item_info"] = [inherited_per_item_info[i] for i in item_i_list]
        return
    info: list[dict[str, Any]] = [{"item_i": item_i} for item_i in item_i_list]
    if rng_list and rng_list[0] is not None:
        for item_info, item_rng in zip(info, rng_list, strict=True):
            item_info["rng"] = item_rng
    kwargs["_autopara_per_item_info"] = info


def split_rng(kwargs: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Take ``rng`` out of an operation's kwargs and spawn this call's generator from it.

    wfl always spawns once per autoparallelized call, so that rerunning an identical script
    gives every operation the same random state. The returned kwargs (a copy) no longer
    contain ``rng``; per-item generators are then spawned from the returned one by
    :func:`items_inputs_generator`.

    :return: (kwargs without ``rng``, spawned generator or None)
    """
    kwargs = dict(kwargs)
    global_rng = kwargs.pop("rng", None)
    return kwargs, (global_rng.spawn(1)[0] if global_rng is not None else None)


def queued_job_chunk_size(num_inputs_per_queued_job: int, num_inputs_per_python_subprocess: int) -> int:
    """Inputs per queued job: ``n`` if positive, ``-n * num_inputs_per_python_subprocess`` if negative.

    :raises ConfigurationError: ``num_inputs_per_queued_job`` is 0
    """
    if num_inputs_per_queued_job == 0:
        raise ConfigurationError("RemoteInfo.num_inputs_per_queued_job must not be 0: give a positive number of "
                                 "inputs per job, or a negative multiple of num_inputs_per_python_subprocess")
    if num_inputs_per_queued_job < 0:
        return -num_inputs_per_queued_job * num_inputs_per_python_subprocess
    return num_inputs_per_queued_job
