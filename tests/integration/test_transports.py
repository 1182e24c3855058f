"""One contract for every transport (this machine, and ssh to the test sshd), plus what only ssh has.

Callers must not be able to tell local from ssh: the same suite runs over both through the
parametrized ``transport`` fixture. The ssh cases need the test sshd (127.0.0.1:2222, user
``wfltest``, host alias ``wfl-async-test`` in /tmp/wfl_async_testinfra/ssh_config): start it with
``scripts/testinfra/start_all.sh``. A missing sshd FAILS these tests; it does not skip them.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from subprocess import CompletedProcess

import anyio
import pytest

from tests.helpers.processes import comm as process_name
from tests.helpers.processes import descendants
from tests.helpers.sshd import OwnSshd, kill_sshd
from wfl_async.errors import RemoteCommandError, TransportError
from wfl_async.transport.base import MANIFEST, Transport, pack, upload_command
from wfl_async.transport.connect_failure import ConnectFailed
from wfl_async.transport.local import LocalTransport
from wfl_async.transport.openssh import OpenSshTransport
from wfl_async.transport.ssh import SshTransport

INFRA = Path(os.environ.get("WFL_ASYNC_TESTINFRA_DIR", "/tmp/wfl_async_testinfra"))
SSH_CONFIG = INFRA / "ssh_config"
HOST = "wfl-async-test"
SSHD = ("127.0.0.1", 2222)
START_HINT = "run scripts/testinfra/start_all.sh (as root) to install and start the test sshd"

HOSTILE_FILES = [
    "plain.txt", "sp ace.txt", "quo'te.txt", 'dou"ble.txt', "dol$lar $HOME.txt", "plus+sign.txt",
    "ünï cødé ✓.txt", "-leading-dash", "semi;colon&amp|pipe", "back\\slash", "star*?[x]", "`tick`",
    "sub dir/nested $x 'q'.txt", "sub dir/deeper/ü.bin", "new\nline.txt",
]


def many_files() -> dict[str, bytes]:
    files = {name: f"content of {name!r}\n".encode() for name in HOSTILE_FILES}
    files.update({f"batch/file_{i:03d}.dat": os.urandom(97 * i) for i in range(50)})
    files["empty"] = b""
    files["big.bin"] = os.urandom(2 * 1024 * 1024)
    return files


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def read_tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="session")
def sshd() -> None:
    """Fail (never skip) when the test sshd is not there."""
    if not SSH_CONFIG.exists():
        pytest.fail(f"{SSH_CONFIG} is missing: {START_HINT}", pytrace=False)
    try:
        with socket.create_connection(SSHD, timeout=5):
            pass
    except OSError as exc:
        pytest.fail(f"the test sshd on {SSHD[0]}:{SSHD[1]} is not reachable ({exc}): {START_HINT}", pytrace=False)


def ssh_transport(**kwargs: object) -> SshTransport:
    return SshTransport(HOST, ssh_config=[str(SSH_CONFIG)], **kwargs)  # type: ignore[arg-type]


def openssh_transport(**kwargs: object) -> OpenSshTransport:
    """An OpenSSH transport with a master of its own (its ControlPath in a directory of its own):
    with the default path, concurrent tests shared one master, and a test that killed its sshd
    process killed another test's connection (or found its command on a new one)."""
    sockets = Path(tempfile.mkdtemp(prefix="cm", dir="/tmp"))
    config = sockets / "ssh_config"
    config.write_text(f"Include {SSH_CONFIG}\n\nHost *\n    ControlPath {sockets}/%C\n")
    _OWN_MASTERS.append(config)
    return OpenSshTransport(HOST, ssh_config=[str(config)], **kwargs)  # type: ignore[arg-type]


_OWN_MASTERS: list[Path] = []
"""The ssh configs of the masters :func:`openssh_transport` made in the running test."""


@pytest.fixture(autouse=True)
def _end_own_masters() -> Iterator[None]:
    """A test's own masters end with it (they would persist ten minutes, as a user's do)."""
    yield
    while _OWN_MASTERS:
        config = _OWN_MASTERS.pop()
        subprocess.run(["ssh", "-F", str(config), "-O", "exit", HOST], capture_output=True, check=False)
        shutil.rmtree(config.parent, ignore_errors=True)


