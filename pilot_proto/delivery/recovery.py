"""The sending side of reliability (RFC 9002): sent packets, ACK processing, loss detection,
probe timeout, and the congestion controller's bookkeeping.

Packets are never retransmitted; the frames they carried are, by the connection, when this
module reports the packet lost. Packet numbers are per peer and independent of the crypto
counter (DESIGN section 4), so nothing here changes on a rekey or a new session.
"""

from __future__ import annotations

from typing import Any

from .congestion import CongestionController
from .rtt import RttEstimator

__all__ = ["AckResult", "LossRecovery", "SentPacket"]

#: RFC 9002 section 7.6.1: kPersistentCongestionThreshold.
_PERSISTENT_CONGESTION_THRESHOLD = 3
# Packets declared lost are remembered (number -> largest acked then) so that an ACK that
# arrives for one later reveals reordering; bounded.
_REMEMBERED_LOSSES = 64
# Reordering tolerance grows up to these (RFC 9002 section 6.1: implementations may adapt
# the thresholds; RFC 8985 RACK does it for TCP).
_MAX_PACKET_THRESHOLD = 64
_MAX_TIME_THRESHOLD = 2.0


#: What the connection must remember about a packet until it is acked or lost, as a plain
#: tuple (cheap to build once per packet): (number, time_sent, size, frames, is_probe).
#: `frames` holds one small tuple per retransmittable frame, first element its kind (see
#: connection.py). Every remembered packet is ack-eliciting (ACK-only packets are not
#: remembered); all but PMTU probes count against the congestion window, and the loss of
#: a probe is no congestion signal.
SentPacket = tuple[int, float, int, list[tuple[Any, ...]], bool]


class AckResult:
    """Packets newly acknowledged and packets newly declared lost by one ACK frame."""

    __slots__ = ("acked", "lost")

    def __init__(self, acked: list[SentPacket], lost: list[SentPacket]) -> None:
        self.acked = acked
        self.lost = lost


