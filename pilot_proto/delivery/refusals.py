"""Refusing an untrusted peer's application data (DESIGN 8): what goes back, and how often.

A node that does not trust a peer delivers none of its messages, streams or datagrams,
but tells it so, so that its sender fails fast with `not_trusted` instead of timing out:
refused message ids go back in REFUSED frames, refused streams get STREAM_RESET with code
NOT_TRUSTED (streams.py). A refusal must never amplify: a REFUSED frame costs 18 bytes
per message id where the MESSAGE frame that caused it cost at least 23, and refusals to
one peer are rate-limited by a token bucket (each message id takes one token).
"""

from __future__ import annotations

from collections import Counter

from .frames import MAX_REFUSED_IDS, Refused, encode_frame

__all__ = ["REFUSALS_PER_SECOND", "REFUSAL_BURST", "RefusalLimiter"]

#: Message refusals one peer may draw at once, and per second after that.
REFUSAL_BURST = 64
REFUSALS_PER_SECOND = 32.0


class RefusalLimiter:
    """A token bucket per peer for message refusals."""

    __slots__ = ("_at", "_stats", "_tokens")

    def __init__(self, stats: Counter[str]) -> None:
        self._stats = stats
        self._tokens = float(REFUSAL_BURST)
        self._at: float | None = None

    def covers(self, count: int, now: float) -> bool:
        """Whether `count` refusals may go now (a packet holds more MESSAGE frames than
        the burst only on a huge path MTU: it needs a full bucket)."""
        if self._at is not None:
            self._tokens = min(
                float(REFUSAL_BURST), self._tokens + (now - self._at) * REFUSALS_PER_SECOND
            )
        self._at = now
        if self._tokens >= min(count, REFUSAL_BURST):
            return True
        self._stats["refusals_rate_limited"] += 1
        return False

    def take(self, message_ids: list[bytes]) -> list[bytes]:
        """The REFUSED frames for `message_ids`, after `covers` said yes. A packet with
        more messages than the burst (a huge path MTU) leaves the bucket in debt, which
        later packets wait out: every refused message is still answered, once."""
        self._tokens -= len(message_ids)
        self._stats["messages_refused"] += len(message_ids)
        return [
            encode_frame(Refused(tuple(message_ids[start : start + MAX_REFUSED_IDS])))
            for start in range(0, len(message_ids), MAX_REFUSED_IDS)
        ]
