"""Which remote package versions can read the driver's pickles, and which cannot.

A task is pickled here and unpickled in the job, and its result the other way round, so the
remote side must import the same packages with compatible versions. Across a numpy or ase
*major* version, arrays and Atoms do not unpickle (numpy 2 moved ``numpy.core`` to
``numpy._core``); across a Python *minor* version, cloudpickle's by-value functions (those
defined in the user's script) do not. Smaller differences are warnings.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from ..system.problems import Problem

__all__ = ["PROBE_MARK", "PROBE_SCRIPT", "compare_versions", "local_versions", "parse_probe"]

PROBE_MARK = "WFL_ASYNC_DOCTOR_PROBE"

#: what a job needs importable; numpy and ase carry the Atoms, cloudpickle and tblib the tasks and errors
PACKAGES = ("wfl_async", "numpy", "ase", "cloudpickle")

#: run by the remote Python after the system's ``commands``; must work without wfl_async
PROBE_SCRIPT = f"""
import json, sys
out = {{"python": "%d.%d.%d" % tuple(sys.version_info[:3]), "executable": sys.executable}}
for name in {PACKAGES!r}:
    try:
        module = __import__(name)
        out[name] = str(getattr(module, "__version__", "unknown"))
    except Exception as exc:
        out[name] = None
        out[name + ":error"] = "%s: %s" % (type(exc).__name__, exc)
print({PROBE_MARK!r}, json.dumps(out))
"""


def local_versions() -> dict[str, Any]:
    """The driver's versions, in the probe's format.

    A package the workflow has imported reports its module's ``__version__``; one it has not is
    looked up in its installed metadata, so the check does not import numpy and ase into a
    driver that does not need them (``wfl-async doctor``, a run of builtin functions).
    """
    from importlib import metadata

    out: dict[str, Any] = {"python": ".".join(map(str, sys.version_info[:3])), "executable": sys.executable}
    for name in PACKAGES:
        module = sys.modules.get(name)
        if module is not None:
            out[name] = str(getattr(module, "__version__", "unknown"))
            continue
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def parse_probe(text: str, mark: str = PROBE_MARK) -> dict[str, Any] | None:
    """The probe's answer (the JSON after ``mark``) in the remote output, or None if it printed none."""
    for line in reversed(text.splitlines()):
        if line.startswith(mark + " "):
            try:
                value = json.loads(line[len(mark) + 1:])
            except json.JSONDecodeError:
                return None
            return value if isinstance(value, dict) else None
    return None


def _parts(version: str | None) -> tuple[int, ...]:
    numbers: list[int] = []
    for piece in (version or "").split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        numbers.append(int(digits))
    return tuple(numbers)


def compare_versions(system: str, remote: Mapping[str, Any], local: Mapping[str, Any],
                     where: str, activate_hint: str) -> list[Problem]:
    """Problems from the remote probe's answer: a missing package, or versions that differ.

    :param where: the remote interpreter, for messages
    :param activate_hint: how to fix a missing package (the system's ``commands``)
    """
    problems: list[Problem] = []
    missing = [name for name in PACKAGES if remote.get(name) is None]
    if missing:
        errors = "; ".join(f"{name}: {remote.get(f'{name}:error', 'not importable')}" for name in missing)
        problems.append(Problem(
            system, "error", "python", f"{where} cannot import {', '.join(missing)} ({errors})",
            f"run 'wfl-async install {system}' here (it makes a venv there with this wfl_async and this "
            f"machine's numpy, ase and cloudpickle, no internet needed there, and prints the \"commands\" line "
            f"to add), or {activate_hint}"))
    py_remote, py_local = _parts(remote.get("python")), _parts(local.get("python"))
    if py_remote[:2] != py_local[:2]:
        problems.append(Problem(
            system, "error", "versions",
            f"Python {remote.get('python')} there, {local.get('python')} here: functions defined in your "
            f"script (pickled by value) and some pickles do not load across Python minor versions",
            f"use Python {'.'.join(map(str, py_local[:2]))} on the system (its \"python\" key or the lines "
            f"in \"commands\" that activate it), or run the workflow with the cluster's Python version"))
    for name in PACKAGES:
        there, here = remote.get(name), local.get(name)
        if there is None or here is None or there == here:
            continue
        # our own pickles (markers, layout) are plain data: another wfl_async version is only a warning
        if name != "wfl_async" and _parts(there)[:1] != _parts(here)[:1]:
            problems.append(Problem(
                system, "error", "versions",
                f"{name} {there} there, {here} here: pickled tasks and results do not load across "
                f"{name} major versions (e.g. \"No module named 'numpy._core'\")",
                f"run 'wfl-async install {system}' here (it installs {name}=={here} there, in a venv), or "
                f"install the same version here"))
        else:
            problems.append(Problem(
                system, "warning", "versions", f"{name} {there} there, {here} here",
                f"install the same {name} version on both sides to be sure results are identical "
                f"('wfl-async install {system}' here installs {name}=={here} there)"))
    return problems
