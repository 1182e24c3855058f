"""A ``sys_name`` naming several systems: a list (preference order) or a dict of weights.

Pure: no I/O. The one place a ``sys_name`` value is read, so RemoteInfo, ``WFL_EXPYRE_INFO``
and the fits' ``*_REMOTEINFO`` accept the same forms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError

__all__ = ["Choice", "parse_sys_names", "first_name"]


@dataclass(frozen=True)
class Choice:
    """One listed system and its share of the chunks while nothing is measured."""

    name: str
    weight: float = 1.0


_FORMS = ('a system name ("cluster"), a list in preference order (["cluster", "national"]) or a dict '
          'of weights ({"cluster": 2, "national": 1})')


def parse_sys_names(value: Any) -> tuple[Choice, ...]:
    """The systems a ``sys_name`` lists, in preference order (a dict: by weight, heaviest first).

    :raises ConfigurationError: not one of the accepted forms, an empty list, a repeated name or a
        weight that is not a positive number (named, with the accepted forms)
    """
    if isinstance(value, str):
        choices: list[Choice] = [Choice(value)]
    elif isinstance(value, Mapping):
        choices = []
        for name, weight in value.items():
            if not isinstance(name, str) or isinstance(weight, bool) or not isinstance(weight, int | float) \
                    or not weight > 0:
                raise ConfigurationError(f"sys_name {value!r}: weight {weight!r} of {name!r} must be a positive "
                                         f"number; give {_FORMS}")
            choices.append(Choice(name, float(weight)))
        choices.sort(key=lambda c: -c.weight)  # stable: equal weights keep their order
    elif isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        choices = [Choice(v) for v in value]
    else:
        raise ConfigurationError(f"sys_name {value!r} is not understood; give {_FORMS}")
    names = [c.name for c in choices]
    if not choices or any(not n for n in names):
        raise ConfigurationError(f"sys_name {value!r} names no system; give {_FORMS}")
    if len(set(names)) != len(names):
        raise ConfigurationError(f"sys_name {value!r} names a system twice; name each once")
    return tuple(choices)


def first_name(value: Any) -> str:
    """The preferred system of a ``sys_name`` (a single job goes there unless measurement says otherwise)."""
    return parse_sys_names(value)[0].name
