"""pilot_threads: the thread binding of pilot-proto.

A `Node` owns a UDP socket and an I/O thread; its blocking methods may be called from any
number of threads at once (each call is queued to the I/O thread, the core's one owner).

    with Node(identity) as node:
        node.add_peer(record, [endpoint])
        node.send_message(record.address, b"hello")      # returns once receipted
"""

from pilot_proto.driver import BlockingStream as Stream
from pilot_proto.errors import (
    ConnectionFailed,
    ConnectionLost,
    ConnectTimeout,
    DeliveryTimeout,
    MessageRefused,
    NodeClosed,
    NotTrustedByPeer,
    PilotError,
    PilotTimeout,
    StreamRefused,
    StreamResetError,
)

from .node import Node

__all__ = [
    "ConnectTimeout",
    "ConnectionFailed",
    "ConnectionLost",
    "DeliveryTimeout",
    "MessageRefused",
    "Node",
    "NodeClosed",
    "NotTrustedByPeer",
    "PilotError",
    "PilotTimeout",
    "Stream",
    "StreamRefused",
    "StreamResetError",
]
