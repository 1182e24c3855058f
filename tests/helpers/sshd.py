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
from pathlib import Path

from .processes import comm, descendants

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
