"""Small frames waiting for the next packet: RECEIPT and STREAM_RESET (resent until
acknowledged), PING and PONG (never resent: they measure the path), and DATAGRAM (RFC 9221
ideas: congestion controlled, never resent)."""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

from .frames import CHALLENGE_SIZE
from .varint import encode_varint, varint_size

__all__ = ["KIND_CONTROL", "PROBE_CHALLENGE", "ControlFrames"]

#: Sent-frame record (KIND_CONTROL, encoded frame): resent as it was if lost.
KIND_CONTROL = 2
#: The PING challenge that is never answered: PMTU probes, PTO probes, keep-alives.
PROBE_CHALLENGE = bytes(CHALLENGE_SIZE)

_MAX_PENDING_PONGS = 16
_MAX_OUTSTANDING_PINGS = 64


class ControlFrames:
    """What goes into the next packet before stream and message data."""

    __slots__ = (
        "_datagram_limit",
        "_pings",
        "_stats",
        "datagrams",
        "pings_to_send",
        "pongs",
        "reliable",
    )

    def __init__(self, stats: Counter[str], datagram_limit: int) -> None:
        self._stats = stats
        #: Encoded frames resent until acknowledged (RECEIPT, STREAM_RESET).
        self.reliable: list[bytes] = []
        # Public so that the sender can test for pending frames without a call: the
        # connection asks before every packet.
        self.pongs: list[bytes] = []
        self.pings_to_send: list[bytes] = []
        self._pings: dict[bytes, float] = {}  # challenge -> time sent
        self.datagrams: deque[bytes] = deque()
        self._datagram_limit = datagram_limit

    def __bool__(self) -> bool:
        return bool(self.reliable or self.pongs or self.pings_to_send or self.datagrams)

    # ------------------------------------------------------------------ queueing

    def ping(self, challenge: bytes, now: float) -> None:
        pings = self._pings
        if len(pings) >= _MAX_OUTSTANDING_PINGS:
            del pings[next(iter(pings))]
        pings[challenge] = now
        self.pings_to_send.append(challenge)

    def on_ping(self, challenge: bytes) -> None:
        if challenge == PROBE_CHALLENGE:
            return  # a probe or keep-alive: ack-eliciting, never answered
        if len(self.pongs) < _MAX_PENDING_PONGS:
            self.pongs.append(challenge)
        else:
            self._stats["pong_queue_full"] += 1

    def on_pong(self, challenge: bytes, now: float) -> float | None:
        """The RTT if `challenge` answers one of our pings, else None (counted)."""
        sent = self._pings.pop(challenge, None)
        if sent is None:
            self._stats["unsolicited_pong"] += 1
            return None
        return now - sent

    def datagram(self, data: bytes) -> None:
        datagrams = self.datagrams
        if len(datagrams) >= self._datagram_limit:
            datagrams.popleft()
            self._stats["datagram_queue_overflow"] += 1
        datagrams.append(data)

    # ------------------------------------------------------------------ sending

    def add_frames(
        self,
        parts: list[bytes | memoryview],
        records: list[tuple[Any, ...]],
        space: int,
        max_payload: int,
    ) -> int:
        """Append what fits in `space`; return the space left. Datagrams larger than a
        whole packet (the path MTU shrank) are dropped and counted."""
        for challenge in self.pongs:
            parts.append(b"\x02" + challenge)
            space -= 1 + CHALLENGE_SIZE
        self.pongs.clear()
        for challenge in self.pings_to_send:
            parts.append(b"\x01" + challenge)
            space -= 1 + CHALLENGE_SIZE
        self.pings_to_send.clear()
        reliable = self.reliable
        taken = 0
        while taken < len(reliable) and len(reliable[taken]) <= space:
            frame = reliable[taken]
            parts.append(frame)
            records.append((KIND_CONTROL, frame))
            space -= len(frame)
            taken += 1
        if taken:
            del reliable[:taken]
        datagrams = self.datagrams
        while datagrams:
            data = datagrams[0]
            needed = 1 + varint_size(len(data)) + len(data)
            if needed > space:
                if needed > max_payload - 8:
                    datagrams.popleft()
                    self._stats["datagram_too_large"] += 1
                    continue
                break
            datagrams.popleft()
            parts.append(b"\x09" + encode_varint(len(data)))
            parts.append(data)
            space -= needed
        return space
