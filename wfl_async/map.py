"""map: apply any function to each configuration, autoparallelized (wfl's ``wfl.map.map``).

``map(inputs, outputs, map_func, args=[], kwargs={})`` stores ``map_func(atoms, *args, **kwargs)``
for every input configuration. ``map_func`` must be importable by name (defined at module level)
when the call runs in subprocesses or queued jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ase.atoms import Atoms

from .autoparallelize.operation import AutoparaOperation
from .utils.misc import atoms_to_list

__all__ = ["map"]


def _map_autopara_wrappable(atoms: Atoms | list[Atoms], map_func: Callable[..., Any], args: Sequence[Any] = (),
                            kwargs: Mapping[str, Any] | None = None) -> list[Any]:
    """Apply ``map_func(at, *args, **kwargs)`` to each configuration.

    :param map_func: the function, taking one Atoms first
    :param args: its further positional arguments
    :param kwargs: its keyword arguments
    """
    return [map_func(at, *args, **dict(kwargs or {})) for at in atoms_to_list(atoms)]


map = AutoparaOperation(_map_autopara_wrappable, name="map", module=__name__)  # noqa: A001 (wfl's name)
