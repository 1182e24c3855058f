"""ConfigSet: a collection of configurations in memory or in files, iterated flat.

Same semantics as wfl 0.3.5's ``wfl.configset.ConfigSet``: the nesting of the input (nested
lists, one file holding nested groups, several files) is remembered in
``Atoms.info["_ConfigSet_loc"]`` of every configuration the flat iterator returns, so an
:class:`~wfl_async.configset.OutputSpec` can rebuild the same structure for the outputs.
"""

from __future__ import annotations

import glob
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ase.atoms import Atoms

from ._loc import LOC_KEY, LOC_SEP, loc_join, loc_key
from ._wfl_compat import wfl_base

__all__ = ["ConfigSet"]

Nested = list[Any]  # list of Atoms / None / Nested


def _expand(pattern: str | Path, file_root: Path) -> list[Path]:
    if file_root != Path("") and Path(pattern).is_absolute():
        raise ValueError(f"Got file_root but file {pattern} is an absolute path")
    found = [Path(f) for f in sorted(glob.glob(str(file_root / pattern), recursive=True))]
    if not found:
        raise ValueError(f"got file '{file_root}' / '{pattern}' that does not exist")
    return found


def _nest(entries: list[tuple[tuple[int, ...], Atoms]]) -> Nested:
    """Rebuild nested lists from (relative location, Atoms); gaps become None (skipped on iteration)."""
    root: Nested = []
    for key, at in entries:
        container = root
        for depth, idx in enumerate(key):
            if len(container) <= idx:
                container.extend([None] * (idx + 1 - len(container)))
            if depth == len(key) - 1:
                container[idx] = at
            else:
                if container[idx] is None:
                    container[idx] = []
                elif isinstance(container[idx], Atoms):
                    raise ValueError(f"inconsistent _ConfigSet_loc nesting at {loc_join(key)}")
                container = container[idx]
    return root


