"""Frame codec, varints and RangeSet: round trips, exact layouts, hostile bytes."""

from __future__ import annotations

import itertools

import pytest
from delivery_harness import frames_strategy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pilot_proto.delivery.acks import AckTracker
from pilot_proto.delivery.frames import (
    MAX_REASON_BYTES,
    Ack,
    Close,
    Frame,
    FrameDecodeError,
    Message,
    Padding,
    Ping,
    Receipt,
    Stream,
    StreamReset,
    decode_payload,
    encode_frame,
    encode_payload,
)
from pilot_proto.delivery.messages import OutgoingMessage, OutgoingMessages
from pilot_proto.delivery.ranges import RangeSet
from pilot_proto.delivery.varint import (
    MAX_VARINT,
    VarintError,
    encode_varint,
    read_varint,
    varint_size,
)

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

# ----------------------------------------------------------------------------- varints


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        # RFC 9000 appendix A.1 examples
        (37, bytes.fromhex("25")),
        (15293, bytes.fromhex("7bbd")),
        (494878333, bytes.fromhex("9d7f3e7d")),
        (151288809941952652, bytes.fromhex("c2197c5eff14e88c")),
        (0, b"\x00"),
        (63, b"\x3f"),
        (64, b"\x40\x40"),
        (MAX_VARINT, b"\xff" * 8),
    ],
)
def test_varint_known_encodings(value: int, wire: bytes) -> None:
    assert encode_varint(value) == wire
    assert varint_size(value) == len(wire)
    assert read_varint(wire + b"junk", 0) == (value, len(wire))


def test_varint_rejects_out_of_range_and_truncation() -> None:
    with pytest.raises(VarintError):
        encode_varint(-1)
    with pytest.raises(VarintError):
        encode_varint(MAX_VARINT + 1)
    with pytest.raises(VarintError):
        read_varint(b"\x7b", 0)
    with pytest.raises(VarintError):
        read_varint(b"", 0)


@SETTINGS
@given(st.integers(min_value=0, max_value=MAX_VARINT))
def test_varint_round_trip(value: int) -> None:
    wire = encode_varint(value)
    assert read_varint(b"\x01" + wire, 1) == (value, 1 + len(wire))


# ----------------------------------------------------------------------------- frames


@SETTINGS
@given(
    st.integers(min_value=0, max_value=MAX_VARINT),
    st.lists(frames_strategy, min_size=1, max_size=8),
)
def test_payload_round_trip(packet_number: int, frames: list[Frame]) -> None:
    payload = encode_payload(packet_number, frames)
    decoded_number, decoded = decode_payload(payload)
    assert decoded_number == packet_number
    assert decoded == frames


def test_padding_runs_collapse_into_one_frame() -> None:
    payload = encode_payload(7, [Ping(b"12345678"), Padding(5000)])
    assert len(payload) == 1 + 9 + 5000
    assert decode_payload(payload) == (7, [Ping(b"12345678"), Padding(5000)])


def test_exact_layouts() -> None:
    # STREAM: type 0x10 | LEN(0x02) | FIN(0x01) | PORT(0x04), id, offset, port, length, data
    assert encode_frame(Stream(4, 0, b"hi", True, 80)) == bytes.fromhex("17 04 00 40 50 02") + b"hi"
    assert encode_frame(Stream(4, 100, b"", False, None)) == bytes.fromhex("12 04 40 64 00")
    # ACK: type, largest, delay, extra range count, first range, (gap, length)...
    assert encode_frame(Ack(((8, 10), (2, 5)), 25)) == bytes.fromhex("03 0a 19 01 02 01 03")
    assert encode_frame(Receipt(bytes(range(16)))) == b"\x04" + bytes(range(16))
    assert encode_frame(Close(3, "bye")) == b"\x0b\x03\x03bye"
    assert encode_frame(StreamReset(1, 10, 1, "no")) == b"\x08\x01\x0a\x01\x02no"
    message = Message(0, bytes(16), "json", 3, 0, b"{}\n", None)
    assert encode_frame(message) == b"\x0a\x00\x00" + bytes(16) + b"\x01\x03\x00\x03{}\n"


def test_stream_frame_without_length_runs_to_the_end() -> None:
    payload = b"\x05" + bytes.fromhex("10 01 00") + b"rest of packet"
    assert decode_payload(payload) == (5, [Stream(1, 0, b"rest of packet", False, None)])


