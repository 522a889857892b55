"""Reliable delivery inside a session: frames, streams, messages, datagrams, loss
recovery, congestion and flow control, path MTU (DESIGN section 5).

The Node owns one `Connection` per peer and feeds it the plaintext of authenticated
transport packets; see connection.py for the contract.
"""

from __future__ import annotations

from .config import DeliveryConfig
from .connection import Connection, ConnectionState
from .events import (
    ConnectionClosed,
    DatagramReceived,
    MessageDelivered,
    MessageFailed,
    MessageReceived,
    PeerUnresponsive,
    PongReceived,
    StreamEnded,
    StreamOpened,
    StreamReadable,
    StreamReset,
    StreamWritable,
)
from .frames import FrameDecodeError
from .streams import ResetCode

__all__ = [
    "Connection",
    "ConnectionClosed",
    "ConnectionState",
    "DatagramReceived",
    "DeliveryConfig",
    "FrameDecodeError",
    "MessageDelivered",
    "MessageFailed",
    "MessageReceived",
    "PeerUnresponsive",
    "PongReceived",
    "ResetCode",
    "StreamEnded",
    "StreamOpened",
    "StreamReadable",
    "StreamReset",
    "StreamWritable",
]
