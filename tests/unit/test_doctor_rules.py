"""The doctor's rules on versions and on worker logs (pure functions; the checks run in tests/doctor)."""

from __future__ import annotations

from wfl_async.doctor.versions import compare_versions, parse_probe
from wfl_async.doctor.worker_log import last_error_line

HERE = {"python": "3.11.7", "wfl_async": "0.1.0", "numpy": "1.26.4", "ase": "3.23.0", "cloudpickle": "3.0.0"}


def problems(**remote: object) -> list[tuple[str, str]]:
    found = compare_versions("cluster", {**HERE, **remote}, HERE, "python3 on cluster", "activate it")
    return [(p.severity, p.problem.split(" ")[0]) for p in found]


def test_same_versions_are_fine() -> None:
    assert problems() == []


def test_what_breaks_unpickling_is_an_error_and_the_rest_a_warning() -> None:
    assert problems(python="3.12.1") == [("error", "Python")]
    assert problems(python="3.11.2") == []                     # a micro version does not matter
    assert problems(numpy="2.1.0") == [("error", "numpy")]
    assert problems(numpy="1.24.0") == [("warning", "numpy")]
    assert problems(ase="4.0.0") == [("error", "ase")]
    assert problems(ase="3.22.1") == [("warning", "ase")]
    assert problems(wfl_async="0.2.0") == [("warning", "wfl_async")]


def test_missing_packages_are_one_error_naming_each() -> None:
    found = compare_versions("cluster", {**HERE, "wfl_async": None, "numpy": None,
                                         "wfl_async:error": "ModuleNotFoundError: No module named 'wfl_async'"},
                             HERE, "python3 on cluster", "add it to commands")
    (problem,) = found
    assert problem.severity == "error" and "cannot import wfl_async, numpy" in problem.problem
    assert "No module named 'wfl_async'" in problem.problem and "add it to commands" in problem.fix
    assert str(problem).startswith("error: system 'cluster': ") and ". Fix: " in str(problem)


def test_probe_answer_is_found_after_noise() -> None:
    text = 'module loaded\nWFL_ASYNC_DOCTOR_PROBE {"python": "3.11.7", "numpy": "1.26.4"}\n'
    assert parse_probe(text) == {"python": "3.11.7", "numpy": "1.26.4"}
    assert parse_probe("bash: python3: command not found") is None


def test_last_error_line_of_a_worker_log() -> None:
    log = ("Traceback (most recent call last):\n  File \"x.py\", line 1\nModuleNotFoundError: No module named "
           "'numpy._core'\n\nsome trailing output\n")
    assert last_error_line(log) == "ModuleNotFoundError: No module named 'numpy._core'"
    assert last_error_line("/bin/bash: line 3: 1234 Killed  python3 -m wfl_async.jobs.worker") is not None
    assert last_error_line("all fine\n") is None
