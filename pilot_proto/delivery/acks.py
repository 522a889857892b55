"""The receiving side of reliability: which packet numbers arrived, and when to ACK them.

RFC 9000 section 13.2: an ACK goes out after every `ack_eliciting_threshold` ack-eliciting
packets, at once when a packet arrives out of order or carries IMMEDIATE_ACK, and
otherwise within max_ack_delay. The threshold is larger than RFC 9000's 2 (default 20)
because the sender asks for an immediate ACK whenever waiting would stall it (its window
is full, it is probing, or it has nothing more to send), as in the QUIC ACK frequency
draft: fewer ACKs is fewer packets for both ends to seal, open and process.
Packets that only carry ACKs or PADDING are recorded but never ACKed on their own.
"""

from __future__ import annotations

import struct

from .frames import encode_ack
from .ranges import RangeSet
from .varint import encode_varint

_pack_u16 = struct.Struct(">H").pack

__all__ = ["AckTracker"]


class AckTracker:
    """Received packet numbers, duplicate detection and the delayed-ACK timer."""

    __slots__ = (
        "_eliciting_since_ack",
        "_floor",
        "_max_ack_delay",
        "_max_kept_ranges",
        "_ranges",
        "_threshold",
        "ack_deadline",
        "largest_received",
        "largest_received_time",
        "unacked_packets",
    )

    def __init__(self, max_ack_delay: float, threshold: int, max_ack_ranges: int) -> None:
        self._ranges = RangeSet()
        # Packet numbers below the floor count as duplicates: old ranges are forgotten so
        # that the state stays bounded on lossy paths.
        self._floor = 0
        self._max_ack_delay = max_ack_delay
        self._threshold = threshold
        self._max_kept_ranges = 4 * max_ack_ranges
        self._eliciting_since_ack = 0
        self.ack_deadline: float | None = None
        self.largest_received = -1
        self.largest_received_time = 0.0
        #: Packets received since the last ACK we built (any kind).
        self.unacked_packets = 0

    def is_duplicate(self, packet_number: int) -> bool:
        if packet_number < self._floor:
            return True
        return packet_number in self._ranges

    def on_packet(
        self, packet_number: int, ack_eliciting: bool, now: float, immediate: bool = False
    ) -> None:
        """Record a packet that authenticated, decoded and was not a duplicate."""
        ranges = self._ranges
        in_order = packet_number == self.largest_received + 1
        if in_order and ranges.extend_last(packet_number):
            pass  # the common case: the newest range grows by one, no new range
        else:
            ranges.add(packet_number, packet_number + 1)
            if len(ranges) > self._max_kept_ranges:
                ranges.drop_oldest()
                self._floor = ranges.low
        if packet_number > self.largest_received:
            self.largest_received = packet_number
            self.largest_received_time = now
        self.unacked_packets += 1
        if not ack_eliciting:
            return
        self._eliciting_since_ack += 1
        if immediate or not in_order or self._eliciting_since_ack >= self._threshold:
            self.ack_deadline = now
        elif self.ack_deadline is None:
            self.ack_deadline = now + self._max_ack_delay

    def build_frame(self, now: float, limit: int) -> bytes:
        """`build`, encoded as an ACK frame; one range (the common case) without lists."""
        ranges = self._ranges
        if len(ranges) != 1:
            return encode_ack(*self.build(now, limit))
        self._eliciting_since_ack = 0
        self.ack_deadline = None
        self.unacked_packets = 0
        delay_us = int((now - self.largest_received_time) * 1_000_000)
        high = ranges.high - 1
        length = high - ranges.low
        # The three varints are mostly two bytes long in a running exchange: inline.
        return b"".join(
            (
                b"\x03",
                _pack_u16(high | 0x4000) if 0x40 <= high < 0x4000 else encode_varint(high),
                _pack_u16(delay_us | 0x4000)
                if 0x40 <= delay_us < 0x4000
                else encode_varint(delay_us if delay_us > 0 else 0),
                b"\x00",
                _pack_u16(length | 0x4000) if 0x40 <= length < 0x4000 else encode_varint(length),
            )
        )

    def build(self, now: float, limit: int) -> tuple[tuple[tuple[int, int], ...], int]:
        """The ranges (inclusive, largest first) and delay (microseconds) of an ACK frame."""
        self._eliciting_since_ack = 0
        self.ack_deadline = None
        self.unacked_packets = 0
        delay_us = int((now - self.largest_received_time) * 1_000_000)
        return tuple(self._ranges.descending(limit)), max(delay_us, 0)
