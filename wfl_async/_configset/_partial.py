"""Crash-safe staging of one output file: append in any order, finalise in input order.

While results arrive (possibly out of order, from chunk jobs finishing at different
times) they are appended as extended-XYZ frames to ``.<name>.wfl_async_partial`` next to
the final file and flushed after every store, so a crash loses nothing already stored.
:func:`finalize` then writes every frame, sorted by its ``_ConfigSet_loc``, to a temporary
file and ``os.replace``\\ s it onto the final name: the final file either does not exist or
is complete.

``ase.io`` is imported where a file is written or read, not at module level: a remote job
builds an in-memory ConfigSet/OutputSpec and would otherwise pay ase.io's imports (~0.5 s of
CPU, through scipy) at every start.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ase.atoms import Atoms

from ..failures import permanent_cause, permanent_error
from ._loc import LOC_KEY, loc_key

__all__ = ["PARTIAL_SUFFIX", "finalize", "located_frames", "partial_path", "write_frames"]

PARTIAL_SUFFIX = ".wfl_async_partial"
_CLOSING_SUFFIX = ".wfl_async_closing"


def partial_path(final: Path) -> Path:
    """Where results for ``final`` are staged until :func:`finalize`."""
    return final.parent / f".{final.name}{PARTIAL_SUFFIX}"


def _closing_path(final: Path) -> Path:
    return final.parent / f".{final.name}{_CLOSING_SUFFIX}"


def write_frames(handle: IO[str], frames: list[Atoms]) -> None:
    """Write ``frames`` (from :func:`located_frames`) as extxyz, in one call: ase's own work per call
    (its format's lookup and checks) was a sixth of a stored result's cost at one configuration a
    chunk (issue 16)."""
    if frames:
        import ase.io

        ase.io.write(handle, frames, format="extxyz")


def located_frames(configs: Any, loc: str, tags: dict[str, Any]) -> Iterator[Atoms]:
    """The Atoms of ``configs`` (an Atoms, or nested iterables of them), each recording its location.

    Mirrors wfl: an Atoms gets ``_ConfigSet_loc = loc`` (unless ``loc`` is empty) and the
    tags; the i-th element of an iterable is at ``loc + " / i"``.
    """
    if isinstance(configs, Atoms):
        if loc:
            configs.info[LOC_KEY] = loc
        configs.info.update(tags)
        yield configs
        return
    for item_i, item in enumerate(configs):
        yield from located_frames(item, f"{loc} / {item_i}", tags)


_PLAIN_LOC = re.compile(rf'(?:^|\s){LOC_KEY}="((?: / \d+)*)"(?=\s|$)')
"""The location field as ase writes it (``_ConfigSet_loc=" / 2 / 0"``; a quote inside another value is
written ``\\"``, so this cannot match inside one)."""


def frame_loc(comment: str) -> str | None:
    """The ``_ConfigSet_loc`` of an extxyz comment line: read straight from it when the key appears once, as
    ase writes it, else by ase's parser. ase's parser took about 60 us a frame, a fifth of a rerun's
    finalising at 10^4 one-atom chunks (issue 16)."""
    if LOC_KEY not in comment:
        return None
    if comment.count(LOC_KEY) == 1 and (plain := _PLAIN_LOC.search(comment)) is not None:
        return plain.group(1)
    from ase.io.extxyz import key_val_str_to_dict

    return key_val_str_to_dict(comment.strip()).get(LOC_KEY)


def _raw_frames(path: Path) -> list[tuple[tuple[int, ...], str]]:
    """Split an extxyz file into (ordering key, frame text) without parsing atoms."""
    lines = path.read_text().splitlines(keepends=True)
    frames: list[tuple[tuple[int, ...], str]] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        n_atoms = int(lines[i])
        frames.append((loc_key(frame_loc(lines[i + 1])), "".join(lines[i:i + n_atoms + 2])))
        i += n_atoms + 2
    return frames


def finalize(partial: Path, final: Path, fmt: str, write_kwargs: dict[str, Any]) -> None:
    """Write ``final`` from ``partial`` with frames in input order, atomically; remove ``partial``.

    Frames are ordered by the integer tuple of their ``_ConfigSet_loc`` (see
    :func:`wfl_async._configset._loc.loc_key`); frames without one sort first; ties keep
    the order in which they were stored (the sort is stable). For plain extxyz output the
    frames are copied byte for byte; any other format or write kwargs go through ASE.
    """
    closing = _closing_path(final)
    try:
        _write_sorted(partial, closing, fmt, write_kwargs)
    except OSError as exc:
        closing.unlink(missing_ok=True)  # the final file is untouched; nothing half-written is left
        raise output_write_error(exc, final, f"the results are kept in {partial}") from exc
    os.replace(closing, final)
    partial.unlink(missing_ok=True)


def output_write_error(exc: OSError, final: Path, kept: str) -> BaseException:
    """``exc`` met writing output ``final``, worded for the user when it is permanent (a full disk):
    the final file was not changed, what is ``kept``, and that a rerun needs no job run again."""
    cause = permanent_cause(exc)
    if cause is None:
        return exc
    return permanent_error(cause, system="local", path=str(final.parent), doing=f"writing the output file {final}",
                           detail=str(exc), consequence=(
                               f"{final} was not changed; {kept} and in the jobs' stage directories, so a rerun "
                               f"writes the file without running any job again."))


def _write_sorted(partial: Path, closing: Path, fmt: str, write_kwargs: dict[str, Any]) -> None:
    """Write ``closing`` from ``partial``'s frames in input order (see :func:`finalize`)."""
    if fmt == "extxyz" and set(write_kwargs) <= {"format"}:
        frames = _raw_frames(partial)
        frames.sort(key=lambda kf: kf[0])
        with open(closing, "w") as handle:
            handle.writelines(text for _, text in frames)
            handle.flush()
            os.fsync(handle.fileno())
    else:
        import ase.io

        configs = list(ase.io.iread(partial, index=":", format="extxyz", parallel=False))
        configs.sort(key=lambda at: loc_key(at.info.get(LOC_KEY)))
        kwargs = dict(write_kwargs)
        kwargs["format"] = fmt
        if configs:
            ase.io.write(closing, configs, **kwargs)
        else:
            closing.write_text("")
