"""The Connection's public surface: messages and receipts, streams (open, refuse, half
close, reset), datagrams, ping, close, unresponsive peers, successor, and the state tables."""

from __future__ import annotations

import random

import pytest
from delivery_harness import ADDRESS_A, ADDRESS_B, App, Pair, Side
from delivery_harness import LinkConfig as Link

from pilot_proto.delivery import (
    Connection,
    ConnectionClosed,
    ConnectionState,
    DeliveryConfig,
    MessageDelivered,
    MessageReceived,
    PeerUnresponsive,
    StreamOpened,
    StreamReset,
)
from pilot_proto.delivery.connection import CONNECTION_TRANSITIONS, ConnectionEvent
from pilot_proto.delivery.pmtu import PMTU_TRANSITIONS, PathMtu, PmtuEvent, PmtuState
from pilot_proto.delivery.stream_states import (
    RECEIVE_TRANSITIONS,
    SEND_TRANSITIONS,
    ReceiveEvent,
    ReceiveState,
    SendEvent,
    SendState,
    receive_transition,
    send_transition,
)
from pilot_proto.errors import (
    ConnectionClosedError,
    InvalidMessageType,
    InvalidPort,
    LocalProtocolError,
    MessageTooLarge,
    StreamBufferFull,
    StreamStateError,
    UnknownMessage,
    UnknownStream,
)

# ----------------------------------------------------------------------------- messages


def test_receipt_waits_for_confirm_persisted() -> None:
    pair = Pair(seed=1)
    pair.b.app.confirm = False
    a = pair.a.connection
    first = a.send_message(b"run subtask: analyze document X", pair.now)
    reply_to = random.Random(1).randbytes(16)
    second = a.send_message(b'{"k": 1}', pair.now, type="json", reply_to=reply_to)
    pair.run(timeout=5)
    received = pair.b.app.messages
    assert [(m.message_id, m.type, m.data, m.reply_to, m.address) for m in received] == [
        (first, "text", b"run subtask: analyze document X", None, ADDRESS_A),
        (second, "json", b'{"k": 1}', reply_to, ADDRESS_A),
    ]
    assert pair.a.app.delivered == []  # nothing persisted yet
    pair.b.connection.confirm_persisted(second, pair.now)
    pair.run(timeout=5)
    assert pair.a.app.delivered == [second]
    assert [e for e in pair.a.app.events if isinstance(e, MessageDelivered)] == [
        MessageDelivered(ADDRESS_B, second)
    ]
    pair.b.connection.confirm_persisted(first, pair.now)
    pair.run(timeout=5)
    assert pair.a.app.delivered == [second, first]
    with pytest.raises(UnknownMessage):
        pair.b.connection.confirm_persisted(first, pair.now)


def test_auto_confirm_and_many_small_messages_share_packets() -> None:
    config = DeliveryConfig(auto_confirm=True)
    pair = Pair(config, config, seed=2)
    bodies = [f"message {i}".encode() for i in range(500)]
    ids = [pair.a.connection.send_message(body, pair.now) for body in bodies]
    assert len(set(ids)) == 500 and all(len(i) == 16 for i in ids)
    assert pair.run(lambda: len(pair.a.app.delivered) == 500, timeout=5)
    assert [m.data for m in pair.b.app.messages] == bodies
    assert pair.a.connection.stats["packets_sent"] < 20


def test_message_argument_checks() -> None:
    pair = Pair(DeliveryConfig(max_message_size=1000, message_receive_window=1 << 20), seed=3)
    a = pair.a.connection
    with pytest.raises(InvalidMessageType):
        a.send_message(b"x", pair.now, type="xml")
    with pytest.raises(InvalidMessageType):
        a.send_message(b"x", pair.now, reply_to=b"short")
    with pytest.raises(MessageTooLarge, match="limit of 1000 bytes") as raised:
        a.send_message(bytes(1001), pair.now)
    assert raised.value.limit == 1000 and raised.value.size == 1001
    assert isinstance(raised.value, LocalProtocolError)
    a.send_message(bytes(1000), pair.now, type="binary")
    a.send_message(b"", pair.now)
    assert pair.run(lambda: len(pair.a.app.delivered) == 2, timeout=5)
    assert [m.data for m in pair.b.app.messages] == [bytes(1000), b""]


