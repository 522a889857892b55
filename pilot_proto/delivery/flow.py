"""Credit-based flow control (RFC 9000 section 4 ideas), for a stream, for all stream data
of a connection, and for the message sequence.

The receiver grants an absolute limit (MAX_DATA, MAX_STREAM_DATA, MAX_MESSAGE_DATA): the
sender may send data up to that offset. Credit goes back only as the application consumes
data, so a receiver that stops reading bounds what the sender can make it hold.
"""

from __future__ import annotations

__all__ = ["ReceiveWindow", "SendCredit"]


class SendCredit:
    """The peer's limit and how much of it we used."""

    __slots__ = ("limit", "used")

    def __init__(self, initial_limit: int) -> None:
        self.limit = initial_limit
        self.used = 0

    @property
    def available(self) -> int:
        return self.limit - self.used

    def raise_limit(self, limit: int) -> bool:
        """Apply a MAX_* frame; limits only grow (reordered frames carry stale values)."""
        if limit > self.limit:
            self.limit = limit
            return True
        return False


class ReceiveWindow:
    """What we granted, what arrived and what the application consumed."""

    __slots__ = ("advertised", "consumed", "highest", "window")

    def __init__(self, initial_limit: int, window: int) -> None:
        self.window = window
        self.advertised = initial_limit
        self.highest = 0  # the highest offset the peer reached
        self.consumed = 0  # read by the application, or discarded

    def allows(self, end: int) -> bool:
        return end <= self.advertised

    def update_due(self) -> bool:
        """Send a new limit once a quarter of the window has been consumed since the last."""
        return self.consumed + self.window - self.advertised >= self.window >> 2

    def next_limit(self) -> int:
        self.advertised = max(self.advertised, self.consumed + self.window)
        return self.advertised
