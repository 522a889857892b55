"""Round-trip time estimation (RFC 9002 section 5, which refines RFC 6298)."""

from __future__ import annotations

__all__ = ["RttEstimator"]


class RttEstimator:
    """min_rtt, smoothed_rtt and rttvar from ACK samples."""

    __slots__ = (
        "granularity",
        "has_sample",
        "latest_rtt",
        "max_ack_delay",
        "min_rtt",
        "pto_base",
        "rttvar",
        "smoothed_rtt",
    )

    def __init__(self, initial_rtt: float, max_ack_delay: float, granularity: float) -> None:
        # RFC 9002 section 5.3: before the first sample, smoothed_rtt = initial_rtt and
        # rttvar = initial_rtt / 2.
        self.has_sample = False
        self.latest_rtt = initial_rtt
        self.min_rtt = initial_rtt
        self.smoothed_rtt = initial_rtt
        self.rttvar = initial_rtt / 2
        self.max_ack_delay = max_ack_delay
        self.granularity = granularity
        #: RFC 9002 section 6.2.1: smoothed_rtt + max(4 * rttvar, kGranularity) +
        #: max_ack_delay, kept up to date because timers read it on every call.
        self.pto_base = 0.0
        self._update_pto()

    def _update_pto(self) -> None:
        self.pto_base = (
            self.smoothed_rtt + max(4 * self.rttvar, self.granularity) + self.max_ack_delay
        )

    def update(self, latest_rtt: float, ack_delay: float) -> None:
        """Take one sample: the time from sending the largest newly acked packet to its ACK."""
        if latest_rtt < 0:
            return
        self.latest_rtt = latest_rtt
        if not self.has_sample:
            self.has_sample = True
            self.min_rtt = latest_rtt
            self.smoothed_rtt = latest_rtt
            self.rttvar = latest_rtt / 2
            self._update_pto()
            return
        if latest_rtt < self.min_rtt:
            self.min_rtt = latest_rtt
        # RFC 9002 section 5.3: the peer's ack delay is trusted only up to max_ack_delay
        # and never so far that the sample drops below min_rtt.
        if ack_delay > self.max_ack_delay:
            ack_delay = self.max_ack_delay
        adjusted = latest_rtt
        if latest_rtt >= self.min_rtt + ack_delay:
            adjusted = latest_rtt - ack_delay
        smoothed = self.smoothed_rtt
        rttvar = self.rttvar = 0.75 * self.rttvar + 0.25 * abs(smoothed - adjusted)
        smoothed = self.smoothed_rtt = 0.875 * smoothed + 0.125 * adjusted
        # _update_pto, inline: one sample per ACK.
        variation = 4 * rttvar
        if variation < self.granularity:
            variation = self.granularity
        self.pto_base = smoothed + variation + self.max_ack_delay
