"""Pacing (RFC 9002 section 7.7): spread a window's packets over the round trip.

A token bucket refilled at 1.25 * cwnd / smoothed_rtt bytes per second. Bursts up to
`burst_packets` datagrams go out at once. Without an RTT worth measuring (in-process
loopback, where the virtual clock barely moves) pacing stays out of the way.
"""

from __future__ import annotations

__all__ = ["Pacer"]

# RFC 9002 section 7.7: N = 1.25 so pacing does not itself limit the window.
_PACING_GAIN = 1.25
# Below this RTT pacing cannot usefully space packets.
_MIN_PACED_RTT = 1e-5


class Pacer:
    """Decides when the next packet of a given size may leave."""

    __slots__ = ("_burst_packets", "_last", "enabled", "rate", "tokens")

    def __init__(self, enabled: bool, burst_packets: int = 10) -> None:
        self.enabled = enabled
        self._burst_packets = burst_packets
        self.tokens = 0.0
        self._last = float("-inf")
        self.rate = 0.0

    def delay_until(
        self, now: float, size: int, congestion_window: int, smoothed_rtt: float
    ) -> float | None:
        """None if a packet of `size` bytes may go now, else the time it may go."""
        if not self.enabled or smoothed_rtt < _MIN_PACED_RTT:
            self.rate = 0.0
            return None
        rate = _PACING_GAIN * congestion_window / smoothed_rtt
        self.rate = rate
        capacity = float(self._burst_packets * size)
        tokens = self.tokens + (now - self._last) * rate
        if tokens > capacity:
            tokens = capacity
        self.tokens = tokens
        self._last = now
        if tokens >= size:
            return None
        return now + (size - tokens) / rate

    def on_packet_sent(self, size: int) -> None:
        """(The connection inlines this: `if pacer.rate: pacer.tokens -= size`.)"""
        if self.rate:
            self.tokens -= size
