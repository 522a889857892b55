"""Exceptions raised for local misuse of the core.

Remote misbehaviour never raises: it is dropped and counted in `Node.stats`, or
surfaces as an event. Everything here means "the caller did something wrong".
"""

from __future__ import annotations


class PilotError(Exception):
    """Base of every exception pilot-proto raises on purpose."""


class LocalProtocolError(PilotError):
    """The caller asked for something the protocol state does not allow."""


class InvalidIdentity(LocalProtocolError):
    """A key, key file or identity record given to us is unusable."""


class KeyFilePermissionError(InvalidIdentity):
    """A private key file is readable by other users; it must be mode 0600."""


class InvalidRecord(LocalProtocolError):
    """An identity record failed to decode or verify."""


class UnknownPeer(LocalProtocolError):
    """An address was used that was never added with `Node.add_peer`."""


class PeerNotTrusted(LocalProtocolError):
    """Application data was addressed to a peer the trust policy does not accept."""


class MessageTooLarge(LocalProtocolError):
    """A message or datagram exceeds the configured size limit."""

    def __init__(self, size: int, limit: int, what: str = "message") -> None:
        super().__init__(
            f"{what} of {size} bytes exceeds the limit of {limit} bytes; "
            f"split it or raise the limit in the config"
        )
        self.size = size
        self.limit = limit


class NoiseError(PilotError):
    """A Noise handshake or cipher operation failed (bad MAC, wrong state, bad input)."""


class UnknownStream(LocalProtocolError):
    """A stream id that is not open on this connection (never opened, or already closed)."""


class StreamStateError(LocalProtocolError):
    """The stream's state does not allow this (writing after end_stream, after a reset...)."""


class StreamBufferFull(LocalProtocolError):
    """More data than the stream's send buffer has room for; wait for `StreamWritable`."""

    def __init__(self, size: int, capacity: int) -> None:
        super().__init__(
            f"{size} bytes do not fit in the stream's send buffer ({capacity} bytes free); "
            f"write at most stream_send_capacity() and wait for StreamWritable"
        )
        self.size = size
        self.capacity = capacity


class ConnectionClosedError(LocalProtocolError):
    """The delivery connection was closed; nothing more can be sent on it."""


class UnknownMessage(LocalProtocolError):
    """A message id that is not awaiting confirmation (never received, or confirmed already)."""


class InvalidMessageType(LocalProtocolError):
    """A message type other than "text", "json" or "binary", or an invalid reply_to id."""


class InvalidPort(LocalProtocolError):
    """A stream port outside 0-65535."""


# Raised by the bindings (pilot_asyncio, pilot_gevent, pilot_threads): one hierarchy for all
# three, so code that catches them does not depend on the I/O style.


class PilotTimeout(PilotError, TimeoutError):
    """An operation did not finish in time. What it started may still complete (a message
    can be delivered late); the node itself is unchanged and stays usable."""


class ConnectionFailed(PilotError):
    """No session with the peer could be made (the handshake failed or timed out), or it
    ended while the caller waited for it."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"no connection to {address}: {reason}")
        self.address = address
        self.reason = reason


class ConnectTimeout(ConnectionFailed, PilotTimeout):
    """The handshake with the peer did not complete within the caller's timeout."""


class ConnectionLost(ConnectionFailed):
    """The session with the peer closed (by the peer, locally, or because it was untrusted)
    while the caller waited; what was queued toward the peer was dropped with it."""


class DeliveryTimeout(PilotTimeout):
    """No receipt for a message within the timeout: the peer's application has not
    confirmed it. It stays queued and may still be delivered."""

    def __init__(self, address: str, message_id: bytes, timeout: float) -> None:
        super().__init__(
            f"message {message_id.hex()} to {address} was not confirmed within {timeout:g} s; "
            f"it stays queued and may still be delivered"
        )
        self.address = address
        self.message_id = message_id
        self.timeout = timeout


class StreamResetError(PilotError):
    """The stream was aborted: by the peer, by us (a write cancelled part-way) or by a
    restart of the peer. No more data flows on it in either direction."""

    def __init__(self, address: str, stream_id: int, reason: str) -> None:
        super().__init__(f"stream {stream_id} with {address} was reset: {reason or 'no reason'}")
        self.address = address
        self.stream_id = stream_id
        self.reason = reason


class NotTrustedByPeer(PilotError):
    """The peer does not trust this node: it refused what we sent (DESIGN 8). Nothing of it
    reached the peer's application and nothing is resent; ask the peer for trust first."""

    def __init__(self, address: str, what: str) -> None:
        super().__init__(
            f"{address} does not trust this node and refused {what}; ask it for trust first"
        )
        self.address = address


class MessageRefused(NotTrustedByPeer):
    """The peer refused a message because it does not trust us."""

    def __init__(self, address: str, message_id: bytes) -> None:
        super().__init__(address, f"message {message_id.hex()}")
        self.message_id = message_id


class StreamRefused(StreamResetError, NotTrustedByPeer):
    """The peer reset a stream because it does not trust us (code NOT_TRUSTED); caught
    by handlers of either base."""

    def __init__(self, address: str, stream_id: int) -> None:
        PilotError.__init__(
            self,
            f"{address} does not trust this node and refused stream {stream_id}; "
            "ask it for trust first",
        )
        self.address = address
        self.stream_id = stream_id
        self.reason = "not trusted"


class NodeClosed(PilotError):
    """The node was closed (or never started); nothing more can be done with it."""

    def __init__(self, message: str = "the node is closed; start a new one") -> None:
        super().__init__(message)
