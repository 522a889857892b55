"""Mailbox notes: sealing and opening, delivery online and offline, forgeries,
duplicates and limits (DESIGN 6 and 8)."""

from __future__ import annotations

import struct

import pytest
from rendezvous_harness import App, RvLab, client_config, server_config

from pilot_proto.errors import LocalProtocolError, MessageTooLarge
from pilot_proto.identity import DOMAIN_MAILBOX, Identity, address_bytes
from pilot_proto.noise import HandshakeState
from pilot_proto.records import IdentityRecord
from pilot_proto.rendezvous import (
    LookupResult,
    NoteKind,
    NoteReceived,
    Registered,
    RequestDone,
    RequestFailed,
    open_note,
    seal_note,
)
from pilot_proto.rendezvous.mailbox import X

WALL = 1_700_000_000.0


def ident(seed: int) -> Identity:
    return Identity.from_private_bytes(bytes([seed]) * 32)


def record(identity: Identity) -> IdentityRecord:
    return IdentityRecord.create(identity, hostname=None, sequence=1, expires_at=2**40)


def rng(seed: int = 7):  # type: ignore[no-untyped-def]
    counter = iter(range(1 << 30))
    return lambda n: bytes((seed + next(counter)) % 256 for _ in range(n))


# ------------------------------------------------------------------ sealing and opening


def test_a_sealed_note_opens_for_its_recipient_only() -> None:
    alice, bob, carol = ident(1), ident(2), ident(3)
    rid = bytes(range(16))
    sealed = seal_note(
        alice, record(bob), "trust_request", rid, "task routing", now_wall=WALL, rng=rng()
    )
    note = open_note(bob, sealed, WALL + 5)
    assert note is not None
    assert note.kind is NoteKind.TRUST_REQUEST
    assert note.sender == alice.address and note.sender_public_key == alice.public_key
    assert note.sender_static_key == alice.static_public
    assert note.recipient == bob.address
    assert note.request_id == rid and note.request_id_hex == rid.hex()
    assert note.sent_at == WALL and note.justification == "task routing"
    assert open_note(carol, sealed, WALL) is None


@pytest.mark.parametrize("kind", list(NoteKind))
def test_every_kind_round_trips_and_empty_justification_is_none(kind: NoteKind) -> None:
    sealed = seal_note(ident(1), record(ident(2)), kind, b"r" * 16, None, now_wall=WALL, rng=rng())
    note = open_note(ident(2), sealed, WALL)
    assert note is not None and note.kind is kind and note.justification is None


def test_freshness_window() -> None:
    sealed = seal_note(
        ident(1), record(ident(2)), "trust_accept", b"r" * 16, None, now_wall=WALL, rng=rng()
    )
    assert open_note(ident(2), sealed, WALL + 99, max_age=100) is not None
    assert open_note(ident(2), sealed, WALL + 101, max_age=100) is None
    assert open_note(ident(2), sealed, WALL - 9, max_future=10) is not None
    assert open_note(ident(2), sealed, WALL - 11, max_future=10) is None


def test_any_changed_byte_makes_a_note_unreadable() -> None:
    sealed = seal_note(
        ident(1), record(ident(2)), "trust_request", b"r" * 16, "hi", now_wall=WALL, rng=rng()
    )
    for index in range(len(sealed)):
        mutated = bytearray(sealed)
        mutated[index] ^= 0x01
        assert open_note(ident(2), bytes(mutated), WALL) is None
    assert open_note(ident(2), sealed[:-1], WALL) is None
    assert open_note(ident(2), b"", WALL) is None


def forge(
    sender_static: Identity, claimed: Identity, recipient: Identity, to_address: str
) -> bytes:
    """A note whose noise static key is `sender_static`'s but whose payload claims to be
    `claimed` (with `claimed`'s real binding) and names `to_address` as recipient."""
    payload = struct.pack(
        ">BB32s64s16s16sQH",
        1,
        1,
        claimed.public_key,
        claimed.static_binding,
        address_bytes(to_address),
        b"f" * 16,
        int(WALL * 1000),
        0,
    )
    state = HandshakeState(
        X,
        initiator=True,
        prologue=DOMAIN_MAILBOX,
        s=sender_static.static_private_key,
        rs=recipient.static_public,
        rng=rng(),
    )
    return b"\x01" + state.write_message(payload)


