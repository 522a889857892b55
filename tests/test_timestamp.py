"""TAI64N encoding and the strictly increasing initiation clock."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pilot_proto.timestamp import InitiationClock, decode_tai64n, encode_tai64n

MAX_NS = 2**62 * 10**9 - 1
timestamps = st.integers(min_value=0, max_value=MAX_NS)


def test_tai64n_layout() -> None:
    stamp = encode_tai64n(1_700_000_000 * 10**9 + 123_456_789)
    assert len(stamp) == 12
    assert stamp[:8] == (2**62 + 1_700_000_000).to_bytes(8, "big")
    assert stamp[8:] == (123_456_789).to_bytes(4, "big")
    assert encode_tai64n(0) == bytes.fromhex("400000000000000000000000")


@given(timestamps)
def test_tai64n_round_trip(ns: int) -> None:
    assert decode_tai64n(encode_tai64n(ns)) == ns


@given(timestamps, timestamps)
def test_tai64n_byte_order_is_time_order(a: int, b: int) -> None:
    # Responders may compare stamps as bytes.
    assert (encode_tai64n(a) < encode_tai64n(b)) == (a < b)


@pytest.mark.parametrize("ns", [-1, MAX_NS + 1, 2**64 * 10**9])
def test_tai64n_encode_range(ns: int) -> None:
    with pytest.raises(ValueError):
        encode_tai64n(ns)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(11),
        bytes(13),
        bytes(12),  # label 0: below 2**62
        (2**63).to_bytes(8, "big") + bytes(4),  # label at 2**63
        (2**62).to_bytes(8, "big") + (10**9).to_bytes(4, "big"),  # nanoseconds overflow
    ],
)
def test_tai64n_decode_rejects(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_tai64n(data)


@given(st.binary(max_size=20))
def test_tai64n_decode_raises_only_value_error(data: bytes) -> None:
    try:
        ns = decode_tai64n(data)
    except ValueError:
        return
    assert encode_tai64n(ns) == data


def test_clock_follows_the_wall_clock() -> None:
    clock = InitiationClock()
    assert clock.last == 0
    assert clock.next(1000.5) == 1_000_500_000_000
    assert clock.last == 1_000_500_000_000
    assert clock.next(1001.0) == 1_001_000_000_000


def test_clock_stepping_backwards_stays_monotonic() -> None:
    clock = InitiationClock()
    first = clock.next(2000.0)
    assert clock.next(1500.0) == first + 1
    assert clock.next(1500.0) == first + 2
    assert clock.next(2000.0) == first + 3  # wall clock caught up, but not past us
    assert clock.next(2001.0) == 2_001_000_000_000


def test_clock_floor_survives_a_restart_with_the_clock_set_back() -> None:
    before_reboot = InitiationClock()
    sent = before_reboot.next(5000.0)
    after_reboot = InitiationClock(floor_ns=before_reboot.last)
    assert after_reboot.next(100.0) == sent + 1


@given(st.lists(st.floats(min_value=0, max_value=4e9), min_size=1, max_size=50))
def test_clock_is_strictly_increasing(readings: list[float]) -> None:
    clock = InitiationClock()
    stamps = [clock.next(wall) for wall in readings]
    assert all(a < b for a, b in itertools.pairwise(stamps))
    assert all(stamp >= int(wall * 1e9) for stamp, wall in zip(stamps, readings, strict=True))
    assert clock.last == stamps[-1]
    for stamp in stamps:
        assert decode_tai64n(encode_tai64n(stamp)) == stamp


@pytest.mark.parametrize("reading", [float("nan"), float("inf"), float("-inf")])
def test_clock_refuses_non_finite_readings(reading: float) -> None:
    clock = InitiationClock(floor_ns=10)
    with pytest.raises(ValueError):
        clock.next(reading)
    assert clock.last == 10


@pytest.mark.parametrize("floor", [-1, MAX_NS])
def test_clock_floor_range(floor: int) -> None:
    with pytest.raises(ValueError):
        InitiationClock(floor_ns=floor)
