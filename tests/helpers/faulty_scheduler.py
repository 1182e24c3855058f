"""Wrappers put in front of a real scheduler's submit and status programs, to inject its bad days.

Each wrapper is a program first on a test-owned system's PATH (its config.json entry's
``pre_submit_cmds``, after the system's own lines), calling the real program. The submit
wrapper logs every job directory the real program took, so a duplicate submission shows as
a directory listed twice. The complaints are each scheduler's own wording.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from wfl_async.jobs import layout

__all__ = ["FLAVOURS", "SLOW_SUBMIT_SECONDS", "Flavour", "accounted", "faulty_system", "injected", "status_calls",
           "submitted"]

SLOW_SUBMIT_SECONDS = 6
"""How long the ``slow`` submit wrapper waits before really submitting (a login node's bad day)."""


@dataclass(frozen=True)
class Flavour:
    """One scheduler of the test set-up: its base system, real programs and own complaints."""

    base: str
    submit: str
    real_submit: str
    status: str
    real_status: str
    submit_timeout: str
    status_timeout: str
    limit: str
    lists_workdirs: bool
    """False: a lost answer can only be resolved by the job's markers (PBS's qstat shows no directory)."""


FLAVOURS = {
    "slurm": Flavour(
        "slurm", "sbatch", "/usr/bin/sbatch", "squeue", "/usr/bin/squeue",
        "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation",
        "slurm_load_jobs error: Socket timed out on send/recv operation",
        "sbatch: error: QOSMaxSubmitJobPerUserLimit\nsbatch: error: Batch job submission failed: Job violates "
        "accounting/QOS policy (job submit limit, user's size and/or time limits)",
        lists_workdirs=True),
    "sge": Flavour(
        "sge", "qsub", "/usr/bin/qsub", "qstat", "/usr/bin/qstat",
        'error: commlib error: got read error (closing "sge-master/qmaster/1")\nUnable to run job: failed '
        "receiving gdi request response for mid=1 (got syncron message receive timeout error).",
        "error: failed receiving gdi request response for mid=1 (got syncron message receive timeout error).",
        "Unable to run job: job rejected: Only 3 jobs are allowed per user (current job count: 3)",
        lists_workdirs=True),
    "pbs": Flavour(
        "pbs", "qsub", "/opt/wfl_async_testinfra/pbs/bin/qsub", "qstat", "/opt/wfl_async_testinfra/pbs/bin/qstat",
        "qsub: cannot connect to server pbs01 (errno=111) Connection refused",
        "pbs_iff: cannot read reply from pbs_server\nqstat: cannot connect to server pbs01 (errno=15007)",
        "qsub: would exceed queue debug's per-user limit",
        lists_workdirs=False),
}

_COUNT = ('n=$(flock "$state/lock" bash -c \'n=$(( $(cat "$1/$2" 2>/dev/null || echo 0) + 1 )); '
          'echo $n > "$1/$2"; echo $n\' _ "$state" __COUNTER__)')

# "$@" = the submit program's own arguments; $PWD = the job directory.
_SUBMIT = r"""#!/bin/bash
state=__STATE__; mode=$(cat "$state/mode"); every=__EVERY__
__COUNT__
real() { out=$(__REAL__ "$@" 2>&1); rc=$?; [ $rc -eq 0 ] && echo "$PWD" >> "$state/submitted"; }
unfinished() {  # jobs this wrapper submitted that have no final marker yet
    k=0; while read -r d; do [ -e "$d/__SUCCEEDED__" ] || [ -e "$d/__FAILED__" ] || k=$((k+1)); done \
        < <(cat "$state/submitted" 2>/dev/null); echo $k; }
injected() { echo "$1" >> "$state/injected"; }
await_start() { for _ in $(seq 600); do [ -e __STARTED__ ] && return; sleep 0.1; done; }
if [ $((n % every)) -eq 0 ]; then
    case $mode in
        fail) injected fail; cat "$state/timeout" >&2; exit 1 ;;
        submit_then_fail) real "$@"; injected submit_then_fail; echo "$out"; cat "$state/timeout" >&2; exit 1 ;;
        submit_and_drop) real "$@"; __AWAIT__injected submit_and_drop; exit 1 ;;
        hang) injected hang; echo $$ >> "$state/hung"; sleep 600; exit 1 ;;
        submit_then_hang) real "$@"; injected submit_then_hang; echo $$ >> "$state/hung"; sleep 600; exit 1 ;;
        slow) injected slow; echo $$ >> "$state/slow"; sleep __SLOW__; real "$@"; echo "$out"; exit $rc ;;
        limit) if [ "$(unfinished)" -ge 3 ]; then injected limit; cat "$state/limit" >&2; exit 1; fi ;;
    esac
fi
real "$@"; echo "$out"; exit $rc
"""

_STATUS = r"""#!/bin/bash
state=__STATE__
__COUNT__
if __FAILS__; then echo status >> "$state/injected"; cat "$state/status_timeout" >&2; exit 1; fi
__ANSWER__
"""
_ANSWER_LATE = 'out=$(__REAL__ "$@"); rc=$?; sleep __DELAY__; printf \'%s\\n\' "$out"; exit $rc'
"""The status program's answer, ``__DELAY__`` s late: a listing older than it looks (a busy scheduler)."""


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def faulty_system(root: Path, state: Path, scheduler: str = "slurm", *, mode: str = "none", every: int = 4,
                  status_fails: str | None = None, status_delay: float = 0.0, grace: float = 5,
                  base: str | None = None) -> str:
    """Add to ``root``'s config.json a copy of ``scheduler``'s system with the wrappers first on PATH.

    :param mode: what the submit wrapper does on every ``every``-th call (see ``_SUBMIT``)
    :param status_fails: shell condition on the status call number ``$n`` under which the
        status program fails with the scheduler's transient complaint (None: never)
    :param status_delay: seconds the status program's answer is held back after the real
        program has answered (0: not)
    :param grace: the system's ``died_grace_seconds``
    :param base: the system to copy (default: the scheduler's direct one, e.g. ``slurm``; a
        ``*_ssh`` one runs the wrappers as its ssh user, so ``state`` must be writable by it)
    :returns: the new system's name
    """
    flavour = FLAVOURS[scheduler]
    bin_dir = state / "bin"
    bin_dir.mkdir(parents=True)
    (state / "mode").write_text(mode)
    (state / "timeout").write_text(flavour.submit_timeout + "\n")
    (state / "status_timeout").write_text(flavour.status_timeout + "\n")
    (state / "limit").write_text(flavour.limit + "\n")
    # without a working-directory listing only a marker tells that a lost answer's job was taken:
    # the dropped answer comes once the job has started (a drop while sbatch waits on a busy link)
    await_start = "" if flavour.lists_workdirs else "await_start; "
    _write(bin_dir / flavour.submit, _SUBMIT.replace("__COUNT__", _COUNT.replace("__COUNTER__", "count"))
           .replace("__STATE__", str(state)).replace("__EVERY__", str(every)).replace("__REAL__", flavour.real_submit)
           .replace("__AWAIT__", await_start).replace("__SLOW__", str(SLOW_SUBMIT_SECONDS)).replace("__SUCCEEDED__", layout.SUCCEEDED)
           .replace("__FAILED__", layout.FAILED).replace("__STARTED__", layout.STARTED))
    if status_fails is not None or status_delay:
        answer = _ANSWER_LATE.replace("__DELAY__", f"{status_delay:g}") if status_delay else 'exec __REAL__ "$@"'
        _write(bin_dir / flavour.status, _STATUS.replace("__COUNT__", _COUNT.replace("__COUNTER__", "status"))
               .replace("__STATE__", str(state)).replace("__FAILS__", status_fails or "false")
               .replace("__ANSWER__", answer).replace("__REAL__", flavour.real_status))
    config = json.loads((root / "config.json").read_text())
    base = base or flavour.base
    entry = dict(config["systems"][base])
    # last, so that the wrappers come before the system's own PATH lines (PBS's are a PATH line)
    entry["pre_submit_cmds"] = [*entry.get("pre_submit_cmds", []), f"export PATH={bin_dir}:$PATH"]
    entry["died_grace_seconds"] = grace
    name = f"{base}_{mode}{'_status' if status_fails else ''}{'_late' if status_delay else ''}"
    config["systems"][name] = entry
    (root / "config.json").write_text(json.dumps(config, indent=1))
    return name


def submitted(state: Path) -> list[str]:
    """Every job directory the real submit program took, once per submission."""
    path = state / "submitted"
    return path.read_text().split() if path.exists() else []


def injected(state: Path) -> list[str]:
    """Each failure the wrappers injected, in order: the mode (``fail``, ``limit``, ...) or ``status``."""
    path = state / "injected"
    return path.read_text().split() if path.exists() else []


def status_calls(state: Path) -> int:
    """How often the status wrapper was called."""
    path = state / "status"
    return int(path.read_text()) if path.exists() else 0


_ACCOUNTING = {
    # the PBS-style commands run on Slurm: its accounting (jobcomp file) lists their jobs too
    "slurm": "sacct -c -n -P -o JobName", "pbs": "sacct -c -n -P -o JobName",
    "sge": "qacct -j '*' 2>/dev/null | awk '$1 == \"jobname\" {print $2}'",
}


def accounted(scheduler: str, names: list[str]) -> dict[str, int]:
    """How often each of ``names`` ran, by the scheduler's own accounting of finished jobs (not ours).

    SGE and PBS jobs are named ``N_<name>`` in the queue (a name must start with a letter).
    """
    listing = subprocess.run(["bash", "-c", _ACCOUNTING[scheduler]], capture_output=True, text=True,
                             check=False).stdout.split()  # sacct complains on stderr about odd old records
    prefix = "" if scheduler == "slurm" else "N_"
    return {name: listing.count(prefix + name) for name in names}
