"""Handshake timestamps: the TAI64N-like wire format and a clock that never goes back.

An initiation carries a 12-byte timestamp; the responder keeps the newest one per peer
and ignores initiations that are not newer, so a replayed initiation creates no state
(DESIGN section 4). Two consequences:

- The encoding is fixed-width big-endian, so comparing encodings as bytes orders them
  the same way as comparing the times.
- A node must never send a stamp older than one it already sent, even after a reboot
  with the wall clock set back. `InitiationClock` hands out strictly increasing stamps;
  the daemon persists `last` and feeds it back as `floor_ns`.
"""

from __future__ import annotations

import math
import struct

__all__ = ["TAI64N_SIZE", "InitiationClock", "decode_tai64n", "encode_tai64n"]

TAI64N_SIZE = 12
# TAI64 labels seconds as 2**62 + s. Like WireGuard we put Unix seconds in s and do not
# add the TAI-UTC offset: both ends only compare stamps, never convert them.
_TAI64_BASE = 1 << 62
_NS_PER_SECOND = 1_000_000_000
# Seconds must stay below 2**62 so the label stays below 2**63, as TAI64 requires.
_MAX_NS = (1 << 62) * _NS_PER_SECOND - 1

_LAYOUT = struct.Struct(">QI")


def encode_tai64n(ns: int) -> bytes:
    """12 bytes: u64 (2**62 + seconds) then u32 nanoseconds, both big-endian.

    `ns` is nanoseconds since the Unix epoch, 0 <= ns < 2**62 seconds; ValueError
    otherwise.
    """
    if not 0 <= ns <= _MAX_NS:
        raise ValueError(f"timestamp {ns} ns is outside the TAI64N range")
    seconds, nanoseconds = divmod(ns, _NS_PER_SECOND)
    return _LAYOUT.pack(_TAI64_BASE + seconds, nanoseconds)


def decode_tai64n(data: bytes) -> int:
    """Nanoseconds since the Unix epoch from a 12-byte stamp.

    Raises ValueError (and nothing else) if `data` is not exactly 12 bytes, the label
    is outside [2**62, 2**63), or the nanosecond field is 10**9 or more. Callers
    decoding remote input treat that as a malformed packet.
    """
    if len(data) != TAI64N_SIZE:
        raise ValueError(f"a TAI64N timestamp is {TAI64N_SIZE} bytes, got {len(data)}")
    label: int
    nanoseconds: int
    label, nanoseconds = _LAYOUT.unpack(data)
    if not _TAI64_BASE <= label < 2 * _TAI64_BASE:
        raise ValueError("TAI64N label is outside [2**62, 2**63)")
    if nanoseconds >= _NS_PER_SECOND:
        raise ValueError("TAI64N nanosecond field is 10**9 or more")
    return (label - _TAI64_BASE) * _NS_PER_SECOND + nanoseconds


class InitiationClock:
    """Strictly increasing wall-clock stamps (ns) for one identity's initiations.

    `next(wall)` returns max(last + 1, wall in ns): it follows the wall clock while the
    clock moves forward, and counts up by one nanosecond while the clock stands still or
    has stepped back, so peers that keep only the newest stamp still accept us.
    """

    __slots__ = ("_last",)

    def __init__(self, floor_ns: int = 0) -> None:
        if not 0 <= floor_ns < _MAX_NS:
            raise ValueError(f"floor_ns must be in [0, {_MAX_NS}), got {floor_ns}")
        self._last = floor_ns

    @property
    def last(self) -> int:
        """The newest stamp handed out (or the floor): persist it across restarts."""
        return self._last

    def next(self, wall_seconds: float) -> int:
        """The next stamp in ns; `wall_seconds` is the injected wall clock's reading."""
        if not math.isfinite(wall_seconds):
            raise ValueError(f"wall clock reading must be finite, got {wall_seconds}")
        wall_ns = int(wall_seconds * 1e9)
        stamp = max(self._last + 1, wall_ns)
        if stamp > _MAX_NS:
            raise ValueError("wall clock reading is beyond the TAI64N range")
        self._last = stamp
        return stamp
