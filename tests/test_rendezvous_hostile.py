"""Hostile input never raises out of the rendezvous server or client (DESIGN 2 and 6):
authenticated clients sending garbage or others' records, and a server lying to a client."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st
from rendezvous_harness import App, RawClient, RvLab, register_message

from pilot_proto import MessageReceived
from pilot_proto.identity import Identity
from pilot_proto.records import IdentityRecord, Locator
from pilot_proto.rendezvous import (
    AllowList,
    IntroductionReceived,
    LookupResult,
    NoteReceived,
    Registered,
    RequestFailed,
)
from pilot_proto.rendezvous.messages import (
    Introduce,
    Introduction,
    Lookup,
    NotePush,
    Ok,
    Ping,
    PostNote,
    PublishAllowList,
    RecordReply,
    RegisteredReply,
    encode_message,
)


def valid_requests(raw: RawClient, victim: App) -> list[bytes]:
    me = raw.app.node.identity
    wall = int(raw.lab.net.wall_clock())
    other = Identity.generate(raw.lab.net.rng_for("other"))
    return [
        register_message(me, 1, wall * 1000, wall + 600),
        register_message(other, 2, wall * 1000, wall + 600),
        encode_message(
            PublishAllowList(3, AllowList.create(me, [victim.address], public=False, sequence=5))
        ),
        encode_message(PublishAllowList(4, AllowList.create(other, [], public=True, sequence=5))),
        encode_message(Lookup(5, victim.address)),
        encode_message(Lookup(6, "agent-victim")),
        encode_message(PostNote(7, victim.address, b"\x01" + bytes(200))),
        encode_message(Introduce(8, victim.address)),
        encode_message(Ping(9)),
        # Server-to-client messages have no business arriving at the server.
        encode_message(Ok(10)),
        encode_message(RegisteredReply(11, ("192.0.2.1", 1))),
    ]


def mutate(data: bytes, rnd: random.Random) -> bytes:
    wire = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        choice = rnd.random()
        if choice < 0.5 and wire:
            wire[rnd.randrange(len(wire))] = rnd.randrange(256)
        elif choice < 0.75 and wire:
            del wire[rnd.randrange(len(wire)) :]
        else:
            wire += rnd.randbytes(rnd.randint(1, 16))
    return bytes(wire)


def test_a_hostile_client_over_a_real_session_harms_nobody() -> None:
    lab = RvLab(seed=11)
    victim = lab.client("victim", hostname="agent-victim")
    assert lab.run_until(lambda: bool(victim.of(Registered)))
    raw = RawClient(lab, "raw")
    rnd = random.Random(5)
    seeds = valid_requests(raw, victim)
    for seed in seeds:
        raw.send(seed)
    for _ in range(300):
        raw.send(
            mutate(rnd.choice(seeds), rnd)
            if rnd.random() < 0.8
            else rnd.randbytes(rnd.randint(0, 80))
        )
    raw.app.node.send_message(raw.server, b"hello", lab.now, type="text")
    lab.settle(10)
    server = lab.server
    assert server.server is not None
    assert server.server.stats["internal_error"] == 0 and server.node.stats["internal_error"] == 0
    assert server.server.stats["drop_malformed_request"] > 0
    assert server.server.stats["drop_not_a_request"] >= 2
    # Nobody could register someone else's record, and the victim is untouched.
    other = Identity.generate(lab.net.rng_for("other"))
    assert other.address not in lab.store.registrations
    assert lab.store.registrations[victim.address].record.hostname == "agent-victim"
    # The server still serves everyone.
    late = lab.client("late", hostname="agent-late")
    assert lab.run_until(lambda: bool(late.of(Registered)))
    event = lab.result(late, lab.call(late, lambda c, now: c.lookup("agent-victim", now)))
    assert isinstance(event, LookupResult)


@given(st.binary(max_size=300))
def test_any_request_bytes_never_raise_out_of_the_server(data: bytes) -> None:
    lab, raw = _server_with_raw_client()
    server = lab.server.server
    assert server is not None
    event = MessageReceived(raw.app.address, b"m" * 16, "binary", data, None)
    assert server.handle_event(event, lab.now)
    assert server.stats["internal_error"] == 0


_CACHED: list[tuple[RvLab, RawClient]] = []


def _server_with_raw_client() -> tuple[RvLab, RawClient]:
    if not _CACHED:
        lab = RvLab(seed=2)
        _CACHED.append((lab, RawClient(lab, "raw")))
    return _CACHED[0]


# ------------------------------------------------------------------ a lying server


def registered_client() -> tuple[RvLab, App]:
    lab = RvLab(seed=3)
    a = lab.client("a", hostname="agent-a")
    assert lab.run_until(lambda: bool(a.of(Registered)))
    return lab, a


def from_server(lab: RvLab, app: App, message: object | bytes) -> None:
    """Hand the client a message as if the server had sent it."""
    assert app.client is not None and app.client.server_address is not None
    data = message if isinstance(message, bytes) else encode_message(message)  # type: ignore[arg-type]
    event = MessageReceived(app.client.server_address, b"x" * 16, "binary", data, None)
    assert app.client.handle_event(event, lab.now)
    app.pump(lab.now)


@given(st.binary(max_size=300))
def test_any_server_bytes_never_raise_out_of_the_client(data: bytes) -> None:
    lab, a = _client_fixture()
    from_server(lab, a, data)
    assert a.client is not None and a.client.stats["internal_error"] == 0


_CLIENTS: list[tuple[RvLab, App]] = []


def _client_fixture() -> tuple[RvLab, App]:
    if not _CLIENTS:
        _CLIENTS.append(registered_client())
    return _CLIENTS[0]


def test_a_lookup_answered_with_another_nodes_record_fails() -> None:
    lab, a = registered_client()
    b = lab.client("b", hostname="agent-b")
    assert lab.run_until(lambda: bool(b.of(Registered)))
    assert a.client is not None
    rid = a.client.lookup("agent-c", lab.now)
    b_record = lab.store.registrations[b.address].record
    from_server(lab, a, RecordReply(rid, b_record))
    failed = [e for e in a.events if isinstance(e, RequestFailed) and e.request_id == rid]
    assert failed and failed[0].code == "internal"
    assert not a.of(LookupResult)


def test_forged_or_expired_records_from_the_server_are_refused() -> None:
    lab, a = registered_client()
    assert a.client is not None
    other = Identity.generate(lab.net.rng_for("other"))
    good = IdentityRecord.create(other, hostname="agent-x", sequence=1, expires_at=2**40)
    forged = IdentityRecord(
        good.public_key,
        good.static_public,
        good.static_binding,
        "agent-x",
        2,
        2**40,
        good.signature,
    )
    expired = IdentityRecord.create(other, hostname="agent-x", sequence=3, expires_at=1)
    for record in (forged, expired):
        rid = a.client.lookup("agent-x", lab.now)
        from_server(lab, a, RecordReply(rid, record))
        assert isinstance(a.events[-1], RequestFailed)
    rid = a.client.lookup("agent-x", lab.now)
    from_server(lab, a, RecordReply(rid, good))
    assert isinstance(a.events[-1], LookupResult)


def test_introductions_are_checked() -> None:
    lab, a = registered_client()
    other = Identity.generate(lab.net.rng_for("other"))
    third = Identity.generate(lab.net.rng_for("third"))
    record = IdentityRecord.create(other, hostname=None, sequence=1, expires_at=2**40)
    own_locator = Locator.create(
        other, endpoints=[("203.0.113.1", 1000)], sequence=1, expires_at=2**40
    )
    foreign_locator = Locator.create(
        third, endpoints=[("203.0.113.66", 6666)], sequence=1, expires_at=2**40
    )
    # Unsolicited (a peer asked for us): the locator must be the peer's own.
    from_server(lab, a, Introduction(0, record, foreign_locator, (("198.51.100.9", 9),), 0.1, 8))
    intro = a.of(IntroductionReceived)[-1]
    assert intro.candidates == (("198.51.100.9", 9),) and intro.request_id is None
    from_server(lab, a, Introduction(0, record, own_locator, (), 0.1, 8))
    assert a.of(IntroductionReceived)[-1].candidates == (("203.0.113.1", 1000),)
    # An answer naming another node than the one asked for is an error.
    assert a.client is not None
    rid = a.client.request_introduction(third.address, lab.now)
    from_server(lab, a, Introduction(rid, record, own_locator, (), 0.1, 8))
    failed = a.events[-1]
    assert isinstance(failed, RequestFailed) and failed.request_id == rid
    # Answers nobody asked for, and introductions to ourselves, are dropped.
    count = len(a.of(IntroductionReceived))
    from_server(lab, a, Introduction(999, record, own_locator, (), 0.1, 8))
    me = lab.store.registrations[a.address].record
    from_server(lab, a, Introduction(0, me, None, (), 0.1, 8))
    assert len(a.of(IntroductionReceived)) == count


def test_a_sender_record_that_does_not_match_the_note_is_dropped_from_it() -> None:
    lab, a = registered_client()
    from pilot_proto.rendezvous import seal_note

    sender = Identity.generate(lab.net.rng_for("sender"))
    impostor = Identity.generate(lab.net.rng_for("impostor"))
    me = lab.store.registrations[a.address].record
    sealed = seal_note(
        sender,
        me,
        "trust_request",
        b"s" * 16,
        None,
        now_wall=lab.net.wall_clock(),
        rng=lab.net.rng_for("seal"),
    )
    wrong = IdentityRecord.create(impostor, hostname="agent-ceo", sequence=1, expires_at=2**40)
    from_server(lab, a, NotePush(wrong, sealed))
    received = a.of(NoteReceived)[-1]
    assert received.note.sender == sender.address and received.sender_record is None
