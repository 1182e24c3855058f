"""One-time codes for the two-factor test sshd (127.0.0.1:2223, scripts/testinfra/start_sshd_sites.sh).

pam_oath refuses a code whose 30 s step was already used, and accepts up to :data:`WINDOW`
steps ahead of the clock (``window=20`` in start_sshd_sites.sh). The askpass program written
here hands out a fresh step each time (the clock's, or one after the last used; it waits when it
would run more than ``WINDOW`` ahead), so logins in quick succession each get a code the server
accepts without waiting for the clock. The codes are
computed by ``oathtool``, as a user's authenticator app would.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

INFRA = Path(os.environ.get("WFL_ASYNC_TESTINFRA_DIR", "/tmp/wfl_async_testinfra"))
SECRET_FILE = INFRA / "sshd_sites" / "totp_secret"
SITES_SSH_CONFIG = INFRA / "sites_ssh_config"
STATE_FILE = INFRA / "sshd_sites" / "totp_last_step"
WINDOW = 20  # pam_oath's window= in scripts/testinfra/start_sshd_sites.sh

_ASKPASS = f"""#!{sys.executable}
# answers the two-factor sshd's prompt with the next unused one-time code (tests/helpers/totp.py)
import fcntl, subprocess, sys, time
state, secret = {str(STATE_FILE)!r}, open({str(SECRET_FILE)!r}).read().strip()
with open(state, "a+") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    f.seek(0)
    last = int(f.read().strip() or 0)
    while True:
        now = int(time.time()) // 30
        step = max(now, last + 1)
        if step <= now + {WINDOW}:
            break
        time.sleep(1)
    f.seek(0); f.truncate(); f.write(str(step)); f.flush()
    code = subprocess.run(["oathtool", "--totp", "-N", "@" + str(step * 30), secret],
                          capture_output=True, text=True, check=True).stdout.strip()
with open(state + ".log", "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
print(code)
"""


def askpass_program(directory: Path) -> Path:
    """An ``SSH_ASKPASS`` program answering the two-factor prompt; its prompts are logged to ``prompts_log()``."""
    path = directory / "askpass"
    path.write_text(_ASKPASS)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def prompts_log() -> Path:
    """Where the askpass program records each prompt it answered (one line each)."""
    return Path(str(STATE_FILE) + ".log")


def askpass_env(directory: Path) -> dict[str, str]:
    """Environment variables making OpenSSH (and wfl_async's asyncssh client) ask :func:`askpass_program`."""
    return {"SSH_ASKPASS": str(askpass_program(directory)), "SSH_ASKPASS_REQUIRE": "force"}


def prompts_answered() -> int:
    """How many prompts the askpass program has answered so far (each login costs one)."""
    log = prompts_log()
    return len(log.read_text().splitlines()) if log.exists() else 0