class ConfigSet(*wfl_base("ConfigSet")):  # type: ignore[misc]  # see _wfl_compat
    """Configurations to loop over, from Atoms, (nested) lists of Atoms, or files.

    If created from a (nested) list of Atoms, iterators reproduce that nesting. If created
    from one file (str or Path, may be a glob matching exactly that file), the top level of
    nesting is that of the file's content. If created from a list of files (or a glob that
    expands to several), the top level is one entry per file.

    Iterating returns a flat sequence of Atoms; each has ``info["_ConfigSet_loc"]`` (also
    available as :attr:`cur_loc`) giving its place in the nesting, which
    :meth:`OutputSpec.store` uses to give outputs the same structure.

    :param items: Atoms / list(Atoms) / nested lists of Atoms / str / Path / list of str or
        Path (globs allowed) / ConfigSet / list of ConfigSet
    :param file_root: path prepended to every (relative) file name
    :param read_kwargs: extra kwargs for ``ase.io.iread``, on top of
        ``{"index": ":", "parallel": False}``
    """

    _loc_sep = LOC_SEP

    def __init__(self, items: Any, *, file_root: str | Path | None = None,
                 read_kwargs: dict[str, Any] | None = None, _enclosing_loc: str = "") -> None:
        # _enclosing_loc: location of this set inside the ConfigSet whose groups() made it,
        # so that outputs of an op applied to groups keep the outer structure
        self._enclosing_loc = _enclosing_loc
        self._file_loc = ""  # kept for attribute compatibility with wfl
        self._cur_loc: str | None = None
        root = Path(file_root) if file_root is not None else Path("")
        self.file_root = root
        self.read_kwargs: dict[str, Any] = {"index": ":", "parallel": False}
        self.read_kwargs.update(read_kwargs or {})
        self.items: Path | list[Any] | None = self._normalise(items, root)

    @staticmethod
    def _normalise(items: Any, root: Path) -> Path | list[Any] | None:
        if items is None or (isinstance(items, (list, tuple)) and len(items) == 0):
            return None
        if type(items).__name__ == "OutputSpec":
            raise RuntimeError("ConfigSet(OutputSpec) not supported - use OutputSpec.to_ConfigSet()")
        if isinstance(items, ConfigSet):
            return items.items.copy() if isinstance(items.items, list) else items.items
        if isinstance(items, Atoms):
            return [items]
        if isinstance(items, (str, Path)):
            found = _expand(items, root)
            # an exact single file is stored as Path (top level = file content), a glob as list
            if len(found) == 1 and root / items == found[0]:
                return root / items
            return list(found)
        if isinstance(items[0], (str, Path)):
            return [p for pattern in items for p in _expand(pattern, root)]
        if isinstance(items[0], ConfigSet):
            return ConfigSet._merge(items)
        # list(list(... Atoms)), all assumed the same depth, as in wfl
        return items if isinstance(items, list) else list(items)

    @staticmethod
    def _merge(sets: Iterable[ConfigSet]) -> list[Any] | None:
        merged: list[Any] = []
        for cs in sets:
            if not isinstance(cs, ConfigSet):
                raise TypeError(f"list of ConfigSets contains {type(cs)}")
            if cs.items is None:
                continue
            if isinstance(cs.items, Path) or isinstance(cs.items[0], Path):
                if merged and not isinstance(merged[-1], Path):
                    raise ValueError("Got ConfigSet containing Path after one that does not")
                merged.extend([cs.items] if isinstance(cs.items, Path) else cs.items)
            else:
                if merged and isinstance(merged[0], Path):
                    raise ValueError("Got ConfigSet containing Atoms after one that contains Path")
                merged.append(cs.items.copy())
        return merged or None

    @property
    def cur_loc(self) -> str | None:
        """Location of the configuration most recently returned by the flat iterator."""
        return self._cur_loc

    def __str__(self) -> str:
        if isinstance(self.items, Path):
            return f"ConfigSet with single file {self.items} {self._file_loc}"
        if self.items is None:
            return "ConfigSet with no content"
        if isinstance(self.items[0], Path):
            return f"ConfigSet with {len(self.items)} files"
        if isinstance(self.items[0], Atoms):
            return f"ConfigSet with {len(self.items)} Atoms"
        return f"ConfigSet with {len(self.items)} sub-lists"

    __repr__ = __str__

    def _read_file(self, path: Path, prefix: str = "") -> Iterator[tuple[str, Atoms]]:
        import ase.io  # only here: a job's in-memory ConfigSet never pays ase.io's ~0.5 s of imports

        for at_i, at in enumerate(ase.io.iread(path, **self.read_kwargs)):
            assert isinstance(at, Atoms)
            yield prefix + at.info.get(LOC_KEY, LOC_SEP + str(at_i)), at

    def _located(self) -> Iterator[tuple[str, Atoms]]:
        """(location, Atoms) of every configuration, in iteration order."""
        if self.items is None:
            return
        if isinstance(self.items, Path):
            yield from self._read_file(self.items)
        elif isinstance(self.items[0], Path):
            for file_i, path in enumerate(self.items):
                yield from self._read_file(path, LOC_SEP + str(file_i))
        else:
            for at in ConfigSet._flat_iter(self.items):
                yield at.info[LOC_KEY], at

    def __iter__(self) -> Iterator[Atoms]:
        for loc, at in self._located():
            at.info[LOC_KEY] = loc
            self._cur_loc = loc
            yield at
        self._cur_loc = None

    def groups(self) -> Iterator[Atoms | ConfigSet]:
        """Iterate over the top level of nesting: an Atoms for each top-level configuration,
        a ConfigSet for each sub-list (or each file, if made from several files).

        Sub-lists of a single file are read into memory one group at a time.
        """
        if self.items is None:
            return
        if isinstance(self.items, Path):
            located = ((loc_key(loc), at) for loc, at in self._read_file(self.items))
            for top, group in itertools.groupby(located, key=lambda ka: ka[0][0]):
                entries = [(key[1:], at) for key, at in group]
                if all(len(key) == 0 for key, _ in entries):
                    for _, at in entries:
                        at.info.pop(LOC_KEY, None)
                        yield at
                else:
                    for _, at in entries:
                        at.info.pop(LOC_KEY, None)
                    yield ConfigSet(_nest(entries), _enclosing_loc=self._enclosing_loc + LOC_SEP + str(top))
            return
        for item_i, item in enumerate(self.items):
            if item is None:
                continue
            if isinstance(item, Atoms):
                item.info.pop(LOC_KEY, None)
                yield item
            else:
                yield ConfigSet(item, read_kwargs=self.read_kwargs,
                                _enclosing_loc=self._enclosing_loc + LOC_SEP + str(item_i))

    def one_file(self) -> Path | bool:
        """The Path of the one file this set consists of, or False."""
        if isinstance(self.items, Path):
            return self.items
        if isinstance(self.items, list) and len(self.items) == 1 and isinstance(self.items[0], Path):
            return self.items[0]
        return False

    @staticmethod
    def _flat_iter(items: Iterable[Any]) -> Iterator[Atoms]:
        """Flatten nested lists of Atoms, recording each one's place in ``info["_ConfigSet_loc"]``.

        None entries are skipped but still counted, so locations keep their gaps.
        """
        for item_i, item in enumerate(items):
            if item is None:
                continue
            if isinstance(item, Atoms):
                item.info[LOC_KEY] = LOC_SEP + str(item_i)
                yield item
            else:
                for at in ConfigSet._flat_iter(item):
                    at.info[LOC_KEY] = LOC_SEP + str(item_i) + at.info[LOC_KEY]
                    yield at

    def __add__(self, other: object) -> ConfigSet:
        if not isinstance(other, ConfigSet):
            raise TypeError(f"unsupported operand type(s) for +: 'ConfigSet' and '{type(other)}'")
        return ConfigSet([self, other])
