"""``wfl-async doctor``: check systems the way their jobs will use them, and say how to fix them."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import click

from ..doctor.check import SystemReport, inspect_system
from ..doctor.versions import local_versions
from ..session import session_scope

__all__ = ["doctor"]


async def _inspect_all(names: Sequence[str], connect_timeout: float) -> list[SystemReport]:
    """Every system at once; systems on one host share its one connection (the session's)."""
    reports: dict[str, SystemReport] = {}
    async with session_scope() as session:
        systems = [session.system(name) for name in names]  # unknown names fail here, before any I/O

        async def one(name: str) -> None:
            reports[name] = await inspect_system(session.system(name), connect_timeout=connect_timeout)

        async with anyio.create_task_group() as tg:
            for system in systems:
                tg.start_soon(one, system.name)
        connections = {id(s.transport): s.transport.stats.connections_opened for s in systems}
    click.echo(f"{len(systems)} system(s), {sum(connections.values())} ssh connection(s)", err=True)
    return [reports[name] for name in names]


def _versions(values: dict[str, object]) -> str:
    return ", ".join(f"{name} {values.get(name)}" for name in ("python", "wfl_async", "numpy", "ase"))


def _print(report: SystemReport) -> None:
    errors = [p for p in report.problems if p.severity == "error"]
    if report.remote is not None and not errors:
        click.echo(f"ok: system {report.system!r} ({report.seconds:.1f} s): {_versions(report.remote)}")
    for problem in report.problems:
        click.echo(str(problem))


@click.command()
@click.argument("systems", nargs=-1, metavar="[SYSTEM]...")
@click.option("--connect-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              metavar="SECONDS", help="Give up reaching a host after this long.")
def doctor(systems: tuple[str, ...], connect_timeout: float) -> None:
    """Check systems as a job will use them (default: every configured system).

    Per system, in one command over one ssh connection per host: the host is reachable and its
    key known, the scheduler's commands answer, the run directory is writable, and the remote
    Python (after the system's "commands") imports wfl_async with versions of Python, numpy
    and ase that can read this machine's pickles. Each problem is one line with its fix; the
    exit status is 1 if any is an error.
    """
    from ._common import Project, run_async

    project = Project.load()
    names = list(systems) or list(project.config.systems)
    click.echo(f"here: {_versions(local_versions())}", err=True)
    reports = run_async(_inspect_all, names, connect_timeout)
    for report in reports:
        _print(report)
    if any(p.severity == "error" for r in reports for p in r.problems):
        raise click.exceptions.Exit(1)
