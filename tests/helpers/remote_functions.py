"""Functions the remote tests run in queued jobs (importable there through PYTHONPATH)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def read_env_and_files(input_name: str, output_name: str, variable: str) -> dict[str, str]:
    """Read a staged input file and an env var, write an output file to be copied back."""
    text = Path(input_name).read_text()
    Path(output_name).write_text(text.upper())
    return {"input": text, "env": os.environ.get(variable, "<unset>"),
            "subprocesses": os.environ.get("WFL_NUM_PYTHON_SUBPROCESSES", "<unset>"),
            "cores_per_node": os.environ.get("EXPYRE_NUM_CORES_PER_NODE", "<unset>"),
            "pre": Path("pre_cmd_ran").read_text().strip() if Path("pre_cmd_ran").exists() else "<no>"}


class CustomRemoteError(ValueError):
    """An exception type that must come back with its own type."""


def raise_custom(message: str) -> None:
    raise CustomRemoteError(message)


def needs_more_time_than(limit: int, value: object) -> object:
    """Runs past any time limit of ``limit`` s or less (the job's WFL_ASYNC_MAX_TIME), returns at once
    under a longer one: a job that only an escalated time limit finishes."""
    if int(os.environ["WFL_ASYNC_MAX_TIME"]) <= limit:
        time.sleep(3600)
    return value


def hold_memory(megabytes: int, seconds: float, value: object) -> object:
    """Allocate and touch ``megabytes`` MB, hold them ``seconds`` s (past a scheduler's sampling), return ``value``."""
    block = bytearray(megabytes * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])
    time.sleep(seconds)
    return value


def sleep_then_return(seconds: float, value: object) -> object:
    time.sleep(seconds)
    return value


def _label_or_raise(atoms_list):
    """wfl-style low-level op: raises for configurations marked ``bad``, sleeps if asked."""
    time.sleep(float(os.environ.get("WFL_TEST_SLEEP", "0")))
    for atoms in atoms_list:
        if atoms.info.get("bad"):
            raise CustomRemoteError(f"bad configuration {atoms.info.get('i')}")
    return _labelled(atoms_list)


def _labelled(atoms_list):
    out = []
    for atoms in atoms_list:
        atoms = atoms.copy()
        atoms.info["labelled"] = True
        out.append(atoms)
    return out


def label_or_raise(*args, **kwargs):
    """A user's own autoparallelized operation, written exactly as in wfl."""
    from wfl_async.autoparallelize import autoparallelize

    return autoparallelize(_label_or_raise, *args, **kwargs)


def _fit_like(n: int) -> dict[str, object]:
    """Stands in for a fit: reports where it ran."""
    return {"n": n * 2, "in_job": "EXPYRE_NUM_CORES" in os.environ}


def fit_like(n: int, **kwargs):
    from wfl_async.autoparallelize.single_job import single_queued_job

    return single_queued_job("WFL_TEST_FIT_REMOTEINFO")(_fit_like)(n, **kwargs)


def _logged_label(atoms_list):
    """Label configurations, appending one line per execution to ``$WFL_TEST_RUN_LOG``."""
    with open(os.environ["WFL_TEST_RUN_LOG"], "a") as log:
        log.write(" ".join(str(a.info["i"]) for a in atoms_list) + "\n")
    time.sleep(float(os.environ.get("WFL_TEST_SLEEP", "0")))
    return _labelled(atoms_list)


def logged_label(*args, **kwargs):
    from wfl_async.autoparallelize import autoparallelize

    return autoparallelize(_logged_label, *args, **kwargs)


def _log_execution(label: str) -> None:
    """One line per execution in ``$WFL_TEST_RUN_LOG`` (a job submitted twice shows up twice)."""
    with open(os.environ["WFL_TEST_RUN_LOG"], "a") as log:
        log.write(label + "\n")


def _digest_input(atoms_list):
    """Label each configuration with the sha256 of the staged input file named in ``$WFL_TEST_INPUT``
    (after ``$WFL_TEST_SLEEP`` s, a chunk that takes a while)."""
    import hashlib

    digest = hashlib.sha256(Path(os.environ["WFL_TEST_INPUT"]).read_bytes()).hexdigest()
    _log_execution(" ".join(str(a.info["i"]) for a in atoms_list))
    time.sleep(float(os.environ.get("WFL_TEST_SLEEP", "0")))
    out = []
    for atoms in atoms_list:
        atoms = atoms.copy()
        atoms.info["input_sha256"] = digest
        out.append(atoms)
    return out


def digest_input(*args, **kwargs):
    from wfl_async.autoparallelize import autoparallelize

    return autoparallelize(_digest_input, *args, **kwargs)


def big_result(i: int, size: int) -> bytes:
    """``size`` bytes that only ``i`` determines (a large result to fetch), after ``$WFL_TEST_SLEEP`` s."""
    import numpy as np

    if "WFL_TEST_RUN_LOG" in os.environ:
        _log_execution(str(i))
    time.sleep(float(os.environ.get("WFL_TEST_SLEEP", "0")))
    return np.random.default_rng(i).bytes(size)


def input_digest_and_bytes(i: int, size: int, input_name: str) -> tuple[str, bytes]:
    """The sha256 of a staged input file, and ``size`` bytes only ``i`` determines (a large result)."""
    import hashlib

    digest = hashlib.sha256(Path(input_name).read_bytes()).hexdigest()
    return digest, big_result(i, size)


def _counted_label(atoms_list):
    """Label configurations after ``$WFL_TEST_SLEEP`` s, then append a line to ``_completions.log``
    in the job directory: a chunk run to completion twice would show two lines there."""
    time.sleep(float(os.environ.get("WFL_TEST_SLEEP", "0")))
    out = _labelled(atoms_list)
    with open("_completions.log", "a") as log:
        log.write(" ".join(str(a.info["i"]) for a in atoms_list) + "\n")
    return out


def counted_label(*args, **kwargs):
    from wfl_async.autoparallelize import autoparallelize

    return autoparallelize(_counted_label, *args, **kwargs)


def _label_slow_if_marked(atoms_list):
    """Label configurations; a chunk holding one with ``info["slow"]`` first sleeps ``$WFL_TEST_SLEEP`` s."""
    if any(a.info.get("slow") for a in atoms_list):
        time.sleep(float(os.environ.get("WFL_TEST_SLEEP", "0")))
    return _labelled(atoms_list)


def _label_after_sleeping(atoms_list):
    """Label configurations, each after sleeping its ``info["seconds"]``: a chunk's time is the sum of its
    configurations' (one Python subprocess)."""
    for atoms in atoms_list:
        time.sleep(float(atoms.info.get("seconds", 0)))
    return _labelled(atoms_list)


def fill_the_disk(name: str = "filler.bin") -> None:
    """Write to ``name`` in the job's directory until its filesystem is full (the error propagates)."""
    block = b"\0" * 65536
    with open(name, "wb") as handle:
        while True:
            handle.write(block)
            handle.flush()


def _timed_label(atoms_list):
    """Label each configuration after sleeping its ``info["seconds"]``, then append its index to
    ``_completions.log`` in the job directory: a configuration run twice shows twice there."""
    out = []
    for atoms in atoms_list:
        time.sleep(float(atoms.info.get("seconds", 0)))
        out.extend(_labelled([atoms]))
        with open("_completions.log", "a") as log:
            log.write(f"{atoms.info['i']}\n")
    return out


def call_both(op: Any, extra: Any) -> tuple[Any, Any]:
    """``op(5)``, and ``extra()`` (or ``extra`` itself if it is not callable)."""
    return op(5), extra() if callable(extra) else extra
