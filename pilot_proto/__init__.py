"""pilot-proto: the sans-IO core of an encrypted peer-to-peer network for agents.

`Node` is the whole API a binding drives (DESIGN section 2); everything else here is what
an application needs to name: identities, records, configuration, events and errors.
"""

from __future__ import annotations

from .config import NodeConfig, SessionConfig
from .delivery import (
    ConnectionClosed,
    DatagramReceived,
    DeliveryConfig,
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
from .errors import (
    InvalidIdentity,
    InvalidRecord,
    KeyFilePermissionError,
    LocalProtocolError,
    MessageRefused,
    MessageTooLarge,
    NoiseError,
    NotTrustedByPeer,
    PeerNotTrusted,
    PilotError,
    UnknownPeer,
)
from .events import (
    Event,
    HandshakeCompleted,
    HandshakeFailed,
    SessionClosed,
    TrustAccepted,
    TrustRejected,
    TrustRequested,
)
from .identity import Identity, address_from_public_key, is_address
from .node import Node
from .records import IdentityRecord, Locator
from .transmit import Addr, Transmit

__all__ = [
    "Addr",
    "ConnectionClosed",
    "DatagramReceived",
    "DeliveryConfig",
    "Event",
    "HandshakeCompleted",
    "HandshakeFailed",
    "Identity",
    "IdentityRecord",
    "InvalidIdentity",
    "InvalidRecord",
    "KeyFilePermissionError",
    "LocalProtocolError",
    "Locator",
    "MessageDelivered",
    "MessageFailed",
    "MessageReceived",
    "MessageRefused",
    "MessageTooLarge",
    "Node",
    "NodeConfig",
    "NoiseError",
    "NotTrustedByPeer",
    "PeerNotTrusted",
    "PeerUnresponsive",
    "PilotError",
    "PongReceived",
    "SessionClosed",
    "SessionConfig",
    "StreamEnded",
    "StreamOpened",
    "StreamReadable",
    "StreamReset",
    "StreamWritable",
    "Transmit",
    "TrustAccepted",
    "TrustRejected",
    "TrustRequested",
    "UnknownPeer",
    "address_from_public_key",
    "is_address",
]
