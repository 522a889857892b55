"""Events of reliable delivery, handed by the Node to the application unchanged.

Frozen, slotted dataclasses without behaviour; `address` (from `Event`) names the peer.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..events import Event

__all__ = [
    "ConnectionClosed",
    "DatagramReceived",
    "MessageDelivered",
    "MessageFailed",
    "MessageReceived",
    "PeerUnresponsive",
    "PongReceived",
    "StreamEnded",
    "StreamOpened",
    "StreamReadable",
    "StreamReset",
    "StreamWritable",
]


@dataclass(frozen=True, slots=True)
class MessageReceived(Event):
    """A whole message, in order and once. Call `confirm_persisted` when it is safe."""

    message_id: bytes
    type: str
    data: bytes
    reply_to: bytes | None


@dataclass(frozen=True, slots=True)
class MessageDelivered(Event):
    """The peer's application confirmed it persisted the message (its RECEIPT arrived)."""

    message_id: bytes


@dataclass(frozen=True, slots=True)
class MessageFailed(Event):
    """The message will never be delivered and is no longer resent. `reason` is
    "not_trusted" when the peer refused it because it does not trust us (REFUSED)."""

    message_id: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class StreamOpened(Event):
    """The peer opened a stream to a port we listen on."""

    stream_id: int
    port: int


@dataclass(frozen=True, slots=True)
class StreamReadable(Event):
    """`read_stream` has data (or the end) for this stream; sent again only after it drained."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamEnded(Event):
    """The peer half-closed the stream and every byte before the end has been read."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset(Event):
    """The stream was aborted in both directions: by the peer, by a refusal, or by a restart.
    `code` is the peer's STREAM_RESET code (`ResetCode`; NOT_TRUSTED: it does not trust us)."""

    stream_id: int
    reason: str
    code: int = 0


@dataclass(frozen=True, slots=True)
class StreamWritable(Event):
    """The stream's send buffer has room again (see `stream_send_capacity`)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class DatagramReceived(Event):
    """An unreliable datagram."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PongReceived(Event):
    """The answer to `ping`: `challenge` is what `ping` returned, `rtt` in seconds."""

    rtt: float
    challenge: bytes


@dataclass(frozen=True, slots=True)
class PeerUnresponsive(Event):
    """No ACK for several probe timeouts while data is outstanding: try a fresh handshake."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The connection is closed: by `close` (by_peer False) or by the peer's CLOSE."""

    reason: str
    by_peer: bool
