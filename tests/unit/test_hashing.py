"""The job key: equal for the same call in any process, different when anything that matters changes."""

from __future__ import annotations

import operator
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import remote_functions as rf
from wfl_async.errors import ConfigurationError
from wfl_async.jobs.hashing import code_source, job_key, pickle_task

ROOT = Path(__file__).resolve().parents[2]


def scale(values: list[float], factor: float = 1.0, *, verbose: bool = False, workers: int = 1) -> list[float]:
    return [v * factor for v in values]


def key(*args: Any, **kwargs: Any) -> str:
    options = {k: kwargs.pop(k) for k in ("name", "hash_ignore", "input_files", "code_version") if k in kwargs}
    return job_key(scale, args, kwargs, **options)


def test_key_is_a_sha256_hex_digest() -> None:
    k = key([1.0, 2.0], 3.0)
    assert len(k) == 64 and int(k, 16) >= 0


def test_key_is_stable_across_processes(tmp_path: Path) -> None:
    data = tmp_path / "data dir"
    data.mkdir()
    (data / "a.xyz").write_text("A")
    (data / "sub").mkdir()
    (data / "sub" / "b.xyz").write_text("B")
    single = tmp_path / "single ü.txt"
    single.write_text("S")
    call = dict(name="job ü", input_files=[str(data), str(single)], hash_ignore=["verbose"])
    args = ([1.5, 2.5], 2.0)
    kwargs = {"workers": 4, "verbose": True}
    here = job_key(operator.add, args, kwargs, **call)  # type: ignore[arg-type]
    code = (
        "import operator\n"
        "from wfl_async.jobs.hashing import job_key\n"
        f"print(job_key(operator.add, {args!r}, {kwargs!r}, **{call!r}))\n"
    )
    # a different hash seed and a different dict insertion order must not matter
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                           timeout=120, check=True).stdout.strip()
    assert other == here
    reordered = job_key(operator.add, args, dict(reversed(list(kwargs.items()))), **call)  # type: ignore[arg-type]
    assert reordered == here


def test_key_changes_with_positional_and_keyword_arguments() -> None:
    base = key([1.0, 2.0], 3.0, workers=2)
    assert key([1.0, 2.0], 3.0, workers=2) == base
    others = {key([1.0, 2.0], 4.0, workers=2), key([1.0, 2.5], 3.0, workers=2),
              key([1.0, 2.0], 3.0, workers=3), key([1.0, 2.0], 3.0), key([1.0, 2.0], factor=3.0, workers=2)}
    assert base not in others and len(others) == 5


def test_key_changes_with_name_and_function() -> None:
    base = key([1.0], name="a")
    assert key([1.0], name="b") != base
    assert job_key(operator.add, ([1.0],), {}, name="a") != base
    assert job_key(operator.mul, (1, 2), {}) != job_key(operator.add, (1, 2), {})


def test_hash_ignored_arguments_by_position_and_name_do_not_change_the_key() -> None:
    by_position = key([1.0], 2.0, hash_ignore=[1])
    assert key([1.0], 99.0, hash_ignore=[1]) == by_position
    assert key([2.0], 2.0, hash_ignore=[1]) != by_position  # only the ignored one
    by_name = key([1.0], verbose=True, workers=1, hash_ignore=["verbose"])
    assert key([1.0], verbose=False, workers=1, hash_ignore=["verbose"]) == by_name
    assert key([1.0], workers=1, hash_ignore=["verbose"]) == by_name  # absent is the same as ignored
    assert key([1.0], verbose=True, workers=2, hash_ignore=["verbose"]) != by_name


def test_unpicklable_hash_ignored_argument_is_fine() -> None:
    lock = threading.Lock()
    assert key([1.0], lock=lock, hash_ignore=["lock"]) == key([1.0], hash_ignore=["lock"])


def test_code_version_opt_in() -> None:
    default = key([1.0])
    assert key([1.0], code_version=None) == default == key([1.0], code_version=False)
    with_code = key([1.0], code_version=True)
    assert with_code != default
    assert key([1.0], code_version=True) == with_code
    v1, v2 = key([1.0], code_version="v1"), key([1.0], code_version="v2")
    assert len({default, with_code, v1, v2}) == 4
    assert key([1.0], code_version="v1") == v1


def test_code_source_is_the_defining_module() -> None:
    source = code_source(scale)
    assert "def test_code_source_is_the_defining_module" in source
    assert "def sleep_then_return" in code_source(rf.sleep_then_return)
    assert code_source(operator.add)  # builtin: falls back to the identity, never raises


def test_key_changes_with_input_file_content_and_name(tmp_path: Path) -> None:
    path = tmp_path / "in.xyz"
    path.write_text("one")
    first = key([1.0], input_files=[path])
    assert key([1.0], input_files=[str(path)]) == first
    path.write_text("two")
    second = key([1.0], input_files=[path])
    assert second != first
    renamed = tmp_path / "other.xyz"
    path.rename(renamed)
    assert key([1.0], input_files=[renamed]) != second
    assert key([1.0]) not in (first, second)