def test_message_larger_than_the_receivers_limit_is_skipped_not_stalled() -> None:
    small = DeliveryConfig(max_message_size=1000, message_receive_window=1 << 20)
    pair = Pair(DeliveryConfig(), small, seed=4)
    a = pair.a.connection
    a.send_message(bytes(5000), pair.now, type="binary")
    after = a.send_message(b"after", pair.now)
    assert pair.run(lambda: after in pair.a.app.delivered, timeout=10)
    assert [m.data for m in pair.b.app.messages] == [b"after"]
    assert pair.b.connection.stats["message_too_large"] >= 1


# ----------------------------------------------------------------------------- streams


def test_stream_to_a_port_nobody_listens_on_is_refused() -> None:
    pair = Pair(seed=5, listening_b={80})
    stream_id = pair.a.connection.open_stream(81, pair.now)
    pair.a.connection.send_stream(stream_id, b"hello", pair.now)
    pair.run(timeout=5)
    assert pair.a.app.resets == {stream_id: "port 81 is not listening"}
    assert pair.b.app.opened == {} and pair.b.app.resets == {}
    assert pair.b.connection.stats["stream_refused"] == 1
    with pytest.raises(StreamStateError):
        pair.a.connection.send_stream(stream_id, b"more", pair.now)
    # The listening set is shared with the Node: a port opened later is accepted.
    pair.listening_b.add(81)
    second = pair.a.connection.open_stream(81, pair.now)
    pair.run(timeout=5)
    assert pair.b.app.opened == {second ^ 1: 81}


def test_listening_ports_may_be_a_callable() -> None:
    a = Connection(
        ADDRESS_B,
        DeliveryConfig(),
        rng=random.Random(1).randbytes,
        now=0.0,
        listening_ports=lambda port: False,
    )
    b = Connection(
        ADDRESS_A,
        DeliveryConfig(),
        rng=random.Random(2).randbytes,
        now=0.0,
        listening_ports=lambda port: port % 2 == 0,
    )
    pair = Pair(seed=6)
    pair.a, pair.b = Side(a, App()), Side(b, App())
    odd = a.open_stream(7, pair.now)
    even = a.open_stream(8, pair.now)
    pair.run(timeout=5)
    assert pair.b.app.opened == {even ^ 1: 8}
    assert set(pair.a.app.resets) == {odd}


def test_half_close_both_ways_then_the_stream_is_forgotten() -> None:
    pair = Pair(seed=7)
    a, b = pair.a.connection, pair.b.connection
    stream_id = a.open_stream(80, pair.now)
    a.send_stream(stream_id, b"request", pair.now, end_stream=True)
    pair.run(timeout=5)
    peer_id = stream_id ^ 1
    assert bytes(pair.b.app.received[peer_id]) == b"request"
    assert pair.b.app.ended == {peer_id}
    with pytest.raises(StreamStateError, match="already ended"):
        a.send_stream(stream_id, b"more", pair.now)
    assert a.stream_send_capacity(stream_id) == 0
    b.send_stream(peer_id, b"response part 1, ", pair.now)
    b.send_stream(peer_id, b"part 2", pair.now, end_stream=True)
    pair.run(timeout=5)
    assert bytes(pair.a.app.received[stream_id]) == b"response part 1, part 2"
    assert pair.a.app.ended == {stream_id}
    # Both directions finished: the stream is gone; reads see the end, writes fail.
    assert a.read_stream(stream_id) == b""
    assert b.stream_send_capacity(peer_id) == 0
    with pytest.raises(StreamStateError, match="closed"):
        b.send_stream(peer_id, b"late", pair.now)
    with pytest.raises(UnknownStream):
        a.send_stream(100, b"x", pair.now)
    with pytest.raises(InvalidPort):
        a.open_stream(70000, pair.now)


def test_end_stream_after_everything_was_sent_and_acknowledged() -> None:
    # The FIN travels alone, in a frame of its own, well into the stream.
    pair = Pair(seed=9)
    a = pair.a.connection
    stream_id = a.open_stream(80, pair.now)
    data = random.Random(9).randbytes(100_000)
    a.send_stream(stream_id, data, pair.now)
    pair.run(timeout=5)
    assert a.bytes_in_flight == 0
    assert pair.b.app.ended == set()
    a.send_stream(stream_id, b"", pair.now, end_stream=True)
    pair.run(timeout=5)
    assert bytes(pair.b.app.received[stream_id ^ 1]) == data
    assert pair.b.app.ended == {stream_id ^ 1}


