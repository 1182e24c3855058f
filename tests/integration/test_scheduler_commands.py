"""Each scheduler's rendered script and commands, run for real through ``bash -c``.

Needs the test daemons (Slurm, SGE, the Torque-style PBS commands on Slurm): start them
with ``scripts/testinfra/start_all.sh``.  A missing daemon FAILS these tests; it does not
skip them.  No ssh here: the system layer's tests add it.

Per scheduler: three jobs submitted by one ``submit_command`` (one in a directory whose
name has a space, a quote and non-ASCII characters), seen in one parsed status listing,
one held (submitted held, ``hold_command`` again, then ``release_command``), one
cancelled, and the rest waited for until they leave the queue, under a deadline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from wfl_async.errors import SchedulerError
from wfl_async.scheduler import ACTIVE_STATES, JobScriptSpec, QueueState, Scheduler, get_scheduler

START_HINT = "run scripts/testinfra/start_all.sh (as root) to install and start the test daemons"
PBS_BIN = "/opt/wfl_async_testinfra/pbs/bin"
HOSTILE_NAME = "job dir it's \"quoted\" ü"
DEADLINE = 120.0


def bash(command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.setdefault("SGE_ROOT", "/var/lib/gridengine")
    env.setdefault("SGE_CELL", "default")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, errors="replace",
                            env=env, timeout=60, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"command failed ({result.returncode}): {command[:300]}\n"
                             f"stdout: {result.stdout}\nstderr: {result.stderr}")
    return result


@dataclass
class Case:
    name: str
    prefix: str
    """Shell text before every command (PATH of the PBS wrappers)."""
    probe: str
    """A command that succeeds when the daemon answers."""
    hold_header: str
    """Header line that submits a job held ("" if the scheduler cannot hold)."""
    shows_hold: bool
    """False for the Torque-style wrappers on Slurm: they print a held job as Q."""


CASES = {
    "slurm": Case("slurm", "", "sinfo -h >/dev/null && squeue -h >/dev/null", "#SBATCH --hold", True),
    "sge": Case("sge", "", 'qstat -u "$(id -un)" >/dev/null', "#$ -h", True),
    "pbs": Case("pbs", f"export PATH={PBS_BIN}:$PATH; ", f'test -x {PBS_BIN}/qsub && qstat -u "$(id -un)" >/dev/null',
                "#PBS -h", False),
    "local": Case("local", "", "command -v setsid && command -v flock && command -v nproc", "", False),
}


def require(case: Case) -> None:
    """Fail (not skip) when the daemon is not there."""
    result = bash(case.prefix + case.probe, check=False)
    if result.returncode != 0:
        pytest.fail(f"{case.name} is not available ({result.stderr.strip()[:300] or 'probe failed'}): "
                    f"{START_HINT}", pytrace=False)


def wait_until(what: str, poll: Callable[[], bool], deadline: float = DEADLINE,
               seen: Callable[[], object] | None = None) -> None:
    """Poll until true; the timeout names what was awaited and, given ``seen``, what was last seen."""
    end = time.monotonic() + deadline
    while not poll():
        if time.monotonic() > end:
            last = f"; last seen: {seen()!r}" if seen else ""
            raise AssertionError(f"timed out after {deadline:.0f} s waiting until {what}{last}")
        time.sleep(0.5)


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    c = CASES[request.param]
    require(c)
    return c


@pytest.fixture
def scheduler(case: Case, tmp_path: Path) -> Scheduler:
    if case.name == "local":
        # two slots: the third job has to wait for one (QUEUED)
        return get_scheduler("local", slot_dir=str(tmp_path / "slots"), max_jobs=2)
    return get_scheduler(case.name)


@pytest.fixture
def job_root() -> Iterator[Path]:
    # under /tmp, not pytest's tmp_path: the execd/slurmd must be able to reach it
    root = Path(f"/tmp/wfl_async_it_{os.getpid()}_{time.monotonic_ns()}")
    root.mkdir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


def write_job(sched: Scheduler, d: Path, seconds: int, header: list[str], gated: bool = False) -> str:
    """A job sleeping ``seconds``; a ``gated`` one first waits (holding its slot) until a file
    ``go`` appears in its directory, so the test sees its state for as long as it needs to."""
    d.mkdir()
    gate = ["until [ -e go ]; do sleep 0.2; done"] if gated else []
    spec = JobScriptSpec(
        job_id=f"wfa_it_{d.name[:3].replace(' ', '_')}", job_dir=str(d), partition="debug", num_nodes=1,
        num_cores=1, num_cores_per_node=1, max_time=600, header=header,
        commands=['printf "%s %s %s\\n" "$EXPYRE_NUM_CORES_PER_NODE" "$EXPYRE_NUM_NODES" "$EXPYRE_NUM_CORES" '
                  '>expyre_vars.txt', *gate, f"sleep {seconds}", "touch done.marker"],
    )
    (d / sched.script_name).write_text(sched.render_script(spec))
    return str(d)


def test_submit_status_hold_cancel_for_real(case: Case, scheduler: Scheduler, job_root: Path) -> None:
    listings: list[dict[str, QueueState]] = [{}]

    def status() -> dict[str, QueueState]:
        listings[0] = scheduler.parse_status_output(bash(case.prefix + scheduler.status_command()).stdout)
        return listings[0]

    # local: each job holds its slot until the test lets it go (the runners may reach the slots in
    # any order, and a 4 s job could end between two listings of a loaded machine)
    gated = case.name == "local"
    dirs = [
        write_job(scheduler, job_root / "to_cancel", 300, [], gated),
        write_job(scheduler, job_root / HOSTILE_NAME, 4, [], gated),
        write_job(scheduler, job_root / "held", 1, [case.hold_header] if case.hold_header else [], gated),
    ]
    submitted = bash(case.prefix + scheduler.submit_command(dirs))
    results = scheduler.parse_submit_output(submitted.stdout, len(dirs))
    assert all(r.remote_id for r in results), submitted.stdout
    ids = [r.remote_id for r in results]
    to_cancel, hostile, held = ids
    assert to_cancel and hostile and held and len(set(ids)) == 3
    try:
        # all three in one listing, in the states they must have
        expect_held = QueueState.HELD if case.shows_hold else QueueState.QUEUED
        if case.name == "local":  # 2 slots: two jobs run and the third waits
            wait_until("two local jobs run and the third waits",
                       lambda: (s := status()).keys() == set(ids) and sorted(s.values()) == sorted(
                           [QueueState.RUNNING, QueueState.RUNNING, QueueState.QUEUED]),
                       seen=lambda: (listings[0], ids))
            with pytest.raises(SchedulerError, match="not supported"):
                scheduler.hold_command([held])
            for job_dir in dirs:
                (Path(job_dir) / "go").touch()
        else:
            wait_until(f"{to_cancel} runs and {held} is held",
                       lambda: (s := status()).get(to_cancel) is QueueState.RUNNING and s.get(held) is expect_held,
                       seen=lambda: listings[0])
            bash(case.prefix + scheduler.hold_command([held]))  # already held: still fine
            assert status()[held] is expect_held
            assert not (job_root / "held" / "done.marker").exists()
            bash(case.prefix + scheduler.release_command([held]))

        bash(case.prefix + scheduler.cancel_command([to_cancel]))
        wait_until(f"cancelled {to_cancel} leaves the queue",
                   lambda: status().get(to_cancel) not in ACTIVE_STATES)
        wait_until(f"{hostile} and {held} finish",
                   lambda: all(status().get(i) not in ACTIVE_STATES for i in (hostile, held)))
    finally:
        bash(case.prefix + scheduler.cancel_command([i for i in ids if i]), check=False)

    for name in (HOSTILE_NAME, "held"):
        d = job_root / name
        wait_until(f"{d}/done.marker appears", (d / "done.marker").exists, 30)
        assert (d / "expyre_vars.txt").read_text().split() == ["1", "1", "1"]
    assert not (job_root / "to_cancel" / "done.marker").exists()


def test_find_command_lists_each_queued_job_by_its_directory(case: Case, scheduler: Scheduler,
                                                               job_root: Path) -> None:
    """What the driver runs before submitting again a job whose answer was lost: a queued job
    must be found by its job directory (a hostile name included), or it would be submitted twice."""
    find = scheduler.find_command()
    if case.name == "pbs":
        # the Torque-style commands here print no working directory: markers alone resolve a
        # lost answer there (docs/architecture.md says so)
        assert find is None
        return
    assert find is not None
    dirs = [write_job(scheduler, job_root / name, 60, [case.hold_header] if case.hold_header else [])
            for name in ("plain", HOSTILE_NAME)]
    results = scheduler.parse_submit_output(bash(case.prefix + scheduler.submit_command(dirs)).stdout, 2)
    ids = [r.remote_id for r in results]
    assert all(ids), results
    try:
        found = scheduler.parse_find_output(bash(case.prefix + find).stdout)
        assert {d: found.get(d) for d in dirs} == dict(zip(dirs, ids, strict=True))
    finally:
        bash(case.prefix + scheduler.cancel_command([i for i in ids if i]), check=False)


def test_array_submit_status_find_cancel_for_real(case: Case, scheduler: Scheduler, job_root: Path) -> None:
    """Three job directories as one array submission: each task gets its own id (kept in its own
    answer, so the command run again submits nothing), is listed by status under that id, runs in
    its own directory, is found by its directory, and is cancelled alone."""
    if not scheduler.supports_arrays:
        with pytest.raises(SchedulerError, match="cannot submit job arrays"):
            scheduler.array_submit_command(str(job_root / "a"), "", [], [])
        return

    def status() -> dict[str, QueueState]:
        return scheduler.parse_status_output(bash(case.prefix + scheduler.status_command()).stdout)

    hold = [case.hold_header] if case.hold_header and case.name != "pbs" else []
    dirs = [write_job(scheduler, job_root / name, seconds, hold)
            for name, seconds in (("to_cancel", 300), (HOSTILE_NAME, 1), ("plain", 1))]
    spec = JobScriptSpec(job_id="wfa_it_arr", job_dir=dirs[0], partition="debug", num_nodes=1, num_cores=1,
                         num_cores_per_node=1, max_time=600, header=hold)
    array_dir = str(job_root / "_wfl_async_arrays" / "a0")
    command = case.prefix + scheduler.array_submit_command(
        array_dir, scheduler.render_array_script(spec, array_dir), dirs, [4, 5, 6])
    first = bash(command).stdout
    results = scheduler.parse_submit_output(first, 7)[4:]
    ids = [r.remote_id for r in results]
    assert all(ids) and len(set(ids)) == 3, first
    to_cancel, hostile, plain = ids
    try:
        again = scheduler.parse_submit_output(bash(command).stdout, 7)[4:]  # a repeated command: answers only
        assert [r.remote_id for r in again] == ids
        parent = scheduler.array_parent_id(to_cancel)
        assert parent and all(scheduler.array_parent_id(i) == parent for i in ids)
        if case.name == "pbs":
            # the Torque-style commands here list the array's pending tasks as one row, and cannot
            # address one task (qdel 123[4] cancels them all): tasks take the array's state
            wait_until("the tasks finish", lambda: all(status().get(i) not in ACTIVE_STATES for i in ids[1:]))
            bash(case.prefix + scheduler.cancel_command([parent]))
        else:
            wait_until("every task is listed held", lambda: all(status().get(i) is QueueState.HELD for i in ids))
            found = scheduler.parse_find_output(bash(case.prefix + scheduler.find_command()).stdout)
            assert {d: found.get(d) for d in dirs} == dict(zip(dirs, ids, strict=True))
            bash(case.prefix + scheduler.cancel_command([to_cancel]))
            wait_until(f"cancelled {to_cancel} leaves the queue", lambda: status().get(to_cancel) not in ACTIVE_STATES)
            assert status().get(hostile) is QueueState.HELD
            bash(case.prefix + scheduler.release_command([hostile, plain]))
            wait_until("the released tasks finish",
                       lambda: all(status().get(i) not in ACTIVE_STATES for i in (hostile, plain)))
    finally:
        bash(case.prefix + scheduler.cancel_command(ids), check=False)
    for d in dirs[1:]:
        wait_until(f"{d}/done.marker appears", (Path(d) / "done.marker").exists, 30)
        assert (Path(d) / "expyre_vars.txt").read_text().split() == ["1", "1", "1"]
    if case.name != "pbs":
        assert not (Path(dirs[0]) / "done.marker").exists()
