"""``wfl-async install SYSTEM``: set up a system's remote side from this driver, over its one connection."""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from collections.abc import Sequence
from pathlib import Path

import anyio
import click

from ..config import ProjectConfig
from ..doctor.versions import compare_versions, local_versions, parse_probe
from ..errors import ConfigurationError
from ..install.remote import PROBE_MARK, install_command, probe_command
from ..install.wheelhouse import RemotePython, build_wheelhouse
from ..session import session_scope

__all__ = ["install"]

DEFAULT_VENV = ".wfl_async/venv"


def _tail(text: bytes, lines: int = 15) -> str:
    return "\n".join(text.decode(errors="replace").strip().splitlines()[-lines:])


def _without_activation(commands: Sequence[str], venv: str) -> list[str]:
    """The system's ``commands`` without a line activating ``venv`` (a rerun must use the cluster's Python)."""
    name = venv.rstrip("/").rsplit("/", 1)[-1]
    return [c for c in commands if not (c.rstrip().endswith("/bin/activate") and name in c)]


async def _install(config: ProjectConfig, name: str, venv: str, python: str | None, extras: Sequence[str],
                   write_config: bool) -> int:
    async with session_scope() as session:
        system = session.system(name)
        transport, settings = system.transport, system.config
        python = python or settings.python
        commands = _without_activation(settings.commands, venv)
        where = f"{python} on {transport.where}"

        click.echo(f"asking {where} (after the system's \"commands\") which wheels it installs", err=True)
        answer = await transport.run(probe_command(commands, python), check=False, kind="probe", retry=True)
        probe = parse_probe(answer.stdout.decode(errors="replace"), PROBE_MARK)
        if probe is None:
            raise ConfigurationError(f"{where} did not answer (exit status {answer.returncode}): "
                                     f"{_tail(answer.stdout + answer.stderr, 4)}. Fix: name the cluster's Python with "
                                     f"--python, or load it in \"commands\" of system {name!r} (e.g. 'module load "
                                     f"python')")
        remote = RemotePython.from_probe(probe)
        click.echo(f"cluster: Python {remote.version} ({remote.executable}), {remote.machine}, glibc {remote.glibc}",
                   err=True)

        with tempfile.TemporaryDirectory(prefix="wfl_async_wheels_") as tmp:
            click.echo("building the wheelhouse here (wfl_async's wheel; its dependencies for that Python)", err=True)
            house = await anyio.to_thread.run_sync(build_wheelhouse, Path(tmp), remote, list(extras))
            remote_house = f".wfl_async/wheelhouse/{house.digest()}"
            files = house.files()
            size = sum((Path(tmp) / f).stat().st_size for f in files)
            click.echo(f"sending {len(files)} wheels ({size / 1e6:.1f} MB) to ~/{remote_house}", err=True)
            await transport.upload(Path(tmp), files, remote_house, kind="stage", retry=True)
            wheel = house.wheel

        click.echo(f"installing into {venv} on {transport.where}", err=True)
        done = await transport.run(install_command(commands, python, venv, remote_house, wheel, extras),
                                   check=False, kind="other", retry=True)
        output = done.stdout.decode(errors="replace")
        if done.returncode != 0:
            raise ConfigurationError(f"installing into {venv} on {transport.where} failed (exit status "
                                     f"{done.returncode}):\n{_tail(done.stdout + done.stderr)}")
        venv_path = next(line.split(" ", 1)[1] for line in output.splitlines() if line.startswith("VENV "))
        versions = parse_probe(output)
        activate = f"source {shlex.quote(venv_path + '/bin/activate')}"
        problems = compare_versions(name, versions or {}, local_versions(), f"the venv {venv_path}",
                                    f"rerun 'wfl-async install {name}'")
        if versions is not None:
            click.echo(f"ok: {venv_path}: Python {versions.get('python')}, wfl_async {versions.get('wfl_async')}, "
                       f"numpy {versions.get('numpy')}, ase {versions.get('ase')}")
        for problem in problems:
            click.echo(str(problem))

    if write_config:
        path = _add_command_line(config, name, activate)
        click.echo(f"added to \"commands\" of system {name!r} in {path}: {activate}")
    elif activate not in settings.commands:
        click.echo(f"add this line at the end of \"commands\" of system {name!r} in config.json (or rerun with "
                   f"--write-config):\n    {json.dumps(activate)}")
    return 1 if any(p.severity == "error" for p in problems) else 0


def _add_command_line(config: ProjectConfig, name: str, line: str) -> Path:
    """Append ``line`` to the system's ``commands`` in the deepest config.json that defines it (once)."""
    for path in reversed(config.config_files):
        data = json.loads(path.read_text())
        entry = data.get("systems", {}).get(name)
        if isinstance(entry, dict):
            commands = entry.setdefault("commands", [])
            if line not in commands:
                commands.append(line)
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_text(json.dumps(data, indent=2) + "\n")
                os.replace(tmp, path)
            return path
    raise ConfigurationError(f"system {name!r} is not in any config.json ({', '.join(map(str, config.config_files))}): "
                             f"add it under \"systems\" first")


@click.command()
@click.argument("system")
@click.option("--venv", default=DEFAULT_VENV, show_default=True, metavar="PATH",
              help="The venv on the system (relative paths are under the remote home); made, or reused.")
@click.option("--python", default=None, metavar="PROGRAM",
              help="The interpreter to make the venv with there (default: the system's \"python\", after its "
                   "\"commands\", e.g. a module they load).")
@click.option("--extra", "extras", multiple=True, metavar="NAME", help="wfl_async extras to install too (e.g. gap).")
@click.option("--write-config", is_flag=True,
              help="Add the venv's activation line to the system's \"commands\" in config.json.")
def install(system: str, venv: str, python: str | None, extras: tuple[str, ...], write_config: bool) -> None:
    """Install this wfl_async on SYSTEM's remote side, in a venv, with no internet needed there.

    Builds a wheel of the wfl_async running here (and the extras asked for), downloads its
    dependencies here for the cluster's platform and Python version, pinned to this machine's
    versions of the packages whose pickles cross the wire (numpy, ase, cloudpickle) as far as
    the cluster's Python allows, sends them over the system's one connection, installs them
    into the venv from those wheels only, checks the import, and says the one "commands" line
    to add. Safe to run again.
    """
    from ._common import Project, run_async

    project = Project.load()
    code = run_async(_install, project.config, system, venv, python, extras, write_config)
    if code:
        raise click.exceptions.Exit(code)