def test_has_output_says_when_a_read_needs_a_flush() -> None:
    # A small window: reading a quarter of it queues MAX_STREAM_DATA and MAX_DATA.
    config = DeliveryConfig(stream_receive_window=1 << 16, connection_receive_window=1 << 20)
    pair = Pair(config, config, seed=10)
    a, b = pair.a.connection, pair.b.connection
    pair.b.app.reading = False
    stream_id = a.open_stream(80, pair.now)
    assert a.has_output
    a.send_stream(stream_id, bytes(40_000), pair.now)
    pair.run(timeout=5)
    assert not a.has_output and not b.has_output
    assert b.read_stream(stream_id ^ 1, 1000) and not b.has_output  # below a quarter
    assert b.read_stream(stream_id ^ 1) and b.has_output  # MAX_STREAM_DATA is due
    assert b.payloads_to_send(pair.now) and not b.has_output
    a.close(pair.now)
    assert a.has_output
    a.payloads_to_send(pair.now)
    assert not a.has_output


def test_reset_stream_reaches_the_peer_and_frees_connection_credit() -> None:
    config = DeliveryConfig(connection_receive_window=1 << 20, stream_receive_window=1 << 20)
    pair = Pair(config, config, Link(delay=0.01), Link(delay=0.01), seed=8)
    a = pair.a.connection
    pair.b.app.reading = False
    for round_number in range(4):
        # Fill the peer's buffers without it reading, then reset: the credit must come back.
        stream_id = a.open_stream(80, pair.now)
        pair.send_stream_data(pair.a, stream_id, bytes(3 << 20), end=False)
        pair.run(timeout=1)
        pair.a.app.outbox.clear()
        a.reset_stream(stream_id, pair.now, f"abort {round_number}")
        pair.run(timeout=1)
        assert pair.b.app.resets[stream_id ^ 1] == f"abort {round_number}"
    # After four resets of full windows, a fresh stream still gets through.
    pair.b.app.reading = True
    stream_id = a.open_stream(80, pair.now)
    pair.send_stream_data(pair.a, stream_id, b"still flowing" * 100_000)
    assert pair.run(lambda: (stream_id ^ 1) in pair.b.app.ended, timeout=30)
    assert pair.b.app.count(stream_id ^ 1) == 1_300_000
    assert a.stats["lost_packets"] == 0


def test_stream_send_buffer_is_bounded() -> None:
    config = DeliveryConfig(stream_send_buffer=100_000)
    pair = Pair(config, config, seed=9)
    a = pair.a.connection
    stream_id = a.open_stream(80, pair.now)
    assert a.stream_send_capacity(stream_id) == 100_000
    a.send_stream(stream_id, bytes(60_000), pair.now)
    assert a.stream_send_capacity(stream_id) == 40_000
    with pytest.raises(StreamBufferFull) as raised:
        a.send_stream(stream_id, bytes(40_001), pair.now)
    assert raised.value.capacity == 40_000
    pair.run(timeout=5)
    assert a.stream_send_capacity(stream_id) == 100_000  # acknowledged data left the buffer
    assert pair.a.app.writable == 1


# ----------------------------------------------------------------------------- the rest


def test_datagrams_are_delivered_and_oversized_ones_refused() -> None:
    config = DeliveryConfig(forced_datagram_size=1200)
    pair = Pair(config, config, seed=10)
    a = pair.a.connection
    assert a.max_datagram_payload == 1200 - 29 - 8 - 1 - 2
    assert a.send_datagram(b"one", pair.now)
    assert a.send_datagram(bytes(a.max_datagram_payload), pair.now)
    assert not a.send_datagram(bytes(a.max_datagram_payload + 1), pair.now)
    assert a.stats["datagram_too_large"] == 1
    pair.run(timeout=5)
    assert pair.b.app.datagrams == [b"one", bytes(a.max_datagram_payload)]


