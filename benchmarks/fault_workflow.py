"""The workflows that ``benchmarks/fault_table.py`` runs under each fault, and their checks.

Run as a script, this is the *driver*: one user's workflow in its own process (so that it can
be killed, interrupted or started twice), described by a JSON spec on the command line:

* ``autopara``: one autoparallelized operation (``tests.helpers.remote_functions.digest_input``,
  a wfl-style op) over ``configs`` rattled Cu cells, one queued chunk per configuration, with a
  staged input file of several MB whose sha256 each chunk records, written to an extxyz output;
* ``bigresult``: ``configs`` queued jobs each returning ``result_size`` bytes (large results to
  fetch), their sha256s written to a JSON output.

Imported, it gives the serial answer of each workflow (the same function run here, in this
process) and the comparison of an output with it: how many results are missing and how many
are wrong. Every chunk appends the configurations it computed to ``$WFL_TEST_RUN_LOG``, so an
execution twice shows as a configuration logged twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __name__ == "__main__":  # the driver imports the repository it was started from
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ase.atoms import Atoms  # noqa: E402
from ase.io import read  # noqa: E402

from tests.helpers import remote_functions as rf  # noqa: E402
from tests.helpers.configs import cu_configs  # noqa: E402


def configs(n: int) -> list[Atoms]:
    """The workflow's inputs: ``n`` rattled Cu cells, ``info["i"]`` their index."""
    out = cu_configs(n)
    for i, atoms in enumerate(out):
        atoms.info["i"] = i
    return out


@dataclass(frozen=True)
class Check:
    """An output compared with the serial run: configurations missing, and present but different."""

    lost: int
    wrong: int


def serial_autopara(n: int, input_file: Path, log: Path) -> list[Atoms]:
    """The ``autopara`` workflow's answer: its op run here, serially, on every configuration."""
    saved = {k: os.environ.get(k) for k in ("WFL_TEST_INPUT", "WFL_TEST_RUN_LOG", "WFL_TEST_SLEEP")}
    os.environ.update(WFL_TEST_INPUT=str(input_file), WFL_TEST_RUN_LOG=str(log), WFL_TEST_SLEEP="0")
    try:
        return [rf._digest_input([atoms])[0] for atoms in configs(n)]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def serial_bigresult(n: int, size: int) -> dict[str, str]:
    """The ``bigresult`` workflow's answer: the sha256 of each job's result, computed here."""
    return {str(i): hashlib.sha256(rf.big_result(i, size)).hexdigest() for i in range(n)}


def _same(got: Atoms, want: Atoms) -> bool:
    return (np.array_equal(got.numbers, want.numbers) and np.allclose(got.positions, want.positions, atol=1e-8)
            and np.allclose(got.cell.array, want.cell.array, atol=1e-8)
            and got.info.get("input_sha256") == want.info["input_sha256"])


def check_autopara(output: Path, serial: list[Atoms]) -> Check:
    """Every configuration of ``output`` against the serial run (a configuration written twice is wrong)."""
    got = read(output, ":") if output.exists() else []
    assert isinstance(got, list)
    seen = Counter(int(a.info["i"]) for a in got)
    wrong = sum(count - 1 for count in seen.values())
    wrong += sum(not _same(a, serial[int(a.info["i"])]) for a in got if 0 <= int(a.info["i"]) < len(serial))
    return Check(lost=sum(i not in seen for i in range(len(serial))), wrong=wrong)


def check_bigresult(output: Path, serial: dict[str, str]) -> Check:
    got = json.loads(output.read_text()) if output.exists() else {}
    return Check(lost=sum(k not in got for k in serial), wrong=sum(got[k] != v for k, v in got.items()
                                                                    if k in serial) + len(set(got) - set(serial)))


def executions(log: Path) -> Counter[int]:
    """How often each configuration was computed, from the jobs' own log."""
    lines = log.read_text().splitlines() if log.exists() else []
    return Counter(int(i) for line in lines for i in line.split())


def _run_autopara(spec: dict[str, Any]) -> None:
    from wfl_async.autoparallelize import RemoteInfo
    from wfl_async.configset import ConfigSet, OutputSpec

    info = RemoteInfo(**spec["remote_info"])
    rf.digest_input(ConfigSet(configs(spec["configs"])), OutputSpec(spec["output"]),
                    autopara_info={"remote_info": info})


def _run_bigresult(spec: dict[str, Any]) -> None:
    import anyio

    from wfl_async.job import RemoteJob

    options = dict(spec["remote_info"])
    name = options.pop("job_name")
    for key in ("num_inputs_per_queued_job", "input_files"):
        options.pop(key, None)
    digests: dict[int, str] = {}

    async def one(i: int) -> None:
        value = await RemoteJob(rf.big_result, (i, spec["result_size"]), job_name=f"{name}-{i}", **options)
        digests[i] = hashlib.sha256(value).hexdigest()

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(spec["configs"]):
                tg.start_soon(one, i)

    anyio.run(main)
    Path(spec["output"] + ".tmp").write_text(json.dumps(digests))
    os.replace(spec["output"] + ".tmp", spec["output"])  # whole or absent, like the autopara output


def main() -> None:
    # as in a terminal: Ctrl-C raises KeyboardInterrupt (a background parent may have ignored SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # the library's decisions (retried, re-attached, reconnected) in the row's driver log
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("wfl_async").setLevel(logging.INFO)
    spec = json.loads(sys.argv[1])
    if spec.get("limit_backoff"):  # the tests' short wait for room, instead of 15 s doubling to 5 min
        import wfl_async.system.submit as submit

        submit.LIMIT_BACKOFF = tuple(spec["limit_backoff"])
    {"autopara": _run_autopara, "bigresult": _run_bigresult}[spec["workload"]](spec)


if __name__ == "__main__":
    main()
