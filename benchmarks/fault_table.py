"""Issue 7's fault table, measured: one small workflow run clean, then once under each fault.

Against the real daemons of ``scripts/testinfra/start_all.sh`` (Slurm reached over the shared
sshd as ``slurm_ssh``, and the built-in ``local`` system where the fault is local-only), each
row runs the workflow of ``benchmarks/fault_workflow.py`` (24 queued chunks of an
autoparallelized op with an 8 MB staged input, or 24 jobs with 4 MB results for the fetch
fault) in a driver process of its own, with a fresh jobs database, and injects its fault with
the tests' own tools (``tests/helpers/faulty_scheduler.py``'s wrappers on the system's PATH,
``tests/helpers/sshd.py``'s sshd kills and own sshd, ``tests/helpers/processes.py``'s kill at a
moment and held database lock). For each it prints:

* **tried**: how often the fault fired (the wrappers log each failure they inject; a kill or a
  signal counts when it landed during the phase it aims at);
* **survived**: the driver returned the right output with no rerun, or with the one rerun the
  fault needs (after a kill -9 or a Ctrl-C of the driver);
* **results lost** / **wrong results**: configurations missing from the output / differing from
  a serial run of the same function in this process;
* **duplicate submissions**: job directories the scheduler took more than once, from Slurm's
  own job completion log (``JobCompLoc``, one line per job with its ``WorkDir``, read once no
  job of the row is left in ``squeue``); on ``local`` (no accounting) chunks the jobs
  themselves logged as executed more than once;
* **time lost**: the row's wall time (first driver start to last driver end) minus the clean
  run's of the same workflow on the same system, in the same invocation.

A benchmark, not a test (it is not collected by pytest)::

    source /tmp/wfl_async_testinfra/env.sh   # or a checkout's env.sh
    python benchmarks/fault_table.py --json fault_table.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fault_workflow as wf  # noqa: E402  (next to this script)

from tests.helpers.faulty_scheduler import faulty_system, injected  # noqa: E402
from tests.helpers.processes import alive, hold_sqlite_write_lock, kill_during, wait_for_process  # noqa: E402
from tests.helpers.sshd import OwnSshd, kill_sshd, wait_and_kill_serving_sshd  # noqa: E402
from wfl_async.session import DB_NAME  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = Path(__file__).with_name("fault_workflow.py")
JOBCOMP = Path("/tmp/wfl_async_testinfra/slurm/jobcomp.txt")
"""Slurm's own record of every finished job (``JobCompType=jobcomp/filetxt`` of the test Slurm)."""


@dataclass
class Row:
    """One fault's measured outcome."""

    fault: str
    system: str
    workload: str
    tried: int = 0
    survived: str = "no"
    lost: int = 0
    wrong: int = 0
    duplicates: int | None = 0
    seconds: float = 0.0
    time_lost: float | None = None
    executed_twice: int = 0
    load: float = 0.0
    """The machine's 1-minute load average when the row started (2 cores, shared)."""
    notes: list[str] = field(default_factory=list)


@dataclass
class Driver:
    """A started driver process and where its stderr goes."""

    proc: subprocess.Popen[bytes]
    stderr: Path

    def wait(self, timeout: float = 900) -> int:
        return self.proc.wait(timeout=timeout)

    def error_tail(self) -> str:
        """The error the driver ended with (its last line naming one), shortened."""
        lines = [line.strip() for line in self.stderr.read_text(errors="replace").splitlines() if line.strip()]
        named = [line for line in lines if "Error" in line or "error:" in line]
        return (named or lines or [""])[-1][:300]


