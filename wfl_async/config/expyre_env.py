"""ExPyRe's environment variables and ``expyre.config.init(root)``, given their ExPyRe meaning.

* ``EXPYRE_RSH``: the remote shell command of a system that gives no ``remsh_cmd`` (ExPyRe's
  default ``ssh``). wfl_async connects with its own ssh client (asyncssh), so the command must be
  ``ssh`` with options that client can take: ``-F <config file>`` (read as the system's
  ``ssh_config``). Anything else is an error naming the option and the way to say it instead
  (an ssh config file), not a silently different connection.
* ``EXPYRE_RETRY``: ``"n t"``, tries and seconds between them for a failed remote command
  (ExPyRe's default ``"2 5"``): the ssh connection's attempts and first wait.
* ``EXPYRE_SYS``: the system a job runs on when none is named (ExPyRe's ``start(system_name=)``).
* ``expyre.config.init(root)``: a script (or wfl's test fixture) that chose ExPyRe's root this way
  gets the same root here: its ``config.json`` and, beside it, the jobs database.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from ..errors import ConfigurationError

__all__ = ["default_system", "expyre_init_root", "remote_shell_ssh_config", "retry_from_env"]


def remote_shell_ssh_config(system: str, remsh_cmd: str | list[str] | None, source: str) -> list[str] | None:
    """The ssh config files a system's ``remsh_cmd`` (or ``EXPYRE_RSH``) names, or None for the default.

    :raises ConfigurationError: not ``ssh``, or an option our ssh client cannot take
    """
    command = remsh_cmd if remsh_cmd is not None else os.environ.get("EXPYRE_RSH")
    if not command:
        return None
    where = f"remsh_cmd of system {system!r} in {source}" if remsh_cmd is not None else "EXPYRE_RSH"
    words = list(command) if isinstance(command, list) else shlex.split(command)
    if Path(words[0]).name != "ssh":
        raise ConfigurationError(
            f"{where} is {shlex.join(words)!r}: wfl_async connects with its own ssh client and cannot run another "
            f"remote shell. Put what that command sets up in an ssh config file and give it as \"ssh_config\" for "
            f"the system in config.json (or use \"ssh -F <file>\").")
    configs: list[str] = []
    rest = iter(words[1:])
    for word in rest:
        if word == "-F":
            configs.append(next(rest, ""))
        elif word.startswith("-F") and len(word) > 2:
            configs.append(word[2:])
        else:
            raise ConfigurationError(
                f"{where}: ssh option {word!r} is not supported by wfl_async's ssh client (only -F <file>). "
                f"Write it in an ssh config file (Host, Port, User, IdentityFile, ...) and pass that with -F, "
                f"or as \"ssh_config\" in config.json.")
    if any(not c for c in configs):
        raise ConfigurationError(f"{where}: -F needs a file name")
    return configs or None


def retry_from_env() -> tuple[int, float] | None:
    """``EXPYRE_RETRY`` as ``(tries, seconds)``, or None when unset.

    :raises ConfigurationError: not two numbers, or fewer than one try
    """
    value = os.environ.get("EXPYRE_RETRY", "").strip()
    if not value:
        return None
    try:
        tries, wait = value.split()
        result = int(tries), float(wait)
    except ValueError:
        raise ConfigurationError(f"EXPYRE_RETRY={value!r} must be 'tries seconds', e.g. '3 5'") from None
    if result[0] < 1 or result[1] < 0:
        raise ConfigurationError(f"EXPYRE_RETRY={value!r}: tries must be at least 1 and seconds not negative")
    return result


def default_system() -> str:
    """``EXPYRE_SYS`` if set, else the built-in ``local`` system."""
    return os.environ.get("EXPYRE_SYS") or "local"


def expyre_init_root() -> Path | None:
    """The directory ExPyRe itself was initialised with (``expyre.config.init(root)``), if any.

    Only a real ``expyre.config`` a user imported counts (never our private copy); its
    ``local_stage_dir`` is the root's config directory unless its ``config.json`` moved it.
    """
    module = sys.modules.get("expyre.config")
    stage = getattr(module, "local_stage_dir", None) if module is not None else None
    return Path(stage) if stage is not None else None
