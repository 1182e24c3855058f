"""Job arrays: the shell text and parsers every scheduler shares; each scheduler gives only its syntax.

An array submission runs in its own directory under :data:`ARRAYS_DIR` (``docs/arrays.md``): a
dispatcher script and a task list naming each task's job directory, one a line, in task order.
Task *i* runs the ordinary job script of its line's directory. Each job directory keeps its own
submit lock and answer (:mod:`~wfl_async.scheduler.submit_lock`), the answer being
``ARRAY_TASK <task index> <submit output>``, so a rerun reads its own task id back. The syntax
(``--array=``, ``$SLURM_ARRAY_TASK_ID``, ``123_4``) is the
:class:`~wfl_async.scheduler.base.Scheduler`'s; these functions only assemble it. No I/O.
"""

from __future__ import annotations

import re
import shlex

from .submit_lock import KEEP_ANSWER, lock_or_earlier_answer

__all__ = ["ARRAYS_DIR", "ARRAY_FOUND", "ARRAY_TASK", "ARRAY_TASKS_FILE", "ARRAY_TASK_OUTPUT",
           "DEFAULT_MAX_ARRAY_SIZE", "expand_indices", "listing_with_tasks", "parse_found_task",
           "split_task_answer", "submit_command", "task_body"]

ARRAY_TASK = "@@wfl_async_array_task@@"
"""Starts the answer of one task of an array submission: ``ARRAY_TASK <task index> <submit output>``."""
ARRAY_FOUND = "@@wfl_async_array_found@@"
"""Starts a line of the find command's output naming one task of an array: ``<array id> <index> <dir>``."""
ARRAYS_DIR = "_wfl_async_arrays"
"""Directory under the remote root holding each array submission's dispatcher script and task list."""
ARRAY_TASK_OUTPUT = "job.array_task"
"""Base name of an array task's stdout/stderr files in its job directory."""
ARRAY_TASKS_FILE = "tasks"
"""In an array's directory: the job directory of each task, one a line, in task order."""
DEFAULT_MAX_ARRAY_SIZE = 1000
"""Tasks per array submission unless a system sets ``max_array_size``: fits Slurm's default
``MaxArraySize`` (1001: indices 0-1000), PBS Pro's ``max_array_size`` (10000) and SGE's
``max_aj_tasks`` (75000); above :data:`~wfl_async.scheduler.base.MAX_BATCH` a batch is the bound anyway."""
_ARRAY_TASK_ANSWER = re.compile(re.escape(ARRAY_TASK) + r" (\d+) ?(.*)$")


def task_body(index_variable: str, first_index: int, array_dir: str, script_exec: str, script_name: str) -> list[str]:
    """The lines of an array's script after its header: task *i* runs the job script of line *i*'s
    job directory, as a job submitted alone would, its output in ``ARRAY_TASK_OUTPUT.stdout`` and
    ``.stderr`` there."""
    tasks = shlex.quote(f"{array_dir}/{ARRAY_TASKS_FILE}")
    return [
        f"wfl_async_task={index_variable}",
        f'wfl_async_dir=$(sed -n "$((wfl_async_task - {first_index} + 1))p" {tasks})',
        'if [ -z "$wfl_async_dir" ] || ! cd "$wfl_async_dir"; then',
        f'    echo "wfl_async: array task $wfl_async_task has no job directory in {tasks}" >&2; exit 1',
        "fi",
        f"exec {script_exec} ./{shlex.quote(script_name)} > {ARRAY_TASK_OUTPUT}.stdout "
        f"2> {ARRAY_TASK_OUTPUT}.stderr",
    ]