class Bench:
    """Everything the rows share: the source config, the inputs, the serial answers, the clean times."""

    def __init__(self, args: argparse.Namespace, top: Path) -> None:
        self.args = args
        self.top = top
        self.uid = uuid.uuid4().hex[:6]
        self.count = 0
        self.source = json.loads((Path(os.environ["EXPYRE_ROOT"]) / "config.json").read_text())
        self.input = top / "input.bin"
        self.input.write_bytes(os.urandom(args.input_mb * 1024 * 1024))
        self.serial_autopara = wf.serial_autopara(args.chunks, self.input, top / "serial.log")
        self.serial_bigresult = wf.serial_bigresult(args.chunks, args.result_kb * 1024)
        self.rng = random.Random()
        self.rows: list[Row] = []

    # --- one row's set-up ---------------------------------------------------------------

    @contextmanager
    def row(self, fault: str, system: str, workload: str = "autopara") -> Iterator[Run]:
        self.count += 1
        run = Run(self, fault, system, workload, f"ft{self.uid}r{self.count:02d}")
        print(f"[{time.strftime('%H:%M:%S')}] {fault} on {system} ...", file=sys.stderr, flush=True)
        try:
            yield run
        except Exception as error:  # a benchmark reports what broke and goes on with the next fault
            run.row.notes.append(f"harness error: {error!r}"[:300])
            run.harness_failed = True
        run.finish()
        print(f"    {summary(run.row)}", file=sys.stderr, flush=True)
        self.rows.append(run.row)

    def settle(self) -> None:
        """Each row's time lost: its wall time minus the mean of the clean runs of its workflow and system
        (one before the faults, one after them; on a shared machine their difference is the noise)."""
        clean: dict[tuple[str, str], list[float]] = {}
        for row in self.rows:
            if row.fault.startswith(CLEAN) and row.survived == "yes":
                clean.setdefault((row.workload, row.system), []).append(row.seconds)
        for row in self.rows:
            times = clean.get((row.workload, row.system))
            if times and row.seconds and row.survived.startswith("yes"):  # a failed run lost the workflow
                row.time_lost = row.seconds - sum(times) / len(times)


