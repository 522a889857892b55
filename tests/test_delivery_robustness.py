"""Hostile input: nothing a peer sends makes `receive_payload` raise, and what it can make
us hold stays bounded by the windows we granted."""

from __future__ import annotations

import random

from delivery_harness import ADDRESS_A, Pair, frames_strategy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pilot_proto.delivery import Connection, DeliveryConfig, StreamOpened
from pilot_proto.delivery.config import MESSAGE_ACCOUNTING_OVERHEAD
from pilot_proto.delivery.frames import (
    Ack,
    Frame,
    Message,
    Receipt,
    Stream,
    StreamReset,
    decode_payload,
    encode_payload,
)

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def busy_pair() -> Pair:
    """A pair mid-transfer: streams open both ways, messages and data in flight."""
    pair = Pair(seed=3)
    a, b = pair.a.connection, pair.b.connection
    stream_id = a.open_stream(80, pair.now)
    a.send_stream(stream_id, bytes(50_000), pair.now)
    b.open_stream(80, pair.now)
    a.send_message(b"hello", pair.now)
    for payload in a.payloads_to_send(pair.now):
        b.receive_payload(payload, pair.now)
    return pair


@SETTINGS
@given(st.lists(st.binary(max_size=300), max_size=10))
def test_any_bytes_never_raise(payloads: list[bytes]) -> None:
    pair = busy_pair()
    b = pair.b.connection
    for payload in payloads:
        b.receive_payload(payload, pair.now)
    b.payloads_to_send(pair.now)
    b.handle_timer(pair.now + 1.0)
    while b.next_event() is not None:
        pass


@SETTINGS
@given(
    st.lists(
        st.tuples(st.integers(0, 1 << 20), st.lists(frames_strategy, min_size=1, max_size=5)),
        max_size=8,
    )
)
def test_well_formed_frames_with_wild_values_never_raise(
    packets: list[tuple[int, list[Frame]]],
) -> None:
    pair = busy_pair()
    b = pair.b.connection
    for number, frames in packets:
        b.receive_payload(encode_payload(number, frames), pair.now)
        b.payloads_to_send(pair.now)
    b.handle_timer(pair.now + 5.0)
    b.payloads_to_send(pair.now + 5.0)


def fresh() -> Connection:
    return Connection(
        ADDRESS_A, DeliveryConfig(), rng=random.Random(1).randbytes, now=0.0, listening_ports={80}
    )


def test_garbage_and_duplicates_are_counted() -> None:
    b = fresh()
    b.receive_payload(b"\x01\x3f", 0.0)
    b.receive_payload(b"", 0.0)
    good = encode_payload(4, [Stream(0, 0, b"data", False, 80)])
    b.receive_payload(good, 0.0)
    b.receive_payload(good, 0.0)
    assert b.stats["garbage_payload"] == 2
    assert b.stats["duplicate_packet"] == 1
    assert b.stats["packets_received"] == 1
    assert b.read_stream(1) == b"data"


def test_a_peer_cannot_make_us_hold_more_than_the_stream_window() -> None:
    b = fresh()
    window = DeliveryConfig().stream_receive_window
    # Before our MAX_STREAM_DATA grant arrives the peer may use the initial credit only;
    # after it, exactly the window; data beyond it is dropped and counted.
    b.receive_payload(encode_payload(0, [Stream(0, 0, b"x", False, 80)]), 0.0)
    b.payloads_to_send(0.0)  # grants the window (MAX_STREAM_DATA)
    beyond = Stream(0, window, b"y", False, None)
    b.receive_payload(encode_payload(1, [beyond]), 0.0)
    assert b.stats["stream_credit_exceeded"] == 1
    at_edge = Stream(0, window - 1, b"z", False, None)
    b.receive_payload(encode_payload(2, [at_edge]), 0.0)
    assert b.stats["stream_credit_exceeded"] == 1
    # A final size that contradicts data already received is refused.
    b.receive_payload(encode_payload(3, [Stream(0, 10, b"", True, None)]), 0.0)
    assert b.stats["stream_final_size_below_received"] == 1
    b.receive_payload(encode_payload(4, [StreamReset(0, 5, 0, "bad")]), 0.0)
    assert b.stats["stream_reset_bad_final_size"] == 1


