"""A set of integers kept as sorted, disjoint, half-open ranges [start, end).

Used for received packet numbers (ACK ranges), acknowledged stream bytes and the parts of a
message that have arrived. The common case, adding right after the last range, is O(1).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator

__all__ = ["RangeSet"]


class RangeSet:
    """Sorted disjoint half-open ranges; adjacent ranges are merged."""

    __slots__ = ("_ends", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, start: int, end: int) -> None:
        """Add [start, end). Empty ranges are ignored."""
        if start >= end:
            return
        starts = self._starts
        ends = self._ends
        if not ends or start > ends[-1]:
            starts.append(start)
            ends.append(end)
            return
        if start >= starts[-1]:
            # Overlaps or touches the last range (the in-order case).
            if end > ends[-1]:
                ends[-1] = end
            return
        # General case: merge with every range that overlaps or touches [start, end).
        first = bisect_left(ends, start)
        last = bisect_right(starts, end)
        if first == last:
            starts.insert(first, start)
            ends.insert(first, end)
            return
        new_start = min(start, starts[first])
        new_end = max(end, ends[last - 1])
        starts[first:last] = [new_start]
        ends[first:last] = [new_end]

    def extend_last(self, value: int) -> bool:
        """Add `value` if it is the end of the last range (the in-order case); False
        (and nothing added) otherwise."""
        ends = self._ends
        if ends and ends[-1] == value:
            ends[-1] = value + 1
            return True
        return False

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        index = bisect_right(self._starts, value) - 1
        return index >= 0 and value < self._ends[index]

    def __len__(self) -> int:
        """The number of ranges (not of integers)."""
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._ends, strict=True)

    def __repr__(self) -> str:
        return f"RangeSet({list(self)!r})"

    def first_end(self, start: int) -> int:
        """The end of the range that contains `start`, or `start` if none does."""
        starts = self._starts
        if starts and starts[0] <= start < self._ends[0]:
            return self._ends[0]
        index = bisect_right(starts, start) - 1
        if index >= 0 and start < self._ends[index]:
            return self._ends[index]
        return start

    @property
    def low(self) -> int:
        """The smallest value in the set (the set must not be empty)."""
        return self._starts[0]

    @property
    def high(self) -> int:
        """One past the largest value in the set (the set must not be empty)."""
        return self._ends[-1]

    def covered(self) -> int:
        """How many integers the set holds."""
        return sum(self._ends) - sum(self._starts)

    def remove_below(self, value: int) -> None:
        """Forget every integer below `value`."""
        starts = self._starts
        ends = self._ends
        index = bisect_right(ends, value)
        if index:
            del starts[:index]
            del ends[:index]
        if starts and starts[0] < value:
            starts[0] = value

    def drop_oldest(self) -> None:
        """Forget the lowest range."""
        del self._starts[0]
        del self._ends[0]

    def descending(self, limit: int) -> list[tuple[int, int]]:
        """Up to `limit` ranges as inclusive (low, high) pairs, highest first (ACK order)."""
        starts = self._starts
        ends = self._ends
        last = len(starts) - 1
        count = min(limit, len(starts))
        return [(starts[i], ends[i] - 1) for i in range(last, last - count, -1)]
