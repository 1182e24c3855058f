"""A system's ``host`` string, as ExPyRe writes it: ``[user@]host[:port]`` or an ssh config alias."""

from __future__ import annotations

__all__ = ["split_host"]


def split_host(host: str) -> tuple[str, str | None, int | None]:
    """``(host, user or None, port or None)`` of ``[user@]host[:port]``."""
    user, _, rest = host.rpartition("@")
    name, sep, port = rest.partition(":")
    return name, user or None, int(port) if sep and port.isdigit() else None