def test_forged_senders_and_readdressed_notes_are_refused() -> None:
    alice, bob, mallory = ident(1), ident(2), ident(9)
    # Control: the forge helper makes valid notes when nothing is forged.
    assert open_note(bob, forge(alice, alice, bob, bob.address), WALL) is not None
    # Mallory claims Alice's key and binding: the binding does not match her static key.
    assert open_note(bob, forge(mallory, alice, bob, bob.address), WALL) is None
    # A note for someone else, sealed to Bob's key, is not Bob's.
    assert open_note(bob, forge(alice, alice, bob, ident(3).address), WALL) is None


def test_local_misuse_raises_clearly() -> None:
    with pytest.raises(MessageTooLarge):
        seal_note(
            ident(1),
            record(ident(2)),
            "trust_request",
            b"r" * 16,
            "x" * 1025,
            now_wall=WALL,
            rng=rng(),
        )
    with pytest.raises(LocalProtocolError):
        seal_note(
            ident(1), record(ident(2)), "trust_request", b"short", None, now_wall=WALL, rng=rng()
        )
    with pytest.raises(ValueError):
        seal_note(ident(1), record(ident(2)), "hello", b"r" * 16, None, now_wall=WALL, rng=rng())


# ------------------------------------------------------------------ through the server


def lookup(lab: RvLab, app: App, query: str) -> IdentityRecord:
    event = lab.result(app, lab.call(app, lambda c, now: c.lookup(query, now)))
    assert isinstance(event, LookupResult), event
    return event.record


def post(
    lab: RvLab, app: App, target: IdentityRecord, kind: str, rid: bytes, text: str | None = None
) -> object:
    return lab.result(app, lab.call(app, lambda c, now: c.post_note(target, kind, rid, text, now)))


def test_a_trust_request_and_its_accept_travel_while_both_are_online() -> None:
    lab = RvLab()
    a = lab.client("a", hostname="agent-a")
    b = lab.client("b", hostname="agent-b")
    assert lab.run_until(lambda: bool(a.of(Registered) and b.of(Registered)))
    b_record = lookup(lab, a, "agent-b")
    rid = bytes(range(16))
    assert isinstance(post(lab, a, b_record, "trust_request", rid, "task routing"), RequestDone)
    assert lab.run_until(lambda: bool(b.of(NoteReceived)))
    got = b.of(NoteReceived)[0]
    assert got.note.kind is NoteKind.TRUST_REQUEST and got.note.sender == a.address
    assert got.note.justification == "task routing" and got.note.request_id == rid
    assert got.sender_record is not None and got.sender_record.hostname == "agent-a"
    # The answer goes back the same way, with the same request id.
    a_record = lookup(lab, b, got.note.sender)
    assert isinstance(post(lab, b, a_record, "trust_accept", rid), RequestDone)
    assert lab.run_until(lambda: bool(a.of(NoteReceived)))
    answer = a.of(NoteReceived)[0].note
    assert answer.kind is NoteKind.TRUST_ACCEPT and answer.request_id == rid
    lab.settle(1)
    assert lab.store.note_count() == 0  # delivered notes are forgotten


def test_a_note_for_an_offline_node_is_delivered_when_it_connects() -> None:
    lab = RvLab()
    a = lab.client("a")
    b = lab.client("b", hostname="agent-b")
    assert lab.run_until(lambda: bool(a.of(Registered) and b.of(Registered)))
    b_record = lookup(lab, a, "agent-b")
    assert b.client is not None
    b.client.close(lab.now)
    lab.settle(1)
    lab.leave(b)
    lab.settle(200)
    assert isinstance(post(lab, a, b_record, "trust_request", b"q" * 16, "hello"), RequestDone)
    assert lab.store.note_count(b.address) == 1
    lab.settle(600)
    b2 = lab.restart_client(b)
    assert lab.run_until(lambda: bool(b2.of(NoteReceived)))
    note = b2.of(NoteReceived)[0]
    assert note.note.sender == a.address and note.note.justification == "hello"
    assert lab.run_until(lambda: lab.store.note_count() == 0)
    lab.settle(60)
    assert len(b2.of(NoteReceived)) == 1


