"""Schedulers as pure functions: scripts they render, commands they build, output they parse.

Parsers are tested on output captured from the real daemons of scripts/testinfra
(tests/data/scheduler_output/, written by its capture.py or the testinfra capture script):
each ``<name>_expected.json`` records what the capture did to every job, so the
expectations come from the actions, not from the parser under test.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest

from tests.helpers.processes import writes_of
from wfl_async.errors import ConfigurationError, SchedulerError
from wfl_async.scheduler import (
    SCHEDULERS,
    JobScriptSpec,
    LocalScheduler,
    PBSScheduler,
    QueueState,
    Scheduler,
    SGEScheduler,
    SlurmScheduler,
    get_scheduler,
)
from wfl_async.scheduler.base import SUBMIT_RECORD_END
from wfl_async.scheduler.pbs import pbs_job_key
from wfl_async.scheduler.sge import sge_state
from wfl_async.scheduler.slurm import _SLURM_STATES

DATA = Path(__file__).resolve().parents[1] / "data" / "scheduler_output"
HOSTILE_DIR = "/scratch/run dir/it's \"quoted\" | ü"


def spec(**kw: object) -> JobScriptSpec:
    args: dict[str, object] = dict(
        job_id="wfl_abc123", job_dir=HOSTILE_DIR, partition="standard", num_nodes=2, num_cores=16,
        num_cores_per_node=8, max_time=3725, header=["#X queue={queue} nodes={num_nodes} ppn={ppn}"],
        commands=["python3 -m wfl_async.worker"],
    )
    args.update(kw)
    return JobScriptSpec(**args)  # type: ignore[arg-type]


def all_schedulers() -> list[Scheduler]:
    return [SlurmScheduler(), PBSScheduler(), SGEScheduler(), LocalScheduler(slot_dir="/tmp/slots")]


def bash(script: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin", **(env or {})}).stdout


# ------------------------------------------------------------------ registry
def test_get_scheduler_knows_expyre_names() -> None:
    assert set(SCHEDULERS) == {"slurm", "pbs", "sge", "local"}
    for name, cls in SCHEDULERS.items():
        sched = get_scheduler(name)
        assert isinstance(sched, cls) and sched.name == name


def test_get_scheduler_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ConfigurationError, match="'slurm', 'pbs', 'sge', 'local'"):
        get_scheduler("lsf")


def test_get_scheduler_passes_options_and_rejects_bad_ones() -> None:
    sched = get_scheduler("local", slot_dir="/x/slots", max_jobs=3)
    assert isinstance(sched, LocalScheduler) and sched.max_jobs == 3
    with pytest.raises(ConfigurationError, match="slurm"):
        get_scheduler("slurm", slot_dir="/x")


# ------------------------------------------------------------------ job scripts
@pytest.mark.parametrize(
    ("sched", "expected_header"),
    [
        (SlurmScheduler(), ["#SBATCH --job-name=wfl_abc123", "#SBATCH --time=1:02:05",
                            "#SBATCH --output=job.wfl_abc123.stdout", "#SBATCH --error=job.wfl_abc123.stderr"]),
        (PBSScheduler(), ["#PBS -N N_wfl_abc123", "#PBS -l walltime=1:02:05", "#PBS -o job.wfl_abc123.stdout",
                          "#PBS -e job.wfl_abc123.stderr", "#PBS -S /bin/bash", "#PBS -r n"]),
        (SGEScheduler(), ["#$ -N N_wfl_abc123", "#$ -l h_rt=1:02:05", "#$ -o job.wfl_abc123.stdout",
                          "#$ -e job.wfl_abc123.stderr", "#$ -S /bin/bash", "#$ -r n", "#$ -cwd"]),
        # the local runner reads (and enforces) the time limit from the second line
        (LocalScheduler(), ["# wfl_async local time limit (s): 3725"]),
    ],
)
def test_script_has_expyre_default_header_then_system_header(sched: Scheduler, expected_header: list[str]) -> None:
    lines = sched.render_script(spec()).splitlines()
    assert lines[0] == "#!/bin/bash"
    assert lines[1:1 + len(expected_header)] == expected_header
    assert lines[1 + len(expected_header)] == "#X queue=standard nodes=2 ppn=8"


@pytest.mark.parametrize("sched", all_schedulers(), ids=lambda s: s.name)
def test_script_exports_expyre_variables_and_quotes_the_job_dir(sched: Scheduler, tmp_path: Path) -> None:
    job_dir = tmp_path / "run dir it's \"quoted\" | ü"
    job_dir.mkdir()
    script = sched.render_script(spec(job_dir=str(job_dir), header=[], commands=[
        'printf "%s\\n" "$EXPYRE_NUM_CORES_PER_NODE" "$EXPYRE_NUM_NODES" "$EXPYRE_NUM_CORES" '
        '"$EXPYRE_NCORES_PER_NODE" "$PWD"']))
    # bash runs the directives as comments; outside any queue the fallbacks apply
    out = bash(script).splitlines()
    assert out == ["8", "2", "16", "8", str(job_dir)]


def test_script_without_default_header_keeps_only_system_lines() -> None:
    text = SlurmScheduler().render_script(spec(no_default_header=True, script_exec="/usr/bin/env bash"))
    assert text.startswith("#!/usr/bin/env bash\n#X queue=standard nodes=2 ppn=8\n\n")
    assert "--job-name" not in text


def test_script_extra_placeholders_are_filled() -> None:
    text = SGEScheduler().render_script(spec(header=["#$ -P {project}"], placeholders={"project": "mat"}))
    assert "#$ -P mat\n" in text


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("#SBATCH --account={acount}", r"'acount'.*one of \['id', 'max_time'"),
        ("#SBATCH --comment={", "not a valid template"),
        ("#SBATCH --comment={id.upper}", "placeholder 'id.upper'"),
        ("#SBATCH --comment={0}", "placeholder '0'"),
        ("#SBATCH --comment={id:d}", "cannot be filled in: Unknown format code 'd'.*fix the 'header' entry"),
    ],
)
def test_bad_header_placeholder_is_a_clear_error(line: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        SlurmScheduler().render_script(spec(header=[line]))


def test_pbs_job_name_has_no_equals_sign() -> None:
    text = PBSScheduler().render_script(spec(job_id="abc=="))
    assert "#PBS -N N_abcEQEQ\n" in text


@pytest.mark.parametrize(
    ("sched", "env", "expected"),
    [
        (SlurmScheduler(), {"SLURM_TASKS_PER_NODE": "4"}, "4"),
        (SlurmScheduler(), {"SLURM_TASKS_PER_NODE": "4(x2),3"}, "4"),
        (SlurmScheduler(), {"SLURM_TASKS_PER_NODE": "6,2"}, "6"),
        (PBSScheduler(), {"PBS_NUM_PPN": "12"}, "12"),
        (SGEScheduler(), {"NSLOTS": "12", "NHOSTS": "3"}, "4"),
        (SGEScheduler(), {"NSLOTS": "12"}, "8"),
    ],
)
def test_cores_per_node_comes_from_the_scheduler_environment(sched: Scheduler, env: dict[str, str],
                                                             expected: str) -> None:
    lines = sched.cores_per_node_commands(spec())
    assert bash("\n".join(lines) + '\necho "$EXPYRE_NUM_CORES_PER_NODE"', env).strip() == expected


def test_pbs_cores_per_node_counts_nodefile(tmp_path: Path) -> None:
    nodefile = tmp_path / "nodes"
    nodefile.write_text("n1\nn1\nn1\nn2\nn2\nn2\n")
    lines = PBSScheduler().cores_per_node_commands(spec())
    out = bash("\n".join(lines) + '\necho "$EXPYRE_NUM_CORES_PER_NODE"', {"PBS_NODEFILE": str(nodefile)})
    assert out.strip() == "3"


# ------------------------------------------------------------------ submit
@pytest.mark.parametrize("sched", all_schedulers(), ids=lambda s: s.name)
def test_submit_command_passes_hostile_dirs_intact(sched: Scheduler, tmp_path: Path) -> None:
    dirs = [tmp_path / "plain", tmp_path / "sp ace 'q' \"dq\" $(touch pwned) ü"]
    for d in dirs:
        d.mkdir()
    # stand-in submit program: prints the directory it was run in
    command = sched.submit_command([str(d) for d in dirs]).replace(sched.submit_invocation(), "pwd")
    out = bash(command)
    end = SUBMIT_RECORD_END
    assert out.splitlines() == [f"0\t0\t{dirs[0]}", end, f"1\t0\t{dirs[1]}", end]
    assert not (tmp_path / "pwned").exists()


def test_submit_records_come_a_second_at_a_time_the_first_at_once(tmp_path: Path) -> None:
    """Jobs the scheduler takes within the same second are answered in one write, not one each (each
    was an ssh packet the driver woke for alone, issue 16); the first at once, and none held longer
    than a second past the one that follows it."""
    sched = SlurmScheduler()
    dirs = [tmp_path / f"d{i}" for i in range(15)]  # 12 quick ones, 3 slow ones (each submitted once)
    for d in dirs:
        d.mkdir()
    quick = writes_of(sched.submit_command([str(d) for d in dirs[:12]]).replace(sched.submit_invocation(),
                                                                             "sleep 0.05; pwd"))
    records = b"".join(chunk for _, chunk in quick).decode().splitlines()
    assert records[0::2] == [f"{i}\t0\t{d}" for i, d in enumerate(dirs[:12])]
    assert quick[0][1].decode().splitlines() == records[:2]  # the first job's record alone, at once
    assert len(quick) <= 3, [chunk for _, chunk in quick]  # 0.6 s of submissions: at most one second more
    slow = writes_of(sched.submit_command([str(d) for d in dirs[12:]]).replace(sched.submit_invocation(),
                                                                               "sleep 1.1; pwd"))
    assert [chunk.decode().count(SUBMIT_RECORD_END) for _, chunk in slow] == [1, 1, 1]


@pytest.mark.parametrize("name", ["slurm", "sge", "pbs", "local"])
def test_submit_output_captured_with_one_failure(name: str) -> None:
    expected = json.loads((DATA / f"{name}_expected.json").read_text())
    stdout = (DATA / f"{name}_submit.txt").read_text()
    results = get_scheduler(name).parse_submit_output(stdout, len(expected["submit"]))
    assert [r.remote_id for r in results] == expected["submit"]
    for r in results:
        assert (r.error is None) == (r.remote_id is not None)
    if name != "local":
        assert None in expected["submit"]


def test_submit_failure_keeps_the_schedulers_complaint() -> None:
    stdout = (DATA / "slurm_submit.txt").read_text()
    results = SlurmScheduler().parse_submit_output(stdout, 8)
    assert results[2].error == "sbatch: error: Invalid --time specification"


def test_submit_output_missing_lines_are_errors() -> None:
    results = SlurmScheduler().parse_submit_output("0\t0\tSubmitted batch job 7\nnoise\n", 2)
    assert results[0].remote_id == "7"
    assert results[1].remote_id is None and results[1].error == "no answer from the submit command"


@pytest.mark.parametrize(
    ("sched", "output", "expected"),
    [
        (SlurmScheduler(), "sbatch: warning: can not load PMIx Submitted batch job 123", "123"),
        (SlurmScheduler(), "Submitted batch job 77 on cluster c2", "77"),
        (SlurmScheduler(), "sbatch: error: Batch job submission failed", None),
        (SGEScheduler(), "warning: \"-N\" option has already been set, overriding previous setting 19", "19"),
        (SGEScheduler(), "456.1-10:1", "456"),
        (SGEScheduler(), "Unable to run job: denied", None),
        (PBSScheduler(), "1234.pbs-server.example.org", "1234"),
        (PBSScheduler(), "1234[].server", "1234[]"),
        (PBSScheduler(), "qsub: Unknown queue", None),
        (LocalScheduler(), "4242.998877", "4242.998877"),
        (LocalScheduler(), "mkdir: cannot create directory", None),
    ],
)
def test_parse_submitted_id(sched: Scheduler, output: str, expected: str | None) -> None:
    assert sched.parse_submitted_id(output) == expected


# ------------------------------------------------------------------ status
@pytest.mark.parametrize("name", ["slurm", "slurm_timeout", "sge", "pbs", "local"])
def test_status_parsed_from_captured_output(name: str) -> None:
    if not (DATA / f"{name}_expected.json").exists():
        pytest.fail(f"missing capture: run `python tests/data/scheduler_output/capture.py {name}`")
    expected = json.loads((DATA / f"{name}_expected.json").read_text())
    states = get_scheduler(name.split("_")[0]).parse_status_output((DATA / f"{name}_status.txt").read_text())
    assert {i: states.get(i) for i in expected["states"]} == {
        i: QueueState(s) for i, s in expected["states"].items()}


def test_slurm_status_ignores_hostile_names_after_the_reason() -> None:
    # the slurm capture again, with `%j` appended: names contain '|', quotes and ü
    text = (DATA / "slurm_status_with_names.txt").read_text()
    assert "we|rd 'q' ü" in text
    expected = json.loads((DATA / "slurm_expected.json").read_text())["states"]
    states = SlurmScheduler().parse_status_output(text)
    assert {i: states.get(i) for i in expected} == {i: QueueState(s) for i, s in expected.items()}
    assert SlurmScheduler().parse_status_output("") == {}


def test_slurm_state_table_covers_the_man_page() -> None:
    # squeue(1), JOB STATE CODES, Slurm 22.05
    documented = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "CONFIGURING", "COMPLETING", "DEADLINE", "FAILED",
                  "NODE_FAIL", "OUT_OF_MEMORY", "PENDING", "PREEMPTED", "RUNNING", "RESV_DEL_HOLD",
                  "REQUEUE_FED", "REQUEUE_HOLD", "REQUEUED", "RESIZING", "REVOKED", "SIGNALING",
                  "SPECIAL_EXIT", "STAGE_OUT", "STOPPED", "SUSPENDED", "TIMEOUT"}
    assert set(_SLURM_STATES) == documented


@pytest.mark.parametrize(
    ("code", "state"),
    [("qw", QueueState.QUEUED), ("hqw", QueueState.HELD), ("hr", QueueState.RUNNING), ("r", QueueState.RUNNING),
     ("t", QueueState.RUNNING), ("Rr", QueueState.RUNNING), ("Rq", QueueState.QUEUED), ("dr", QueueState.RUNNING),
     ("dqw", QueueState.QUEUED), ("Eqw", QueueState.FAILED), ("s", QueueState.RUNNING), ("S", QueueState.RUNNING),
     ("T", QueueState.RUNNING), ("z", QueueState.FINISHED), ("hRwq", QueueState.HELD), ("x", None), ("", None)],
)
def test_sge_state_letters(code: str, state: QueueState | None) -> None:
    assert sge_state(code) is state


@pytest.mark.parametrize(
    ("word", "key"),
    [("1234.server", "1234"), ("1234.long-server-na*", "1234"), ("1234", "1234"), ("12[].srv", "12[]"),
     ("Job", None), ("-----", None), ("vm:", None)],
)
def test_pbs_job_key(word: str, key: str | None) -> None:
    assert pbs_job_key(word) == key


# PBS Pro's `qstat -u` layout (no PBS Pro server here to capture from; the rows are in the
# format of the PBS Professional reference guide), with a name containing spaces.
PBSPRO_QSTAT_U = """
pbsserver:
                                                            Req'd  Req'd   Elap