class Run:
    """One row: its own EXPYRE_ROOT (config and jobs database), its directory, its job name."""

    def __init__(self, bench: Bench, fault: str, system: str, workload: str, tag: str) -> None:
        self.bench, self.tag = bench, tag
        self.row = Row(fault, system, workload, load=os.getloadavg()[0])
        self.dir = bench.top / tag
        self.dir.mkdir()
        self.shared = self.dir / "shared"  # written by the jobs (wfltest over ssh) and the wrappers
        self.shared.mkdir()
        self.shared.chmod(0o1777)
        self.root = self.dir / "_expyre"
        self.root.mkdir()
        (self.root / "config.json").write_text(json.dumps(bench.source, indent=1))
        os.link(bench.input, self.dir / "input.bin")
        self.system = system
        self.output = self.dir / ("out.xyz" if workload == "autopara" else "digests.json")
        self.jobcomp_offset = JOBCOMP.stat().st_size if JOBCOMP.exists() else 0
        self.started: float | None = None
        self.ended: float | None = None
        self.drivers: list[Driver] = []
        self.reruns = 0
        self.harness_failed = False
        self.survived_as = "yes"
        """What a right output with no rerun is called (the claim row's second driver is its design)."""
        self.ok: bool | None = None
        """Whether the row's last driver (both, for two drivers) exited 0."""
        self.limit_backoff: list[float] | None = None

    @property
    def log(self) -> Path:
        return self.shared / "executions.log"

    @property
    def rundir(self) -> str:
        config = json.loads((self.root / "config.json").read_text())
        return str(config["systems"][self.system]["rundir"])

    def add_system(self, name: str, base: str, **changes: Any) -> None:
        """A copy of system ``base`` as ``name`` in this row's config, with ``changes``."""
        config = json.loads((self.root / "config.json").read_text())
        config["systems"][name] = {**config["systems"][base], **changes}
        (self.root / "config.json").write_text(json.dumps(config, indent=1))
        self.system = name

    def spec(self) -> dict[str, Any]:
        args = self.bench.args
        return {"workload": self.row.workload, "output": str(self.output), "configs": args.chunks,
                "result_size": args.result_kb * 1024, "limit_backoff": self.limit_backoff,
                "remote_info": {"sys_name": self.system, "job_name": self.tag,
                                "resources": {"num_cores": 1, "max_time": "10m"}, "partial_node": True,
                                "num_inputs_per_queued_job": 1, "check_interval": args.check_interval,
                                "input_files": ["input.bin"],
                                "env_vars": [f"WFL_TEST_RUN_LOG={self.log}", "WFL_TEST_INPUT=input.bin",
                                             f"WFL_TEST_SLEEP={args.chunk_seconds}"]}}

    def start(self, new_session: bool = False) -> Driver:
        """Start a driver (the workflow script) in this row's directory and EXPYRE_ROOT."""
        if self.started is None:
            self.started = time.monotonic()
        stderr = self.dir / f"driver{len(self.drivers)}.err"
        with stderr.open("wb") as err:
            proc = subprocess.Popen([sys.executable, str(WORKFLOW), json.dumps(self.spec())], cwd=self.dir,
                                    # the commands' text where the fault injector finds them (shell_session.py)
                                    env=dict(os.environ, EXPYRE_ROOT=str(self.root), PYTHONPATH=str(REPO),
                                             WFL_ASYNC_SHOW_COMMANDS="1"),
                                    stdout=subprocess.DEVNULL, stderr=err, start_new_session=new_session)
        driver = Driver(proc, stderr)
        self.drivers.append(driver)
        return driver

    def rerun(self) -> Driver:
        self.reruns += 1
        return self.start()

    def finished(self, driver: Driver) -> bool:
        """Wait for ``driver``; whether it exited 0. Marks the end of the row's wall time."""
        code = driver.wait()
        self.ended = time.monotonic()
        if code != 0:
            self.row.notes.append(f"driver exit {code}: {driver.error_tail()}")
        self.ok = code == 0
        return self.ok

    def stderr_text(self) -> str:
        return "".join(d.stderr.read_text(errors="replace") for d in self.drivers)

    def finish(self) -> None:
        """Measure the row: output against the serial run, executions, Slurm's accounting, time."""
        for driver in self.drivers:  # a harness error may leave one running
            if driver.proc.poll() is None:
                driver.proc.kill()
                driver.proc.wait()
        row, bench = self.row, self.bench
        if row.workload == "autopara":
            check = wf.check_autopara(self.output, bench.serial_autopara)
        else:
            check = wf.check_bigresult(self.output, bench.serial_bigresult)
        row.lost, row.wrong = check.lost, check.wrong
        ran = wf.executions(self.log)
        row.executed_twice = sum(c - 1 for c in ran.values() if c > 1)
        if self.harness_failed:
            row.survived = "not measured"
        elif self.ok and check.lost == 0 and check.wrong == 0:
            row.survived = (self.survived_as if self.reruns == 0
                            else f"yes, {self.reruns} rerun{'s' * (self.reruns > 1)}")
        if self.system == "local" or self.bench.source["systems"].get(self.system, {}).get("scheduler") == "local":
            row.duplicates = row.executed_twice
        else:
            row.duplicates = self.slurm_duplicates()
            if row.executed_twice:
                row.notes.append(f"{row.executed_twice} extra executions in the jobs' own log")
        if self.started is not None and self.ended is not None:
            row.seconds = self.ended - self.started

    def slurm_duplicates(self) -> int | None:
        """Job directories of this row that Slurm ran more than once, from its completion log."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # a late duplicate must be finished (and logged) to be counted
            queued = subprocess.run(["squeue", "--noheader", "--format=%Z"], capture_output=True, text=True)
            if queued.returncode == 0 and self.tag not in queued.stdout:
                break
            time.sleep(1)
        else:
            self.row.notes.append("jobs still in squeue after 60 s")
        time.sleep(1)  # slurmctld writes the completion line as the job leaves
        if not JOBCOMP.exists():
            self.row.notes.append("no Slurm job completion log")
            return None
        with JOBCOMP.open("rb") as f:
            f.seek(self.jobcomp_offset)
            lines = f.read().decode(errors="replace").splitlines()
        workdirs = [field.split("=", 1)[1] for line in lines for field in line.split()
                    if field.startswith("WorkDir=") and f"/{self.tag}" in field]
        submissions = len(workdirs)
        self.row.notes.append(f"{submissions} Slurm jobs")
        return submissions - len(set(workdirs))


# --- the faults -----------------------------------------------------------------------------


CLEAN = "none (clean run"


def clean(bench: Bench, system: str, workload: str, when: str) -> None:
    with bench.row(f"{CLEAN}, {when})", system, workload) as run:
        run.finished(run.start())


def scheduler_fault(bench: Bench, fault: str, *, mode: str = "none", every: int = 4,
                    status_fails: str | None = None) -> None:
    """A wrapper in front of ``sbatch``/``squeue`` on the PATH of a copy of ``slurm_ssh``."""
    with bench.row(fault, "slurm_ssh") as run:
        state = run.shared / "faults"
        state.mkdir()
        state.chmod(0o1777)  # the wrappers run as the ssh user and keep their counts here
        run.system = faulty_system(run.root, state, "slurm", mode=mode, every=every, status_fails=status_fails,
                                   base="slurm_ssh")
        (state / "bin").chmod(0o755)
        if mode == "limit":
            run.limit_backoff = list(bench.args.limit_backoff)
            run.row.notes.append(f"refused while 3 jobs unfinished; limit backoff {bench.args.limit_backoff} s")
        run.finished(run.start())
        run.row.tried = len(injected(state))


def sshd_child_killed(bench: Bench, phase: str, label: str, marker: Callable[[Run], str],
                      after_a_job_started: bool = False) -> None:
    """SIGKILL the sshd process serving the driver's connection, during ``phase``.

    :param marker: what the driver's command for the phase names (see :func:`tests.helpers.sshd.is_phase`)
    :param after_a_job_started: look for the phase only once a job has started (a ``squeue``
        then is the poll loop's)
    """
    with bench.row(f"sshd child serving the connection killed during {label}", "slurm_ssh") as run:
        driver = run.start()
        while after_a_job_started and driver.proc.poll() is None and not run.log.exists():
            time.sleep(0.05)
        seen = wait_and_kill_serving_sshd(phase, marker(run), driver.proc, kill_sshd)
        run.row.tried = int(seen["killed"] is not None)
        run.finished(driver)
        text = run.stderr_text()
        if "not safe to repeat" in text:
            run.row.notes.append("the command in flight was not run again (not declared safe to repeat)")
        elif "dropped during a command" not in text:
            run.row.notes.append("no command was in flight at the drop")


def sshd_stopped(bench: Bench, outage: float) -> None:
    """A test-owned sshd (listener and sessions) stopped for ``outage`` s once jobs are being submitted."""
    with bench.row(f"sshd stopped {outage:.0f} s during submission", "slurm_ssh") as run:
        own = OwnSshd(run.dir / "own_sshd")
        own.start()
        try:
            run.add_system("own_sshd", "slurm_ssh", host=own.alias, ssh_config=str(own.ssh_config))
            driver = run.start()

            def stop(_: int) -> None:
                own.stop()

            seen = wait_and_kill_serving_sshd("sbatch", run.tag, driver.proc, stop)
            if seen["killed"] is not None:
                run.row.tried = 1
                time.sleep(outage)
                own.start()
            run.finished(driver)
        finally:
            own.stop()
        run.row.notes.append("via its own sshd on a free loopback port")


def killed_during(bench: Bench, label: str, workload: str, phase: Callable[[Run], list[str]],
                  within: float) -> None:
    """kill -9 of the driver at a random moment of a phase (up to 3 tries until one lands during it), rerun."""
    with bench.row(f"kill -9 of the driver during {label}, then rerun", "slurm_ssh", workload) as run:
        landed = []
        for _ in range(3):
            landed.append(kill_during(run.start().proc, phase(run), bench.rng, within=within))
            if landed[-1] in ("during", "finished first"):
                break
        run.row.tried = landed.count("during")
        run.row.notes.append(f"kills: {', '.join(landed)}")
        if landed[-1] == "finished first":
            run.finished(run.drivers[-1])
        else:
            run.finished(run.rerun())


def ctrl_c_local(bench: Bench) -> None:
    """SIGINT to the driver's whole process group (a terminal's Ctrl-C) while it submits on ``local``, rerun."""
    with bench.row("Ctrl-C (SIGINT to the process group) while submitting, then rerun", "local") as run:
        driver = run.start(new_session=True)
        # the local system's submit command: it takes the jobs' submit locks
        pid = wait_for_process(lambda argv: any("_wfl_async_submit.lock" in a and run.tag in a for a in argv),
                               timeout=120, stop=lambda: driver.proc.poll() is not None)
        if pid is not None:
            time.sleep(bench.rng.uniform(0, 0.05))
            run.row.tried = int(alive(pid))
            os.killpg(driver.proc.pid, signal.SIGINT)
        driver.wait()
        if driver.proc.returncode == 0:
            run.finished(driver)
            run.row.notes.append("finished before the interrupt")
        else:
            run.finished(run.rerun())


def _claims(db: Path, pid: int) -> int:
    """How many jobs process ``pid`` has claimed and not yet submitted (read-only; WAL lets us read)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            rows = conn.execute("SELECT owner, status FROM jobs").fetchall()
    except sqlite3.Error:
        return 0
    return sum(1 for owner, status in rows if owner and f":{pid}:" in owner and status == "created")


