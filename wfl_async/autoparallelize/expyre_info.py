"""Decide whether (and with what RemoteInfo) one autoparallelized call runs as queued jobs.

Resolution order, as in wfl 0.3.5:

1. ``autopara_info.remote_info`` (a RemoteInfo or its kwargs dict), if given;
2. else the environment variable (``WFL_EXPYRE_INFO`` by default): JSON or YAML text, or the
   path of a JSON or YAML file, holding a dict (wfl reads both with ``yaml.safe_load``).

   - If the dict has a ``sys_name`` key it *is* the RemoteInfo kwargs, for every call.
   - Otherwise each key is matched against the call. With ``remote_label`` set, a key
     matches if it equals the label or one of its comma-separated items. Without one, the
     key's comma-separated items, each ``"end/of/path.py::function"``, must match the *end*
     of the call stack: the last item the innermost function (the operation itself, e.g.
     ``generate/optimize.py::optimize``, or the function that called ``autoparallelize``),
     the one before it that function's caller, and so on. Each item is a regular
     expression matched against the end of ``"<file path>::<function>"`` (as in wfl). The
     first matching key, in file order, wins.
   - No matching key: the call runs locally, with a warning (once per value of the variable)
     naming the keys and the call stack tried; when a ``remote_label`` was given it is an error
     (it usually means a typo, and wfl's silent local run hid it).

Every value in the dict is checked when it is read, so a malformed entry fails at the
first autoparallelized call, before anything is submitted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from ..errors import ConfigurationError
from .remoteinfo import RemoteInfo

__all__ = ["ENV_VAR", "caller_stack_labels", "load_expyre_info", "match_key", "resolve_remote_info"]

ENV_VAR = "WFL_EXPYRE_INFO"

_log = logging.getLogger(__name__)

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_SYNC_FILE = os.path.join(os.path.dirname(_PACKAGE_DIR), "_sync.py")

_EXAMPLE = ('{"generate/optimize.py::optimize": {"sys_name": "my_cluster", "job_name": "relax", '
            '"resources": {"num_nodes": 1, "max_time": "1h"}}}')


def _is_internal(filename: str) -> bool:
    path = os.path.abspath(filename)
    return os.path.dirname(path) == _PACKAGE_DIR or path == _SYNC_FILE


def caller_stack_labels(frame: FrameType | None = None) -> list[str]:
    """``"<file>::<function>"`` for each frame from the outermost to ``frame`` (default: the caller).

    Innermost frames belonging to wfl_async's autoparallelize machinery are dropped, so
    the list ends with the user's (or the operation module's) function, as in wfl.
    """
    labels: list[str] = []
    current: FrameType | None = frame if frame is not None else sys._getframe(1)
    while current is not None:
        labels.append(f"{current.f_code.co_filename}::{current.f_code.co_name}")
        current = current.f_back
    labels.reverse()
    while labels and _is_internal(labels[-1].rsplit("::", 1)[0]):
        labels.pop()
    return labels


def _parse(text: str) -> Any:
    """JSON, else YAML (wfl reads the variable and its file with ``yaml.safe_load``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        import yaml

        return yaml.safe_load(text)


def load_expyre_info(value: str, env_var: str = ENV_VAR) -> dict[str, Any]:
    """Parse the variable's value: JSON or YAML text, else the path of a JSON or YAML file.

    :raises ConfigurationError: neither valid text nor a readable file, or not a dict
    """
    import yaml

    try:
        data = _parse(value)
        source = f"{env_var} (JSON/YAML text)"
    except yaml.YAMLError as text_error:
        data, source = None, ""
        parse_error: Exception | None = text_error
    else:
        parse_error = None
    if parse_error is not None or isinstance(data, str) or data is None:
        # a plain string (or unparsable text) is the name of a file, as in wfl
        path = Path(value.strip()).expanduser()
        try:
            content = path.read_text()
        except OSError as file_error:
            why = f" ({' '.join(str(parse_error).split())})" if parse_error else " holding an object"
            raise ConfigurationError(
                f"{env_var}={value[:200]!r} is neither JSON text nor YAML{why} nor the path of a readable file "
                f"({file_error.strerror or file_error}). Set it to a JSON (or YAML) object, e.g. "
                f"{env_var}='{_EXAMPLE}', or to the path of a file containing one.") from None
        try:
            data = _parse(content)
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"{env_var} points to {path}, which is not valid JSON or YAML: "
                                     f"{' '.join(str(exc).split())}. "
                                     f"It must hold an object, e.g. {_EXAMPLE}") from None
        source = f"{env_var} (file {path})"
    if not isinstance(data, dict):
        raise ConfigurationError(f"{source} must be a JSON object (a dict of RemoteInfo fields, or of such dicts "
                                 f"keyed by remote_label or 'file.py::function'), got {type(data).__name__}")
    if "sys_name" in data:
        RemoteInfo.from_dict(data, where=source)
    else:
        for key, fields in data.items():
            RemoteInfo.from_dict(fields, where=f"{source} key {key!r}")
    return data