def test_ping_measures_the_round_trip() -> None:
    pair = Pair(link_ab=Link(delay=0.03), link_ba=Link(delay=0.02), seed=11)
    challenge = pair.a.connection.ping(pair.now)
    pair.run(timeout=5)
    [pong] = pair.a.app.pongs
    assert pong.challenge == challenge and pong.address == ADDRESS_B
    assert pong.rtt == pytest.approx(0.05, abs=1e-9)


def test_close_is_seen_by_both_sides() -> None:
    pair = Pair(link_ab=Link(delay=0.01), link_ba=Link(delay=0.01), seed=12)
    a, b = pair.a.connection, pair.b.connection
    a.close(pair.now, "shutting down")
    assert a.is_closed and a.state is ConnectionState.CLOSING
    pair.run(timeout=0.1)
    assert pair.a.app.closed == [ConnectionClosed(ADDRESS_B, "shutting down", False)]
    assert pair.b.app.closed == [ConnectionClosed(ADDRESS_A, "shutting down", True)]
    assert b.state is ConnectionState.DRAINING
    with pytest.raises(ConnectionClosedError):
        a.send_message(b"x", pair.now)
    with pytest.raises(ConnectionClosedError):
        b.open_stream(80, pair.now)
    pair.run(timeout=30)
    assert (a.state, b.state) == (ConnectionState.CLOSED, ConnectionState.CLOSED)
    assert a.get_timer() is None and b.get_timer() is None


def test_unresponsive_peer_is_reported_and_recovers() -> None:
    link = Link(delay=0.01)
    pair = Pair(link_ab=link, link_ba=Link(delay=0.01), seed=13)
    a = pair.a.connection
    pair.link_ab.blackout = True  # the peer "restarted": nothing gets through
    message_id = a.send_message(b"are you there?", pair.now)
    pair.run(lambda: a.peer_unresponsive, timeout=30)
    assert a.peer_unresponsive
    assert [e for e in pair.a.app.events if isinstance(e, PeerUnresponsive)] == [
        PeerUnresponsive(ADDRESS_B)
    ]
    # The Node found a new session: unacknowledged frames go out on it.
    pair.link_ab.blackout = False
    a.path_changed(pair.now)
    assert pair.run(lambda: message_id in pair.a.app.delivered, timeout=30)
    assert not a.peer_unresponsive
    assert [m.data for m in pair.b.app.messages] == [b"are you there?"]


def test_successor_resends_unreceipted_messages_and_resets_streams() -> None:
    pair = Pair(link_ab=Link(delay=0.01), link_ba=Link(delay=0.01), seed=14)
    a = pair.a.connection
    delivered = a.send_message(b"before", pair.now)
    assert pair.run(lambda: delivered in pair.a.app.delivered, timeout=5)
    stream_id = a.open_stream(80, pair.now)
    a.send_stream(stream_id, b"partial", pair.now)
    pair.run(timeout=1)
    pair.link_ab.blackout = True
    lost = [a.send_message(f"pending {i}".encode(), pair.now) for i in range(3)]
    a.send_datagram(b"dropped", pair.now)
    pair.run(timeout=1)
    # The peer restarts: a fresh Connection there, and the successor here.
    pair.link_ab.blackout = False
    pair.link_ab.in_flight.clear()
    pair.link_ba.in_flight.clear()
    fresh_b = Connection(
        ADDRESS_A,
        DeliveryConfig(),
        rng=random.Random(99).randbytes,
        now=pair.now,
        listening_ports={80},
    )
    pair.b = Side(fresh_b, App())
    successor = a.successor(pair.now)
    assert a.state is ConnectionState.CLOSED
    pair.a.connection = successor
    assert pair.run(lambda: len(pair.a.app.delivered) == 4, timeout=10)
    assert [m.message_id for m in pair.b.app.messages] == lost
    assert [m.data for m in pair.b.app.messages] == [b"pending 0", b"pending 1", b"pending 2"]
    assert pair.a.app.resets == {stream_id: "peer restarted"}
    assert pair.b.app.datagrams == []
    assert all(isinstance(e, MessageReceived) for e in pair.b.app.events)


# ----------------------------------------------------------------------------- state tables


