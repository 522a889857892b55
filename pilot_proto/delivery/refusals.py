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
    """A token bucket per peer: refusals beyond it are counted, not sent (the sender then
    times out on those messages, as it would with a silent receiver)."""

    __slots__ = ("_at", "_stats", "_tokens")

    def __init__(self, stats: Counter[str]) -> None:
        self._stats = stats
        self._tokens = float(REFUSAL_BURST)
        self._at: float | None = None

    def take(self, message_ids: list[bytes], now: float) -> list[bytes]:
        """The REFUSED frames to send for `message_ids` now, within the budget."""
        if self._at is not None:
            self._tokens = min(
                float(REFUSAL_BURST), self._tokens + (now - self._at) * REFUSALS_PER_SECOND
            )
        self._at = now
        allowed = min(len(message_ids), int(self._tokens))
        self._tokens -= allowed
        if allowed < len(message_ids):
            self._stats["refusals_rate_limited"] += len(message_ids) - allowed
        granted = message_ids[:allowed]
        self._stats["messages_refused"] += len(granted)
        return [
            encode_frame(Refused(tuple(granted[start : start + MAX_REFUSED_IDS])))
            for start in range(0, len(granted), MAX_REFUSED_IDS)
        ]