def test_key_changes_with_a_file_inside_an_input_directory(tmp_path: Path) -> None:
    directory = tmp_path / "inputs"
    (directory / "nested").mkdir(parents=True)
    (directory / "nested" / "x").write_text("1")
    first = key([1.0], input_files=[directory])
    (directory / "nested" / "x").write_text("2")
    assert key([1.0], input_files=[directory]) != first
    (directory / "nested" / "x").write_text("1")
    assert key([1.0], input_files=[directory]) == first
    (directory / "new").write_text("")
    assert key([1.0], input_files=[directory]) != first


def test_missing_input_file_fails_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"input file '.*nope\.xyz' does not exist; fix input_files"):
        key([1.0], input_files=[tmp_path / "nope.xyz"])


def test_unpicklable_arguments_fail_naming_the_fix() -> None:
    with pytest.raises(ConfigurationError, match="cannot pickle the arguments of .*scale.*hash_ignore"):
        key([1.0], lock=threading.Lock())
    with pytest.raises(ConfigurationError, match="cannot pickle the call .*define the function at module level"):
        pickle_task(scale, ([1.0],), {"lock": threading.Lock()})


def test_unpicklable_function_fails_naming_the_fix() -> None:
    lock = threading.Lock()

    def closure(x: int) -> int:
        with lock:
            return x

    with pytest.raises(ConfigurationError, match="cannot pickle the call to .*closure.*module level") as info:
        pickle_task(closure, (1,), {})
    assert isinstance(info.value, ValueError)  # callers may catch ValueError, as for wfl


def test_lambdas_and_local_functions_pickle_by_value() -> None:
    import pickle

    data = pickle_task(lambda x: x + 1, (41,), {})
    function, args, kwargs = pickle.loads(data)
    assert function(*args, **kwargs) == 42


KEYS_OF_CALLABLE_OBJECTS = """
import functools, operator
from tests.helpers import remote_functions as rf
from wfl_async.jobs.hashing import job_key

class Scaler:
    def __init__(self, factor):
        self.factor = factor
    def __call__(self, x):
        return x * self.factor
    def apply(self, x):
        return x * self.factor

for function in (functools.partial(rf.sleep_then_return, 0), functools.partial(rf.sleep_then_return, 1),
                 Scaler(2), Scaler(3), Scaler(2).apply, Scaler(3).apply):
    print(job_key(function, (5,), {}))
"""


def test_keys_of_partials_callable_instances_and_bound_methods_are_stable_and_hold_their_state(
        tmp_path: Path) -> None:
    """Their repr holds a memory address: it must not reach the key (else a rerun never re-attaches),
    while what they hold must (two instances with different state compute different things)."""
    script = tmp_path / "keys.py"
    script.write_text(KEYS_OF_CALLABLE_OBJECTS)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = [subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=ROOT,
                           timeout=120, check=True).stdout.split() for _ in range(2)]
    assert runs[0] == runs[1]
    assert len(runs[0]) == 6 and len(set(runs[0])) == 6



def _in_main(name: str, value: int, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A function of the running ``__main__`` (as a user's script defines it): only cloudpickle's copy by
    value reaches a process whose ``__main__`` lacks it."""
    import __main__

    def function(x: int = 0) -> int:
        return x + value

    function.__module__, function.__qualname__ = "__main__", name
    monkeypatch.setattr(__main__, name, function, raising=False)
    return function


@pytest.mark.parametrize(("extra", "fast"), [("plain", True), ("main", False), ("lambda", False)])
def test_a_task_with_its_operation_pickled_once_runs_in_a_fresh_process(extra: str, fast: bool,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunks of a call share their operation's bytes (pickled_once); the rest of a task goes through
    the standard pickler when nothing in it needs cloudpickle (several times faster), else through
    cloudpickle: either way a fresh interpreter, whose ``__main__`` is another, runs it."""
    from wfl_async._pickling import _plain_dumps, pickled_once

    op = _in_main("wfl_async_test_op", 100, monkeypatch)  # the operation goes by value, once for all chunks
    value = {"plain": 7, "main": _in_main("wfl_async_test_extra", 7, monkeypatch), "lambda": lambda: 7}[extra]
    once = pickled_once(op, [op])
    kwargs = {"op": op, "extra": value}
    assert (_plain_dumps((rf.call_both, (), kwargs), once) is not None) is fast
    task = pickle_task(rf.call_both, (), kwargs, once)
    root = Path(__file__).parents[2]
    ran = subprocess.run([sys.executable, "-c", "import pickle, sys; f, a, k = pickle.loads(sys.stdin.buffer.read()); "
                          "print(f(*a, **k))"], input=task, capture_output=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root)}, check=False)
    assert ran.returncode == 0, ran.stderr.decode()
    assert ran.stdout.decode().split() == ["(105,", "7)"]