class LossRecovery:
    """RFC 9002 sections 5-7 for one peer."""

    __slots__ = (
        "_eliciting_outstanding",
        "_granularity",
        "_max_backoff",
        "_packet_threshold",
        "_recently_lost",
        "_silence_start",
        "_time_of_last_eliciting",
        "_time_threshold",
        "cc",
        "largest_acked",
        "largest_sent",
        "loss_time",
        "pto_count",
        "rtt",
        "sent",
        "spurious_losses",
    )

    def __init__(
        self,
        cc: CongestionController,
        *,
        initial_rtt: float,
        max_ack_delay: float,
        packet_threshold: int,
        time_threshold: float,
        granularity: float,
        max_pto_backoff: int,
    ) -> None:
        self.cc = cc
        self.rtt = RttEstimator(initial_rtt, max_ack_delay, granularity)
        # Insertion order is packet number order: ACK and loss scans walk it from the oldest.
        self.sent: dict[int, SentPacket] = {}
        self.largest_acked = -1
        self.largest_sent = -1
        self.loss_time: float | None = None
        self.pto_count = 0
        self._packet_threshold = packet_threshold
        self._time_threshold = time_threshold
        self._granularity = granularity
        self._max_backoff = max_pto_backoff
        self._time_of_last_eliciting = 0.0
        # Ack-eliciting packets outstanding that arm the PTO (probes excluded).
        self._eliciting_outstanding = 0
        self._recently_lost: dict[int, int] = {}
        self._silence_start: float | None = None
        self.spurious_losses = 0

    # ------------------------------------------------------------------ sending

    def on_packet_sent(self, number: int, time_sent: float, size: int, frames: list[Any]) -> None:
        """An ack-eliciting, in-flight packet left."""
        self.sent[number] = (number, time_sent, size, frames, False)
        self.largest_sent = number
        self.cc.bytes_in_flight += size
        if not self._eliciting_outstanding:
            self._silence_start = time_sent
        self._eliciting_outstanding += 1
        self._time_of_last_eliciting = time_sent

    def on_probe_sent(self, number: int, time_sent: float, size: int) -> None:
        """A PMTU probe left: ack-eliciting, but neither in flight nor arming the PTO."""
        self.sent[number] = (number, time_sent, size, [], True)
        self.largest_sent = number

    # ------------------------------------------------------------------ ACKs

    def on_ack_received(
        self, ranges: tuple[tuple[int, int], ...], ack_delay: float, now: float
    ) -> AckResult | None:
        """Process one ACK frame's ranges (inclusive, largest first). None if it acks a
        packet never sent (the frame is then ignored)."""
        largest = ranges[0][1]
        if largest > self.largest_sent:
            return None
        sent = self.sent
        newly: list[int] = []
        # Walk outstanding packets oldest first against the ranges lowest first.
        position = len(ranges) - 1
        low, high = ranges[position]
        for number in sent:
            if number > largest:
                break
            while number > high:
                position -= 1
                low, high = ranges[position]
            if number >= low:
                newly.append(number)
        if self._recently_lost:
            self._check_spurious(ranges)
        if not newly:
            return AckResult([], [])
        acked: list[SentPacket] = []
        cc = self.cc
        outstanding = self._eliciting_outstanding
        for number in newly:
            packet = sent.pop(number)
            acked.append(packet)
            if not packet[4]:
                outstanding -= 1
                cc.on_packet_acked(packet[2], packet[1])
        self._eliciting_outstanding = outstanding
        self._silence_start = now if outstanding > 0 else None
        largest_packet = acked[-1]
        if largest > self.largest_acked:
            self.largest_acked = largest
        # RFC 9002 section 5.1: sample only when the largest acked is new and ack-eliciting
        # packets were among those newly acked (every remembered packet is).
        if largest_packet[0] == largest:
            self.rtt.update(now - largest_packet[1], ack_delay)
        if sent:
            lost = self._detect_lost(now)
        else:  # nothing outstanding (a request/reply exchange): nothing can be lost
            self.loss_time = None
            lost = []
        # RFC 9002 section 6.2.1: an ACK resets the PTO backoff.
        self.pto_count = 0
        return AckResult(acked, lost)

    # ------------------------------------------------------------------ loss

    def _check_spurious(self, ranges: tuple[tuple[int, int], ...]) -> None:
        """An ACK for a packet we declared lost: it was reordered, not lost. Tolerate more
        reordering from now on, and undo the window reduction it caused."""
        lowest = ranges[-1][0]
        remembered = self._recently_lost
        for number in list(remembered):
            if number < lowest:
                del remembered[number]  # no longer reported in ACKs
                continue
            for low, high in ranges:
                if low <= number <= high:
                    distance = remembered.pop(number) - number
                    self.spurious_losses += 1
                    self._packet_threshold = min(
                        max(self._packet_threshold, distance + 1), _MAX_PACKET_THRESHOLD
                    )
                    self._time_threshold = min(self._time_threshold + 0.25, _MAX_TIME_THRESHOLD)
                    self.cc.on_spurious_loss()
                    break

    def _loss_delay(self) -> float:
        rtt = self.rtt
        latest = rtt.latest_rtt if rtt.latest_rtt > rtt.smoothed_rtt else rtt.smoothed_rtt
        # RFC 9002 section 6.1.2: max(kTimeThreshold * max(smoothed_rtt, latest_rtt), kGranularity)
        return max(self._time_threshold * latest, self._granularity)

    def _detect_lost(self, now: float) -> list[SentPacket]:
        """RFC 9002 section 6.1: packet threshold and time threshold."""
        largest_acked = self.largest_acked
        loss_delay = self._loss_delay()
        packet_limit = largest_acked - self._packet_threshold
        self.loss_time = None
        lost: list[SentPacket] = []
        sent = self.sent
        for number, packet in sent.items():
            if number > largest_acked:
                break
            # The same sum decides loss and arms the timer, so a timer firing exactly at
            # `when` always finds the packet lost (no floating-point spin).
            when = packet[1] + loss_delay
            if number <= packet_limit or when <= now:
                lost.append(packet)
            elif self.loss_time is None or when < self.loss_time:
                self.loss_time = when
        if not lost:
            return lost
        lost_bytes = 0
        largest_time = 0.0
        remembered = self._recently_lost
        for packet in lost:
            number = packet[0]
            del sent[number]
            remembered[number] = largest_acked
            if len(remembered) > _REMEMBERED_LOSSES:
                del remembered[next(iter(remembered))]
            if not packet[4]:
                self._eliciting_outstanding -= 1
                if not self._eliciting_outstanding:
                    self._silence_start = None
                lost_bytes += packet[2]
                largest_time = packet[1]
        if lost_bytes:
            self.cc.on_packets_lost(lost_bytes, largest_time, now)
            if self._persistent_congestion(lost):
                self.cc.on_persistent_congestion()
        return lost

    def _persistent_congestion(self, lost: list[SentPacket]) -> bool:
        # RFC 9002 section 7.6: in-flight losses spanning the persistent congestion duration
        # with nothing acked in between (approximated: consecutive packet numbers).
        if not self.rtt.has_sample:
            return False
        flight = [packet for packet in lost if not packet[4]]
        if len(flight) < 2:
            return False
        if flight[-1][0] - flight[0][0] + 1 != len(flight):
            return False
        duration = self.rtt.pto_base * _PERSISTENT_CONGESTION_THRESHOLD
        return flight[-1][1] - flight[0][1] >= duration

    # ------------------------------------------------------------------ timers

    def silence_start(self) -> float | None:
        """Since when ack-eliciting data has waited for an ACK: the later of the moment data
        became outstanding and the last ACK that acknowledged something. None if nothing
        is outstanding."""
        return self._silence_start

    def pto_duration(self) -> float:
        return self.rtt.pto_base

    def deadline(self, silence_periods: int) -> float | None:
        """The loss detection timer, or the end of `silence_periods` PTOs of silence
        (`silence_start`) if that is earlier; 0 periods leaves the silence out. One call,
        because the Node asks for timers after every datagram."""
        loss_time = self.loss_time
        if self._eliciting_outstanding <= 0:
            return loss_time
        pto = self.rtt.pto_base
        if loss_time is not None:
            deadline = loss_time  # as in loss_detection_timer: it replaces the PTO
        elif self.pto_count == 0:
            deadline = self._time_of_last_eliciting + pto
        else:
            deadline = self._time_of_last_eliciting + pto * (
                1 << min(self.pto_count, self._max_backoff)
            )
        if silence_periods and self._silence_start is not None:
            silence = self._silence_start + silence_periods * pto
            if silence < deadline:
                deadline = silence
        return deadline

    def loss_detection_timer(self) -> float | None:
        """The earliest of the time-threshold loss timer and the probe timeout."""
        if self.loss_time is not None:
            return self.loss_time
        if self._eliciting_outstanding <= 0:
            return None
        count = self.pto_count
        if count == 0:
            return self._time_of_last_eliciting + self.rtt.pto_base
        return self._time_of_last_eliciting + self.rtt.pto_base * (
            1 << min(count, self._max_backoff)
        )

    def on_timeout(self, now: float) -> tuple[list[SentPacket], bool]:
        """The loss detection timer fired: (packets declared lost, whether a PTO fired)."""
        if self.loss_time is not None:
            if now < self.loss_time:
                return [], False
            return self._detect_lost(now), False
        deadline = self.loss_detection_timer()
        if deadline is None or now < deadline:
            return [], False
        # RFC 9002 section 6.2.4: the PTO sends probes; nothing is declared lost by it.
        self.pto_count += 1
        return [], True

    def discard_all(self) -> list[SentPacket]:
        """Forget every outstanding packet (the path changed); the caller resends frames."""
        packets = list(self.sent.values())
        self.sent.clear()
        for packet in packets:
            if not packet[4]:
                self.cc.on_packet_discarded(packet[2])
        self._eliciting_outstanding = 0
        self._silence_start = None
        self.loss_time = None
        self.pto_count = 0
        return packets
