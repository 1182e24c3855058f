"""One command per system that asks everything a queued job will rely on (see the package doc)."""

from __future__ import annotations

import logging
import shlex
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from ..errors import TransportError
from ..system.problems import Problem, rundir_problem
from ..system.submit import retry_delay
from ..transport.connect_failure import ConnectFailed
from .versions import PROBE_SCRIPT, compare_versions, local_versions, parse_probe

if TYPE_CHECKING:
    from ..system import System

__all__ = ["SystemReport", "check_system", "inspect_system"]

log = logging.getLogger(__name__)

_SECTION = "@@wfl_async_doctor"

STATUS_TRIES = 4
"""How often the scheduler's commands are asked when they answer with a transient complaint
(a busy controller's "Socket timed out"): after that, a warning, not an error, since the
submit and poll loops retry such complaints themselves."""


def _section(name: str, body: str) -> str:
    """Shell text running ``body`` in a subshell, its output then ``@@wfl_async_doctor NAME RC``."""
    return f"( {body}\n) 2>&1; printf '\\n%s %s %s\\n' {_SECTION} {name} $?"


def _scheduler_check(system: System) -> str:
    """Shell text: the submit and cancel programs exist, and the status command answers."""
    programs = {system.scheduler.submit_program.split()[0], system.scheduler.cancel_program.split()[0]}
    return system.scheduler_prefix() + " && ".join(
        [*(f"command -v {shlex.quote(p)} >/dev/null || {{ echo \"{p}: command not found\"; exit 127; }}"
           for p in sorted(programs) if system.config.scheduler != "local"),
         f"{{ {system.scheduler.status_command()} ; }} >/dev/null"])


def build_command(system: System) -> str:
    """The whole check as one shell command (run with ``check=False``; never exits early).

    Safe to repeat after a dropped connection (it is run with ``retry=True``): it only reads,
    ``mkdir -p`` and the probe file (made, then removed) leave the same state however often they run,
    and the system's ``commands`` run before every job anyway.
    """
    config = system.config
    target = system.rundir_shell()
    rundir = (f"mkdir -p -- {target} && cd -- {target} && probe=$(mktemp ./.wfl_async_doctor.XXXXXX) && "
              f"rm -f -- \"$probe\" && pwd -P")
    python = "\n".join([*config.commands, f"{shlex.quote(config.python)} -c {shlex.quote(PROBE_SCRIPT)}"])
    return "\n".join([_section("rundir", rundir), _section("scheduler", _scheduler_check(system)),
                      _section("python", python)])


def _split_sections(text: str) -> dict[str, tuple[int, str]]:
    sections: dict[str, tuple[int, str]] = {}
    lines: list[str] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == _SECTION:
            sections[parts[1]] = (int(parts[2]) if parts[2].isdigit() else 255, "\n".join(lines).strip())
            lines = []
        else:
            lines.append(line)
    return sections


def _tail(text: str, lines: int = 2) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-400:] or "no output"


def _connect_problem(system: System, exc: TransportError) -> Problem:
    if isinstance(exc, ConnectFailed):  # the transport named the cause and the fix (either ssh client)
        return Problem(system.name, "error", "connect", exc.problem, exc.fix)
    host = system.config.host or "this machine"
    files = ", ".join(system.config.ssh_config or ["~/.ssh/config"])
    cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else ""
    if cause == "HostKeyNotVerifiable":
        return Problem(system.name, "error", "connect", f"the host key of {host} is not known ({exc.__cause__})",
                       f"run 'ssh {host} true' once (with the ssh config {files}) to check and record its key "
                       f"in known_hosts, or add the key to the UserKnownHostsFile named there")
    if cause == "PermissionDenied":
        return Problem(system.name, "error", "connect", f"ssh to {host} was refused ({exc.__cause__})",
                       f"make 'ssh {host} true' work without a password: check User and IdentityFile for "
                       f"{host} in {files}")
    return Problem(system.name, "error", "connect", f"cannot reach {host} ({' '.join(str(exc).split())[:300]})",
                   f"check the host name, port and proxy for {host} in {files}: 'ssh {host} true' must work")


@dataclass
class SystemReport:
    """What the check found: its problems, and the remote versions (None if Python did not answer)."""

    system: str
    problems: list[Problem]
    remote: dict[str, Any] | None = None
    seconds: float = 0.0


async def check_system(system: System) -> list[Problem]:
    """Everything wrong with ``system`` for running jobs, in one command (empty: ready).

    Never raises for a broken system: every failure is a :class:`Problem`.
    """
    return (await inspect_system(system)).problems


