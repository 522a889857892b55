"""Mailbox notes: small sealed messages between nodes not yet connected (DESIGN 6 and 8).

A note is one `Noise_X_25519_AESGCM_SHA256` handshake message to the recipient's static
X25519 key (from its identity record). X's `ss` authenticates the sender's static key;
the payload binds that key to the sender's Ed25519 key (the static binding of DESIGN 4),
so the recipient learns the sender's address without trusting the server, which only
stores and forwards opaque bytes. The prologue is the mailbox signing domain, so a note
can never be read as anything else.

Payload (docs/PROTOCOL.md section 8.4): kind, sender Ed25519 key and static binding,
recipient address (a note sealed to one node cannot be re-addressed to another holding
the same key), a 16-byte request id, a wall-clock timestamp, and an optional justification
of at most 1 KiB. `open_note` checks all of it and returns None for anything wrong.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from ..errors import LocalProtocolError, MessageTooLarge, NoiseError
from ..identity import (
    DOMAIN_MAILBOX,
    Identity,
    address_bytes,
    address_from_bytes,
    address_from_public_key,
    verify_static_binding,
)
from ..noise import HandshakeState, parse_protocol_name
from ..records import IdentityRecord

__all__ = [
    "MAX_JUSTIFICATION",
    "NOTE_VERSION",
    "REQUEST_ID_SIZE",
    "NoteKind",
    "OpenedNote",
    "SeenNotes",
    "open_note",
    "seal_note",
]

NOTE_VERSION = 1
REQUEST_ID_SIZE = 16
#: Justifications are for humans; 1 KiB of UTF-8 is plenty and keeps notes small.
MAX_JUSTIFICATION = 1024
X = parse_protocol_name("Noise_X_25519_AESGCM_SHA256")

_KIND_NUMBERS = {"trust_request": 1, "trust_accept": 2, "trust_reject": 3}
# version, kind, sender Ed25519 key, static binding, recipient address, request id,
# timestamp (Unix milliseconds), justification length; then the justification.
_PAYLOAD = struct.Struct(">BB32s64s16s16sQH")


class NoteKind(StrEnum):
    TRUST_REQUEST = "trust_request"
    TRUST_ACCEPT = "trust_accept"
    TRUST_REJECT = "trust_reject"


_KIND_BY_NUMBER = {number: NoteKind(name) for name, number in _KIND_NUMBERS.items()}


@dataclass(frozen=True, slots=True)
class OpenedNote:
    """A note that opened and verified: the sender is authenticated by its keys."""

    kind: NoteKind
    sender: str
    sender_public_key: bytes
    sender_static_key: bytes
    recipient: str
    request_id: bytes
    sent_at: float
    justification: str | None

    @property
    def request_id_hex(self) -> str:
        return self.request_id.hex()


def seal_note(
    sender: Identity,
    recipient: IdentityRecord,
    kind: NoteKind | str,
    request_id: bytes,
    justification: str | None,
    *,
    now_wall: float,
    rng: Callable[[int], bytes],
) -> bytes:
    """Seal a note to `recipient`'s static key. LocalProtocolError on bad arguments."""
    kind = NoteKind(kind)
    if len(request_id) != REQUEST_ID_SIZE:
        raise LocalProtocolError(f"a note's request id is {REQUEST_ID_SIZE} bytes")
    text = (justification or "").encode("utf-8")
    if len(text) > MAX_JUSTIFICATION:
        raise MessageTooLarge(len(text), MAX_JUSTIFICATION, "justification")
    payload = (
        _PAYLOAD.pack(
            NOTE_VERSION,
            _KIND_NUMBERS[kind.value],
            sender.public_key,
            sender.static_binding,
            address_bytes(recipient.address),
            bytes(request_id),
            max(0, int(now_wall * 1000)),
            len(text),
        )
        + text
    )
    state = HandshakeState(
        X,
        initiator=True,
        prologue=DOMAIN_MAILBOX,
        s=sender.static_private_key,
        rs=recipient.static_public,
        rng=rng,
    )
    return bytes((NOTE_VERSION,)) + state.write_message(payload)


def open_note(
    identity: Identity,
    sealed: bytes,
    now_wall: float,
    *,
    max_age: float = 8 * 86400.0,
    max_future: float = 600.0,
) -> OpenedNote | None:
    """Open a note sealed to `identity`. None unless it decrypts, the sender's binding
    holds, it names us as recipient, and its timestamp lies within
    [now - max_age, now + max_future]. Never raises on remote input."""
    if len(sealed) < 2 or sealed[0] != NOTE_VERSION:
        return None
    try:
        state = HandshakeState(
            X, initiator=False, prologue=DOMAIN_MAILBOX, s=identity.static_private_key
        )
        payload = state.read_message(bytes(sealed[1:]))
    except (NoiseError, ValueError):
        return None
    sender_static = state.remote_static
    if sender_static is None or len(payload) < _PAYLOAD.size:
        return None
    version, kind_number, public_key, binding, recipient, request_id, stamp_ms, size = (
        _PAYLOAD.unpack_from(payload)
    )
    kind = _KIND_BY_NUMBER.get(kind_number)
    if version != NOTE_VERSION or kind is None or len(payload) != _PAYLOAD.size + size:
        return None
    if size > MAX_JUSTIFICATION or recipient != address_bytes(identity.address):
        return None
    sent_at = stamp_ms / 1000
    if not now_wall - max_age <= sent_at <= now_wall + max_future:
        return None
    # The static key X authenticated must be the one the sender's Ed25519 key vouches for.
    if not verify_static_binding(public_key, sender_static, binding):
        return None
    try:
        justification = payload[_PAYLOAD.size :].decode("utf-8") or None
    except UnicodeDecodeError:
        return None
    return OpenedNote(
        kind=kind,
        sender=address_from_public_key(public_key),
        sender_public_key=public_key,
        sender_static_key=sender_static,
        recipient=address_from_bytes(recipient),
        request_id=request_id,
        sent_at=sent_at,
        justification=justification,
    )


class SeenNotes:
    """The notes a receiver already took, to drop duplicates (DESIGN 6: receivers
    de-duplicate by request id). Keyed by sender, kind and request id, so an accept
    carrying the id of our own request is not mistaken for a repeat. Bounded, oldest
    forgotten first: the application's own records (pending requests by id) are the
    durable de-duplication."""

    __slots__ = ("_limit", "_seen")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: OrderedDict[tuple[str, str, bytes], None] = OrderedDict()

    def first_time(self, note: OpenedNote) -> bool:
        key = (note.sender, note.kind.value, note.request_id)
        if key in self._seen:
            return False
        self._seen[key] = None
        while len(self._seen) > self._limit:
            self._seen.popitem(last=False)
        return True
