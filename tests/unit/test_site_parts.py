"""Pure parts of site support: connect-failure causes, wheel platform tags, the install's shell text."""

from __future__ import annotations

import socket
import subprocess

import pytest

from wfl_async.install.remote import install_command
from wfl_async.install.wheelhouse import RemotePython
from wfl_async.transport.connect_failure import ConnectFailed, cause_of_exception, cause_of_ssh_stderr


@pytest.mark.parametrize("stderr, cause", [
    ("ssh: Could not resolve hostname nope: Name or service not known", "unresolvable"),
    ("ssh: connect to host 127.0.0.1 port 1: Connection refused", "refused"),
    ("me@host: Permission denied (publickey,keyboard-interactive).", "auth"),
    ("Host key verification failed.", "host_key"),
    ("ssh: connect to host 10.255.255.1 port 22: Connection timed out", "unreachable"),
    ("Connection to 127.0.0.1 closed by remote host.", None),
    ("", None),
])
def test_openssh_failures_are_classified_by_what_the_client_printed(stderr: str, cause: str | None) -> None:
    assert cause_of_ssh_stderr(stderr) == cause


def test_only_causes_that_will_not_mend_fail_a_first_connect_at_once() -> None:
    assert cause_of_exception(socket.gaierror(-2, "Name or service not known")) == "unresolvable"
    assert cause_of_exception(ConnectionRefusedError(111, "refused")) == "refused"
    assert cause_of_exception(TimeoutError()) is None and cause_of_exception(ConnectionResetError()) is None


def test_a_connect_failure_names_host_cause_and_fix_and_an_openssh_login_command() -> None:
    error = ConnectFailed("login.example", "auth", "Permission denied", ["/cfg"], login_command="ssh -f -N login.example")
    assert "login.example" in error.problem and "Permission denied" in error.problem
    assert "ssh -f -N login.example" in error.fix and str(error).endswith(error.fix)


def test_wheel_platforms_follow_the_remote_glibc_newest_first() -> None:
    tags = RemotePython("3.11.2", "/usr/bin/python3", "x86_64", "2.28").platforms()
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_17_x86_64" in tags
    assert "manylinux_2_29_x86_64" not in tags and "manylinux2014_x86_64" in tags and "manylinux1_x86_64" in tags
    old = RemotePython("3.9.1", "p", "aarch64", "2.12").platforms()
    assert old[-2:] == ["manylinux2010_aarch64", "manylinux1_aarch64"] and "manylinux2014_aarch64" not in old


def test_the_install_script_is_valid_shell_with_hostile_paths() -> None:
    text = install_command(["module load python/3.11"], "python3", "my venv/it's", ".wfl_async/wheelhouse/abc",
                           "wfl_async-0.1.0-py3-none-any.whl", ["gap"])
    assert subprocess.run(["bash", "-n", "-c", text], check=False).returncode == 0
    assert "'my venv/it'\"'\"'s'" in text and "--no-index" in text and "'wfl_async[gap]'" in text
