"""The one place a system's configuration becomes its transport (this machine, asyncssh, or OpenSSH)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..transport.base import Transport
from ..transport.local import LocalTransport

if TYPE_CHECKING:
    from ..config import SystemConfig

__all__ = ["build_transport"]


def build_transport(config: SystemConfig) -> Transport:
    """A new transport for ``config``: ``"host": null`` runs here; else ``"transport"`` chooses the ssh client."""
    if config.host is None:
        return LocalTransport()
    options: dict[str, Any] = dict(ssh_config=config.ssh_config, max_channels=config.max_channels,
                                   host_key_checking=config.ssh_host_key_checking)
    if config.retry is not None:  # EXPYRE_RETRY: so many tries, so long between them
        tries, wait = config.retry
        options.update(connect_attempts=tries, retry_wait=wait, max_delay=max(wait, 2.0))
    if config.transport == "openssh":
        from ..transport.openssh import OpenSshTransport

        return OpenSshTransport(config.host, **options)
    from ..transport.ssh import SshTransport  # asyncssh only when a host needs it

    return SshTransport(config.host, **options)