def claimer_died(bench: Bench, stopped_for: float) -> None:
    """The first driver SIGSTOPped once it has claimed jobs, a second driver started, the first SIGKILLed."""
    with bench.row("claiming driver SIGSTOPped, then SIGKILLed; a second driver", "slurm_ssh") as run:
        first = run.start()
        deadline = time.monotonic() + 120
        claimed = 0
        while time.monotonic() < deadline and first.proc.poll() is None:
            claimed = _claims(run.root / DB_NAME, first.proc.pid)
            if claimed:
                first.proc.send_signal(signal.SIGSTOP)
                break
            time.sleep(0.01)
        run.row.tried = int(claimed > 0)
        run.row.notes.append(f"{claimed} jobs claimed, not submitted, when stopped; stopped {stopped_for:.0f} s")
        second = run.start()
        run.survived_as = "yes (the second driver)"
        time.sleep(stopped_for)
        first.proc.kill()
        first.proc.wait()
        run.finished(second)


def db_held(bench: Bench, hold: float) -> None:
    """Another process holds the jobs database's write transaction for ``hold`` s while jobs run."""
    with bench.row(f"jobs database write-locked {hold:.0f} s by another process", "slurm_ssh") as run:
        driver = run.start()
        while driver.proc.poll() is None and not run.log.exists():  # a job has started: the workflow is under way
            time.sleep(0.05)
        if driver.proc.poll() is None:
            holder = hold_sqlite_write_lock(run.root / DB_NAME, hold)
            try:
                run.row.tried = 1
                time.sleep(min(5.0, hold / 2))
                listing = subprocess.run([sys.executable, "-m", "wfl_async.cli", "ls", "--json"], capture_output=True,
                                         env=dict(os.environ, EXPYRE_ROOT=str(run.root), PYTHONPATH=str(REPO)))
                run.row.notes.append(f"`wfl-async ls` during the hold: exit {listing.returncode}")
                run.finished(driver)
            finally:
                holder.kill()
                holder.wait()
        else:
            run.finished(driver)
        text = run.stderr_text()
        if "OperationalError" in text:
            run.row.notes.append("sqlite3.OperationalError in the driver's output")
        elif "is locked by another process" in text:
            run.row.notes.append("writes waited for the lock (logged as a warning)")


