"""Why ssh refused a host's key: changed since it was recorded (possibly an attack), or never recorded.

asyncssh raises the same ``HostKeyNotVerifiable`` for both, and the two need opposite answers:
an unknown key is recorded once after checking it; a changed key must not be accepted before
the administrators confirm it (the server was reinstalled) or it may be a man-in-the-middle.
This module looks at what the known_hosts files hold for the host and what key the server
offers, and words the refusal with the fingerprints and the fix.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import asyncssh

__all__ = ["host_key_refusal"]


async def host_key_refusal(host: str, options: dict[str, Any], error: BaseException) -> str:
    """The message for ``error`` (asyncssh's ``HostKeyNotVerifiable``) connecting to ``host`` with ``options``."""
    entry, files, recorded = _recorded_keys(host, options)
    try:
        offered_key = await asyncssh.get_server_host_key(host, **options)
        offered = offered_key.get_fingerprint() if offered_key is not None else "unknown"
    except (asyncssh.Error, OSError):
        offered = "unknown (the server could not be asked again)"
    if recorded:
        was = ", ".join(sorted({fp for _, fp in recorded}))
        where = recorded[0][0]
        return (f"the host key of {host} ({entry}) has CHANGED since it was recorded in {where} (possible "
                f"attack: someone may be intercepting the connection, or the server was reinstalled). The "
                f"server now offers {offered}; recorded: {was}. Nothing was sent. Ask the administrators for "
                f"the server's key fingerprint; only if it is {offered}, remove the old entry "
                f"(ssh-keygen -R {shlex.quote(entry)} -f {shlex.quote(where)}) and record the new one by "
                f"connecting once with 'ssh {host}'")
    return (f"the host key of {host} ({entry}) is not known: no entry in {', '.join(files)} ({error}). The "
            f"server offers {offered}. Connect once with 'ssh {host}', check the fingerprint it shows, and "
            f"accept it (or set \"ssh_host_key_checking\": false for the system in config.json if you really "
            f"mean it)")


def _recorded_keys(host: str, options: dict[str, Any]) -> tuple[str, list[str], list[tuple[str, str]]]:
    """The host's known_hosts entry name, the known_hosts files read, and (file, fingerprint) of each
    key they record for it (reading a few small files: cheap enough for an error path)."""
    resolved = asyncssh.SSHClientConnectionOptions(host=host, **options)
    address, port = resolved.host, resolved.port
    entry = address if port in (None, 22) else f"[{address}]:{port}"
    known = resolved.known_hosts  # file names from the ssh config (UserKnownHostsFile), else the default
    files = [str(f) for f in known if isinstance(f, (str, Path))] if isinstance(known, (list, tuple)) else []
    files = files or [str(Path("~/.ssh/known_hosts").expanduser())]
    recorded: list[tuple[str, str]] = []
    for name in files:
        if Path(name).exists():
            trusted = asyncssh.match_known_hosts(name, address, address, port)[0]
            recorded.extend((name, key.get_fingerprint()) for key in trusted)
    return entry, files, recorded
