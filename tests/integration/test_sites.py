"""Site shapes against real sshds: a two-factor login (key AND a time-based one-time code), a jump host.

The servers are scripts/testinfra/start_sshd_sites.sh's: 127.0.0.1:2223 asks for a key and a
TOTP code (PAM pam_oath), 127.0.0.1:2224 is a key-only jump host. Codes come from ``oathtool``
through an ``SSH_ASKPASS`` program (tests/helpers/totp.py), the way OpenSSH answers a prompt
without a terminal; each login consumes one code (pam_oath refuses a reused one), so the
prompts the program answered are counted. A missing server FAILS these tests.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tests.helpers.totp import SITES_SSH_CONFIG, askpass_env, prompts_answered, prompts_log
from wfl_async.transport.connect_failure import ConnectFailed
from wfl_async.transport.openssh import OpenSshTransport
from wfl_async.transport.ssh import SshTransport

MFA, JUMPED = "wfl-async-mfa", "wfl-async-mfa-via-jump"


@pytest.fixture(scope="module", autouse=True)
def site_sshds() -> None:
    hint = "run scripts/testinfra/start_all.sh (it starts scripts/testinfra/start_sshd_sites.sh)"
    if not SITES_SSH_CONFIG.exists():
        pytest.fail(f"{SITES_SSH_CONFIG} is missing: {hint}", pytrace=False)
    for port in (2223, 2224):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
        except OSError as exc:
            pytest.fail(f"the site sshd on 127.0.0.1:{port} is not reachable ({exc}): {hint}", pytrace=False)


@pytest.fixture
def user_ssh_config(tmp_path: Path) -> Iterator[Path]:
    """The sites' client config plus what a user of a two-factor site puts in ~/.ssh/config (docs/site-two-factor.md)."""
    sockets = Path(tempfile.mkdtemp(prefix="cm", dir="/tmp"))  # a socket's path must stay short (108 bytes)
    config = tmp_path / "ssh_config"
    config.write_text(f"Host {MFA} {JUMPED}\n    ControlMaster auto\n    ControlPath {sockets}/%C\n"
                      f"    ControlPersist 10m\n\n{SITES_SSH_CONFIG.read_text()}")
    yield config
    shutil.rmtree(sockets, ignore_errors=True)


@pytest.fixture
def no_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody to answer a prompt: no askpass (the driver runs without a terminal under pytest)."""
    monkeypatch.delenv("SSH_ASKPASS", raising=False)
    monkeypatch.delenv("SSH_ASKPASS_REQUIRE", raising=False)


@pytest.fixture
def answering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A one-time code answers each login's prompt (SSH_ASKPASS), as a person at a terminal would."""
    for name, value in askpass_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    yield


def log_in(config: Path, host: str, tmp_path: Path) -> None:
    """What the user does once in a terminal: ``ssh HOST`` with a code, leaving the master behind (ControlPersist)."""
    subprocess.run(["ssh", "-F", str(config), "-f", "-N", host], check=True,
                   env=dict(os.environ, **askpass_env(tmp_path)), stdin=subprocess.DEVNULL, timeout=120)


def master_pid(config: Path, host: str) -> int:
    out = subprocess.run(["ssh", "-F", str(config), "-O", "check", host], capture_output=True, text=True)
    match = re.search(r"pid=(\d+)", out.stderr)
    assert match, out.stderr
    pid = int(match.group(1))
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "ssh"  # pids wrap: check before killing
    return pid


def stop_master(config: Path, host: str) -> None:
    subprocess.run(["ssh", "-F", str(config), "-O", "exit", host], capture_output=True, check=False)


@pytest.mark.parametrize("host", [MFA, JUMPED])
async def test_asyncssh_answers_the_one_time_code_prompt_once_per_connection(
        answering: None, host: str) -> None:
    before = prompts_answered()
    transport = SshTransport(host, ssh_config=[str(SITES_SSH_CONFIG)])
    try:
        for i in range(5):
            assert (await transport.run(f"echo {i}")).stdout == f"{i}\n".encode()
        assert transport.stats.connections_opened == 1
        assert prompts_answered() == before + 1
        assert host in prompts_log().read_text().splitlines()[-1]  # the prompt names the host
    finally:
        await transport.aclose()


