"""Test configuration, with wfl's conventions for remote tests.

* ``--runremote`` enables tests that need a real queueing system (marker ``remote``). They run on
  every system of the ExPyRe config (``$EXPYRE_ROOT`` or ``~/.expyre``), filtered by the regexp in
  ``EXPYRE_PYTEST_SYSTEMS``. ``scripts/testinfra/start_all.sh`` starts real Slurm, SGE, Torque-style
  PBS commands and an sshd, and writes such a config; ``source /tmp/wfl_async_testinfra/env.sh``.
* ``--basetemp`` (pytest's own) puts test directories where the queueing system can see them.
* ``WFL_PYTEST_EXPYRE_INFO``: JSON dict of fields added to every RemoteInfo in high-level tests.
* Under CI (``CI`` set), leaving out ``--runremote`` or having no system is an error, not a skip:
  a missing daemon must fail the run.
* ``scripts/test.sh`` runs the tests in pytest-xdist workers (``--dist loadgroup``): tests that
  share a daemon's state among themselves are put in one ``xdist_group`` (one worker, one after
  another; :data:`XDIST_GROUPS` for whole files), and tests marked ``serial`` run alone afterwards
  (docs/test-infrastructure.md, "How the tests run").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import hang_watch
from wfl_async.config import load_config

XDIST_GROUPS = {
    # every login to the two-factor sshd (127.0.0.1:2223) takes the next one-time code of one
    # machine-wide sequence and is counted in one machine-wide log of answered prompts
    # (tests/helpers/totp.py), which these tests read
    "tests/integration/test_sites.py": "two_factor_sshd",
    "tests/integration/test_terminal_prompts.py": "two_factor_sshd",  # its codes are logged there too
    "tests/remote/test_sites.py": "two_factor_sshd",
}
"""Test files whose tests all share one ``xdist_group``: why, beside each."""

LONG_WAITS = {
    # each waits out a fixed span whatever the machine does; started first, in the concurrent pass,
    # its wait overlaps the many short tests instead of being the run's tail (each was 60-160 s)
    "tests/remote/test_remote_job.py::test_a_job_that_always_hits_its_time_limit_is_resubmitted_once_and_says_why_it_died":
        "two of Slurm's one-minute time limits, one after the other",
    "tests/remote/test_died_messages.py::test_a_job_killed_at_its_time_limit_says_so_before_the_grace_without_advising_what_is_set":
        "two one-minute time limits",
    "tests/remote/test_remote_job.py::test_another_process_writing_to_the_jobs_database_for_two_minutes_delays_a_workflow_only":
        "a 125 s database lock",
    "tests/unit/test_database.py::test_another_process_holding_the_write_lock_delays_writes_and_reads_go_on":
        "a 65 s database lock",
    "tests/remote/test_escalation.py::test_a_job_killed_at_its_time_limit_is_rerun_with_twice_the_time":
        "a one-minute time limit, then the rerun",
    "tests/remote/test_autoparallelize_remote.py::test_1000_configs_in_chunks_of_36_match_a_serial_run_and_rerun_submits_nothing":
        "28 EMT jobs and a serial reference run, per system",
    "tests/remote/test_interrupt_restart.py::test_killed_and_interrupted_runs_then_a_rerun_give_every_result_once":
        "a killed and an interrupted run, then a rerun",
}
"""Tests (node ids without parameters) started before all others: what each waits for."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runremote", action="store_true", default=False,
                     help="run tests that submit jobs to the real systems of the ExPyRe config")
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: slow test (enabled with --runslow)")
    if os.environ.get("CI") and not config.getoption("--runremote"):
        raise pytest.UsageError("CI must run the remote tests: pass --runremote (see README)")
    if os.environ.get("PYTEST_XDIST_WORKER") and threading.current_thread() is threading.main_thread():
        # a pytest-xdist worker (execnet) starts with SIGINT ignored, and so would every workflow
        # process a test starts: the Ctrl-C tests need what a user's terminal gives, Python's handler
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A hanging test prints its coroutines' stacks before pytest-timeout stops it (:mod:`helpers.hang_watch`)."""
    marker = item.get_closest_marker("timeout")
    timeout = float(marker.args[0]) if marker and marker.args else float(item.config.getini("timeout") or 0)
    with hang_watch.watch_for_hang(item.nodeid, timeout):
        yield


