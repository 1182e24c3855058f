"""Shell text run on the cluster by ``wfl-async install``: ask its Python, then make the venv from the wheels sent.

Every step is safe to run again: an existing venv is reused (a venv made without pip gets pip
from the wheels sent), packages come only from the wheelhouse (``--no-index``: a cluster
without internet access works, and nothing else is ever picked up), and wfl_async's own wheel
is reinstalled each time (a rebuilt wheel keeps its version number).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from ..doctor.versions import PROBE_SCRIPT

__all__ = ["PROBE", "PROBE_MARK", "install_command", "probe_command"]

PROBE_MARK = "WFL_ASYNC_INSTALL_PROBE"

PROBE = f"""
import json, platform, sys
print({PROBE_MARK!r}, json.dumps({{"python": platform.python_version(), "executable": sys.executable,
      "machine": platform.machine(), "glibc": platform.libc_ver()[1] if platform.libc_ver()[0] == "glibc" else None}}))
"""
"""Run by the cluster's Python (after the system's ``commands``): what wheels it installs."""


def _venv_shell(venv: str) -> str:
    """``venv`` as one shell word; a relative path (or ``~/...``) is under ``$HOME``."""
    if venv.startswith("~/"):
        venv = venv[2:]
    return shlex.quote(venv) if venv.startswith("/") else f"\"$HOME\"/{shlex.quote(venv)}"


def probe_command(commands: Sequence[str], python: str) -> str:
    """The system's ``commands``, then ``python`` answers :data:`PROBE`."""
    return "\n".join([*commands, f"{shlex.quote(python)} -c {shlex.quote(PROBE)}"])


def install_command(commands: Sequence[str], python: str, venv: str, wheelhouse: str, wheel: str,
                    extras: Sequence[str]) -> str:
    """Make or reuse ``venv`` with ``python``, install wfl_async from ``wheelhouse`` only, and probe the result.

    Prints ``VENV <absolute venv path>`` and the doctor's version probe line.
    """
    target = "wfl_async" + (f"[{','.join(extras)}]" if extras else "")
    house = f"\"$HOME\"/{shlex.quote(wheelhouse)}"
    pip = '"$venv/bin/python" -m pip --disable-pip-version-check --no-input'
    steps = [
        *commands,
        "set -e",
        f"venv={_venv_shell(venv)} house={house}",
        # a venv without pip (Debian without python3-venv's ensurepip) gets it from the wheelhouse
        f'if [ ! -x "$venv/bin/python" ]; then {shlex.quote(python)} -m venv "$venv" 2>/dev/null || '
        f'{{ rm -rf -- "$venv"; {shlex.quote(python)} -m venv --without-pip "$venv"; }}; fi',
        f'if ! {pip} --version >/dev/null 2>&1; then set -- "$house"/pip-*.whl; '
        f'"$venv/bin/python" "$1/pip" install --no-index --quiet "$1"; fi',
        f'{pip} install --no-index --find-links "$house" --quiet {shlex.quote(target)}',
        f'{pip} install --no-index --no-deps --force-reinstall --quiet "$house"/{shlex.quote(wheel)}',
        'echo VENV "$(cd "$venv" && pwd -P)"',
        f'"$venv/bin/python" -c {shlex.quote(PROBE_SCRIPT)}',
    ]
    return "\n".join(steps)