Job ID          Username Queue    Jobname    SessID NDS TSK Memory Time  S Time
--------------- -------- -------- ---------- ------ --- --- ------ ----- - -----
1001.pbsserver  alice    workq    N_a b c     12345   1   8    --  01:00 R 00:10
1002.pbsserver  alice    workq    N_held         --   1   8    --  01:00 H   --
1003.pbsserve*  alice    workq    N_x            --   1   8    --  01:00 E 00:59
1004.pbsserver  alice    workq    N_y            --   1   8    --  01:00 W   --
"""


def test_pbs_pro_layout() -> None:
    assert PBSScheduler().parse_status_output(PBSPRO_QSTAT_U) == {
        "1001": QueueState.RUNNING, "1002": QueueState.HELD, "1003": QueueState.RUNNING, "1004": QueueState.QUEUED}


@pytest.mark.parametrize(
    ("sched", "stdout", "job"),
    [
        (SlurmScheduler(), "77|WEIRD_NEW_STATE|None\n", "77"),
        (SGEScheduler(), "<job_list state='x'><JB_job_number>5</JB_job_number><state>Xy</state></job_list>", "5"),
        (PBSScheduler(), "88.srv  bob  q  name  --  1  1  --  01:00 Z 00:00\n", "88"),
        (LocalScheduler(), "12.34\tsleeping\n", "12.34"),
    ],
)
def test_unknown_state_is_unknown_with_a_warning(sched: Scheduler, stdout: str, job: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert sched.parse_status_output(stdout) == {job: QueueState.UNKNOWN}
    assert job in caplog.text and "does not know" in caplog.text


@pytest.mark.parametrize("sched", all_schedulers(), ids=lambda s: s.name)
def test_status_command_never_relies_on_user_variable(sched: Scheduler) -> None:
    command = sched.status_command()
    assert "$USER" not in command and "${USER" not in command
    if sched.name != "local":
        assert '"$(id -un)"' in command


# ------------------------------------------------------------------ control
def test_control_commands_quote_and_check_ids() -> None:
    assert SlurmScheduler().cancel_command(["12", "13_4"]) == "scancel 12 13_4"
    assert SlurmScheduler().hold_command(["12"]) == "scontrol hold 12"
    assert SGEScheduler().release_command(["12"]) == "qrls 12"
    assert PBSScheduler().hold_command(["12[]"]) == "qhold '12[]'"
    with pytest.raises(SchedulerError, match="odd job id"):
        SlurmScheduler().cancel_command(["12; rm -rf ~"])


def test_local_scheduler_has_no_hold_and_checks_ids() -> None:
    sched = LocalScheduler()
    with pytest.raises(SchedulerError, match="not supported by the local scheduler"):
        sched.hold_command(["1.2"])
    with pytest.raises(SchedulerError, match="not supported by the local scheduler"):
        sched.release_command(["1.2"])
    with pytest.raises(SchedulerError, match="odd local job id"):
        sched.cancel_command(["1234"])


def test_local_scheduler_slot_dir_is_expanded_remotely() -> None:
    assert '"${WFL_ASYNC_LOCAL_SLOTS:-$HOME/.wfl_async_slots}"' in LocalScheduler().status_command()
    assert 'slots="$HOME"/\'my slots\';' in LocalScheduler(slot_dir="~/my slots").status_command()
    with pytest.raises(SchedulerError, match="max_jobs"):
        LocalScheduler(max_jobs=0)


def test_local_status_skips_stale_entries(tmp_path: Path) -> None:
    # A registry entry whose pid is gone (or whose start time differs: a recycled pid)
    # is not listed, and is removed.
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "1.123456789123").write_text("running\n/x\n")  # pid 1 exists, start time 1 does not match
    (jobs / "999999999.5").write_text("queued\n/x\n")
    assert bash(LocalScheduler(slot_dir=str(tmp_path)).status_command()) == ""
    assert list(jobs.iterdir()) == []


# ---------------------------------------------------------------- transient errors
# Messages as the clients print them (Slurm 22.05 sbatch/squeue, SGE 8.1.9 qsub, PBS Pro qsub).
_COMPLAINTS = [
    ("slurm", "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation", "transient"),
    ("slurm", "sbatch: error: Batch job submission failed: Resource temporarily unavailable", "transient"),
    ("slurm", "sbatch: error: slurm_receive_msg: Socket timed out on send/recv operation", "transient"),
    ("slurm", "squeue: error: slurm_load_jobs error: Unable to contact slurm controller (connect failure)",
     "transient"),
    ("slurm", "sbatch: error: Batch job submission failed: slurmctld not responding", "transient"),
    ("slurm", "sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying.", "transient"),
    ("slurm", "sbatch: error: QOSMaxSubmitJobPerUserLimit\nsbatch: error: Batch job submission failed: Job "
              "violates accounting/QOS policy (job submit limit, user's size and/or time limits)", "limit"),
    ("slurm", "sbatch: error: AssocMaxSubmitJobLimit\nsbatch: error: Batch job submission failed: Job violates "
              "accounting/QOS policy (job submit limit, user's size and/or time limits)", "limit"),
    ("slurm", "sbatch: error: Batch job submission failed: Invalid partition name specified", None),
    ("slurm", "sbatch: error: Batch job submission failed: Requested node configuration is not available", None),
    ("sge", "error: commlib error: got select error (Connection refused)\nUnable to run job: unable to send "
            "message to qmaster.\nExiting.", "transient"),
    ("sge", "Unable to run job: failed receiving gdi request response for mid=1 (got no message).", "transient"),
    ("sge", "Unable to run job: job rejected: Only 100 jobs are allowed per user (current job count: 100)\n"
            "Exiting.", "limit"),
    ("sge", "Unable to run job: Job was rejected because job requests unknown queue \"nosuch\".", None),
    ("pbs", "qsub: Maximum number of jobs already in queue for user", "limit"),
    ("pbs", "Connection refused\nqsub: cannot connect to server pbsserver (errno=111)", "transient"),
    ("pbs", "qsub: Unknown queue", None),
]


@pytest.mark.parametrize(("name", "text", "kind"), _COMPLAINTS)
def test_scheduler_complaints_are_classified_as_transient_limit_or_final(name: str, text: str,
                                                                          kind: str | None) -> None:
    assert get_scheduler(name).classify_error(text) == kind


def test_an_id_printed_beside_an_error_counts_as_submitted() -> None:
    # sbatch took the job, then the answer was a timeout: the job is queued, never resubmitted
    records = SlurmScheduler().parse_submit_output(
        "0\t1\tSubmitted batch job 412\nsbatch: error: Socket timed out on send/recv operation\n"
        "@@wfl_async_submitted@@\n1\t75\t@@wfl_async_unresolved@@ \n@@wfl_async_submitted@@\n", 3)
    assert records[0].remote_id == "412"
    assert records[1].remote_id is None and records[1].unresolved
    assert records[2].unresolved  # no record at all: may or may not have been submitted


def test_slurm_find_output_maps_working_directories_to_ids() -> None:
    found = SlurmScheduler().parse_find_output("101 /runs/p/job-a\n102 /runs/p/job b/\n\n")
    assert found == {"/runs/p/job-a": "101", "/runs/p/job b": "102"}
