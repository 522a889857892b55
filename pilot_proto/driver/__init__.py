"""What the three bindings share: the core's owner, canonical addresses, the UDP socket,
and the blocking API (DESIGN 1-2).

- `owner.Driver`: routes the core's events to waiting calls and says when to wake.
- `pending.Pending`: one waiting call, in whatever way the binding waits.
- `addresses`: canonical addresses (DESIGN 2).
- `udp.UdpPort`: the socket, with the binding's socket module injected (the core imports
  no `socket`); GSO batches, GRO reads, buffer sizes.
- `blocking.BlockingNode`, `BlockingStream`: the API of pilot_gevent and pilot_threads.
"""

from __future__ import annotations

from .addresses import canonical_address, socket_address
from .blocking import READ_SIZE, BlockingNode, BlockingStream, Handoff, Lock
from .busy_poll import BUSY_POLL_LIMIT, BusyPoll
from .owner import DATAGRAM_QUEUE_LIMIT, Driver, StreamState
from .pending import Notify, Pending
from .udp import (
    GSO_MAX_BYTES,
    GSO_MAX_SEGMENTS,
    GSO_REFUSED,
    RECEIVE_BATCH,
    RECEIVE_ROUNDS,
    SO_RCVBUFFORCE,
    SO_SNDBUFFORCE,
    SOCKET_BUFFER_SIZE,
    SOL_UDP,
    UDP_GRO,
    UDP_SEGMENT,
    DatagramSocket,
    SendCall,
    SocketModule,
    UdpPort,
    buffer_shortfall,
    gso_ancillary,
    gso_batches,
    sendmsg_calls,
    split_gro,
)

__all__ = [
    "BUSY_POLL_LIMIT",
    "DATAGRAM_QUEUE_LIMIT",
    "GSO_MAX_BYTES",
    "GSO_MAX_SEGMENTS",
    "GSO_REFUSED",
    "READ_SIZE",
    "RECEIVE_BATCH",
    "RECEIVE_ROUNDS",
    "SOCKET_BUFFER_SIZE",
    "SOL_UDP",
    "SO_RCVBUFFORCE",
    "SO_SNDBUFFORCE",
    "UDP_GRO",
    "UDP_SEGMENT",
    "BlockingNode",
    "BlockingStream",
    "BusyPoll",
    "DatagramSocket",
    "Driver",
    "Handoff",
    "Lock",
    "Notify",
    "Pending",
    "SendCall",
    "SocketModule",
    "StreamState",
    "UdpPort",
    "buffer_shortfall",
    "canonical_address",
    "gso_ancillary",
    "gso_batches",
    "sendmsg_calls",
    "socket_address",
    "split_gro",
]