SshFactory = Callable[..., "SshTransport | OpenSshTransport"]


@pytest.fixture(params=["asyncssh", "openssh"])
def any_ssh(request: pytest.FixtureRequest, sshd: None) -> SshFactory:
    """Builds a transport to the test sshd: each ssh-only behaviour holds for both ssh clients."""
    return ssh_transport if request.param == "asyncssh" else openssh_transport


@pytest.fixture(params=["local", "ssh", "openssh"])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    if request.param in ("ssh", "openssh"):
        request.getfixturevalue("sshd")
        transport: Transport = ssh_transport() if request.param == "ssh" else openssh_transport()
    else:
        transport = LocalTransport()
    try:
        yield transport
    finally:
        await transport.aclose()


@pytest.fixture
async def remote_dir(transport: Transport, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh directory on the transport's side, with a space and a quote in its name."""
    if not isinstance(transport, LocalTransport):
        path = f"wfl_async_transport_tests/it's {uuid.uuid4().hex[:8]}"  # under wfltest's home
    else:
        path = str(tmp_path / "remote side" / "it's here")
    yield path
    await transport.run(f"rm -rf -- {shlex.quote(path)}", check=False)


# ---------------------------------------------------------------- run


async def test_run_returns_a_completed_process_with_bytes(transport: Transport) -> None:
    result = await transport.run("printf 'out \\303\\274\\000\\377'; printf 'err' >&2")
    assert isinstance(result, CompletedProcess)
    assert result.returncode == 0
    assert result.stdout == b"out \xc3\xbc\x00\xff"
    assert result.stderr == b"err"
    assert isinstance(result.args, str) or isinstance(result.args, list)


async def test_run_unchecked_reports_the_exit_status(transport: Transport) -> None:
    result = await transport.run("echo partial; exit 3", check=False)
    assert (result.returncode, result.stdout) == (3, b"partial\n")


async def test_run_checked_raises_with_attributes(transport: Transport) -> None:
    command = "echo some output; echo 'it went wrong' >&2; exit 42"
    with pytest.raises(RemoteCommandError) as info:
        await transport.run(command)
    error = info.value
    assert (error.command, error.returncode) == (command, 42)
    assert error.stdout == b"some output\n" and error.stderr == b"it went wrong\n"
    assert "status 42" in str(error) and "it went wrong" in str(error) and transport.where in str(error)
    assert isinstance(error, TransportError) and isinstance(error, OSError)


async def test_run_feeds_stdin(transport: Transport) -> None:
    data = os.urandom(3 * 1024 * 1024) + b"\nend"
    result = await transport.run("cat", stdin=data)
    assert result.stdout == data
    assert (await transport.run("wc -l", stdin=b"a\nb\nc\n")).stdout.strip() == b"3"


async def test_run_without_stdin_sees_end_of_file(transport: Transport) -> None:
    with anyio.fail_after(20):
        result = await transport.run("cat; echo eof")
    assert result.stdout == b"eof\n"


async def test_run_uses_a_posix_shell_and_quoting_survives(transport: Transport) -> None:
    hostile = "a 'b' \"c\" $HOME `id` ü"
    result = await transport.run(f"x={shlex.quote(hostile)}; printf '%s' \"$x\"")
    assert result.stdout.decode() == hostile


async def test_stats_count_commands_and_bytes(transport: Transport) -> None:
    before = transport.stats.commands_run, transport.stats.bytes_sent, transport.stats.bytes_received
    await transport.run("printf 12345", stdin=b"abc")
    await transport.run("exit 1", check=False)
    after = transport.stats.commands_run, transport.stats.bytes_sent, transport.stats.bytes_received
    assert after[0] - before[0] == 2
    assert after[1] - before[1] == 3
    assert after[2] - before[2] == 5
    assert f"commands: {after[0]}" in repr(transport)


# ---------------------------------------------------------------- files


async def test_upload_and_download_many_hostile_files_in_one_command_each(
        transport: Transport, remote_dir: str, tmp_path: Path) -> None:
    files = many_files()
    source, target = tmp_path / "source", tmp_path / "target ü"
    write_tree(source, files)

    before = transport.stats.commands_run
    await transport.upload(source, list(files), remote_dir)
    assert transport.stats.commands_run - before == 1

    listing = await transport.run(f"cd {shlex.quote(remote_dir)} && find . -type f -print0")
    remote_names = {n.removeprefix("./") for n in listing.stdout.decode().split("\0") if n}
    assert remote_names == set(files)
    nested = "sub dir/nested $x 'q'.txt"
    sizes = await transport.run(f"cd {shlex.quote(remote_dir)} && wc -c < big.bin && cat -- {shlex.quote(nested)}")
    assert sizes.stdout.split(b"\n", 1) == [str(len(files["big.bin"])).encode(), files[nested]]

    before = transport.stats.commands_run
    await transport.download(remote_dir, list(files), target)
    assert transport.stats.commands_run - before == 1
    assert read_tree(target) == files


async def test_upload_runs_before_and_then_in_the_same_command(transport: Transport, remote_dir: str,
                                                               tmp_path: Path) -> None:
    write_tree(tmp_path, {"a.txt": b"A"})
    before = transport.stats.commands_run
    result = await transport.upload(tmp_path, ["a.txt"], remote_dir, before="echo first",
                                    then=f"cat {shlex.quote(remote_dir)}/a.txt && echo ' then'")
    assert transport.stats.commands_run - before == 1
    assert result.stdout == b"first\nA then\n"


async def test_upload_failures_are_remote_command_errors(transport: Transport, remote_dir: str,
                                                         tmp_path: Path) -> None:
    write_tree(tmp_path, {"a.txt": b"A", "big": os.urandom(4 * 1024 * 1024)})
    with pytest.raises(RemoteCommandError) as info:
        await transport.upload(tmp_path, ["a.txt"], remote_dir, then="exit 7")
    assert info.value.returncode == 7
    # the command fails before reading its input (a broken pipe locally): still just an exit status
    with pytest.raises(RemoteCommandError) as info:
        await transport.upload(tmp_path, ["a.txt", "big"], remote_dir, before="echo refused >&2; exit 9")
    assert info.value.returncode == 9 and info.value.stderr == b"refused\n"


async def test_stdin_that_the_command_does_not_read(transport: Transport) -> None:
    result = await transport.run("exit 4", stdin=os.urandom(4 * 1024 * 1024), check=False)
    assert result.returncode == 4


async def test_each_command_starts_afresh_whatever_the_one_before_did(transport: Transport) -> None:
    """exit, cd, umask, variables, a syntax error or unread stdin of one command never reach the next
    (asyncssh runs them all through one long-lived shell session)."""
    assert (await transport.run("exit 7", check=False)).returncode == 7
    assert (await transport.run("if then fi", check=False)).returncode != 0
    assert (await transport.run("read x; echo $x", stdin=b"one\necho injected\n")).stdout == b"one\n"
    await transport.run("cd /; umask 000; wfl_async_x=1; export wfl_async_y=2")
    result = await transport.run('echo "$(umask) ${wfl_async_x:-unset} ${wfl_async_y:-unset}"; '
                                 '[ "$(pwd)" = / ] && echo at-root || echo elsewhere')
    assert result.stdout == b"0077 unset unset\nelsewhere\n"


async def test_download_with_missing_files_still_brings_the_others(transport: Transport, remote_dir: str,
                                                                    tmp_path: Path) -> None:
    files = {"one.txt": b"1", "dir/two ü.txt": b"2", "three $x.txt": b"3"}
    write_tree(tmp_path / "source", files)
    await transport.upload(tmp_path / "source", list(files), remote_dir)
    wanted = ["missing first", "one.txt", "dir/missing.txt", "dir/two ü.txt", "no/such/dir/x", "three $x.txt"]
    before = transport.stats.commands_run
    await transport.download(remote_dir, wanted, tmp_path / "target")
    assert transport.stats.commands_run - before == 1
    assert read_tree(tmp_path / "target") == files


async def test_download_of_nothing_runs_no_command(transport: Transport, tmp_path: Path) -> None:
    before = transport.stats.commands_run
    await transport.download("/nonexistent", [], tmp_path)
    assert transport.stats.commands_run == before


async def test_download_from_a_missing_directory_brings_nothing(transport: Transport, tmp_path: Path) -> None:
    await transport.download(f"/nonexistent/{uuid.uuid4().hex}", ["a", "b"], tmp_path / "target")
    assert not (tmp_path / "target").exists() or read_tree(tmp_path / "target") == {}


async def test_upload_cut_short_leaves_no_file_under_its_name_and_a_rerun_completes_it(
        transport: Transport, remote_dir: str, tmp_path: Path) -> None:
    """A driver killed while staging: nothing half-written appears, and the next upload sends it whole."""
    files = {"job/input.bin": os.urandom(3 * 1024 * 1024), "job/_task.pkl": b"task"}
    write_tree(tmp_path, files)
    stream = pack(tmp_path, list(files))
    # cut inside a file, and where a member ends (just before the manifest's header: tar alone accepts that)
    for cut in (len(stream) // 3, stream.index(MANIFEST.encode()) // 512 * 512):
        result = await transport.run(upload_command(remote_dir), stdin=stream[:cut], check=False)
        assert result.returncode != 0
        listing = await transport.run(f"ls -A {shlex.quote(remote_dir)}/job 2>/dev/null; true")
        assert listing.stdout == b"", listing.stdout
    await transport.upload(tmp_path, list(files), remote_dir)
    await transport.download(remote_dir, list(files), tmp_path / "back")
    assert read_tree(tmp_path / "back") == files


async def test_upload_refuses_a_stream_whose_files_do_not_match_the_manifest(
        transport: Transport, remote_dir: str, tmp_path: Path) -> None:
    write_tree(tmp_path, {"job/a.txt": b"A" * 1000})
    stream = bytearray(pack(tmp_path, ["job/a.txt"]))
    stream[stream.index(b"A" * 1000) + 10] = ord("B")  # one byte changed on the way
    result = await transport.run(upload_command(remote_dir), stdin=bytes(stream), check=False)
    assert result.returncode != 0 and b"FAILED" in result.stdout + result.stderr
    assert (await transport.run(f"ls -A {shlex.quote(remote_dir)}/job 2>/dev/null; true")).stdout == b""


async def test_upload_keeps_files_that_exist_and_never_sends_the_manifest(
        transport: Transport, remote_dir: str, tmp_path: Path) -> None:
    write_tree(tmp_path / "one", {"job/a.txt": b"first", "job/b.txt": b"B"})
    write_tree(tmp_path / "two", {"job/a.txt": b"second", "job/c.txt": b"C"})
    await transport.upload(tmp_path / "one", ["job/a.txt", "job/b.txt"], remote_dir)
    await transport.upload(tmp_path / "two", ["job/a.txt", "job/c.txt"], remote_dir)
    listing = await transport.run(f"cd {shlex.quote(remote_dir)} && find . -print | sort")
    assert listing.stdout.decode().split() == [".", "./job", "./job/a.txt", "./job/b.txt", "./job/c.txt"]
    assert MANIFEST not in listing.stdout.decode()
    assert (await transport.run(f"cat {shlex.quote(remote_dir)}/job/a.txt")).stdout == b"first"


async def test_fresh_directories_are_emptied_once_per_upload_even_if_its_command_runs_twice(
        transport: Transport, remote_dir: str, tmp_path: Path) -> None:
    """The reset before a resubmission, repeated after a dropped connection, must not wipe the new job."""
    write_tree(tmp_path, {"job/a.txt": b"A"})
    await transport.run(f"mkdir -p {shlex.quote(remote_dir)}/job && echo old > {shlex.quote(remote_dir)}/job/old")
    command = upload_command(remote_dir, fresh=["job"])
    stream = pack(tmp_path, ["job/a.txt"])
    await transport.run(command, stdin=stream)
    await transport.run(f"echo running > {shlex.quote(remote_dir)}/job/started")  # the job began meanwhile
    await transport.run(command, stdin=stream)  # the same command again
    names = (await transport.run(f"ls {shlex.quote(remote_dir)}/job")).stdout.decode().split()
    assert names == ["a.txt", "started"]
    await transport.upload(tmp_path, ["job/a.txt"], remote_dir, fresh=["job"])  # a new reset: emptied again
    assert (await transport.run(f"ls {shlex.quote(remote_dir)}/job")).stdout.decode().split() == ["a.txt"]


async def test_everything_created_is_private_to_its_owner_on_both_sides(
        transport: Transport, remote_dir: str, tmp_path: Path) -> None:
    write_tree(tmp_path / "src", {"job/sub/a.txt": b"A", "job/b.txt": b"B"})
    for path in (tmp_path / "src").rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # what a user's umask 022 gives
    await transport.upload(tmp_path / "src", ["job"], remote_dir)
    await transport.run(f"echo result > {shlex.quote(remote_dir)}/job/result.pkl")
    modes = await transport.run(f"cd {shlex.quote(remote_dir)} && stat -c '%a %n' . job job/sub job/sub/a.txt "
                                "job/b.txt job/result.pkl")
    assert modes.stdout.decode().split("\n")[:-1] == [
        "700 .", "700 job", "700 job/sub", "600 job/sub/a.txt", "600 job/b.txt", "600 job/result.pkl"]
    await transport.download(remote_dir, ["job"], tmp_path / "back")
    local = {str(p.relative_to(tmp_path / "back")): p.stat().st_mode & 0o777 for p in (tmp_path / "back").rglob("*")}
    assert local == {"job": 0o700, "job/sub": 0o700, "job/sub/a.txt": 0o600, "job/b.txt": 0o600,
                     "job/result.pkl": 0o600}


# ---------------------------------------------------------------- ssh only


async def run_fifty_concurrently(transport: SshTransport, deadline: float) -> None:
    """50 commands at once, each answering its own number."""
    results: dict[int, bytes] = {}

    async def one(i: int) -> None:
        results[i] = (await transport.run(f"sleep 0.2; echo {i}")).stdout

    with anyio.fail_after(deadline):
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
    assert results == {i: f"{i}\n".encode() for i in range(50)}


async def test_ssh_one_connection_for_fifty_concurrent_commands(any_ssh: SshFactory) -> None:
    """sshd's MaxSessions is 10: without the channel semaphore the 11th channel fails."""
    transport = any_ssh(max_channels=8)
    try:
        await run_fifty_concurrently(transport, deadline=60)
        assert transport.stats.connections_opened == 1
        assert transport.stats.commands_run == 50
    finally:
        await transport.aclose()


async def test_ssh_channel_refused_by_max_sessions_is_retried_on_the_same_connection(sshd: None) -> None:
    """max_channels above the server's MaxSessions (10): refused channels wait and retry; the
    shared connection is not closed under the commands in flight (it was: 13 connections for 50)."""
    transport = ssh_transport(max_channels=30)
    try:
        await run_fifty_concurrently(transport, deadline=120)
        assert transport.stats.connections_opened == 1
    finally:
        await transport.aclose()


async def test_ssh_commands_share_one_shell_and_a_shell_killed_alone_is_replaced_on_the_same_connection(
        sshd: None) -> None:
    transport = ssh_transport()
    try:
        shell = (await transport.run("echo $$")).stdout  # a subshell's $$ is its session's shell
        await transport.run("exit 3", check=False)
        assert (await transport.run("echo $$")).stdout == shell
        with pytest.raises(TransportError, match="may or may not have run"):
            await transport.run("kill -9 $$")  # the command's own session dies under it
        assert (await transport.run("echo $$")).stdout not in (shell, b"")
        assert transport.stats.connections_opened == 1
    finally:
        await transport.aclose()


async def test_ssh_commands_show_their_text_to_their_processes_only_when_asked(
        sshd: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Off by default: sbatch passes the submitting environment on, and would keep the text with every job."""
    command = "sh -c 'echo ${WFL_ASYNC_COMMAND:-unset}'"
    for show, expected in (("", b"unset\n"), ("1", f"umask 077; {command}\n".encode())):
        monkeypatch.setenv("WFL_ASYNC_SHOW_COMMANDS", show)
        transport = ssh_transport()
        try:
            assert (await transport.run(command)).stdout == expected
        finally:
            await transport.aclose()


async def test_ssh_offers_aes_gcm_first_unless_the_ssh_config_names_the_ciphers(sshd: None, tmp_path: Path) -> None:
    """AES-GCM costs the driver a third less CPU per packet than chacha20-poly1305 in asyncssh."""
    chosen = tmp_path / "ssh_config"
    chosen.write_text(f"Include {SSH_CONFIG}\n\nHost *\n    Ciphers chacha20-poly1305@openssh.com\n")
    for transport, cipher in ((ssh_transport(), "aes128-gcm@openssh.com"),
                              (SshTransport(HOST, ssh_config=[str(chosen)]), "chacha20-poly1305@openssh.com")):
        try:
            await transport.run("true")
            assert transport._connection is not None
            assert transport._connection.get_extra_info("send_cipher") == cipher
        finally:
            await transport.aclose()


async def test_ssh_reconnects_after_the_server_drops_the_connection(any_ssh: SshFactory) -> None:
    transport = any_ssh()
    try:
        pid = await _serving_sshd_pid(transport)
        os.kill(pid, signal.SIGKILL)  # the sshd process of our connection, found by pid, never by name
        with anyio.fail_after(60):
            result = await transport.run("echo again")
        assert result.stdout == b"again\n"
        if isinstance(transport, SshTransport):  # OpenSSH's own ControlMaster=auto reopens it unseen
            assert transport.stats.connections_opened == 2
        assert await _serving_sshd_pid(transport) != pid
    finally:
        await transport.aclose()


async def test_ssh_command_in_flight_when_the_connection_drops_is_rerun(any_ssh: SshFactory) -> None:
    transport = any_ssh()
    try:
        pid = await _serving_sshd_pid(transport)
        async with anyio.create_task_group() as tg:
            outcome: list[CompletedProcess[bytes]] = []

            async def slow() -> None:
                outcome.append(await transport.run("sleep 1; echo finished", retry=True))

            tg.start_soon(slow)
            await _kill_when_running(pid, "sleep")  # the command is under way
        assert outcome[0].stdout == b"finished\n" and outcome[0].returncode == 0
        assert transport.stats.connections_opened == 2
    finally:
        await transport.aclose()


async def test_ssh_command_that_is_not_safe_to_repeat_is_reported_not_rerun(any_ssh: SshFactory, tmp_path: Path) -> None:
    transport = any_ssh()
    counter = f"wfl_async_transport_tests/count-{uuid.uuid4().hex[:8]}"
    try:
        pid = await _serving_sshd_pid(transport)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_kill_when_running, pid, "sleep")  # after its echo, before it ends
            with pytest.raises(TransportError, match="may or may not have run"):
                await transport.run(f"mkdir -p wfl_async_transport_tests; echo x >> {counter}; sleep 1; echo done")
        await anyio.sleep(1)
        assert (await transport.run(f"cat {counter}")).stdout == b"x\n"  # it ran once, and was not repeated
    finally:
        await transport.run(f"rm -f {counter}", check=False)
        await transport.aclose()


async def test_ssh_connection_dropped_during_an_upload_stream_is_redone_whole_and_then_runs_once(
        any_ssh: SshFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The sshd process is killed while the stream is still being sent: the first try's tar sees a
    cut-short stream and leaves nothing; the retry sends it whole; ``then`` (a submission) runs once."""
    remote_dir = f"wfl_async_transport_tests/drop {uuid.uuid4().hex[:8]}"
    transport = any_ssh()
    files = {"job/input.bin": os.urandom(8 * 1024 * 1024), "job/_task.pkl": b"task"}
    write_tree(tmp_path, files)
    counter = shlex.quote(f"{remote_dir}/then_ran")
    try:
        pid = await _serving_sshd_pid(transport)
        async with anyio.create_task_group() as tg:
            # the remote side reads nothing while `sleep 1` runs: the kill lands mid-stream
            tg.start_soon(_kill_when_running, pid, "sleep")
            await transport.upload(tmp_path, list(files), remote_dir, before="sleep 1",
                                   then=f"echo x >> {counter}", retry=True)
        assert "dropped during a command" in caplog.text
        assert transport.stats.connections_opened == 2
        await anyio.sleep(1.5)  # the first try has long given up
        assert (await transport.run(f"cat {counter}")).stdout == b"x\n"
        await transport.download(remote_dir, list(files), tmp_path / "back")
        assert read_tree(tmp_path / "back") == files
    finally:
        await transport.aclose()


async def test_ssh_connection_dropped_while_a_streaming_command_prints_is_rerun(
        any_ssh: SshFactory, tmp_path: Path) -> None:
    """The batch submit path (upload + ``on_line``): today's ``ExceptionGroup(ConnectionLost)``."""
    remote_dir = f"wfl_async_transport_tests/drop {uuid.uuid4().hex[:8]}"
    transport = any_ssh()
    write_tree(tmp_path, {"job/a.txt": b"A"})
    seen: list[str] = []
    try:
        pid = await _serving_sshd_pid(transport)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_kill_when_running, pid, "sleep")  # after the first line, before the last
            result = await transport.upload(
                tmp_path, ["job/a.txt"], remote_dir, then="for i in 1 2 3; do echo line $i; sleep 0.4; done",
                on_line=seen.append, kind="submit", retry=True)
        assert result.stdout == b"line 1\nline 2\nline 3\n"
        assert transport.stats.connections_opened == 2
        assert seen[0] == "line 1" and seen[-3:] == ["line 1", "line 2", "line 3"]  # lines of the first try too
    finally:
        await transport.aclose()


async def test_ssh_connection_dropped_during_a_download_is_fetched_again_whole(
        any_ssh: SshFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    remote_dir = f"wfl_async_transport_tests/drop {uuid.uuid4().hex[:8]}"
    transport = any_ssh()
    quoted = shlex.quote(remote_dir)
    try:
        await transport.run(f"mkdir -p {quoted} && head -c 64000000 /dev/urandom > {quoted}/big.bin")
        digest = (await transport.run(f"sha256sum < {quoted}/big.bin")).stdout.split()[0].decode()
        pid = await _serving_sshd_pid(transport)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_kill_when_running, pid, "tar")
            await transport.download(remote_dir, ["big.bin"], tmp_path / "back")
        assert "dropped during a command" in caplog.text
        import hashlib
        assert hashlib.sha256((tmp_path / "back" / "big.bin").read_bytes()).hexdigest() == digest
        assert [p.name for p in (tmp_path / "back").iterdir()] == ["big.bin"]  # no temporary left
    finally:
        await transport.aclose()


async def test_ssh_outage_of_the_server_is_ridden_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A test-owned sshd is stopped (listener and sessions) for a few seconds, then started again."""
    own = OwnSshd(tmp_path / "sshd")
    own.start()
    transport = SshTransport(own.alias, ssh_config=[str(own.ssh_config)])
    try:
        assert (await transport.run("echo before")).stdout == b"before\n"
        own.stop()
        outcome: list[bytes] = []

        async def after_outage() -> None:
            outcome.append((await transport.run("echo after", retry=True)).stdout)

        async with anyio.create_task_group() as tg:
            tg.start_soon(after_outage)
            await anyio.sleep(4)
            assert not outcome
            own.start()
        assert outcome == [b"after\n"]
        assert transport.stats.connections_opened == 2
        assert "connecting to" in caplog.text
    finally:
        await transport.aclose()
        own.stop()


async def test_ssh_closed_transport_reconnects_on_next_use(any_ssh: SshFactory) -> None:
    transport = any_ssh()
    try:
        await transport.run("true")
        await transport.aclose()
        assert (await transport.run("echo back")).stdout == b"back\n"
        assert transport.stats.connections_opened == 2
    finally:
        await transport.aclose()


async def test_ssh_unknown_host_key_fails_with_a_clear_error(any_ssh: SshFactory, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    config = tmp_path / "ssh_config"
    sockets = tempfile.mkdtemp(prefix="cm", dir="/tmp")  # OpenSSH: a master of its own, whose key is checked
    config.write_text(f"Host *\n    ControlPath {sockets}/%C\n\n"
                      + SSH_CONFIG.read_text().replace(str(INFRA / "known_hosts"), str(empty)))
    assert str(empty) in config.read_text()
    transport = type(any_ssh())(HOST, ssh_config=[str(config)])
    try:
        with anyio.fail_after(30), pytest.raises(TransportError) as info:
            await transport.run("true")
        message = str(info.value)
        assert HOST in message and "known_hosts" in message
        assert transport.stats.connections_opened == 0 and transport.stats.commands_run == 1
    finally:
        await transport.aclose()
        shutil.rmtree(sockets, ignore_errors=True)


async def test_ssh_host_key_checking_can_be_turned_off(any_ssh: SshFactory, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    config = tmp_path / "ssh_config"
    config.write_text(SSH_CONFIG.read_text().replace(str(INFRA / "known_hosts"), str(empty)))
    transport = type(any_ssh())(HOST, ssh_config=[str(config)], host_key_checking=False)
    try:
        assert (await transport.run("echo ok")).stdout == b"ok\n"
    finally:
        await transport.aclose()


async def test_ssh_user_and_port_in_the_host_string(any_ssh: SshFactory, tmp_path: Path) -> None:
    """``user@host:port`` without an alias: user and port come from the string, not the config."""
    config = tmp_path / "ssh_config"
    config.write_text(f"Host {SSHD[0]}\n    IdentityFile {INFRA / 'sshd' / 'client_key'}\n    IdentitiesOnly yes\n"
                      f"    UserKnownHostsFile {INFRA / 'known_hosts'}\n")
    transport = type(any_ssh())(f"wfltest@{SSHD[0]}:{SSHD[1]}", ssh_config=[str(config)])
    try:
        assert (await transport.run("id -un")).stdout == b"wfltest\n"
        assert transport.host == SSHD[0] and SSHD[0] in transport.where
    finally:
        await transport.aclose()


@pytest.mark.parametrize("fault", ["unresolvable", "closed port"])
async def test_a_host_that_never_answered_fails_within_seconds_naming_host_cause_and_fix(
        any_ssh: SshFactory, fault: str, caplog: pytest.LogCaptureFixture) -> None:
    """Not the ten-minute reconnect window of a connection that once worked: a mistyped name or a
    closed port will not mend by waiting."""
    if fault == "unresolvable":
        host, cause = "wfl-async-no-such-host.invalid", "does not resolve"
    else:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            host, cause = f"127.0.0.1:{probe.getsockname()[1]}", "nothing accepts ssh connections"  # closed now
    transport = any_ssh()
    transport = type(transport)(host, ssh_config=[str(SSH_CONFIG)])
    with anyio.fail_after(15), pytest.raises(ConnectFailed) as info:
        await transport.run("true")
    message = str(info.value)
    assert host.split(":")[0] in message and cause in message and "Fix: check" in message, message
    assert "retrying" not in caplog.text
    assert transport.stats.connections_opened == 0


async def test_a_connection_that_once_worked_is_retried_not_failed_fast(any_ssh: SshFactory, tmp_path: Path) -> None:
    """After a first success, a refused port is an outage (an sshd restart): retried, then reported."""
    own = OwnSshd(tmp_path / "sshd")
    own.start()
    transport = type(any_ssh())(own.alias, ssh_config=[str(own.ssh_config)], connect_attempts=3)
    try:
        assert (await transport.run("echo up")).stdout == b"up\n"
        own.stop()
        with anyio.fail_after(60), pytest.raises(TransportError) as info:
            await transport.run("true", retry=True)
        assert not isinstance(info.value, ConnectFailed) and "after 3 attempts" in str(info.value)
    finally:
        await transport.aclose()
        own.stop()


async def _kill_when_running(pid: int, program: str) -> None:
    """Kill sshd process ``pid`` as soon as ``program`` runs under it (the command is under way)."""
    with anyio.fail_after(30):
        while not any(process_name(child) == program for child in descendants(pid)):
            await anyio.sleep(0.005)
    kill_sshd(pid)


async def _serving_sshd_pid(transport: Transport) -> int:
    """The sshd process serving ``transport``'s connection: the parent of a command's shell."""
    pid = int((await transport.run("echo $PPID")).stdout)
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    uid = next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("Uid:"))
    # pids wrap: make sure it is an sshd process of the test user before anyone kills it
    assert comm.startswith("sshd") and int(uid) == 2000, (pid, comm, uid)
    return pid