def submit_command(*, prelude: str, array_dir: str, script: str, script_name: str, submit: str, first_index: int,
                   each_dir: str, record: str) -> str:
    """One shell command (a subshell) submitting the job directories of ``each_dir`` as one array.

    ``prelude`` sets ``$wfl_host`` and ``$wfl_me`` (the subshell holds its tasks' locks); ``script``
    goes to ``array_dir``/``script_name``; ``each_dir`` starts the loop over the job directories
    (``$i``, ``$d``) and ``record`` prints one job's record. The directories whose lock this command
    takes become the tasks, in order; ``submit`` (the program and its array option) is followed by
    the index range. Directories locked earlier answer from their earlier answer, as in a loop.
    """
    a, tasks, index = '"$wfl_a"', f'"$wfl_a/{ARRAY_TASKS_FILE}"', '"$wfl_a/index"'
    # the tasks' records in one write, not one each: each write was an ssh packet the driver read and
    # woke for by itself (issue 16's per-job cost); a record lost with the connection is found through
    # its job directory's kept answer, as any
    answers = '"$wfl_a/answers"'
    task_answer = f'out="{ARRAY_TASK} $t $out_all"'
    taken = f"printf '%s\\n' \"$d\" >> {tasks}.new; printf '%s\\n' \"$i\" >> {index}.new;"
    return (
        f"( {prelude} wfl_a={shlex.quote(array_dir)}; "
        f"mkdir -p {a} && printf '%s' {shlex.quote(script)} > {a}/{shlex.quote(script_name)} && "
        f": > {tasks}.new && : > {index}.new || exit 1; "
        f"{each_dir} {lock_or_earlier_answer(taken, record)} done; "
        f"if [ -s {tasks}.new ]; then mv -f {tasks}.new {tasks} && mv -f {index}.new {index} || exit 1; "
        f"n=$(wc -l < {tasks}); "
        f"out_all=$(cd {a} && {submit}{first_index}-$((n - 1 + {first_index})) "
        f"{shlex.quote(script_name)} </dev/null 2>&1); rc=$?; "
        f"t={first_index}; while IFS= read -r d && IFS= read -r i <&3; do {task_answer}; {KEEP_ANSWER} {record} "
        f"t=$((t + 1)); done < {tasks} 3< {index} > {answers}; cat {answers}; fi )"
    )


def split_task_answer(output: str) -> tuple[int | None, str]:
    """The task index of an array task's answer and the rest of it; (None, output) for a plain answer."""
    m = _ARRAY_TASK_ANSWER.match(output)
    return (int(m.group(1)), m.group(2)) if m else (None, output)


def listing_with_tasks(find: str, first_index: int) -> str:
    """``find`` (printing ``<id> <working directory>``), each array's line replaced by its tasks.

    An array runs in its own directory under :data:`ARRAYS_DIR`; its task list names each
    task's job directory, so a task queued by a submission whose answer was lost is found
    (every task of an array still listed is reported: a task already gone is then seen missing
    by the poll, as any job). The exit status is ``find``'s.
    """
    program = (
        f'{{ id = $1; wd = substr($0, length($1) + 2); if (index(wd, "/{ARRAYS_DIR}/")) {{ '
        'base = id; sub(/[_.[].*$/, "", base); arrays[wd] = base } else print id " " wd } '
        f'END {{ for (wd in arrays) {{ f = wd "/{ARRAY_TASKS_FILE}"; n = {first_index}; '
        f'while ((getline line < f) > 0) {{ print "{ARRAY_FOUND} " arrays[wd] " " n " " line; n++ }} '
        "close(f) } }"
    )
    return f"wfl_listing=$({find}) && printf '%s\\n' \"$wfl_listing\" | awk {shlex.quote(program)}"


def parse_found_task(line: str) -> tuple[str, int, str] | None:
    """``(array id, task index, working directory)`` of a task line of :func:`listing_with_tasks`, else None."""
    if not line.startswith(ARRAY_FOUND + " "):
        return None
    _, array_id, index, workdir = line.split(" ", 3)
    return array_id, int(index), workdir


def expand_indices(ranges: str) -> list[int]:
    """Task indices of a range list as schedulers print them: ``1-10:2``, ``0,4``, ``[0-3,7%2]``."""
    indices: list[int] = []
    for part in ranges.strip().strip("[]").split("%")[0].split(","):
        bounds, _, step = part.partition(":")
        first, _, last = bounds.partition("-")
        if not first.strip().isdigit() or (last and not last.strip().isdigit()) or (step and not step.isdigit()):
            continue
        indices.extend(range(int(first), int(last or first) + 1, int(step or 1) or 1))
    return indices
