"""pilot_asyncio: the asyncio binding of pilot-proto (default event loop or uvloop).

A `Node` owns a UDP socket on the running loop; its coroutines may be awaited from any
number of tasks at once. The library never installs uvloop: the application chooses.

    async with Node(identity) as node:
        node.add_peer(record, [endpoint])
        await node.send_message(record.address, b"hello")   # returns once receipted
"""

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
from .stream import Stream

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
