"""One system's entry in ``config.json``: ExPyRe's keys, plus a few optional ones of ours.

ExPyRe keys: ``host``, ``scheduler``, ``partitions`` (or ``queues``), ``header``,
``no_default_header``, ``script_exec``, ``pre_submit_cmds``, ``commands``, ``rundir``,
``remsh_cmd`` (default ``$EXPYRE_RSH``: ``ssh`` with ``-F <file>`` options, read as ``ssh_config``;
see :mod:`.expyre_env`).
Ours: ``transport`` (``"asyncssh"``, the default, or ``"openssh"``: the system's own ``ssh`` client
and one ControlMaster connection, for two-factor logins; see docs/site-two-factor.md),
``ssh_config`` (ssh client config files; default ``~/.ssh/config``),
``ssh_host_key_checking`` (default true), ``max_channels`` (concurrent ssh channels, default 8,
below OpenSSH's MaxSessions of 10), ``python`` (interpreter in jobs, default ``python3``),
``max_queued_jobs`` (this driver's jobs in the queue at once, default unlimited; see docs/limits.md),
``scheduler_rate`` and ``scheduler_burst`` (scheduler calls per second and at once, default 1 and 20,
unlimited for ``local``), ``poll_max_interval`` (seconds the poll interval may back off to while
nothing changes, default 30),
``died_grace_seconds`` (how long a job may be missing from the queue without a marker before it
is called died, default 30), ``submit`` (``"loop"``, the default: one scheduler submission per job;
``"array"``: jobs with the same header go as job arrays), ``max_array_size`` (tasks per array
submission, default 1000), ``pack`` (the default of RemoteInfo's ``pack``: ``{"workers": N}``,
``"auto"`` or false; see docs/packing.md).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigurationError
from ..jobs.options import check_submit_mode
from ..jobs.pack_option import check_pack
from .expyre_env import remote_shell_ssh_config, retry_from_env
from .expyre_modules import expyre_module

__all__ = ["OUR_SECTION", "TRANSPORTS", "SystemConfig", "builtin_local_system", "with_our_keys"]

_EXPYRE_KEYS = {"host", "scheduler", "partitions", "queues", "header", "no_default_header", "script_exec",
                "pre_submit_cmds", "commands", "rundir", "remsh_cmd"}
_OUR_KEYS = {"transport", "ssh_config", "ssh_host_key_checking", "max_channels", "python", "max_queued_jobs",
             "died_grace_seconds", "submit", "max_array_size", "pack", "scheduler_rate", "scheduler_burst",
             "poll_max_interval"}
_SCHEDULERS = ("slurm", "pbs", "sge", "local")
OUR_SECTION = "wfl_async"
"""Top-level config.json key ExPyRe ignores: ``{"wfl_async": {"systems": {NAME: {our keys}}}}``, merged over
the system's ExPyRe entry, so the same file still works with ExPyRe's ``xpr`` (which refuses keys it
does not know inside ``systems``)."""
TRANSPORTS = ("asyncssh", "openssh")
"""What carries a remote system's commands: asyncssh in this process, or the OpenSSH client program."""


