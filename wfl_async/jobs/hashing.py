"""The job key: what makes two calls "the same job" for restarts and deduplication.

The key hashes the job's name (as ExPyRe, whose restart lookup matches ``name_hash``), the
function's identity, its arguments pickled (minus ``hash_ignore``),
and the names and contents of the input files, as wfl + ExPyRe do. The output spec is
never an argument of a job, so it never enters the key. Code changes are NOT detected
by default (as in wfl); ``code_version`` opts in: ``True`` adds the source of the
function's module, a string adds that explicit version.
"""

from __future__ import annotations

import hashlib
import inspect
import pickle
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cloudpickle

from .._pickling import PickledOnce, callable_identity, dumps_call
from ..errors import ConfigurationError

__all__ = ["code_source", "job_key", "pickle_task"]


def pickle_task(function: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any],
                once: PickledOnce | None = None) -> bytes:
    """Pickle ``(function, args, kwargs)`` for the remote worker.

    cloudpickle sends module-level functions by reference (the remote imports their module)
    and ``__main__`` functions and lambdas by value.

    :param once: objects in it pickled already, once for many tasks (:func:`~wfl_async._pickling.pickled_once`)
    :raises ConfigurationError: something cannot be pickled; nothing has been submitted
    """
    return dumps_call(function, (function, tuple(args), dict(kwargs)), once)


def job_key(function: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any], *,
            name: str = "", hash_ignore: Sequence[int | str] = (), input_files: Sequence[str | Path] = (),
            code_version: bool | str | None = None) -> str:
    """Hex sha256 identifying this call; equal for calls that would compute the same thing."""
    digest = hashlib.sha256()
    digest.update(name.encode() + b"\0" + callable_identity(function).encode())
    digest.update(_function_state(function))
    kept_args = [a for i, a in enumerate(args) if i not in hash_ignore]
    kept_kwargs = {k: v for k, v in sorted(kwargs.items()) if k not in hash_ignore}
    digest.update(_stable_pickle((kept_args, kept_kwargs), function))
    for path in input_files:
        _hash_path(digest, Path(path))
    if code_version is True:
        digest.update(code_source(function).encode())
    elif isinstance(code_version, str):
        digest.update(b"version:" + code_version.encode())
    return digest.hexdigest()


def _function_state(function: Callable[..., Any]) -> bytes:
    """What makes this callable compute something else than another of the same name.

    Empty for plain functions (their name is their identity); the pickled object for a
    ``functools.partial`` or a callable instance, and the pickled instance of a bound method.
    """
    if getattr(function, "__qualname__", None) is None:
        return _stable_pickle(function, function)
    owner = getattr(function, "__self__", None)
    if owner is not None and not isinstance(owner, types.ModuleType):
        return _stable_pickle(owner, function)
    return b""


def _stable_pickle(obj: Any, function: Callable[..., Any]) -> bytes:
    try:
        return pickle.dumps(obj, protocol=4)
    except Exception:
        try:
            return cloudpickle.dumps(obj, protocol=4)
        except Exception as exc:
            raise ConfigurationError(
                f"cannot pickle the arguments of {callable_identity(function)}: {exc}. Pass picklable arguments, "
                f"or list the offending ones in hash_ignore only if they do not change the result.") from exc


def _hash_path(digest: Any, path: Path) -> None:
    if not path.exists():
        raise ConfigurationError(f"input file {str(path)!r} does not exist; fix input_files "
                                 f"(relative paths are taken from the current directory)")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path.parent)).encode())
        try:
            digest.update(file.read_bytes())
        except OSError as exc:
            raise ConfigurationError(f"input file {str(file)!r} cannot be read: {exc}") from exc


def code_source(function: Callable[..., Any]) -> str:
    """Source of the module defining ``function`` (what ``code_version=True`` adds to the key)."""
    module = inspect.getmodule(function)
    try:
        return inspect.getsource(module) if module is not None else inspect.getsource(function)
    except (OSError, TypeError):
        return callable_identity(function)
