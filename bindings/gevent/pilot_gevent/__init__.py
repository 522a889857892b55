"""pilot_gevent: the gevent binding of pilot-proto.

A `Node` owns a UDP socket on the gevent hub of the thread that starts it; its blocking
methods may be called from any number of greenlets at once, and from other threads (their
calls are queued to the hub through `hub.loop.async_()`). Works with or without
monkey-patching; the library never patches anything itself.

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