@dataclass(frozen=True)
class SystemConfig:
    name: str
    host: str | None
    scheduler: str
    partitions: dict[str, dict[str, Any]]
    """Partition name -> ``num_cores`` (per node), ``max_time`` (s or None), ``max_mem`` (kB or None), ..."""
    header: list[str] = field(default_factory=list)
    no_default_header: bool = False
    script_exec: str = "/bin/bash"
    pre_submit_cmds: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    rundir: str | None = None
    ssh_config: list[str] | None = None
    transport: str = "asyncssh"
    """One of :data:`TRANSPORTS` (ignored for ``"host": null``)."""
    ssh_host_key_checking: bool = True
    max_channels: int = 8
    python: str = "python3"
    max_queued_jobs: int | None = None
    scheduler_rate: float | None = 1.0
    """Scheduler calls per second, sustained (None: unlimited)."""
    scheduler_burst: int = 20
    poll_max_interval: float = 30.0
    died_grace_seconds: float = 30.0
    submit: str = "loop"
    """``"loop"`` or ``"array"``: how jobs that do not say are submitted (see :mod:`wfl_async.system.submit`)."""
    max_array_size: int | None = None
    """Most tasks in one array submission (None: the default, 1000)."""
    pack: Any = None
    """Default packing of calls on this system (:mod:`wfl_async.jobs.pack_option`)."""
    retry: tuple[int, float] | None = None
    """``EXPYRE_RETRY`` (tries, seconds) for ssh commands; None keeps the transport's defaults."""

    @classmethod
    def from_json(cls, name: str, entry: Any, source: str = "config.json") -> SystemConfig:
        """Validate one ``systems`` entry; errors name the system, the key and the fix."""
        if not isinstance(entry, dict):
            raise ConfigurationError(f"system {name!r} in {source} must be a JSON object")
        unknown = set(entry) - _EXPYRE_KEYS - _OUR_KEYS
        if unknown:
            raise ConfigurationError(f"system {name!r} in {source} has unknown keys {sorted(unknown)}; "
                                     f"valid keys are {sorted(_EXPYRE_KEYS | _OUR_KEYS)}")
        entry = dict(entry)
        if "queues" in entry:
            if "partitions" in entry:
                raise ConfigurationError(f"system {name!r} in {source} has both 'partitions' and 'queues'; keep one")
            entry["partitions"] = entry.pop("queues")
        scheduler = entry.get("scheduler")
        if scheduler not in _SCHEDULERS:
            raise ConfigurationError(f"system {name!r} in {source}: scheduler {scheduler!r} is not one of "
                                     f"{list(_SCHEDULERS)}")
        if "host" not in entry:
            raise ConfigurationError(f"system {name!r} in {source} needs a \"host\" (null for this machine)")
        ssh_config = entry.get("ssh_config")
        if isinstance(ssh_config, str):
            ssh_config = [ssh_config]
        if ssh_config is None and entry["host"] is not None:
            ssh_config = remote_shell_ssh_config(name, entry.get("remsh_cmd"), source)
        transport = entry.get("transport", "asyncssh")
        if transport not in TRANSPORTS:
            raise ConfigurationError(f"system {name!r} in {source}: \"transport\" must be one of {list(TRANSPORTS)} "
                                     f"(\"openssh\" for sites reached through OpenSSH's ControlMaster), "
                                     f"not {transport!r}")
        submit = entry.get("submit", "loop")
        check_submit_mode(submit if submit is not None else "", f"system {name!r} in {source}")
        max_array_size = entry.get("max_array_size")
        if max_array_size is not None and (not isinstance(max_array_size, int) or isinstance(max_array_size, bool)
                                           or max_array_size < 1):
            raise ConfigurationError(f"system {name!r} in {source}: \"max_array_size\" must be a positive integer "
                                     f"(the site's most tasks per array, e.g. Slurm's MaxArraySize - 1), not "
                                     f"{max_array_size!r}")
        return cls(
            name=name, host=entry["host"], scheduler=scheduler, submit=submit, max_array_size=max_array_size,
            partitions=_parse_partitions(name, entry.get("partitions"), source),
            header=list(entry.get("header", [])), no_default_header=bool(entry.get("no_default_header", False)),
            script_exec=entry.get("script_exec", "/bin/bash"),
            pre_submit_cmds=list(entry.get("pre_submit_cmds", [])), commands=list(entry.get("commands", [])),
            rundir=entry.get("rundir"), ssh_config=ssh_config, transport=transport,
            ssh_host_key_checking=bool(entry.get("ssh_host_key_checking", True)),
            max_channels=int(entry.get("max_channels", 8)),
            # on this machine the interpreter running the workflow is the one that has wfl_async
            python=entry.get("python", sys.executable if entry["host"] is None else "python3"),
            max_queued_jobs=_positive_int(name, "max_queued_jobs", entry.get("max_queued_jobs"), source),
            scheduler_rate=_rate(name, entry, scheduler, source),
            scheduler_burst=_positive_int(name, "scheduler_burst", entry.get("scheduler_burst", 20), source) or 20,
            poll_max_interval=_seconds(name, "poll_max_interval", entry.get("poll_max_interval", 30.0), source),
            died_grace_seconds=float(entry.get("died_grace_seconds", 30.0)),
            pack=check_pack(entry.get("pack"), f"system {name!r} in {source}: \"pack\""),
            retry=retry_from_env(),
        )


