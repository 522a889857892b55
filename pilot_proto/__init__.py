"""pilot-proto: the sans-IO core of an encrypted peer-to-peer network for agents."""

from __future__ import annotations

from .errors import LocalProtocolError, NoiseError, PilotError
from .transmit import Addr, Transmit

__all__ = ["Addr", "LocalProtocolError", "NoiseError", "PilotError", "Transmit"]