def two_drivers(bench: Bench) -> None:
    """The same workflow started twice at once on the same output."""
    with bench.row("two drivers started together on the same output", "slurm_ssh") as run:
        drivers = [run.start(), run.start()]
        run.row.tried = 1
        ended: dict[int, float] = {}
        while len(ended) < len(drivers):
            ended.update({i: time.monotonic() for i, d in enumerate(drivers) if i not in ended and d.proc.poll() is not None})
            time.sleep(0.05)
        codes = [d.wait() for d in drivers]
        run.ended = max(ended.values())
        assert run.started is not None
        run.row.notes.append("drivers ended after " + ", ".join(f"{ended[i] - run.started:.1f} s" for i in sorted(ended)))
        reused = sum("Reusing existing output" in d.stderr.read_text(errors="replace") for d in drivers)
        run.row.notes.append(f"exit codes {codes}; {reused} reused the other's output")
        run.ok = not any(codes)  # survived only if both returned the output
        if not run.ok:
            run.row.notes.append(f"driver error: {[d.error_tail() for d in drivers if d.proc.returncode]}")


# --- the report ----------------------------------------------------------------------------

COLUMNS = ("fault", "system", "workflow", "tried", "survived", "results lost", "wrong results", "duplicate submissions",
           "time lost", "load", "notes")


def cells(row: Row) -> list[str]:
    time_lost = "n/a" if row.time_lost is None else f"{row.time_lost:+.1f} s"
    return [row.fault, row.system, row.workload, str(row.tried), row.survived, str(row.lost), str(row.wrong),
            "?" if row.duplicates is None else str(row.duplicates), f"{time_lost} (run {row.seconds:.1f} s)",
            f"{row.load:.1f}", "; ".join(row.notes)]