def test_every_send_transition_row() -> None:
    for (state, event), target in SEND_TRANSITIONS.items():
        assert send_transition(state, event) is target
    for state in SendState:
        for event in SendEvent:
            if (state, event) not in SEND_TRANSITIONS:
                with pytest.raises(StreamStateError):
                    send_transition(state, event)


def test_every_receive_transition_row() -> None:
    for (state, event), target in RECEIVE_TRANSITIONS.items():
        assert receive_transition(state, event) is target
    for state in ReceiveState:
        for event in ReceiveEvent:
            if (state, event) not in RECEIVE_TRANSITIONS:
                with pytest.raises(StreamStateError):
                    receive_transition(state, event)


def test_connection_and_pmtu_tables_reach_every_state() -> None:
    assert {target for target in CONNECTION_TRANSITIONS.values()} | {ConnectionState.OPEN} == set(
        ConnectionState
    )
    assert {event for _, event in CONNECTION_TRANSITIONS} == set(ConnectionEvent)
    assert {event for _, event in PMTU_TRANSITIONS} == set(PmtuEvent)
    mtu = PathMtu(
        base=1200, maximum=1300, forced=None, max_probes=1, granularity=32, raise_interval=10.0
    )
    assert mtu.state is PmtuState.SEARCHING and mtu.probe_size(0.0) == 1300
    mtu.on_probe_sent(5, 1300, 1.0)
    assert mtu.on_probe_lost(5, 0.5)
    assert mtu.probe_size(0.5) == 1250
    mtu.on_probe_sent(6, 1250, 1.0)
    assert mtu.on_probe_acked(6, 0.6) and mtu.current == 1250
    mtu.on_probe_sent(7, 1275, 1.5)
    assert mtu.handle_timer(1.5)  # the deadline counts as a loss
    assert (mtu.state, mtu.timer()) == (PmtuState.SEARCH_COMPLETE, 1.5 + 10.0)
    assert mtu.probe_size(11.0) is None
    assert mtu.probe_size(11.6) == 1300  # PMTU_RAISE_TIMER: search again
    assert mtu.on_black_hole(11.0) and mtu.current == 1200
    forced = PathMtu(
        base=1200, maximum=65507, forced=1200, max_probes=3, granularity=32, raise_interval=10.0
    )
    assert forced.state is PmtuState.DISABLED and forced.probe_size(0.0) is None


def test_events_name_the_peer() -> None:
    pair = Pair(seed=15)
    pair.a.connection.open_stream(80, pair.now)
    pair.run(timeout=1)
    [opened] = [e for e in pair.b.app.events if isinstance(e, StreamOpened)]
    assert opened == StreamOpened(ADDRESS_A, 1, 80)
    assert not [e for e in pair.b.app.events if isinstance(e, StreamReset)]


def test_a_restarted_sender_resending_is_answered_not_redelivered() -> None:
    pair = Pair(seed=16)
    b_old = pair.b.connection
    message_id = pair.a.connection.send_message(b"once", pair.now)
    pair.b.app.confirm = False
    pair.run(timeout=2)
    assert [m.data for m in pair.b.app.messages] == [b"once"]
    # A restarts before the RECEIPT: its daemon sends the message again (same id) over a
    # fresh connection; B's Node sees a new peer instance and takes the successor.
    fresh_a = Connection(
        ADDRESS_B,
        DeliveryConfig(),
        rng=random.Random(5).randbytes,
        now=pair.now,
        listening_ports={80},
    )
    pair.a = Side(fresh_a, App())
    pair.b.connection = b_old.successor(pair.now)
    pair.link_ab.in_flight.clear()
    pair.link_ba.in_flight.clear()
    # What the daemon's outbox does: the same body under the same id.
    assert fresh_a.send_message(b"once", pair.now, message_id=message_id) == message_id
    with pytest.raises(LocalProtocolError):
        fresh_a.send_message(b"again", pair.now, message_id=message_id)
    pair.run(timeout=2)
    assert [m.data for m in pair.b.app.messages] == [b"once"]  # not delivered twice
    assert pair.b.connection.stats["duplicate_message_id"] == 1
    assert pair.a.app.delivered == []  # B has not confirmed yet
    pair.b.connection.confirm_persisted(message_id, pair.now)
    pair.run(timeout=2)
    assert pair.a.app.delivered == [message_id]