def test_a_peer_cannot_make_us_hold_more_than_the_message_window() -> None:
    b = fresh()
    window = DeliveryConfig().message_receive_window
    b.payloads_to_send(0.0)  # grants the message window
    base = window - MESSAGE_ACCOUNTING_OVERHEAD
    far = Message(base, bytes(16), "text", 10, 0, b"0123456789", None)
    b.receive_payload(encode_payload(0, [far]), 0.0)
    assert b.stats["message_credit_exceeded"] == 1
    # Out of order but inside the window: held, not delivered (message 0 is missing).
    inside = Message(1000, bytes(16), "text", 10, 0, b"0123456789", None)
    b.receive_payload(encode_payload(1, [inside]), 0.0)
    assert b.next_event() is None
    # A chunk that disagrees with what we know of that message is refused.
    liar = Message(1000, bytes(16), "text", 20, 10, b"0123456789", None)
    b.receive_payload(encode_payload(2, [liar]), 0.0)
    assert b.stats["message_inconsistent"] == 1


def test_acks_for_packets_never_sent_and_unknown_receipts_are_ignored() -> None:
    b = fresh()
    b.receive_payload(encode_payload(0, [Ack(((0, 1000),), 0)]), 0.0)
    b.receive_payload(encode_payload(1, [Receipt(bytes(16))]), 0.0)
    assert b.stats["ack_of_unsent_packet"] == 1
    assert b.stats["unknown_receipt"] == 1
    assert b.next_event() is None


def test_stream_flood_is_bounded_by_the_incoming_stream_limit() -> None:
    config = DeliveryConfig(max_incoming_streams=4)
    b = Connection(ADDRESS_A, config, rng=random.Random(1).randbytes, now=0.0, listening_ports={80})
    for number in range(10):
        b.receive_payload(encode_payload(number, [Stream(2 * number, 0, b"x", False, 80)]), 0.0)
    opened = []
    while (event := b.next_event()) is not None:
        if isinstance(event, StreamOpened):
            opened.append(event.stream_id)
    assert opened == [1, 3, 5, 7]
    assert b.stats["stream_refused"] == 0
    # The other six were reset with "too many streams".
    resets = [
        frame
        for payload in b.payloads_to_send(0.0)
        for frame in decode_payload(payload)[1]
        if isinstance(frame, StreamReset)
    ]
    assert [(f.stream_id, f.code, f.reason) for f in resets] == [
        (stream_id, 2, "too many streams") for stream_id in range(9, 21, 2)
    ]
    # A stream id far beyond anything opened so far is refused outright.
    b.receive_payload(encode_payload(20, [Stream(1 << 40, 0, b"x", False, 80)]), 0.0)
    assert b.stats["stream_limit_violation"] == 1


def test_empty_chunks_at_many_bases_cannot_grow_reassembly_state() -> None:
    config = DeliveryConfig(max_message_size=1000, message_receive_window=1 << 20)
    b = Connection(ADDRESS_A, config, rng=random.Random(1).randbytes, now=0.0, listening_ports={80})
    b.payloads_to_send(0.0)  # grants the message window
    for number in range(1, 4000):
        chunk = Message(number * 200, bytes(16), "text", 100, 0, b"", None)
        b.receive_payload(encode_payload(number, [chunk]), 0.0)
    # The window (1 MiB) holds at most 2048 entries at 512 bytes each; the rest are refused.
    assert b.stats["message_memory_exceeded"] == 3999 - (1 << 20) // 512
    assert b.next_event() is None
