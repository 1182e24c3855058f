"""OutputSpec: where an operation's output configurations go, keeping the input's nesting.

Same public behaviour as wfl 0.3.5's ``wfl.configset.OutputSpec`` (one file, several files
mirroring several input files, or memory; ``overwrite``; ``all_written``; ``to_ConfigSet``),
plus one capability wfl lacks: :meth:`OutputSpec.store` may be called for chunks in any
order, while other chunks still run. See :mod:`wfl_async._configset._partial` for how
results are staged on disk and put in input order by :meth:`OutputSpec.close`, and
:mod:`wfl_async._configset._lock` for how two processes writing the same file are kept apart.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from ase.atoms import Atoms

from ..errors import OutputInUseError
from ._configset import ConfigSet
from ._loc import LOC_SEP
from ._lock import OutputLock
from ._partial import finalize, located_frames, output_write_error, partial_path, write_frames
from ._wfl_compat import wfl_base

__all__ = ["OutputSpec"]


class OutputSpec(*wfl_base("OutputSpec")):  # type: ignore[misc]  # see _wfl_compat
    """Where to store output configurations: files, or memory if ``files`` is None.

    :param files: one file name (all outputs go there), a list of names (output file i
        receives the outputs of the configurations read from input file i), or None to keep
        outputs in memory
    :param file_root: directory relative to which all file names are taken
    :param overwrite: replace existing output files; if False, storing into an OutputSpec
        whose files exist raises FileExistsError, and autoparallelized operations whose
        output is complete are skipped
    :param flush: flush the staging file after every :meth:`store`
    :param write_kwargs: extra kwargs for ``ase.io.write`` of the final files
    :param tags: extra ``Atoms.info`` entries set in every stored configuration
    """

    def __init__(self, files: str | Path | list[str | Path] | None = None, *,
                 file_root: str | Path | None = None, overwrite: bool = False, flush: bool = True,
                 write_kwargs: dict[str, Any] | None = None, tags: dict[str, Any] | None = None) -> None:
        self.file_root = Path(file_root if file_root is not None else "")
        self.overwrite = overwrite
        self.flush = flush
        self.write_kwargs = dict(write_kwargs or {})
        self.tags = dict(tags or {})
        self.configs: list[Any] | None = None
        self.files: list[Path] | None = None
        self.single_file = False
        if files is None:
            self.configs = []
        else:
            names = [files] if isinstance(files, (str, Path)) else list(files)
            self.single_file = isinstance(files, (str, Path))
            absolute = [f for f in names if Path(f).is_absolute()]
            if absolute and self.file_root != Path(""):
                raise ValueError(f"Got file_root {file_root} but files {absolute} are absolute paths")
            self.files = [Path(f) for f in names]
        self.closed = False
        self.first_store_call = True
        self.cur_store_loc: int | None = None
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.RLock()
        self._started: set[int] = set()  # file indices whose staging file this object (re)created
        self._handle: IO[str] | None = None
        self._handle_ind: int | None = None
        self._writer = OutputLock(self.final_paths())

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_lock", "_handle", "_handle_ind", "_writer"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        started = self.__dict__.get("_started", set())
        self._init_runtime()
        self._started = set(started)

    def __repr__(self) -> str:
        where = "memory" if self.files is None else [str(self.file_root / f) for f in self.files]
        return f"OutputSpec({where}, overwrite={self.overwrite}, closed={self.closed})"

    # ---- paths -------------------------------------------------------------------------

    def _final(self, file_ind: int) -> Path:
        assert self.files is not None
        return self.file_root / self.files[file_ind]

    def final_paths(self) -> list[Path]:
        """The output files (with ``file_root``), empty for in-memory output."""
        return [] if self.files is None else [self._final(i) for i in range(len(self.files))]

    def partial_paths(self) -> list[Path]:
        """The staging files results are appended to until :meth:`close`."""
        return [partial_path(p) for p in self.final_paths()]

    def _existing_output_files(self) -> list[Path]:
        return [p for p in self.final_paths() if p.exists()]

    # ---- one writer ------------------------------------------------------------------

    def try_claim(self) -> str | None:
        """Become the only process writing these files; None on success, else who writes them.

        Autoparallelized calls claim before looking at the output, and wait while another
        process holds it (then reuse what it wrote). :meth:`store` claims on its first call.
        The claim ends at :meth:`close` or :meth:`release`, or when the process exits.
        """
        return None if self.files is None else self._writer.try_acquire()

    def release(self) -> None:
        """End this object's claim on its files (a no-op if it holds none)."""
        self._writer.release()

    def _claim_or_raise(self) -> None:
        holder = self.try_claim()
        if holder is not None:
            raise OutputInUseError(
                f"output file(s) {[str(p) for p in self.final_paths()]} are being written by {holder}; "
                f"wait for it to finish (its output is then reused), or write to another file")

    # ---- writing -----------------------------------------------------------------------

    def write(self, configs: Any) -> None:
        """Store every configuration of ``configs`` (at its ``_ConfigSet_loc``), then close."""
        if not self.overwrite and self.all_written():
            sys.stderr.write("Reusing existing output instead of writing ConfigSet contents "
                             "since overwrite=False and output is done\n")
            return
        for at in configs:
            self.store(at, at.info.get("_ConfigSet_loc"))
        self.close()

    def store(self, configs: Any, input_CS_loc: str | None = "") -> None:
        """Store the output(s) of one input configuration.

        Calls may come in any order (e.g. as chunk jobs finish) and from several threads.
        For file output, each call appends to a staging file next to the final one and
        flushes it; the final files only appear at :meth:`close`.

        :param configs: an Atoms, or a (nested) iterable of Atoms, produced from the input
            at ``input_CS_loc``; None stores nothing
        :param input_CS_loc: ``_ConfigSet_loc`` of the input configuration (its
            ``info["_ConfigSet_loc"]`` or the input ConfigSet's ``cur_loc``). The output
            goes to the same place in the nesting; the i-th element of an iterable output
            goes one level deeper, at ``input_CS_loc + " / i"``. Required for several
            output files (its first index picks the file). With one file or memory it may be
            omitted in every call, and outputs then follow the order of the calls.
        :raises ValueError: called after :meth:`close`, or no location for several files
        :raises FileExistsError: output files exist and ``overwrite`` is False
        """
        self.store_many([(configs, input_CS_loc)])

    def store_many(self, outputs: Iterable[tuple[Any, str | None]]) -> None:
        """:meth:`store` each ``(configs, input_CS_loc)`` of ``outputs``, in order: one lock taken, the
        frames of each output file written in one call and flushed once (a chunk's results as they come)."""
        with self._lock:
            if self.closed:
                raise ValueError("Cannot store after OutputSpec.close() has been called")
            runs: list[tuple[int, list[Atoms]]] = []  # (output file, its frames), in order
            for configs, input_CS_loc in outputs:
                if configs is None:
                    continue
                if self.files is None:
                    self._store_in_memory(configs, input_CS_loc)
                    continue
                file_ind, sub_loc = self._placement(input_CS_loc)
                if not runs or runs[-1][0] != file_ind:
                    runs.append((file_ind, []))
                runs[-1][1].extend(located_frames(configs, sub_loc, self.tags))
            for file_ind, frames in runs:
                handle = self._open(file_ind)
                try:
                    write_frames(handle, frames)
                    if self.flush:
                        handle.flush()
                except OSError as exc:
                    error = output_write_error(exc, self._final(file_ind),
                                               "the results stored so far are kept in its staging file")
                    if error is exc:
                        raise
                    raise error from exc

    def _placement(self, input_CS_loc: str | None) -> tuple[int, str]:
        """The output file and the location in it of the output of the input at ``input_CS_loc`` (the
        first store claims the files: :class:`OutputInUseError`, or FileExistsError without ``overwrite``)."""
        if self.first_store_call:
            self._claim_or_raise()
        if self.first_store_call and not self.overwrite:
            existing = self._existing_output_files()
            if existing:
                self.release()
                raise FileExistsError(f"OutputSpec overwrite is false but output file(s) {existing} already exist")
        if self.single_file:
            if not input_CS_loc:
                if self.first_store_call:
                    self.cur_store_loc = 0
                elif self.cur_store_loc is None:
                    raise RuntimeError("got no input_CS_loc but previous calls did provide input_CS_loc")
                else:
                    self.cur_store_loc += 1
            elif self.cur_store_loc is not None:
                raise RuntimeError("store cannot get input_CS_loc after calls that did not provide it")
            if self.cur_store_loc is not None:
                input_CS_loc = LOC_SEP + str(self.cur_store_loc)
            file_ind, sub_loc = 0, input_CS_loc or ""
        else:
            if not input_CS_loc:
                raise ValueError("For OutputSpec with multiple files, store() requires input_CS_loc")
            parts = input_CS_loc.split(LOC_SEP)
            file_ind = int(parts[1])
            sub_loc = LOC_SEP.join([""] + parts[2:]) if len(parts) > 2 else ""
        self.first_store_call = False
        return file_ind, sub_loc

    def _open(self, file_ind: int) -> IO[str]:
        """The staging file of output ``file_ind``: truncated on first use, appended after."""
        if self._handle is not None and self._handle_ind == file_ind:
            return self._handle
        if self._handle is not None:
            self._handle.close()
        self._format(file_ind)  # fail on an unknown format before anything is written
        path = partial_path(self._final(file_ind))
        self._handle = open(path, "a" if file_ind in self._started else "w")
        self._handle_ind = file_ind
        self._started.add(file_ind)
        return self._handle

    def _format(self, file_ind: int) -> str:
        import ase.io.formats  # only here: an in-memory OutputSpec (a job's) never imports ase.io

        fmt = self.write_kwargs.get("format")
        return fmt if fmt else ase.io.formats.filetype(self._final(file_ind), read=False)

    def _store_in_memory(self, configs: Any, input_CS_loc: str | None) -> None:
        assert self.configs is not None
        if not input_CS_loc:
            self.configs.append(configs)
            return
        indices = input_CS_loc.split(LOC_SEP)[1:]
        container = self.configs
        for depth, ind_str in enumerate(indices):
            try:
                ind = int(ind_str)
            except ValueError as exc:
                raise RuntimeError("ConfigSet_loc indices must be integers") from exc
            # empty containers stand in for positions not (yet) stored, so any order works
            container.extend([] for _ in range(ind + 1 - len(container)))
            if depth < len(indices) - 1:
                container = container[ind]
            else:
                container[ind] = configs

    def close(self) -> None:
        """Finish writing: write each final file, in input order, atomically.

        Every staged configuration is written to the final file sorted by its
        ``_ConfigSet_loc`` indices (lexicographic integer order, which is the input
        ConfigSet's iteration order), through a temporary file and ``os.replace``; then the
        staging files are removed. Staging files left by an earlier interrupted run are
        removed too. Output files that received nothing are not created (as in wfl).
        Calling close again does nothing.
        """
        with self._lock:
            if self.closed:
                return
            if self.files is None:
                self.closed = True
                return
            if self.first_store_call:
                # held since the first store (by this object, or the one it was pickled from);
                # taken here if nothing was stored, before any staging file is removed
                self._claim_or_raise()
            self.closed = True
            if self._handle is not None:
                self._handle.close()
                self._handle = None
                self._handle_ind = None
            try:
                for file_ind in range(len(self.files)):
                    partial = partial_path(self._final(file_ind))
                    if file_ind in self._started:
                        finalize(partial, self._final(file_ind), self._format(file_ind), self.write_kwargs)
                    else:
                        partial.unlink(missing_ok=True)
            finally:
                self.release()

    # ---- reading -----------------------------------------------------------------------

    def all_written(self) -> bool:
        """True if every output file exists, i.e. a previous run closed this output.

        Final files only appear at :meth:`close`, so an interrupted run never counts.
        Never true for in-memory output. As in wfl, False if some file received no output.
        """
        if self.files is None:
            return False
        return all(p.exists() for p in self.final_paths())

    def to_ConfigSet(self) -> ConfigSet:
        """A ConfigSet reading what was stored."""
        if self.files is None:
            return ConfigSet(self.configs)
        if self.single_file:
            return ConfigSet(self.files[0], file_root=self.file_root)
        return ConfigSet(self.files, file_root=self.file_root)
