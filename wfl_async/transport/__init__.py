"""Transports: how commands and files reach a system (this machine, or one ssh connection)."""

from __future__ import annotations

from .base import Transport, TransportStats

__all__ = ["Transport", "TransportStats"]