@pytest.fixture(autouse=True)
def _no_session_outlives_its_test() -> Iterator[None]:
    """A session a test left open (it hung and was stopped) is dropped, not joined by the next test."""
    yield
    for line in hang_watch.drop_stale_sessions():
        print(f"dropped after the test: {line}", file=sys.stderr)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_remote = pytest.mark.skip(reason="needs --runremote and real queueing systems")
    skip_slow = pytest.mark.skip(reason="needs --runslow")
    for item in items:
        group = XDIST_GROUPS.get(item.nodeid.split("::")[0])
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
        if "remote" in item.keywords and not config.getoption("--runremote"):
            item.add_marker(skip_remote)
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
    items.sort(key=lambda item: item.nodeid.split("[")[0] not in LONG_WAITS)  # stable: the rest keep their order


def remote_system_names() -> list[str]:
    """Systems of the user's config (not the built-in ``local``), filtered by ``EXPYRE_PYTEST_SYSTEMS``."""
    config = load_config()
    names = [n for n in config.systems if config.config_files and n in _file_system_names(config.config_files)]
    pattern = os.environ.get("EXPYRE_PYTEST_SYSTEMS")
    if pattern:
        names = [n for n in names if re.search(pattern, n)]
    return names


def _file_system_names(files: tuple[Path, ...]) -> set[str]:
    names: set[str] = set()
    for path in files:
        names |= set(json.loads(path.read_text()).get("systems", {}))
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "remote_system" in metafunc.fixturenames:
        names = remote_system_names() if metafunc.config.getoption("--runremote") else ["local"]
        if not names and metafunc.config.getoption("--runremote"):
            raise pytest.UsageError(
                "--runremote given but no system found: run scripts/testinfra/start_all.sh and "
                "source /tmp/wfl_async_testinfra/env.sh (or set EXPYRE_ROOT / EXPYRE_PYTEST_SYSTEMS)")
        metafunc.parametrize("remote_system", names)


@pytest.fixture(scope="session")
def expyre_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private EXPYRE_ROOT for the session: the user's merged config, its own jobs database.

    Systems get a short ``died_grace_seconds`` so died-job tests do not wait 30 s.
    """
    config = load_config()
    merged: dict[str, Any] = {"systems": {}}
    for path in config.config_files:
        merged["systems"].update(json.loads(path.read_text()).get("systems", {}))
    for entry in merged["systems"].values():
        entry.setdefault("died_grace_seconds", 5)
    root = tmp_path_factory.mktemp("expyre_root")
    (root / "config.json").write_text(json.dumps(merged, indent=1))
    saved = os.environ.get("EXPYRE_ROOT")
    os.environ["EXPYRE_ROOT"] = str(root)
    yield root
    if saved is None:
        os.environ.pop("EXPYRE_ROOT", None)
    else:
        os.environ["EXPYRE_ROOT"] = saved


@pytest.fixture
def fresh_expyre_root(tmp_path: Path, expyre_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Like ``expyre_root`` but with an empty jobs database for this test only."""
    root = tmp_path / "_expyre"
    root.mkdir()
    shutil.copy(expyre_root / "config.json", root / "config.json")
    monkeypatch.setenv("EXPYRE_ROOT", str(root))
    return root


@pytest.fixture(scope="session")
def wfl_pytest_expyre_info() -> dict[str, Any]:
    """``WFL_PYTEST_EXPYRE_INFO``: extra RemoteInfo fields for high-level remote tests."""
    text = os.environ.get("WFL_PYTEST_EXPYRE_INFO")
    return json.loads(text) if text else {}
