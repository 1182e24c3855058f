"""A person at a terminal: the one-time code is asked there, once per connection, by either ssh client.

The driver runs in a pseudo-terminal (pexpect), against the two-factor sshd of
scripts/testinfra/start_sshd_sites.sh; the test types the code when the prompt appears, as a
user would (the code from ``oathtool`` through tests/helpers/totp.py's program). With the
OpenSSH transport the master connection is then killed: the driver, still in its terminal,
runs the login again, asks again, and goes on.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pexpect

from tests.helpers.totp import SITES_SSH_CONFIG, askpass_program

REPO = Path(__file__).resolve().parents[2]
PROMPT = re.compile(rb"One-time password")

DRIVER = """
import sys, time, anyio
from wfl_async.transport.openssh import OpenSshTransport
from wfl_async.transport.ssh import SshTransport

async def main():
    cls = {"asyncssh": SshTransport, "openssh": OpenSshTransport}[sys.argv[1]]
    transport = cls("wfl-async-mfa", ssh_config=[sys.argv[2]])
    for word in sys.argv[3:]:
        if word == "pause":
            time.sleep(3)
            continue
        print("got", (await transport.run(f"echo {word}")).stdout.decode().strip(), flush=True)
    print("connections", transport.stats.connections_opened, flush=True)
anyio.run(main)
"""


def _code(tmp_path: Path) -> str:
    return subprocess.run([str(askpass_program(tmp_path)), "code"], capture_output=True, text=True,
                          check=True).stdout.strip()


def _driver(tmp_path: Path, client: str, config: Path, *words: str) -> pexpect.spawn:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSH_ASKPASS")}
    env["PYTHONPATH"] = str(REPO)
    return pexpect.spawn(sys.executable, [str(script), client, str(config), *words], env=env, timeout=120,
                         cwd=str(tmp_path))


def test_asyncssh_asks_for_the_code_in_the_terminal_once_per_connection(tmp_path: Path) -> None:
    child = _driver(tmp_path, "asyncssh", SITES_SSH_CONFIG, "one", "two", "three")
    child.expect(PROMPT)
    assert b"wfl-async-mfa" in child.before + child.after  # the prompt names the host
    child.sendline(_code(tmp_path))
    child.expect(pexpect.EOF)
    output = child.before.decode()
    assert "got one" in output and "got three" in output and "connections 1" in output, output
    assert not PROMPT.search(child.before)  # asked once
    child.close()
    assert child.exitstatus == 0


def test_openssh_logs_in_with_the_terminal_and_again_after_the_master_died(tmp_path: Path) -> None:
    sockets = Path(tempfile.mkdtemp(prefix="cm", dir="/tmp"))
    config = tmp_path / "ssh_config"
    config.write_text(f"Host wfl-async-mfa\n    ControlMaster auto\n    ControlPath {sockets}/%C\n"
                      f"    ControlPersist 10m\n\n{SITES_SSH_CONFIG.read_text()}")
    child = _driver(tmp_path, "openssh", config, "one", "pause", "two")
    try:
        child.expect(PROMPT)  # no master yet: ssh asks in the driver's terminal
        child.sendline(_code(tmp_path))
        child.expect("got one")
        check = subprocess.run(["ssh", "-F", str(config), "-O", "check", "wfl-async-mfa"], capture_output=True,
                               text=True)
        pid = int(re.search(r"pid=(\d+)", check.stderr).group(1))  # type: ignore[union-attr]
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "ssh"
        os.kill(pid, signal.SIGKILL)  # the master connection dies between two commands
        child.expect(PROMPT)  # the driver logs in again, in its terminal
        child.sendline(_code(tmp_path))
        child.expect(pexpect.EOF)
        output = child.before.decode()
        assert "got two" in output and "connections 2" in output, output
        child.close()
        assert child.exitstatus == 0
    finally:
        subprocess.run(["ssh", "-F", str(config), "-O", "exit", "wfl-async-mfa"], capture_output=True)
        subprocess.run(["rm", "-rf", str(sockets)], check=False)


