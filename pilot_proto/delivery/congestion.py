"""Congestion control behind one interface, and NewReno (RFC 9002 section 7, appendix B).

The connection tells the controller what it sent, what was acknowledged and what was lost;
the controller answers how many bytes may be in flight. Loss of PMTU probes is not
reported here (RFC 8899 section 4.4: probe loss is not a congestion signal).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["CongestionController", "NewReno", "create_congestion_controller"]


class CongestionController(Protocol):
    """What the connection needs from any congestion control algorithm."""

    congestion_window: int
    #: Bytes of in-flight packets. LossRecovery adds each packet sent to it directly (no
    #: call per packet); acks, losses and discards go through the methods below.
    bytes_in_flight: int

    def on_packet_acked(self, size: int, time_sent: float) -> None:
        """An in-flight packet sent at `time_sent` was acknowledged."""

    def on_packets_lost(self, size: int, largest_time_sent: float, now: float) -> None:
        """In-flight packets totalling `size` bytes were declared lost."""

    def on_packet_discarded(self, size: int) -> None:
        """An in-flight packet left the books without an ACK or a loss (path change)."""

    def on_persistent_congestion(self) -> None:
        """RFC 9002 section 7.6: collapse to the minimum window."""

    def on_spurious_loss(self) -> None:
        """A packet declared lost was acknowledged after all: undo the last reduction."""

    def set_max_datagram_size(self, size: int) -> None:
        """The path MTU changed; windows are counted in bytes and scale with it."""

    def can_send(self, size: int) -> bool:
        """Whether a packet of `size` bytes fits in the window now."""


class NewReno:
    """Slow start, congestion avoidance and one window reduction per round trip."""

    __slots__ = (
        "_acked_in_avoidance",
        "_loss_reduction",
        "_max_datagram_size",
        "_minimum_packets",
        "_prior_window",
        "_recovery_start",
        "bytes_in_flight",
        "congestion_window",
        "ssthresh",
    )

    def __init__(
        self,
        max_datagram_size: int,
        initial_window_packets: int = 10,
        minimum_window_packets: int = 2,
        loss_reduction_factor: float = 0.5,
    ) -> None:
        self._max_datagram_size = max_datagram_size
        self._minimum_packets = minimum_window_packets
        self._loss_reduction = loss_reduction_factor
        # RFC 9002 section 7.2: min(10 * max_datagram_size, max(14720, 2 * max_datagram_size)),
        # generalised to a configurable packet count.
        self.congestion_window = min(
            initial_window_packets * max_datagram_size,
            max(14720, 2 * max_datagram_size),
        )
        self.ssthresh: float = float("inf")
        self.bytes_in_flight = 0
        self._recovery_start = float("-inf")
        self._acked_in_avoidance = 0
        # (window, ssthresh) before the last reduction, for undoing it (RFC 3522 ideas).
        self._prior_window: tuple[int, float] | None = None

    @property
    def minimum_window(self) -> int:
        return self._minimum_packets * self._max_datagram_size

    def on_packet_acked(self, size: int, time_sent: float) -> None:
        in_flight_before = self.bytes_in_flight
        self.bytes_in_flight = in_flight_before - size
        if time_sent <= self._recovery_start:
            return  # RFC 9002 section 7.3.2: no growth for packets sent before recovery began
        # RFC 9002 section 7.8: do not grow a window the sender was not using.
        if 2 * in_flight_before < self.congestion_window:
            return
        if self.congestion_window < self.ssthresh:
            self.congestion_window += size
            return
        # Congestion avoidance: one max_datagram_size per window of acknowledged bytes.
        self._acked_in_avoidance += size
        if self._acked_in_avoidance >= self.congestion_window:
            self._acked_in_avoidance -= self.congestion_window
            self.congestion_window += self._max_datagram_size

    def on_packets_lost(self, size: int, largest_time_sent: float, now: float) -> None:
        self.bytes_in_flight -= size
        if largest_time_sent <= self._recovery_start:
            return  # already reduced for this round trip
        self._recovery_start = now
        self._prior_window = (self.congestion_window, self.ssthresh)
        self.ssthresh = max(self.congestion_window * self._loss_reduction, self.minimum_window)
        self.congestion_window = int(self.ssthresh)
        self._acked_in_avoidance = 0

    def on_packet_discarded(self, size: int) -> None:
        self.bytes_in_flight -= size

    def on_persistent_congestion(self) -> None:
        self.congestion_window = self.minimum_window
        self._recovery_start = float("-inf")
        self._acked_in_avoidance = 0
        self._prior_window = None

    def on_spurious_loss(self) -> None:
        if self._prior_window is None:
            return
        window, ssthresh = self._prior_window
        self._prior_window = None
        self.congestion_window = max(self.congestion_window, window)
        self.ssthresh = max(self.ssthresh, ssthresh)
        self._recovery_start = float("-inf")

    def set_max_datagram_size(self, size: int) -> None:
        self._max_datagram_size = size
        if self.congestion_window < self.minimum_window:
            self.congestion_window = self.minimum_window

    def can_send(self, size: int) -> bool:
        return self.bytes_in_flight + size <= self.congestion_window


def create_congestion_controller(
    name: str,
    max_datagram_size: int,
    initial_window_packets: int,
    minimum_window_packets: int,
    loss_reduction_factor: float,
) -> CongestionController:
    """The controller called `name` in the config."""
    if name == "newreno":
        return NewReno(
            max_datagram_size,
            initial_window_packets,
            minimum_window_packets,
            loss_reduction_factor,
        )
    raise ValueError(f"unknown congestion control {name!r}; known: 'newreno'")