def summary(row: Row) -> str:
    return " | ".join(cells(row))


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=24, help="queued chunks (configurations, one per chunk)")
    parser.add_argument("--check-interval", type=float, default=1.0)
    parser.add_argument("--chunk-seconds", type=float, default=1.0, help="how long each chunk computes")
    parser.add_argument("--input-mb", type=int, default=8, help="size of the staged input file")
    parser.add_argument("--result-kb", type=int, default=4096, help="size of each result of the fetch workload")
    parser.add_argument("--outage", type=float, default=30.0, help="sshd outage during submission (s)")
    parser.add_argument("--db-hold", type=float, default=120.0, help="jobs database write-lock hold (s)")
    parser.add_argument("--stopped-for", type=float, default=5.0, help="how long the claiming driver stays stopped")
    parser.add_argument("--limit-backoff", type=float, nargs=2, default=(2.0, 4.0), metavar=("FIRST", "LONGEST"),
                        help="retry wait after a limit refusal, as the tests set it (the library: 15 300)")
    parser.add_argument("--only", help="comma-separated: run only the faults whose name contains one of these "
                                       "(and the clean runs they are compared with)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--keep", action="store_true", help="keep the rows' directories (driver logs)")
    args = parser.parse_args()

    top = Path(tempfile.mkdtemp(prefix="wfl_async_fault_table_", dir="/tmp"))
    top.chmod(0o711)  # the ssh user reaches the rows' shared directories
    load_before = os.getloadavg()
    started = time.monotonic()
    bench = Bench(args, top)
    faults: list[tuple[str, Callable[[], None]]] = [
        ("sbatch timeout 1 in 4", lambda: scheduler_fault(
            bench, "sbatch fails 1 call in 4 (Socket timed out, exit 1)", mode="fail", every=4)),
        ("sbatch answer lost", lambda: scheduler_fault(
            bench, "sbatch submits, then exits 1 with no answer (1 call in 4)", mode="submit_and_drop", every=4)),
        ("submit limit", lambda: scheduler_fault(
            bench, "submit-limit refusal (QOSMaxSubmitJobPerUserLimit) while 3 jobs unfinished", mode="limit",
            every=1)),
        ("squeue failing", lambda: scheduler_fault(
            bench, "squeue fails 1 call in 3 (Socket timed out)", status_fails="[ $((n % 3)) -eq 0 ]")),
        ("sshd child submission", lambda: sshd_child_killed(bench, "sbatch", "submission", lambda run: run.tag)),
        ("sshd child polling", lambda: sshd_child_killed(bench, "poll", "polling", lambda run: run.rundir,
                                                         after_a_job_started=True)),
        # the check wfl-async doctor makes before a system's first submission: one command, whose
        # text names its sections; its programs (squeue, the Python probe) run under it
        ("sshd child first-submission check", lambda: sshd_child_killed(
            bench, "named", "the first-submission check", lambda run: "@@wfl_async_doctor")),
        ("sshd stopped", lambda: sshd_stopped(bench, args.outage)),
        ("kill staging", lambda: killed_during(
            bench, f"staging of the {args.input_mb} MB input", "autopara",
            lambda run: ["tar", ".wfl_async_upload.", run.rundir], within=0.3)),
        ("kill fetch", lambda: killed_during(
            bench, f"fetch of {args.result_kb} kB results", "bigresult",
            lambda run: ["tar", "--ignore-failed-read", run.rundir], within=0.05)),
        ("ctrl-c local", lambda: ctrl_c_local(bench)),
        ("claimer died", lambda: claimer_died(bench, args.stopped_for)),
        ("db hold", lambda: db_held(bench, args.db_hold)),
        ("two drivers", lambda: two_drivers(bench)),
    ]
    try:
        chosen = [(name, run) for name, run in faults
                  if not args.only or any(part in name for part in args.only.split(","))]
        baselines = [("slurm_ssh", "autopara")]
        baselines += [("slurm_ssh", "bigresult")] * any("fetch" in name for name, _ in chosen)
        baselines += [("local", "autopara")] * any("local" in name for name, _ in chosen)
        for system, workload in baselines:
            clean(bench, system, workload, "first")
        for _, run_fault in chosen:
            run_fault()
        for system, workload in baselines:
            clean(bench, system, workload, "last")
        bench.settle()
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", str(top)], check=False)
        else:
            print(f"rows' directories kept in {top}", file=sys.stderr)
    total = time.monotonic() - started
    print(markdown(bench.rows))
    print(f"\n{args.chunks} chunks, check_interval {args.check_interval} s, chunks compute {args.chunk_seconds} s; "
          f"whole run {total / 60:.1f} min; load average before {load_before[0]:.2f}, after "
          f"{os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    if args.json:
        args.json.write_text(json.dumps({"rows": [asdict(r) for r in bench.rows], "seconds": total,
                                         "load_before": load_before, "load_after": os.getloadavg(),
                                         "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))


if __name__ == "__main__":
    main()
