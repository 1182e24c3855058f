"""Job arrays as pure functions: the array submit command (run by bash with a stand-in submit
program), the answers it leaves, the batch's grouping, and status parsing of task ids on output
captured from the real daemons (tests/data/scheduler_output/*array*)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.processes import writes_of
from wfl_async.autoparallelize import RemoteInfo
from wfl_async.config.system_config import SystemConfig
from wfl_async.errors import ConfigurationError, SchedulerError
from wfl_async.jobs import layout
from wfl_async.jobs.hashing import job_key
from wfl_async.jobs.options import JobOptions
from wfl_async.scheduler import (
    JobScriptSpec,
    LocalScheduler,
    PBSScheduler,
    QueueState,
    Scheduler,
    SGEScheduler,
    SlurmScheduler,
)
from wfl_async.scheduler.arrays import ARRAY_TASK_OUTPUT, expand_indices
from wfl_async.scheduler.submit_lock import IN_PROGRESS_MINUTES
from wfl_async.system.requests import SubmitRequest
from wfl_async.system.submit import array_groups, array_name, batch_command

DATA = Path(__file__).resolve().parents[1] / "data" / "scheduler_output"
HOSTILE = "dir it's \"q\" $(touch pwned) ü"


def bash(script: str, cwd: Path) -> str:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, cwd=cwd,
                          env={"PATH": "/usr/bin:/bin"}).stdout


def spec(job_dir: str, job_id: str = "calc_chunk_0") -> JobScriptSpec:
    return JobScriptSpec(job_id=job_id, job_dir=job_dir, partition="debug", num_nodes=1, num_cores=2,
                         num_cores_per_node=2, max_time=600, header=["#X --partition={partition}"])


# ------------------------------------------------------------------ the submit command
ARRAY_SCHEDULERS = [SlurmScheduler(), SGEScheduler(), PBSScheduler()]
FAKE_OUTPUT = {"slurm": "Submitted batch job 4242", "sge": "4242.1-3:1", "pbs": "4242.server"}
TASK_IDS = {"slurm": ["4242_0", "4242_1", "4242_2"], "sge": ["4242.1", "4242.2", "4242.3"],
            "pbs": ["4242[0]", "4242[1]", "4242[2]"]}


def fake_submit_program(sched: Scheduler, tmp_path: Path) -> str:
    """A stand-in for the scheduler's submit program: logs its arguments, prints the real one's answer."""
    program = tmp_path / "fake_submit"
    program.write_text(f"#!/bin/sh\necho \"$*\" >> {tmp_path}/calls\necho '{FAKE_OUTPUT[sched.name]}'\n")
    program.chmod(0o755)
    return str(program)


@pytest.mark.parametrize("sched", ARRAY_SCHEDULERS, ids=lambda s: s.name)
def test_array_submit_gives_each_dir_its_own_task_id_and_a_rerun_submits_nothing(sched: Scheduler,
                                                                                tmp_path: Path) -> None:
    dirs = [tmp_path / name for name in ("a", HOSTILE, "c")]
    for d in dirs:
        d.mkdir()
    array_dir = str(tmp_path / "_wfl_async_arrays" / "t-0")
    command = sched.array_submit_command(array_dir, sched.render_array_script(spec(str(dirs[0])), array_dir),
                                         [str(d) for d in dirs], [7, 8, 9])
    command = command.replace(sched.submit_program + " ", fake_submit_program(sched, tmp_path) + " ", 1)
    first = sched.parse_submit_output(bash(command, tmp_path), 10)[7:]
    assert [r.remote_id for r in first] == TASK_IDS[sched.name]
    first_index = sched.first_array_index
    call = (tmp_path / "calls").read_text()
    assert f"{sched.array_option}{first_index}-{first_index + 2} {sched.script_name}" in call
    assert call.count("\n") == 1, "one scheduler call for the three jobs"
    assert Path(array_dir, "tasks").read_text().splitlines() == [str(d) for d in dirs]
    assert not (tmp_path / "pwned").exists()
    # each directory's own answer names its own task: a rerun (or a repeated command) reuses it
    again = sched.parse_submit_output(bash(command, tmp_path), 10)[7:]
    assert [r.remote_id for r in again] == TASK_IDS[sched.name]
    assert (tmp_path / "calls").read_text().count("\n") == 1, "the repeated command submitted again"
    assert "array_task" in (dirs[1] / layout.SUBMIT_ANSWER).read_text()
    loop = sched.submit_command([str(dirs[1])]).replace(sched.submit_invocation(), "false")
    assert [r.remote_id for r in sched.parse_submit_output(bash(loop, tmp_path), 1)] == [TASK_IDS[sched.name][1]]


def test_array_submit_answers_all_its_tasks_in_one_write(tmp_path: Path) -> None:
    """Its tasks are taken at once: their records come in one write, not one each (each was an ssh packet
    the driver woke for alone, issue 16)."""
    sched = SlurmScheduler()
    dirs = [tmp_path / f"d{i}" for i in range(20)]
    for d in dirs:
        d.mkdir()
    array_dir = str(tmp_path / "arr")
    command = sched.array_submit_command(array_dir, "#!/bin/sh\n", [str(d) for d in dirs], list(range(20)))
    command = command.replace(sched.submit_program + " ", fake_submit_program(sched, tmp_path) + " ", 1)
    writes = writes_of(command, tmp_path)
    assert len(writes) == 1, [chunk for _, chunk in writes]
    results = sched.parse_submit_output(writes[0][1].decode(), 20)
    assert [r.remote_id for r in results] == [f"4242_{i}" for i in range(20)]


def test_array_submit_of_dirs_locked_earlier_reports_them_unresolved_and_submits_the_rest(tmp_path: Path) -> None:
    sched = SlurmScheduler()
    dirs = [tmp_path / "locked", tmp_path / "free"]
    for d in dirs:
        d.mkdir()
    # an earlier submission that never answered, its holder gone long ago (no pid to check)
    (dirs[0] / layout.SUBMIT_LOCK).touch()
    long_ago = time.time() - 60 * (IN_PROGRESS_MINUTES + 1)
    os.utime(dirs[0] / layout.SUBMIT_LOCK, (long_ago, long_ago))
    array_dir = str(tmp_path / "arr")
    command = sched.array_submit_command(array_dir, "#!/bin/sh\n", [str(d) for d in dirs], [0, 1])
    command = command.replace("sbatch ", fake_submit_program(sched, tmp_path) + " ", 1)
    results = sched.parse_submit_output(bash(command, tmp_path), 2)
    assert results[0].unresolved and results[0].remote_id is None
    assert results[1].remote_id == "4242_0"
    assert Path(array_dir, "tasks").read_text().splitlines() == [str(dirs[1])]


def test_array_script_runs_the_job_script_of_its_tasks_own_dir(tmp_path: Path) -> None:
    sched = SlurmScheduler()
    dirs = [tmp_path / "t0", tmp_path / HOSTILE]
    for d in dirs:
        d.mkdir()
        (d / sched.script_name).write_text("echo ran in \"$PWD\"\n")
    array_dir = tmp_path / "arr"
    array_dir.mkdir()
    (array_dir / "tasks").write_text("".join(f"{d}\n" for d in dirs))
    script = sched.render_array_script(spec(str(dirs[0]), job_id="calc_chunk"), str(array_dir))
    assert "#SBATCH --job-name=calc_chunk" in script and "#X --partition=debug" in script
    (array_dir / "run").write_text(script)
    subprocess.run(["bash", str(array_dir / "run")], check=True, env={"PATH": "/usr/bin:/bin",
                                                                       "SLURM_ARRAY_TASK_ID": "1"})
    assert (dirs[1] / f"{ARRAY_TASK_OUTPUT}.stdout").read_text() == f"ran in {dirs[1]}\n"
    assert not (dirs[0] / f"{ARRAY_TASK_OUTPUT}.stdout").exists()
    bad = subprocess.run(["bash", str(array_dir / "run")], env={"PATH": "/usr/bin:/bin", "SLURM_ARRAY_TASK_ID": "5"},
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "array task 5 has no job directory" in bad.stderr


def test_find_lists_each_task_of_an_array_by_its_own_dir(tmp_path: Path) -> None:
    array_dir = tmp_path / "_wfl_async_arrays" / "t-0"
    array_dir.mkdir(parents=True)
    (array_dir / "tasks").write_text(f"/runs/a\n/runs/{HOSTILE}\n")
    for sched, listing, ids in ((SlurmScheduler(), f"77_[0-1] {array_dir}\n76 /runs/plain\n", ["77_0", "77_1"]),
                                (SGEScheduler(), f"77 {array_dir}\n76 /runs/plain\n", ["77.1", "77.2"])):
        listing_file = tmp_path / "listing"
        listing_file.write_text(listing)
        found = sched.parse_find_output(bash(sched.with_array_tasks(f"cat {listing_file}"), tmp_path))
        assert found == {"/runs/a": ids[0], f"/runs/{HOSTILE}": ids[1], "/runs/plain": "76"}
    failing = subprocess.run(["bash", "-c", SlurmScheduler().with_array_tasks("exit 3")], capture_output=True)
    assert failing.returncode == 3  # a failed listing is not an empty queue


def test_schedulers_without_arrays_refuse_them() -> None:
    assert not LocalScheduler(slot_dir="/tmp/s").supports_arrays
    with pytest.raises(SchedulerError, match="cannot submit job arrays"):
        LocalScheduler(slot_dir="/tmp/s").array_submit_command("/a", "", ["/d"], [0])


# ------------------------------------------------------------------ status of tasks
def test_slurm_status_lists_each_task_with_or_without_array_option() -> None:
    for name in ("slurm_array_status.txt", "slurm_array_status_ranges.txt"):
        states = SlurmScheduler().parse_status_output((DATA / name).read_text())
        # submitted held; tasks 1 and 3 released (running), 2 cancelled (gone)
        assert {i: states.get(f"17928_{i}") for i in range(5)} == {
            0: QueueState.HELD, 1: QueueState.RUNNING, 2: None, 3: QueueState.RUNNING, 4: QueueState.HELD}
    assert "--array" in SlurmScheduler().status_command()


def test_sge_status_expands_pending_task_ranges() -> None:
    states = SGEScheduler().parse_status_output((DATA / "sge_array_status.xml").read_text())
    # tasks 1-5 submitted held; 2 and 4 released (running), 3 deleted
    assert {i: states.get(f"1559.{i}") for i in range(1, 6)} == {
        1: QueueState.HELD, 2: QueueState.RUNNING, 3: None, 4: QueueState.RUNNING, 5: QueueState.HELD}
    assert "1559" not in states  # a task never takes the state of its array


def test_pbs_tasks_take_the_state_of_the_array_row_unless_listed() -> None:
    states = PBSScheduler().parse_status_output((DATA / "pbs_array_status.txt").read_text())
    assert states.get("17934[0]") is QueueState.RUNNING and states.get("17934[2]") is QueueState.RUNNING
    assert states.get("17935[0]") is None
    pbs_pro = PBSScheduler().parse_status_output(
        "9[].srv  alice workq N_a -- 1 1 -- 01:00 B --\n9[1].srv alice workq N_a 77 1 1 -- 01:00 X 00:01\n")
    assert pbs_pro.get("9[1]") is QueueState.FINISHED and pbs_pro.get("9[2]") is QueueState.RUNNING


@pytest.mark.parametrize(("text", "indices"), [("1-10:3", [1, 4, 7, 10]), ("1,5", [1, 5]), ("[0-2,7%2]", [0, 1, 2, 7]),
                                               ("4", [4]), ("x", [])])
def test_expand_indices(text: str, indices: list[int]) -> None:
    assert expand_indices(text) == indices


@pytest.mark.parametrize(("sched", "task", "parent"), [(SlurmScheduler(), "12_3", "12"), (SlurmScheduler(), "12", None),
                                                       (SGEScheduler(), "12.3", "12"), (PBSScheduler(), "12[3]", "12")])
def test_array_parent_id(sched: Scheduler, task: str, parent: str | None) -> None:
    assert sched.array_parent_id(task) == parent


# ------------------------------------------------------------------ grouping a batch
def config(**entry: object) -> SystemConfig:
    return SystemConfig.from_json("c", {"host": None, "scheduler": "slurm",
                                        "partitions": {"debug": {"num_cores": 2, "max_time": "1h"}}, **entry})


def request(name: str, submit: str | None = None, max_time: int = 600) -> SubmitRequest:
    return SubmitRequest(job_dir=f"{name}-k", job_name=name, partition="debug",
                         node_dict={"num_nodes": 1, "num_cores": 2, "num_cores_per_node": 2}, max_time=max_time,
                         header_extra=(), body=(), upload=(), local_root=Path("/tmp"), submit=submit)


def groups(cfg: SystemConfig, batch: list[SubmitRequest], sched: Scheduler | None = None) -> list[list[int]]:
    sched = sched or SlurmScheduler()
    specs = [spec(f"/r/{r.job_dir}", r.job_name) for r in batch]
    specs = [JobScriptSpec(**{**s.__dict__, "max_time": r.max_time}) for s, r in zip(specs, batch, strict=True)]
    return array_groups(sched, cfg, batch, specs)


def test_a_batch_groups_array_requests_by_header_up_to_the_array_size() -> None:
    batch = [request(f"calc_chunk_{i}", "array") for i in range(5)] + [request("other", "array", max_time=60),
                                                                        request("calc_chunk_5", "loop")]
    assert groups(config(), batch) == [[0, 1, 2, 3, 4]]  # 'other' alone (its own header), chunk 5 asked for the loop
    assert groups(config(max_array_size=2), batch) == [[0, 1], [2, 3]]  # [4] alone: the loop
    assert groups(config(submit="array"), [request("a"), request("b")]) == [[0, 1]]  # the system's default
    assert groups(config(), [request("a"), request("b")]) == []  # default: the loop
    assert groups(config(), batch, LocalScheduler(slot_dir="/tmp/s")) == []
    assert array_name(["calc_chunk_0", "calc_chunk_1"]) == "calc_chunk"


def test_batch_command_puts_loop_and_array_jobs_in_one_command() -> None:
    batch = [request("a", "array"), request("x"), request("b", "array")]
    command = batch_command(SlurmScheduler(), config(pre_submit_cmds=["module load slurm"]), "/root", batch)
    assert command.then.count("sbatch") == 2 and "--array=" in command.then
    assert command.submissions == 2  # 'x' alone, 'a' and 'b' as one array
    assert command.then.startswith("{ module load slurm && {")
    assert set(command.scripts) == {f"{r.job_dir}/job.script.slurm" for r in batch}


# ------------------------------------------------------------------ choosing the mode
def test_submit_mode_is_checked_and_not_part_of_the_job_key() -> None:
    with pytest.raises(ConfigurationError, match="submit='arrays' is not a submit mode"):
        JobOptions(submit="arrays")
    with pytest.raises(ConfigurationError, match="submit='arrays' is not a submit mode"):
        RemoteInfo(sys_name="s", job_name="j", resources={}, submit="arrays")
    with pytest.raises(ConfigurationError, match="system 'c'.*submit=1"):
        config(submit=1)
    with pytest.raises(ConfigurationError, match="max_array_size.*positive integer"):
        config(max_array_size=0)
    assert RemoteInfo(sys_name="s", job_name="j", resources={}, submit="array").options.submit == "array"
    assert RemoteInfo.from_dict({"sys_name": "s", "job_name": "j", "resources": {}, "submit": "array"}).submit == "array"
    # the key comes from the call alone, so a rerun in the other mode re-attaches (the remote
    # test_arrays.py checks that for real)
    assert "submit" not in job_key.__code__.co_varnames