def _item_matches(pattern: str, label: str) -> bool:
    try:
        return re.search(pattern + "$", label) is not None
    except re.error:
        return label.endswith(pattern)


def match_key(keys: list[str], remote_label: str | None, stack: list[str]) -> str | None:
    """The first key matching ``remote_label`` or the end of ``stack`` (see module doc)."""
    for key in keys:
        items = [item.strip() for item in key.split(",")]
        if remote_label is not None:
            if remote_label == key or remote_label in items:
                return key
            continue
        if len(stack) >= len(items) and all(
                _item_matches(item, label) for item, label in zip(items, stack[-len(items):], strict=True)):
            return key
    return None


_warned: set[tuple[str, str]] = set()


def _warn_no_match_once(env_var: str, value: str, keys: list[str], stack: list[str]) -> None:
    """A variable that is set but matches nothing is usually a key that no longer fits the script."""
    if (env_var, value) in _warned:
        return
    _warned.add((env_var, value))
    tried = " -> ".join(label.rsplit("/", 1)[-1] for label in stack[-4:]) or "(empty)"
    warnings.warn(
        f"{env_var} is set but none of its keys ({', '.join(map(repr, keys)) or 'none'}) matches this call, "
        f"which runs locally. Call stack tried, outermost first, each 'file.py::function': {tried}. A key's "
        f"comma-separated items must match the end of that stack (e.g. {stack[-1].rsplit('/', 1)[-1] if stack else 'file.py::function'!r}); "
        f"fix the key, or give the call a remote_label. (Warned once per value of {env_var}.)",
        stacklevel=4)


def resolve_remote_info(remote_info: RemoteInfo | Mapping[str, Any] | None, remote_label: str | None, *,
                        stack: list[str], env_var: str = ENV_VAR,
                        environ: Mapping[str, str] | None = None) -> RemoteInfo | None:
    """The RemoteInfo this call should use, or None to run locally.

    :param remote_info: explicit value from ``autopara_info`` (wins over the environment)
    :param remote_label: label to match keys against instead of the stack
    :param stack: the call's stack labels (:func:`caller_stack_labels`), outermost first
    :param env_var: variable to read, e.g. ``WFL_GAP_SIMPLE_FIT_REMOTEINFO`` for a fit
    :param environ: environment to read (default ``os.environ``)
    :raises ConfigurationError: malformed explicit value or variable
    """
    if remote_info is not None:
        if isinstance(remote_info, RemoteInfo):
            return remote_info
        if isinstance(remote_info, Mapping):
            return RemoteInfo.from_dict(remote_info, where="autopara_info.remote_info")
        raise ConfigurationError(f"autopara_info.remote_info must be a RemoteInfo or a dict of its fields, "
                                 f"got {type(remote_info).__name__}")
    value = (os.environ if environ is None else environ).get(env_var, "")
    if not value.strip():
        return None
    data = load_expyre_info(value, env_var)
    if "sys_name" in data:
        _log.info("%s holds RemoteInfo fields directly, using them for every call", env_var)
        return RemoteInfo.from_dict(data, where=env_var)
    key = match_key(list(data), remote_label, stack)
    if key is None:
        if remote_label is not None:
            # a label is an explicit request to run remotely: silently running locally (wfl) hides typos
            raise ConfigurationError(
                f"remote_label {remote_label!r} matches none of the keys of {env_var} "
                f"({', '.join(map(repr, data)) or 'none'}). Add a key {remote_label!r} to {env_var}, fix the "
                f"label, or drop remote_label to run this call locally.")
        _warn_no_match_once(env_var, value, list(data), stack)
        return None
    _log.info("%s matched key %r (remote_label %r)", env_var, key, remote_label)
    return RemoteInfo.from_dict(data[key], where=f"{env_var} key {key!r}")
