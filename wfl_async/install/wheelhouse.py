"""The wheels a cluster's venv needs, built and downloaded on the driver for the cluster's Python.

wfl_async is not on a public index, and many clusters cannot reach one: everything the remote
side installs travels from here. A wheel is made of the wfl_async this driver runs, and ``pip download`` fetches its dependencies as binary wheels
for the platform and Python version the cluster reported, pinned to the driver's installed
versions (pickled Atoms and arrays cross the wire: numpy, ase and cloudpickle must match). When
the cluster's Python cannot have those versions, the pins loosen step by step (only the
packages whose pickles cross, then their major versions, then none), and each step is said.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from ..doctor.versions import PACKAGES
from ..errors import ConfigurationError

__all__ = ["PICKLED_PACKAGES", "RemotePython", "Wheelhouse", "build_wheelhouse"]

log = logging.getLogger(__name__)

PICKLED_PACKAGES = tuple(name for name in PACKAGES if name != "wfl_async")
"""Packages whose objects are pickled on one side and loaded on the other."""
_OLDEST_MANYLINUX = 5  # manylinux1 is glibc 2.5


@dataclass(frozen=True)
class RemotePython:
    """What the cluster's interpreter reported (see :data:`wfl_async.install.remote.PROBE`)."""

    version: str          #: e.g. "3.11.2"
    executable: str
    machine: str          #: e.g. "x86_64"
    glibc: str | None     #: e.g. "2.36"; None on a non-glibc system

    @classmethod
    def from_probe(cls, data: dict[str, Any]) -> RemotePython:
        return cls(str(data["python"]), str(data["executable"]), str(data["machine"]), data.get("glibc") or None)

    @property
    def minor(self) -> str:
        """``3.11``"""
        return ".".join(self.version.split(".")[:2])

    def platforms(self) -> list[str]:
        """The wheel platform tags this interpreter installs, newest first (manylinux for its glibc)."""
        if self.glibc is None:
            raise ConfigurationError(f"the cluster's Python ({self.executable}) does not run on glibc: wfl-async "
                                     f"install only builds wheelhouses for glibc Linux; install wfl_async there by "
                                     f"hand (docs/installing-on-a-cluster.md)")
        major, minor = (int(p) for p in self.glibc.split(".")[:2])
        tags = [f"manylinux_{major}_{m}_{self.machine}" for m in range(minor, _OLDEST_MANYLINUX - 1, -1)]
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        tags += [f"{name}_{self.machine}" for m, name in legacy.items() if major == 2 and m <= minor]
        return tags


@dataclass(frozen=True)
class Wheelhouse:
    """A directory of wheels, and what was decided making it."""

    directory: Path
    wheel: str            #: file name of wfl_async's own wheel
    pins: str             #: which pins held: "all", "pickled", "pickled-major" or "none"

    def files(self) -> list[str]:
        return sorted(p.name for p in self.directory.glob("*.whl"))

    def digest(self) -> str:
        """Short content hash: the remote directory of this exact set of wheels."""
        h = hashlib.sha256()
        for name in self.files():
            h.update(name.encode() + b"\0" + hashlib.sha256((self.directory / name).read_bytes()).digest())
        return h.hexdigest()[:16]


def build_wheelhouse(directory: Path, remote: RemotePython, extras: Sequence[str]) -> Wheelhouse:
    """Wheels of wfl_async (with ``extras``) and everything it needs, for ``remote``, in ``directory``.

    :raises ConfigurationError: no set of pins could be satisfied for that Python (the message has pip's answer)
    """
    directory.mkdir(parents=True, exist_ok=True)
    wheel = _build_own_wheel(directory)
    requirement = f"{directory / wheel}[{','.join(extras)}]" if extras else str(directory / wheel)
    answer = ""
    for pins, constraints in _constraint_steps():
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as handle:
            handle.write("\n".join(constraints) + "\n")
            handle.flush()
            command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
                       "--dest", str(directory), "--python-version", remote.minor, "--implementation", "cp",
                       "--abi", f"cp{remote.minor.replace('.', '')}",
                       *(arg for tag in remote.platforms() for arg in ("--platform", tag)),
                       "-c", handle.name, requirement, "pip"]  # pip: to bootstrap a venv made without it
            result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode == 0:
            if pins != "all":
                log.warning("Python %s on the cluster cannot have every version this driver has; pinned: %s",
                            remote.version, _PIN_WORDS[pins])
            return Wheelhouse(directory, wheel, pins)
        answer = (result.stderr or result.stdout).strip()
        log.info("pip download with pins %r failed: %s", pins, answer[-500:])
    raise ConfigurationError(f"no wheels of wfl_async's dependencies fit Python {remote.version} on "
                             f"{remote.machine} (glibc {remote.glibc}): {answer[-800:]}. Fix: name a newer Python "
                             f"on the cluster with --python (or load one in the system's \"commands\")")


_PIN_WORDS = {"all": "every installed version", "pickled": f"only {', '.join(PICKLED_PACKAGES)}",
              "pickled-major": f"only the major versions of {', '.join(PICKLED_PACKAGES)}", "none": "nothing"}


def _constraint_steps() -> list[tuple[str, list[str]]]:
    """Constraint sets, strictest first: every installed version; the pickled packages'; their majors; none."""
    installed = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower().replace("-", "_") != "wfl_async" and "+" not in dist.version:
            installed[name.lower()] = dist.version
    pickled = {name: installed[name] for name in PICKLED_PACKAGES if name in installed}
    majors = [f"{name}>={v.split('.')[0]},<{int(v.split('.')[0]) + 1}" for name, v in pickled.items()]
    return [("all", [f"{n}=={v}" for n, v in sorted(installed.items())]),
            ("pickled", [f"{n}=={v}" for n, v in pickled.items()]),
            ("pickled-major", majors), ("none", [])]


def _build_own_wheel(directory: Path) -> str:
    """A wheel of the wfl_async this process imports (its files, the installed metadata); its file name.

    Written directly (a wheel is a zip with a ``.dist-info``), so no build tools and no index are
    needed here either, and it holds exactly the code this driver runs (an editable checkout too).
    """
    import wfl_async

    package = Path(wfl_async.__file__).resolve().parent
    try:
        dist = metadata.distribution("wfl_async")
    except metadata.PackageNotFoundError:
        raise ConfigurationError("wfl_async's metadata is not installed here, so its wheel cannot say what it "
                                 "needs. Fix: pip install (-e) the wfl_async checkout first") from None
    info = f"wfl_async-{dist.version}.dist-info"
    members = [(f"wfl_async/{path.relative_to(package)}", path.read_bytes()) for path in sorted(package.rglob("*"))
               if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"]
    # an egg-info (a source checkout that setuptools has built in) keeps the same core metadata as PKG-INFO
    core = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    members += [(f"{info}/METADATA", core.encode()),
                (f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: wfl_async install\nRoot-Is-Purelib: true\n"
                                  b"Tag: py3-none-any\n"),
                (f"{info}/entry_points.txt", (dist.read_text("entry_points.txt") or "").encode())]
    record = "".join(f"{name},sha256={_digest(data)},{len(data)}\n" for name, data in members) + f"{info}/RECORD,,\n"
    wheel = f"wfl_async-{dist.version}-py3-none-any.whl"
    with zipfile.ZipFile(directory / wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in [*members, (f"{info}/RECORD", record.encode())]:
            archive.writestr(name, data)
    return wheel


def _digest(data: bytes) -> str:
    """A RECORD hash: urlsafe base64 of the sha256, without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