def test_long_reasons_are_cut_on_a_character_boundary() -> None:
    frame = Close(0, "é" * 1000)
    _, decoded = decode_payload(encode_payload(0, [frame]))
    reason = decoded[0].reason  # type: ignore[union-attr]
    assert len(reason.encode()) <= MAX_REASON_BYTES
    assert reason == "é" * (MAX_REASON_BYTES // 2)


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # no packet number
        b"\x00",  # no frames... but PADDING decodes: see below
        b"\x01\x3f",  # unknown frame type 0x3f
        b"\x01\x20",  # reserved trust frame type (not decoded here)
        b"\x01\x01abc",  # truncated PING
        b"\x01\x04" + bytes(15),  # truncated RECEIPT
        b"\x01\x09\x05abc",  # DATAGRAM length past the end
        b"\x01\x12\x00\x00\x10abc",  # STREAM length past the end
        b"\x01\x03\x05\x00\x00\x06",  # ACK range below zero
        b"\x01\x03\x05\x00\x01\x01\x03\x00",  # second ACK range below zero
        b"\x01\x0b\x00\x44\x01",  # CLOSE reason longer than allowed
        b"\x01\x0a\x02" + bytes(30),  # MESSAGE with unknown flags
        b"\x01\x0a\x00\x00" + bytes(16) + b"\x07\x00\x00\x00",  # unknown message type
        b"\x01\x0a\x00\x00" + bytes(16) + b"\x00\x02\x01\x02ab",  # chunk beyond total
        b"\x01\x18",  # STREAM-like type above 0x17
    ],
)
def test_malformed_payloads_raise_frame_decode_error(payload: bytes) -> None:
    if payload == b"\x00":
        # A bare packet number is a payload without frames.
        with pytest.raises(FrameDecodeError):
            decode_payload(payload)
        return
    with pytest.raises(FrameDecodeError):
        decode_payload(payload)


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_only_frame_decode_error(data: bytes) -> None:
    try:
        decode_payload(data)
    except FrameDecodeError:
        pass


@SETTINGS
@given(st.lists(frames_strategy, min_size=1, max_size=4), st.data())
def test_truncated_or_flipped_payloads_never_raise_other_errors(
    frames: list[Frame], data: st.DataObject
) -> None:
    payload = bytearray(encode_payload(3, frames))
    cut = data.draw(st.integers(min_value=0, max_value=len(payload)))
    flip = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
    payload[flip] ^= data.draw(st.integers(min_value=1, max_value=255))
    for candidate in (bytes(payload), bytes(payload[:cut])):
        try:
            decode_payload(candidate)
        except FrameDecodeError:
            pass


# ----------------------------------------------------------------------------- RangeSet


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 30)), max_size=40))
def test_rangeset_matches_a_set_model(additions: list[tuple[int, int]]) -> None:
    ranges = RangeSet()
    model: set[int] = set()
    for start, length in additions:
        ranges.add(start, start + length)
        model.update(range(start, start + length))
    assert ranges.covered() == len(model)
    assert all((value in ranges) == (value in model) for value in range(-1, 240))
    pairs = list(ranges)
    # Sorted, disjoint and not touching (adjacent ranges merge).
    assert all(a_end < b_start for (_, a_end), (b_start, _) in itertools.pairwise(pairs))
    if model:
        assert ranges.low == min(model) and ranges.high == max(model) + 1
        assert ranges.first_end(min(model)) == pairs[0][1]
    descending = ranges.descending(3)
    assert descending == [(start, end - 1) for start, end in reversed(pairs)][:3]


def test_rangeset_remove_below() -> None:
    ranges = RangeSet()
    ranges.add(0, 10)
    ranges.add(20, 30)
    ranges.remove_below(5)
    assert list(ranges) == [(5, 10), (20, 30)]
    ranges.remove_below(25)
    assert list(ranges) == [(25, 30)]
    ranges.remove_below(40)
    assert list(ranges) == []


# ------------------------------------------------------- the exchange's hand-encoded frames

_VARINT_EDGES = (0, 63, 64, 16383, 16384, 2**30 - 1, 2**30)


@pytest.mark.parametrize(
    ("largest", "length"),
    [(0, 0), (63, 63), (64, 64), (16383, 16383), (16384, 16384), (2**30, 0), (2**30, 16384)],
)
@pytest.mark.parametrize("delay", (-5, *_VARINT_EDGES))
def test_ack_tracker_frame_is_the_codec_frame_at_every_varint_length(
    largest: int, length: int, delay: int
) -> None:
    # AckTracker.build_frame writes a one-range ACK by hand (two-byte varints inline):
    # it must be byte for byte what the codec writes and reads back.
    tracker = AckTracker(max_ack_delay=0.025, threshold=2, max_ack_ranges=32)
    low = largest - length
    for number in range(low, largest + 1):
        tracker.on_packet(number, True, 1.0)
    now = 1.0 + delay / 1e6
    frame = tracker.build_frame(now, 32)
    expected = Ack(((low, largest),), max(int((now - 1.0) * 1_000_000), 0))  # as it rounds
    assert frame == encode_frame(expected)
    assert decode_payload(b"\x00" + frame) == (0, [expected])


@pytest.mark.parametrize("size", (0, 1, 63, 64, 200, 16383, 16384, 70000))
@pytest.mark.parametrize("reply_to", (None, bytes(range(16))))
def test_first_message_chunk_is_the_codec_frame_at_every_length(
    size: int, reply_to: bytes | None
) -> None:
    outgoing = OutgoingMessages(1 << 30)
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    message = OutgoingMessage(b"m" * 16, 1, data, reply_to)
    outgoing.next_base = 5_000_000  # a four-byte base
    outgoing.add(message)
    parts: list[bytes | memoryview] = []
    outgoing.fill(parts, [], 100_000)
    sent = b"".join(parts)
    assert sent == encode_frame(Message(5_000_000, b"m" * 16, "json", size, 0, data, reply_to))
