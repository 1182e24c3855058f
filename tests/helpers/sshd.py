"""Faults injected into real sshd processes: the one serving a connection, or a test-owned server.

The shared test sshd (127.0.0.1:2222) is never stopped. A test that needs an sshd outage
starts its OWN server on another loopback port with the keys and settings that
``scripts/testinfra/start_sshd.sh`` wrote, and stops and restarts that one. Processes are
found by pid (checked in ``/proc``), never by name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from wfl_async.doctor.check import _SECTION as DOCTOR_SECTION

from .processes import ancestor, cmdline, comm, command_env, descendants, parent

INFRA = Path(os.environ.get("WFL_ASYNC_TESTINFRA_DIR", "/tmp/wfl_async_testinfra"))
SHARED_CONFIG = INFRA / "sshd" / "sshd_config"


def kill_sshd(pid: int) -> None:
    """SIGKILL an sshd process (what a login node does when it drops a session), after checking it is one."""
    assert comm(pid).startswith("sshd"), (pid, comm(pid))
    os.kill(pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OwnSshd:
    """A test-owned sshd on its own loopback port, reached as host alias :attr:`alias`."""

    alias = "wfl-async-own-sshd"

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.pid_file = self.dir / "sshd.pid"
        self.config = self.dir / "sshd_config"
        lines = [line for line in SHARED_CONFIG.read_text().splitlines()
                 if not line.startswith(("Port ", "PidFile "))]
        self.config.write_text("\n".join([*lines, f"Port {self.port}", f"PidFile {self.pid_file}"]) + "\n")
        host_key = (INFRA / "sshd" / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        known_hosts = self.dir / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{self.port} {' '.join(host_key)}\n")
        self.ssh_config = self.dir / "ssh_config"
        self.ssh_config.write_text(
            f"Host {self.alias}\n    HostName 127.0.0.1\n    Port {self.port}\n    User wfltest\n"
            f"    IdentityFile {INFRA / 'sshd' / 'client_key'}\n    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {known_hosts}\n    StrictHostKeyChecking yes\n    BatchMode yes\n")
        self.listener: int | None = None

    def start(self) -> None:
        self.pid_file.unlink(missing_ok=True)
        subprocess.run(["/usr/sbin/sshd", "-f", str(self.config), "-E", str(self.dir / "sshd.log")], check=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    if self.pid_file.exists() and self.pid_file.read_text().strip():
                        break
            except OSError:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError(f"own sshd on port {self.port} did not start: {(self.dir / 'sshd.log').read_text()}")
        self.listener = int(self.pid_file.read_text())
        assert comm(self.listener).startswith("sshd")

    def stop(self) -> None:
        """An outage: the listener and every session it serves are gone."""
        if self.listener is None:
            return
        for pid in [*descendants(self.listener), self.listener]:
            if comm(pid).startswith("sshd"):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.listener = None


PHASES = ("upload", "submit", "sbatch", "poll", "fetch", "named", "check")
"""Moments of a driver's work on the server that :func:`is_phase` recognises.

``submit`` needs the system's ``pre_submit_cmds`` to hold the submission with ``sleep 1.5``;
``sbatch`` (a submit program of the upload+submit command running), ``poll`` (``squeue``
started by a command whose text names ``marker``, e.g. the remote root) and ``named`` (any
program started by such a command) need no hold. ``check`` is ``named`` for the first-submission
check's one command only (it names the system's rundir: give the test's system a rundir of its
own as ``marker``, so that another driver's check, e.g. in another xdist worker, is not hit)."""


def is_phase(phase: str, marker: str, pid: int, argv: list[str]) -> bool:
    """Whether process ``pid`` shows the driver's command for ``phase`` under way on the server.

    :param marker: a string the driver's command names (a job name, the remote root)
    """
    # the shell running our command names our jobs: in its command line (an exec channel), or in the
    # WFL_ASYNC_COMMAND its processes get (asyncssh's shell session, the driver run with WFL_ASYNC_SHOW_COMMANDS)
    caller = " ".join(cmdline(parent(pid))) + " " + command_env(pid)
    if phase == "upload":  # unpacking the stream into its temporary directory
        return argv[:1] == ["tar"] and any(".wfl_async_upload." in a for a in argv) and marker in caller
    if phase == "submit":  # held by the test config's pre_submit_cmds, within the upload+submit command
        return argv == ["sleep", "1.5"] and marker in caller and ".wfl_async_upload." in caller
    if phase == "sbatch":
        return (bool(argv) and Path(argv[0]).name == "sbatch" and marker in caller
                and ".wfl_async_upload." in caller)
    if phase == "poll":
        return bool(argv) and Path(argv[0]).name == "squeue" and marker in caller
    if phase == "named":
        return marker in caller and not any(marker in a for a in argv)  # run by that command, not it
    if phase == "check":
        return (DOCTOR_SECTION in caller and marker in caller
                and not any(marker in a for a in argv))
    # the fetch takes the file names on stdin: it is ours when it has one of our jobs' files open
    return argv[:1] == ["tar"] and "--ignore-failed-read" in argv and any(marker in f for f in _open_files(pid))


def _open_files(pid: int) -> list[str]:
    try:
        return [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    except OSError:  # the process ended, or a descriptor closed while we looked
        return []


def wait_and_kill_serving_sshd(phase: str, marker: str, proc: subprocess.Popen[bytes],
                               kill: Callable[[int], None], timeout: float = 300) -> dict[str, object]:
    """Wait until the driver ``proc``'s ``phase`` command runs on the server, then ``kill`` the sshd serving it.

    :returns: ``{"phase": phase, "killed": pid of that sshd, or None if ``proc`` ended first}``
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for entry in Path("/proc").glob("[0-9]*"):
            pid = int(entry.name)
            argv = cmdline(pid)
            if argv and is_phase(phase, marker, pid, argv):
                sshd = ancestor(pid, lambda p: comm(p).startswith("sshd"))
                if sshd is None:  # it ended while we looked (its parents gone): wait for the next one
                    continue
                kill(sshd)
                return {"phase": phase, "killed": sshd}
        time.sleep(0.005)
    return {"phase": phase, "killed": None}
