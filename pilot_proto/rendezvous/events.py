"""Events the RendezvousClient hands the application (`RendezvousClient.next_event`).

Frozen, slotted dataclasses without behaviour. Error `code`s are `ErrorCode` values
(messages.py) or, for failures the client sees on its own side, "timeout" and
"connection_failed" (DESIGN 9 names).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..records import IdentityRecord
from ..transmit import Addr
from .mailbox import OpenedNote

__all__ = [
    "ClientEvent",
    "Disconnected",
    "IntroductionReceived",
    "KeyChanged",
    "LookupResult",
    "NoteReceived",
    "Registered",
    "RegistrationFailed",
    "RequestDone",
    "RequestFailed",
]


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """Base of every rendezvous client event."""


@dataclass(frozen=True, slots=True)
class Registered(ClientEvent):
    """Registered after a (re)connection. `static_key` is the server's X25519 key: pin it
    (after trust on first use it is what `HOST:PORT#KEY` should say from now on).
    `observed` is our address as the server saw it (a server-reflexive candidate)."""

    server_address: str
    static_key: bytes
    observed: Addr | None


@dataclass(frozen=True, slots=True)
class RegistrationFailed(ClientEvent):
    """The server refused our registration (already_exists: the hostname is taken)."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class LookupResult(ClientEvent):
    """The identity record a lookup found, already verified by the client."""

    request_id: int
    record: IdentityRecord


@dataclass(frozen=True, slots=True)
class RequestFailed(ClientEvent):
    request_id: int
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class RequestDone(ClientEvent):
    """A request without a result (set_hostname, publish_allow_list, post_note) succeeded."""

    request_id: int


@dataclass(frozen=True, slots=True)
class NoteReceived(ClientEvent):
    """A mailbox note for us, opened and verified, seen for the first time.
    `sender_record` is the sender's verified identity record when the server had one."""

    note: OpenedNote
    sender_record: IdentityRecord | None


@dataclass(frozen=True, slots=True)
class IntroductionReceived(ClientEvent):
    """Connect to this peer now: `node.add_peer(record, candidates)` then `node.connect`
    after `start_delay` seconds. `request_id` is the request_introduction this answers,
    None when the peer asked for us (we are the target)."""

    record: IdentityRecord
    candidates: tuple[Addr, ...]
    start_delay: float
    probe_limit: int
    request_id: int | None


@dataclass(frozen=True, slots=True)
class KeyChanged(ClientEvent):
    """The server at `endpoint` no longer presents the pinned key. Nothing is sent to it;
    the application reports `key_changed` with the new key in its hint."""

    endpoint: Addr
    pinned: bytes
    presented: bytes


@dataclass(frozen=True, slots=True)
class Disconnected(ClientEvent):
    """The session with the server is gone or could not be made; the client reconnects
    by itself (requests stay queued) unless it was closed or the key changed."""

    reason: str