def test_duplicate_notes_reach_the_application_once() -> None:
    lab = RvLab()
    a = lab.client("a")
    b = lab.client("b", hostname="agent-b")
    assert lab.run_until(lambda: bool(a.of(Registered) and b.of(Registered)))
    b_record = lookup(lab, a, "agent-b")
    for _ in range(3):  # resealed each time: different bytes, same request id
        assert isinstance(post(lab, a, b_record, "trust_request", b"d" * 16), RequestDone)
    lab.settle(2)
    assert len(b.of(NoteReceived)) == 1
    assert b.client is not None and b.client.stats["drop_duplicate_note"] == 2
    # Another request id is another note.
    post(lab, a, b_record, "trust_request", b"e" * 16)
    assert lab.run_until(lambda: len(b.of(NoteReceived)) == 2)


def test_notes_that_do_not_open_never_reach_the_application() -> None:
    lab = RvLab()
    a = lab.client("a")
    b = lab.client("b", hostname="agent-b")
    c = lab.client("c", hostname="agent-c")
    assert lab.run_until(lambda: all(x.of(Registered) for x in (a, b, c)))
    c_record = lookup(lab, a, "agent-c")
    b_record = lookup(lab, a, "agent-b")
    # A note sealed to c's key but posted for b: the server forwards it, b cannot open it.
    misrouted = IdentityRecord(
        public_key=b_record.public_key,
        static_public=c_record.static_public,
        static_binding=b_record.static_binding,
        hostname=None,
        sequence=1,
        expires_at=2**40,
        signature=bytes(64),
    )
    assert isinstance(post(lab, a, misrouted, "trust_request", b"m" * 16), RequestDone)
    lab.settle(2)
    assert not b.of(NoteReceived)
    assert b.client is not None and b.client.stats["drop_bad_note"] == 1


def test_mailbox_limits() -> None:
    lab = RvLab(server_config=server_config(max_notes_per_target=2, max_note_size=400))
    a = lab.client("a")
    b = lab.client("b", hostname="agent-b")
    assert lab.run_until(lambda: bool(a.of(Registered) and b.of(Registered)))
    b_record = lookup(lab, a, "agent-b")
    assert b.client is not None
    b.client.close(lab.now)  # offline: notes pile up
    lab.settle(1)
    too_big = post(lab, a, b_record, "trust_request", b"0" * 16, "x" * 300)
    assert isinstance(too_big, RequestFailed) and too_big.code == "too_large"
    for index in range(2):
        assert isinstance(post(lab, a, b_record, "trust_request", bytes([index]) * 16), RequestDone)
    full = post(lab, a, b_record, "trust_request", b"9" * 16)
    assert isinstance(full, RequestFailed) and full.code == "rate_limited"


def test_note_posting_rate_limit() -> None:
    lab = RvLab(server_config=server_config(notes_per_minute=0.1, note_burst=2))
    a = lab.client("a")
    b = lab.client("b", hostname="agent-b")
    assert lab.run_until(lambda: bool(a.of(Registered) and b.of(Registered)))
    b_record = lookup(lab, a, "agent-b")
    results = [post(lab, a, b_record, "trust_request", bytes([i]) * 16) for i in range(3)]
    assert [type(r) for r in results[:2]] == [RequestDone, RequestDone]
    assert isinstance(results[2], RequestFailed) and results[2].code == "rate_limited"


def test_notes_to_unknown_nodes_are_not_found() -> None:
    lab = RvLab()
    a = lab.client("a")
    assert lab.run_until(lambda: bool(a.of(Registered)))
    nobody = record(Identity.generate(lab.net.rng_for("nobody")))
    failed = post(lab, a, nobody, "trust_request", b"n" * 16)
    assert isinstance(failed, RequestFailed) and failed.code == "not_found"


def test_undelivered_notes_expire() -> None:
    lab = RvLab(server_config=server_config(note_lifetime=100.0, sweep_interval=10.0))
    a = lab.client("a")
    b = lab.client("b", hostname="agent-b")
    assert lab.run_until(lambda: bool(a.of(Registered) and b.of(Registered)))
    b_record = lookup(lab, a, "agent-b")
    assert b.client is not None
    b.client.close(lab.now)
    lab.settle(1)
    lab.leave(b)
    post(lab, a, b_record, "trust_request", b"x" * 16)
    assert lab.store.note_count() == 1
    lab.settle(150)
    assert lab.store.note_count() == 0
    b2 = lab.restart_client(b, config=client_config())
    assert lab.run_until(lambda: bool(b2.of(Registered)))
    lab.settle(5)
    assert not b2.of(NoteReceived)
