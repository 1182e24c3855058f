"""Why a job ended (the schedulers' accountings, read from their real output) and what escalation
does next (issue 17 items 5-6): pure parts, no daemon."""

from __future__ import annotations

from pathlib import Path

import pytest

from wfl_async.autoparallelize import RemoteInfo
from wfl_async.jobs.ended import EndCause
from wfl_async.jobs.escalation import MAX_STEPS, Escalation, next_step
from wfl_async.jobs.states import QueueState, VerdictKind, classify
from wfl_async.scheduler.base import JobScriptSpec
from wfl_async.scheduler.pbs import PBSScheduler
from wfl_async.scheduler.sge import SGEScheduler
from wfl_async.scheduler.slurm import SlurmScheduler

DATA = Path(__file__).parents[1] / "data" / "scheduler_output"


def test_slurm_accounting_names_each_cause_with_its_time_limit() -> None:
    """`sacct -c` of the test Slurm (jobcomp/filetxt: Timelimit in minutes) and slurmdbd's spellings."""
    found = SlurmScheduler().parse_accounting_output((DATA / "slurm_sacct_jobcomp.txt").read_text())
    assert found["37461"].state is QueueState.TIMEOUT
    assert found["37461"].detail() == "killed at its time limit 00:01:00 (Slurm TIMEOUT), exit code 0:0"
    assert found["37500"].ending is not None and found["37500"].ending.cause is EndCause.NODE_FAIL
    assert found["37500"].ending.time_limit == 1800
    assert found["37501"].ending is not None and found["37501"].ending.cause is EndCause.OUT_OF_MEMORY
    assert found["37501"].ending.time_limit == 86400
    assert found["37502"].ending is not None and found["37502"].ending.cause is EndCause.CANCELLED
    assert found["37502"].work_dir == "/tmp/run/a|b" and found["37502"].ending.time_limit is None
    # OverMemoryKill: FAILED by signal 9, the cause only in the job's stderr (Machine.accounting looks)
    killed = found["37099"]
    assert killed.killed and killed.ending is not None and killed.ending.cause is EndCause.FAILED
    over = killed.memory_killed("slurm")
    assert over.ending is not None and over.ending.cause is EndCause.OUT_OF_MEMORY
    assert "killed for exceeding its memory request (Slurm FAILED, memory limit in its stderr)" in over.detail()
    assert not found["37100"].killed


def test_sge_accounting_tells_h_rt_from_qdel_from_a_plain_failure() -> None:
    """Real `qacct -j` output: h_rt=5 enforced (failed 37), a qdel (failed 100, SIGKILL), exit 1."""
    scheduler = SGEScheduler()
    command = scheduler.accounting_command(["2155", "2156.3", "bad;id"])
    assert command == "qacct -j 2155 2>/dev/null; qacct -j 2156 -t 3 2>/dev/null; true"
    found = scheduler.parse_accounting_output((DATA / "sge_qacct_killed.txt").read_text())
    assert found["2155"].state is QueueState.TIMEOUT
    assert found["2155"].detail().startswith("killed at its time limit 00:00:05 (SGE failed 37")
    assert found["2181"].ending is not None and found["2181"].ending.cause is EndCause.CANCELLED
    assert found["2156"].ending is not None and found["2156"].ending.cause is EndCause.FAILED
    assert found["2156"].work_dir == ""  # qacct keeps none: the record stands for the id alone


def test_a_cause_from_the_accounting_ends_the_job_within_the_poll_and_is_named() -> None:
    ending = SlurmScheduler().parse_accounting_output("9|NODE_FAIL|0:0|5|/x\n")["9"].ending
    verdict = classify(remote_id="9", marker=None, states={"9": QueueState.FAILED}, missing_for=None, grace=900,
                       where="hpc", detail="", ending=ending)
    assert verdict.kind is VerdictKind.DIED and verdict.cause is EndCause.NODE_FAIL
    assert verdict.message == "job 9 on hpc was lost with its node (node failure) (Slurm NODE_FAIL): it left the " \
                              "queue without a final marker"
    plain = SlurmScheduler().parse_accounting_output("9|FAILED|1:0|5|/x\n")["9"].ending
    waits = classify(remote_id="9", marker=None, states={"9": QueueState.FAILED}, missing_for=None, grace=900,
                     where="hpc", detail="", ending=plain)
    assert waits.kind is VerdictKind.MISSING  # a plain failure may still have its marker on its way