async def test_asyncssh_without_anyone_to_answer_fails_at_once_saying_what_to_do(
        no_prompt: None, caplog: pytest.LogCaptureFixture) -> None:
    transport = SshTransport(MFA, ssh_config=[str(SITES_SSH_CONFIG)])
    with anyio.fail_after(15), pytest.raises(Exception) as info:  # noqa: PT011 - its wording is checked
        await transport.run("true")
    assert MFA in str(info.value) and "refused" in str(info.value)
    assert "SSH_ASKPASS" in caplog.text and "openssh" in caplog.text


@pytest.mark.parametrize("host", [MFA, JUMPED])
async def test_openssh_rides_the_master_the_user_opened_once_with_a_code(
        no_prompt: None, user_ssh_config: Path, tmp_path: Path, host: str) -> None:
    log_in(user_ssh_config, host, tmp_path)
    before = prompts_answered()
    transport = OpenSshTransport(host, ssh_config=[str(user_ssh_config)])
    try:
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(transport.run, f"echo {i}")
        assert transport.stats.commands_run == 20 and transport.stats.connections_opened == 1
        assert prompts_answered() == before  # no new login
        pid = master_pid(user_ssh_config, host)
        assert (await transport.run("echo $PPID")).returncode == 0 and master_pid(user_ssh_config, host) == pid
    finally:
        stop_master(user_ssh_config, host)


async def test_openssh_without_a_master_names_the_login_command_which_then_works(
        no_prompt: None, user_ssh_config: Path, tmp_path: Path) -> None:
    transport = OpenSshTransport(MFA, ssh_config=[str(user_ssh_config)])
    try:
        with anyio.fail_after(15), pytest.raises(ConnectFailed) as info:
            await transport.run("true")
        assert info.value.cause == "auth" and MFA in info.value.problem
        command = info.value.fix.split("log in once in a terminal with: ")[1].split(" (it asks")[0]
        subprocess.run(shlex.split(command), check=True, env=dict(os.environ, **askpass_env(tmp_path)),
                       stdin=subprocess.DEVNULL, timeout=120)
        assert (await transport.run("id -un")).stdout == b"wfltest\n"
    finally:
        stop_master(user_ssh_config, MFA)


async def test_openssh_logs_in_by_itself_when_someone_can_answer(
        answering: None, user_ssh_config: Path, caplog: pytest.LogCaptureFixture) -> None:
    before = prompts_answered()
    transport = OpenSshTransport(MFA, ssh_config=[str(user_ssh_config)])
    try:
        assert (await transport.run("echo in")).stdout == b"in\n"
        assert prompts_answered() == before + 1 and "logging in once for this run" in caplog.text
    finally:
        stop_master(user_ssh_config, MFA)


async def test_openssh_master_killed_mid_command_waits_for_a_new_login_and_runs_it_once(
        no_prompt: None, user_ssh_config: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The master dies under a command that is safe to repeat; nobody can answer the new login's
    prompt, so the log says how to log in, and the command runs once the user has."""
    log_in(user_ssh_config, MFA, tmp_path)
    transport = OpenSshTransport(MFA, ssh_config=[str(user_ssh_config)])
    try:
        await transport.run("true")
        outcome: list[bytes] = []

        async def command() -> None:
            outcome.append((await transport.run("sleep 1; echo done", retry=True)).stdout)

        async with anyio.create_task_group() as tg:
            tg.start_soon(command)
            await anyio.sleep(0.4)
            os.kill(master_pid(user_ssh_config, MFA), signal.SIGKILL)
            with anyio.fail_after(30):
                while "Log in again in a terminal with" not in caplog.text:
                    await anyio.sleep(0.1)
            await anyio.sleep(1)
            assert not outcome  # waiting for the login, not failing
            await anyio.to_thread.run_sync(log_in, user_ssh_config, MFA, tmp_path)
        assert outcome == [b"done\n"]
        assert "dropped during a command" in caplog.text
        assert "the ssh connection to wfl-async-mfa is back" in caplog.text
    finally:
        stop_master(user_ssh_config, MFA)
