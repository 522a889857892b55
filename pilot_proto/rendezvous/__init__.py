"""The rendezvous (DESIGN 6): registry, mailbox and introductions, sans-IO.

- `RendezvousClient` runs on a node's own `Node`: registration, lookups, the mailbox,
  introductions, reconnection and server-key checks.
- `RendezvousServer` runs on a public `Node` and keeps its state in a `RegistryStore`
  (`InMemoryRegistryStore` here; the daemon has a SQLite one).
- `messages` is the RPC codec, `mailbox` seals and opens notes, `allow_list` is the
  signed allow list. STUN answering, NAT classification and the relay live elsewhere.
"""

from __future__ import annotations

from .allow_list import AllowList
from .client import ClientState, RendezvousClient
from .config import ClientConfig, ServerConfig
from .errors import InvalidServerKey, RendezvousDecodeError
from .events import (
    ClientEvent,
    Disconnected,
    IntroductionReceived,
    KeyChanged,
    LookupResult,
    NoteReceived,
    Registered,
    RegistrationFailed,
    RequestDone,
    RequestFailed,
)
from .mailbox import NoteKind, OpenedNote, open_note, seal_note
from .memory_store import InMemoryRegistryStore
from .messages import ErrorCode
from .server import RendezvousServer
from .server_key import decode_server_key, encode_server_key
from .store import HostnameClaim, Registration, RegistryStore, StoredNote

__all__ = [
    "AllowList",
    "ClientConfig",
    "ClientEvent",
    "ClientState",
    "Disconnected",
    "ErrorCode",
    "HostnameClaim",
    "InMemoryRegistryStore",
    "IntroductionReceived",
    "InvalidServerKey",
    "KeyChanged",
    "LookupResult",
    "NoteKind",
    "NoteReceived",
    "OpenedNote",
    "Registered",
    "Registration",
    "RegistrationFailed",
    "RegistryStore",
    "RendezvousClient",
    "RendezvousDecodeError",
    "RendezvousServer",
    "RequestDone",
    "RequestFailed",
    "ServerConfig",
    "StoredNote",
    "decode_server_key",
    "encode_server_key",
    "open_note",
    "seal_note",
]
