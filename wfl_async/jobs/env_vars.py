"""``env_vars``: the ``NAME=value`` shell assignments a job script exports, checked in one place.

Values keep ExPyRe's semantics: each becomes ``export NAME=value`` in the job script, so
``$VAR`` and ``$(...)`` are expanded by the user's own shell in the job (e.g.
``OMP_NUM_THREADS=$EXPYRE_NUM_CORES_PER_NODE``), and are not quoted away. What is refused
is what would make one assignment more than one line of the script: a newline would start
a second command, and a NUL byte cannot be in a script at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..errors import ConfigurationError

__all__ = ["check_env_vars", "export_lines"]

_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def check_env_vars(env_vars: Iterable[str]) -> list[str]:
    """The assignments, as a list, if every one is a single-line ``NAME=value``.

    :raises ConfigurationError: naming the variable and the fix; nothing has been submitted
    """
    checked = list(env_vars)
    for assignment in checked:
        if not isinstance(assignment, str) or not _ASSIGNMENT.match(assignment):
            raise ConfigurationError(f"env_vars entry {assignment!r} is not NAME=value; write e.g. "
                                     f"\"OMP_NUM_THREADS=1\"")
        name = assignment.partition("=")[0]
        for char, what in (("\n", "a newline"), ("\0", "a NUL byte")):
            if char in assignment:
                raise ConfigurationError(
                    f"env_vars value of {name} contains {what} ({assignment!r}); each entry becomes one "
                    f"line of the job script, and {what} would end it early. Give the value on one line "
                    f"(for several values, use several entries)")
    return checked


def export_lines(env_vars: Iterable[str]) -> list[str]:
    """The job script lines exporting ``env_vars`` (checked first)."""
    return [f"export {assignment}" for assignment in check_env_vars(env_vars)]
