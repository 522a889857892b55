"""Harness: the sliding replay window (replay.py) against a plain model.

The input is a sequence of 8-byte counters (the top bit of each chooses whether the packet
"authenticates", so would_accept is asked without mark). The window must accept a counter
exactly when the model does: never twice, never older than the window, never out of range.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pilot_proto.replay import REJECT_AFTER_COUNTER, ReplayWindow

if TYPE_CHECKING:
    from .traffic import Traffic


_SIZE = 64


def test_one_input(data: bytes) -> None:
    window = ReplayWindow(_SIZE)
    seen: set[int] = set()
    highest = -1
    for pos in range(0, len(data) - 7, 8):
        raw = int.from_bytes(data[pos : pos + 8], "big")
        authentic = not raw >> 63
        # Mostly small counters, near each other, so the window edges get exercised.
        counter = raw & 0x3FF if raw & (1 << 62) else raw & ((1 << 64) - 1)
        expected = (
            0 <= counter < REJECT_AFTER_COUNTER
            and counter not in seen
            and highest - counter < _SIZE
        )
        assert window.would_accept(counter) == expected, (counter, highest)
        if expected and authentic:
            window.mark(counter)
            seen.add(counter)
            highest = max(highest, counter)
            assert window.highest == highest


def seeds(traffic: Traffic) -> list[bytes]:
    ascending = b"".join((1 << 62 | n).to_bytes(8, "big") for n in range(0, 200, 3))
    replays = b"".join((1 << 62 | n).to_bytes(8, "big") for n in (5, 5, 4, 100, 36, 37, 5))
    edges = b"".join(n.to_bytes(8, "big") for n in (0, (1 << 62) - 1, 2**62 - 65, 2**62 - 64))
    return [ascending, replays, edges]