def test_pbs_here_keeps_no_accounting_it_can_read() -> None:
    """The PBS-style commands here (Slurm's Torque wrappers) have neither tracejob nor qstat -x: a vanished
    job waits out its grace, as before."""
    assert PBSScheduler().accounting_command(["1"]) is None


@pytest.mark.parametrize(("scheduler", "line"), [(SlurmScheduler(), "#SBATCH --mem=512M"),
                                                 (SGEScheduler(), "#$ -l h_vmem=256M"),
                                                 (PBSScheduler(), "#PBS -l mem=512mb")])
def test_a_memory_request_becomes_the_schedulers_directive(scheduler: object, line: str) -> None:
    spec = JobScriptSpec(job_id="j", job_dir="/d", partition="p", num_nodes=1, num_cores=2, num_cores_per_node=2,
                         max_time=60, mem_kb=512 * 1024)
    header = scheduler.render_header(spec)  # type: ignore[attr-defined]
    assert line in header
    assert not any("mem" in h for h in scheduler.render_header(JobScriptSpec(  # type: ignore[attr-defined]
        job_id="j", job_dir="/d", partition="p", num_nodes=1, num_cores=2, num_cores_per_node=2, max_time=60)))
    assert "export WFL_ASYNC_MAX_TIME=60" in scheduler.render_script(spec)  # type: ignore[attr-defined]


def test_escalation_splits_then_doubles_time_up_to_the_partition_then_stops() -> None:
    step = next_step(Escalation(), EndCause.TIMEOUT, how="a TIMEOUT", max_time=60, mem_kb=None, time_cap=200,
                     mem_cap=None, items=4)
    assert step is not None and step.split and step.tried == ("split in two (4 configurations) after a TIMEOUT",)
    single = next_step(Escalation(), EndCause.TIMEOUT, how="a TIMEOUT", max_time=60, mem_kb=None, time_cap=200,
                       mem_cap=None, items=1)
    assert single is not None and single.max_time == 120
    capped = next_step(single, EndCause.TIMEOUT, how="a TIMEOUT", max_time=120, mem_kb=None, time_cap=200,
                       mem_cap=None, items=1)
    assert capped is not None and capped.max_time == 200
    assert capped.summary() == "time limit 00:01:00 -> 00:02:00 after a TIMEOUT; " \
                               "time limit 00:02:00 -> 00:03:20 after a TIMEOUT"
    assert next_step(capped, EndCause.TIMEOUT, how="", max_time=200, mem_kb=None, time_cap=200, mem_cap=None,
                     items=1) is None  # at the partition's limit: the error says what was tried
    assert Escalation.from_json(capped.to_json()) == capped


def test_escalation_of_memory_doubles_or_takes_the_node_and_ignores_other_deaths() -> None:
    doubled = next_step(Escalation(), EndCause.OUT_OF_MEMORY, how="x", max_time=60, mem_kb=256 * 1024,
                        time_cap=None, mem_cap=16 * 1024 ** 2, items=3)
    assert doubled is not None and doubled.mem_kb == 512 * 1024 and not doubled.split
    assert doubled.short() == "mem 512 MB"
    node = next_step(Escalation(), EndCause.OUT_OF_MEMORY, how="x", max_time=60, mem_kb=None, time_cap=None,
                     mem_cap=16 * 1024 ** 2, items=1)
    assert node is not None and node.mem_kb == 16 * 1024 ** 2
    assert next_step(Escalation(), EndCause.OUT_OF_MEMORY, how="x", max_time=60, mem_kb=None, time_cap=None,
                     mem_cap=None, items=1) is None  # nothing known to ask for
    for cause in (EndCause.CANCELLED, EndCause.NODE_FAIL, EndCause.FAILED, None):
        assert next_step(Escalation(), cause, how="x", max_time=60, mem_kb=1, time_cap=None, mem_cap=None,
                         items=9) is None
    many = Escalation(tried=("x",) * MAX_STEPS)
    assert next_step(many, EndCause.TIMEOUT, how="x", max_time=60, mem_kb=None, time_cap=None, mem_cap=None,
                     items=1) is None
    assert Escalation.from_json("not json") == Escalation()


def test_escalate_is_a_remote_info_field_as_wfl_expyre_info_gives_it() -> None:
    info = RemoteInfo.from_dict({"sys_name": "s", "job_name": "j", "resources": {}, "escalate": False},
                                where="WFL_EXPYRE_INFO")
    assert info.escalate is False and info.options.escalate is False
    assert RemoteInfo("s", "j", {}).escalate is True
