"""AutoparaInfo: how one autoparallelized call is split up and where it runs."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigurationError

__all__ = ["AutoparaInfo"]

# wfl 0.3.5's class-wide defaults, plus hash_ignore (an AutoparaInfo-level extension)
_DEFAULTS: dict[str, Any] = {
    "num_inputs_per_python_subprocess": 1,
    "iterable_arg": 0,
    "skip_failed": True,
    "initializer": (None, []),
    "num_python_subprocesses": None,
    "remote_info": None,
    "remote_label": None,
    "hash_ignore": [],
}


class AutoparaInfo:
    """Information needed to autoparallelize one call.

    Only the fields passed are set; :meth:`update_defaults` fills the rest, first from the
    operation's own defaults, then from the class-wide ones, so a user's explicit value
    always wins.

    :param num_inputs_per_python_subprocess: inputs passed to each call of the low-level
        operation (default 1)
    :param iterable_arg: index (positional) or name (keyword) of the low-level operation's
        argument that receives the inputs (default 0)
    :param skip_failed: do not store outputs that are None (default True)
    :param initializer: ``(callable, args)`` run at the start of every python subprocess
        (default ``(None, [])``)
    :param num_python_subprocesses: local processes; None means ``WFL_NUM_PYTHON_SUBPROCESSES``
    :param remote_info: RemoteInfo (or its kwargs) to run as queued jobs
    :param remote_label: label matched against ``WFL_EXPYRE_INFO`` keys
    :param hash_ignore: argument names left out of the remote job key (default [])
    :raises ConfigurationError: unknown keyword
    """

    num_inputs_per_python_subprocess: int
    iterable_arg: int | str
    skip_failed: bool
    initializer: tuple[Callable[..., Any] | None, Any]
    num_python_subprocesses: int | None
    remote_info: Any
    remote_label: str | None
    hash_ignore: list[str]

    _kwargs = _DEFAULTS

    def __init__(self, **kwargs: Any) -> None:
        for key, value in kwargs.items():
            if key not in _DEFAULTS:
                raise ConfigurationError(f"AutoparaInfo got unknown field {key!r}; valid fields are "
                                         f"{', '.join(_DEFAULTS)}")
            setattr(self, key, value)

    def update_defaults(self, default_kwargs: Mapping[str, Any] | None) -> None:
        """Fill every field the user did not set from ``default_kwargs``, else the class default.

        :raises ConfigurationError: ``default_kwargs`` has an unknown key
        """
        defaults = dict(default_kwargs or {})
        unknown = sorted(set(defaults) - set(_DEFAULTS))
        if unknown:
            raise ConfigurationError(f"default_kwargs contained unknown keywords {unknown}; valid fields are "
                                     f"{', '.join(_DEFAULTS)}")
        for key, class_default in _DEFAULTS.items():
            if not hasattr(self, key):
                setattr(self, key, copy.copy(defaults.get(key, class_default)))

    def as_dict(self) -> dict[str, Any]:
        """The fields set so far."""
        return {key: getattr(self, key) for key in _DEFAULTS if hasattr(self, key)}

    def copy(self) -> AutoparaInfo:
        """A shallow copy (fields set so far)."""
        return AutoparaInfo(**self.as_dict())

    def __str__(self) -> str:
        return " ".join(f"{k} {getattr(self, k, '<unset>')}" for k in _DEFAULTS)

    def __repr__(self) -> str:
        return f"AutoparaInfo({', '.join(f'{k}={v!r}' for k, v in self.as_dict().items())})"
