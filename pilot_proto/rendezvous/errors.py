"""Errors of the rendezvous layer.

Remote input that does not decode raises exactly one exception type,
`RendezvousDecodeError`, which the client and the server catch, count and drop. Local
misuse raises `LocalProtocolError` subclasses, as everywhere in the core.
"""

from __future__ import annotations

from ..errors import LocalProtocolError, PilotError

__all__ = ["InvalidServerKey", "RendezvousDecodeError"]


class RendezvousDecodeError(PilotError):
    """Bytes from the network are not a valid rendezvous message, allow list or note."""


class InvalidServerKey(LocalProtocolError):
    """The KEY of `HOST:PORT#KEY` is not 32 bytes in hex, base64 or base64url."""
