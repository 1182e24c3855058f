"""asyncssh, imported without the deprecation warnings it sets off in ``cryptography``.

asyncssh still names DSA (and a few old ciphers) in its type hints and tables, so importing
it with a current ``cryptography`` printed ``CryptographyDeprecationWarning: DSA is
deprecated`` ten times into every user's terminal, about algorithms wfl_async never offers.
Only those warnings, and only where asyncssh raises them, are filtered; any other warning
(from asyncssh or anything else) still reaches the user.
"""

from __future__ import annotations

import warnings

warnings.filterwarnings(
    "ignore", message=r"(DSA|TripleDES|Blowfish|CAST5|SEED|IDEA|ARC4)\b.* (is|has been) (deprecated|moved)",
    module=r"asyncssh(\.|$)")

import asyncssh  # noqa: E402 - the filter must be in place first
from asyncssh.encryption import get_default_encryption_algs  # noqa: E402

__all__ = ["asyncssh", "get_default_encryption_algs"]
