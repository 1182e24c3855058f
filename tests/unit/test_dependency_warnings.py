"""No harmless dependency warnings in the user's terminal; real warnings still reach it."""

from __future__ import annotations

import subprocess
import sys


def _stderr(code: str) -> str:
    return subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True,
                          check=True).stderr


def test_asyncssh_imported_by_wfl_async_prints_no_dsa_deprecation_but_other_warnings_still_show() -> None:
    # the precondition: this asyncssh/cryptography pair does warn when imported plainly
    assert "DSA is deprecated" in _stderr("import asyncssh")
    stderr = _stderr("import wfl_async.transport.ssh, warnings\n"
                     "warnings.warn('a real one', DeprecationWarning)\n"
                     "import asyncssh.crypto.dsa")  # asyncssh's own modules too
    assert "DSA is deprecated" not in stderr and "CryptographyDeprecationWarning" not in stderr, stderr
    assert "a real one" in stderr