def with_our_keys(systems: dict[str, Any], section: Any, source: str) -> dict[str, Any]:
    """``systems`` with each entry of the :data:`OUR_SECTION` section's ``systems`` merged over its own.

    :raises ConfigurationError: the section names a system ``systems`` lacks, or holds an ExPyRe key
    """
    if section is None:
        return systems
    ours = section.get("systems", {}) if isinstance(section, dict) else None
    if not isinstance(ours, dict) or (isinstance(section, dict) and set(section) - {"systems"}):
        raise ConfigurationError(f"\"{OUR_SECTION}\" in {source} must be {{\"systems\": {{NAME: {{...}}}}}}, holding "
                                 f"wfl_async's own keys of systems defined under the top-level \"systems\"")
    merged = dict(systems)
    for name, extra in ours.items():
        if name not in systems or not isinstance(extra, dict):
            raise ConfigurationError(f"\"{OUR_SECTION}\".\"systems\".{name!r} in {source} has no system {name!r} "
                                     f"under the top-level \"systems\" (or is not an object): define it there first")
        misplaced = sorted(set(extra) - _OUR_KEYS)
        if misplaced:
            raise ConfigurationError(f"\"{OUR_SECTION}\".\"systems\".{name!r} in {source} holds {misplaced}, which "
                                     f"are not wfl_async's own keys: move them to the system's entry under \"systems\"")
        merged[name] = {**systems[name], **extra}
    return merged


def _positive_int(name: str, key: str, value: Any, source: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"system {name!r} in {source}: {key!r} must be a positive whole number "
                                 f"(or null for no limit), not {value!r}")
    return value


def _seconds(name: str, key: str, value: Any, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigurationError(f"system {name!r} in {source}: {key!r} must be a number of seconds >= 0, "
                                 f"not {value!r}")
    return float(value)


def _rate(name: str, entry: dict[str, Any], scheduler: str, source: str) -> float | None:
    """``scheduler_rate``: calls per second; null or 0 is unlimited (the default for ``local``)."""
    value = entry.get("scheduler_rate", None if scheduler == "local" else 1.0)
    if value is None:
        return None
    return _seconds(name, "scheduler_rate", value, source) or None


def _parse_partitions(name: str, partitions: Any, source: str) -> dict[str, dict[str, Any]]:
    units = expyre_module("units")
    if partitions is None:
        partitions = {"default": {"num_cores": os.cpu_count() or 1, "max_time": None, "max_mem": None}}
    if not isinstance(partitions, dict) or not partitions:
        raise ConfigurationError(f"system {name!r} in {source}: \"partitions\" must map names to "
                                 f"{{\"num_cores\": ..., \"max_time\": ..., \"max_mem\": ...}}")
    parsed: dict[str, dict[str, Any]] = {}
    for pname, spec in partitions.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("num_cores"), int):
            raise ConfigurationError(f"system {name!r} partition {pname!r} in {source} needs an integer "
                                     f"\"num_cores\" (cores per node)")
        try:
            parsed[pname] = {**spec, "max_time": units.time_to_sec(spec.get("max_time")),
                             "max_mem": units.mem_to_kB(spec.get("max_mem"))}
        except ValueError as exc:
            raise ConfigurationError(f"system {name!r} partition {pname!r} in {source}: {exc}") from exc
    return parsed


def builtin_local_system() -> SystemConfig:
    """The ``local`` system that exists with no config: background processes on this machine."""
    return SystemConfig(name="local", host=None, scheduler="local", python=sys.executable, scheduler_rate=None,
                        partitions={"local": {"num_cores": os.cpu_count() or 1, "max_time": None,
                                              "max_mem": None}})