async def inspect_system(system: System, *, connect_timeout: float | None = None) -> SystemReport:
    """:func:`check_system`, with the remote versions and how long it took (for ``wfl-async doctor``).

    :param connect_timeout: give up reaching the host after this many seconds (the transport
        itself keeps reconnecting for minutes, as a running workflow should; a check should not)
    """
    started = time.monotonic()
    report = None
    if connect_timeout is not None:
        report = await _reach(system, connect_timeout)
    if report is None:
        report = await _inspect(system)
    report.seconds = time.monotonic() - started
    return report


async def _reach(system: System, seconds: float) -> SystemReport | None:
    """A report of the one problem if the host does not answer ``true`` within ``seconds``, else None."""
    host = system.config.host or "this machine"
    try:
        with anyio.fail_after(seconds):
            await system.transport.run("true", check=False, kind="probe", retry=True)
    except TimeoutError:
        files = ", ".join(system.config.ssh_config or ["~/.ssh/config"])
        return SystemReport(system.name, [Problem(
            system.name, "error", "connect", f"cannot reach {host} within {seconds:g} s",
            f"check the host name, port and proxy for {host} in {files}: 'ssh {host} true' must work "
            f"(or give 'wfl-async doctor --connect-timeout' more seconds on a slow link)")])
    except TransportError as exc:
        return SystemReport(system.name, [_connect_problem(system, exc)])
    return None


async def _inspect(system: System) -> SystemReport:
    config = system.config
    try:
        result = await system.transport.run(build_command(system), check=False, kind="probe", retry=True)
    except TransportError as exc:
        return SystemReport(system.name, [_connect_problem(system, exc)])
    sections = _split_sections(result.stdout.decode(errors="replace"))
    problems: list[Problem] = []
    rc, text = sections.get("rundir", (255, result.stderr.decode(errors="replace")))
    if rc != 0:
        problems.append(rundir_problem(system.name, system.rundir_path(), _tail(text)))
    rc, text = sections.get("scheduler", (255, ""))
    rc, text, tries = await _retry_transient(system, rc, text)
    if rc != 0:
        problems.append(_scheduler_problem(system, rc, text, tries))
    rc, text = sections.get("python", (255, ""))
    activate = (f"add the lines that activate that environment (e.g. 'source ~/venv/bin/activate' or "
                f"'module load ...') to \"commands\" of system {system.name!r} in config.json")
    where = f"{config.python} on {system.transport.where} (after the system's \"commands\")"
    remote = parse_probe(text)
    if remote is None:
        problems.append(Problem(system.name, "error", "python", f"{where} did not run (exit status {rc}: "
                                f"{_tail(text)})",
                                f"set \"python\" of system {system.name!r} to an interpreter that exists there, "
                                f"or {activate}"))
    else:
        problems.extend(compare_versions(system.name, remote, local_versions(), where, activate))
    return SystemReport(system.name, problems, remote)


async def _retry_transient(system: System, rc: int, text: str) -> tuple[int, str, int]:
    """Ask the scheduler again while it answers with a transient complaint; its last answer and the tries."""
    tries = 1
    while rc != 0 and tries < STATUS_TRIES and system.scheduler.classify_error(text) == "transient":
        log.info("system %r: the %s commands could not answer now (%s); asking again", system.name,
                 system.config.scheduler, _tail(text))
        await anyio.sleep(retry_delay("transient", tries))
        tries += 1
        try:
            result = await system.transport.run(_section("scheduler", _scheduler_check(system)), check=False,
                                                kind="probe", retry=True)
        except TransportError as exc:  # a dropped connection now is as transient as the scheduler's complaint
            rc, text = 255, str(exc)
            continue
        rc, text = _split_sections(result.stdout.decode(errors="replace")).get("scheduler", (255, ""))
    return rc, text, tries


def _scheduler_problem(system: System, rc: int, text: str, tries: int) -> Problem:
    """A scheduler that keeps saying "not now" is a warning (the loops retry it); any other failure an error."""
    config = system.config
    where = system.transport.where
    if system.scheduler.classify_error(text) == "transient":
        return Problem(
            system.name, "warning", "scheduler",
            f"the {config.scheduler} status command on {where} answered {tries} times only with a transient "
            f"complaint ({_tail(text)})",
            "nothing to do if it passes: jobs are submitted and their status is asked again with backoff; "
            "if it lasts, ask the cluster's administrators whether the scheduler's controller is overloaded")
    prefix = "\"pre_submit_cmds\" (e.g. a 'module load' or PATH line)"
    return Problem(
        system.name, "error", "scheduler",
        f"the {config.scheduler} commands do not answer on {where} (exit status {rc}: {_tail(text)})",
        f"make them available to a non-interactive shell there: add the lines that set them up to {prefix} "
        f"of system {system.name!r} in config.json")
