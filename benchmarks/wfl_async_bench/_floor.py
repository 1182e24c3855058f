"""The floor: the same job scripts submitted by a plain loop on the cluster side.

Our run leaves its rendered job scripts and staged task files in ``<remote root>/<job dir>``.
A bash script on the cluster copies each job's script and task file into a fresh
directory (pointing the script's ``cd`` at the copy), then, with the clock running, does
``for d in ...; do (cd $d && sbatch job.script.slurm); done`` and waits until every
directory holds a final marker, checking the files directly. Nothing here goes through
our transport while the clock runs: when the system is this machine the script runs as
the system's user (``runuser -l`` when we are root and that user is another one);
otherwise it is started with one ssh command and times itself on the cluster side, so
the ssh start-up is not in its figures either.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
from collections.abc import Sequence

import anyio

from wfl_async.jobs import layout
from wfl_async.system import System

from ._figures import RunFigures

__all__ = ["floor_script", "run_floor"]


def floor_script(src_root: str, dst_root: str, job_dirs: Sequence[str], *, script_name: str,
                 submit_program: str, pre_submit: Sequence[str], job_timeout: float, keep: bool) -> str:
    """Bash text: copy the jobs, then submit them in a plain loop and wait for every final marker.

    A background loop checks the marker files every 20 ms from the first submission on.
    Prints ``<event> <epoch seconds>`` for start, submitted, first, done, then counts.
    """
    prefix = "".join(f"{cmd} && " for cmd in pre_submit)
    dirs = " ".join(shlex.quote(d) for d in job_dirs)
    src, dst = shlex.quote(src_root), shlex.quote(dst_root)
    script, task = shlex.quote(script_name), shlex.quote(layout.TASK)
    ok, bad = shlex.quote(layout.SUCCEEDED), shlex.quote(layout.FAILED)
    return f"""set -u
src={src}; dst={dst}
dirs=({dirs})
rm -rf "$dst" && mkdir -p "$dst" || exit 3
for d in "${{dirs[@]}}"; do
    mkdir "$dst/$d" && cp "$src/$d/"{task} "$dst/$d/" \\
        && sed "s|$src/|$dst/|g" "$src/$d/"{script} > "$dst/$d/"{script} || {{ echo "copy_failed $d"; exit 3; }}
done
cd "$dst" || exit 3
stamp() {{ echo "$1 ${{EPOCHREALTIME:-$(date +%s.%N)}}"; }}
watch() {{  # in the background from the start, so a job finishing during the loop is seen then
    local pending=("${{dirs[@]}}") still first="" deadline=$((SECONDS + {int(job_timeout)}))
    while [ ${{#pending[@]}} -gt 0 ] && [ $SECONDS -lt $deadline ]; do
        still=()
        for d in "${{pending[@]}}"; do
            if [ -e "$d/"{ok} ] || [ -e "$d/"{bad} ]; then
                [ -n "$first" ] || {{ first=1; stamp first; }}
            else
                still+=("$d")
            fi
        done
        pending=("${{still[@]+"${{still[@]}}"}}")
        [ ${{#pending[@]}} -eq 0 ] || sleep 0.02
    done
    stamp done
    echo "pending ${{#pending[@]}}"
}}
submit_failures=0
stamp start
watch > watch.log &
watcher=$!
for d in "${{dirs[@]}}"; do (cd "$d" && {prefix}{submit_program} {script}) || submit_failures=$((submit_failures + 1)); done >submit.log 2>&1
stamp submitted
wait $watcher
cat watch.log
echo "submit_failures $submit_failures"
echo "failed $(ls -d */{bad} 2>/dev/null | wc -l)"
{'' if keep else 'cd / && rm -rf "$dst"'}
"""


async def _launcher(system: System) -> tuple[list[str] | None, str]:
    """How to run bash on the cluster side: local argv, or None for one ssh command."""
    if system.config.host is None:
        return ["bash", "-s"], "local bash"
    probe = await system.transport.run("id -un; cat /etc/machine-id 2>/dev/null || hostname")
    lines = probe.stdout.decode().split()
    user, machine = (lines + ["", ""])[:2]
    try:
        here = (await anyio.Path("/etc/machine-id").read_text()).strip()
    except OSError:
        here = socket.gethostname()
    if machine != here:
        return None, "one ssh command; the script times itself on the cluster side"
    if user == _local_user():
        return ["bash", "-s"], "local bash (the system is this machine)"
    if os.geteuid() == 0:
        return ["runuser", "-l", user, "-c", "bash -s"], f"runuser -l {user} (the system is this machine)"
    return None, "one ssh command; the script times itself on the cluster side"


def _local_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


async def run_floor(system: System, src_root: str, job_dirs: Sequence[str], *, job_timeout: float,
                    keep: bool = False) -> RunFigures:
    """Submit copies of our rendered jobs with a plain loop on the cluster side and time it."""
    figures = RunFigures(implementation=f"floor (plain {system.scheduler.submit_program} loop)",
                         system=system.name, jobs=len(job_dirs))
    script = floor_script(src_root, f"{src_root}__floor", job_dirs, script_name=system.scheduler.script_name,
                          submit_program=system.scheduler.submit_program,
                          pre_submit=system.config.pre_submit_cmds, job_timeout=job_timeout, keep=keep)
    argv, how = await _launcher(system)
    figures.notes.append(f"run by {how}")
    if argv is None:
        result = await system.transport.run("bash -s", stdin=script.encode(), check=False)
        output, returncode, errors = result.stdout.decode(), result.returncode, result.stderr.decode()
    else:
        process = await anyio.run_process(argv, input=script.encode(), check=False, cwd="/")
        output, returncode, errors = process.stdout.decode(), process.returncode, process.stderr.decode()
    events: dict[str, str] = {}
    for line in output.splitlines():
        key, _, value = line.partition(" ")
        events.setdefault(key, value)
    if returncode != 0 or "done" not in events:
        figures.notes.append(f"floor script failed (exit {returncode}): {(output + errors).strip()[-500:]}")
        print(figures.notes[-1], file=sys.stderr)
        return figures
    start = float(events["start"])
    figures.submit_all_s = float(events["submitted"]) - start
    figures.first_result_s = float(events["first"]) - start if "first" in events else None
    figures.all_results_s = float(events["done"]) - start
    pending, failed = int(events.get("pending", 0)), int(events.get("failed", 0))
    figures.failed = pending + failed + int(events.get("submit_failures", 0))
    figures.ok = len(job_dirs) - pending - failed
    figures.scheduler_calls = len(job_dirs)
    if pending:
        figures.notes.append(f"{pending} jobs had no final marker after {job_timeout:.0f} s")
    return figures
