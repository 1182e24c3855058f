"""A changed host key is reported as changed (possible attack) with both fingerprints and the fix;
an unknown one as unknown (issue 15). A test-owned sshd (tests/helpers/sshd.py) with a
known_hosts file the test writes: a wrong key recorded for its port, or none."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.sshd import OwnSshd
from wfl_async.errors import TransportError
from wfl_async.transport.ssh import SshTransport

pytestmark = pytest.mark.remote


@pytest.fixture
def own_sshd(tmp_path: Path) -> Iterator[OwnSshd]:
    sshd = OwnSshd(tmp_path / "sshd")
    sshd.start()
    yield sshd
    sshd.stop()


async def _refusal(sshd: OwnSshd) -> str:
    transport = SshTransport(sshd.alias, ssh_config=[str(sshd.ssh_config)], connect_attempts=1)
    try:
        with pytest.raises(TransportError) as info:
            await transport.run("true")
    finally:
        await transport.aclose()
    return str(info.value)


async def test_a_changed_host_key_is_named_changed_with_both_fingerprints(own_sshd: OwnSshd, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    recorded = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    known_hosts = own_sshd.dir / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{own_sshd.port} {recorded}\n")
    wrong = subprocess.run(["ssh-keygen", "-l", "-f", str(other.with_suffix(".pub"))], capture_output=True,
                           text=True, check=True).stdout.split()[1]
    message = await _refusal(own_sshd)
    print(f"\n{message}")
    assert "has CHANGED" in message and "possible attack" in message
    assert f"recorded: {wrong}" in message and "server now offers SHA256:" in message
    assert f"ssh-keygen -R '[127.0.0.1]:{own_sshd.port}' -f {known_hosts}" in message


async def test_an_unknown_host_key_is_named_unknown(own_sshd: OwnSshd) -> None:
    (own_sshd.dir / "known_hosts").write_text("")
    message = await _refusal(own_sshd)
    print(f"\n{message}")
    assert "is not known" in message and "CHANGED" not in message and "offers SHA256:" in message
