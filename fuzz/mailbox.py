"""Harness: opening mailbox notes (rendezvous/mailbox.py), as every node does with what
the rendezvous pushes to it.

The first byte picks the layer: 0 opens the input as a sealed note; 1 seals the input as
the *payload* of a genuine Noise X message from a fixed sender, so the parsing behind the
AEAD is reached. `open_note` returns an `OpenedNote` or None and never raises; a note
that opens names us as recipient and its sender by the key that authenticated it.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pilot_proto.identity import DOMAIN_MAILBOX, Identity, address_bytes
from pilot_proto.noise import HandshakeState
from pilot_proto.records import IdentityRecord
from pilot_proto.rendezvous import open_note, seal_note
from pilot_proto.rendezvous.mailbox import MAX_JUSTIFICATION, NOTE_VERSION, X

if TYPE_CHECKING:
    from .traffic import Traffic


RECIPIENT = Identity.from_private_bytes(bytes(range(40, 72)))
SENDER = Identity.from_private_bytes(bytes(range(80, 112)))
NOW_WALL = 1_700_000_000.0
# docs/PROTOCOL.md section 8.4: version, kind, sender Ed25519 key, static binding,
# recipient address, request id, timestamp (Unix ms), justification length.
PAYLOAD_HEAD = struct.Struct(">BB32s64s16s16sQH")


def _rng(n: int) -> bytes:
    return b"\x11" * n


def test_one_input(data: bytes) -> None:
    if not data:
        return
    body = data[1:]
    if data[0] % 2 == 0:
        sealed = body
    else:
        state = HandshakeState(X, initiator=True, prologue=DOMAIN_MAILBOX,
                               s=SENDER.static_private_key, rs=RECIPIENT.static_public, rng=_rng)
        sealed = bytes((NOTE_VERSION,)) + state.write_message(body[:4096])
    note = open_note(RECIPIENT, sealed, NOW_WALL)
    if note is not None:
        assert note.recipient == RECIPIENT.address
        assert note.justification is None or len(note.justification.encode()) <= MAX_JUSTIFICATION
        if data[0] % 2:
            assert note.sender_static_key == SENDER.static_public


def seeds(traffic: Traffic) -> list[bytes]:
    recipient = IdentityRecord.create(RECIPIENT, hostname=None, sequence=1, expires_at=2**40)
    out = [b"\x00" + sealed for sealed in traffic.sealed_notes]
    for kind, justification in (("trust_request", "task routing"), ("trust_accept", None),
                                ("trust_reject", "x" * 1024)):
        out.append(b"\x00" + seal_note(SENDER, recipient, kind, bytes(range(16)), justification,
                                       now_wall=NOW_WALL, rng=_rng))
    text = b"task routing"
    payload = PAYLOAD_HEAD.pack(NOTE_VERSION, 1, SENDER.public_key, SENDER.static_binding,
                                address_bytes(RECIPIENT.address), bytes(16),
                                int(NOW_WALL * 1000), len(text)) + text
    out.append(b"\x01" + payload)
    return out
