"""ReplayWindow against the rules of DESIGN section 4 and a set-based reference model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pilot_proto.errors import LocalProtocolError
from pilot_proto.replay import REJECT_AFTER_COUNTER, ReplayWindow


class ReferenceWindow:
    """Obviously correct and slow: remembers every counter ever marked."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.seen: set[int] = set()
        self.highest = -1

    def would_accept(self, counter: int) -> bool:
        if not 0 <= counter < 2**64 - 1:
            return False
        if counter in self.seen:
            return False
        return counter > self.highest - self.size

    def mark(self, counter: int) -> None:
        self.seen.add(counter)
        self.highest = max(self.highest, counter)


def accept(window: ReplayWindow, counter: int) -> bool:
    """What a receiver does with an authenticated packet."""
    if not window.would_accept(counter):
        return False
    window.mark(counter)
    return True


def test_default_size_and_initial_state() -> None:
    window = ReplayWindow()
    assert window.size == 8192
    assert window.highest == -1
    assert window.would_accept(0)


def test_in_order() -> None:
    window = ReplayWindow()
    for counter in range(20_000):
        assert accept(window, counter)
        assert window.highest == counter
    assert not any(window.would_accept(c) for c in range(20_000 - 8192, 20_000))


def test_would_accept_changes_nothing() -> None:
    window = ReplayWindow()
    assert window.would_accept(5)
    assert window.would_accept(5)
    assert window.highest == -1


def test_out_of_order_within_the_window() -> None:
    window = ReplayWindow(size=64)
    assert accept(window, 100)
    for counter in (99, 37, 60, 98):
        assert accept(window, counter)
    for counter in (100, 99, 37, 60, 98):
        assert not window.would_accept(counter)
    assert window.would_accept(61)
    assert window.highest == 100


def test_duplicates() -> None:
    window = ReplayWindow()
    assert accept(window, 0)
    assert not accept(window, 0)
    assert accept(window, 2)
    assert accept(window, 1)
    assert not accept(window, 1)
    assert not accept(window, 2)


def test_exact_boundary() -> None:
    window = ReplayWindow(size=8192)
    accept(window, 10_000)
    # The window holds the highest and the size - 1 counters below it.
    assert window.would_accept(10_000 - 8191)
    assert not window.would_accept(10_000 - 8192)
    assert accept(window, 10_000 - 8191)
    # Moving up by one pushes the previous bottom out.
    accept(window, 10_001)
    assert not window.would_accept(10_001 - 8192)
    assert window.would_accept(10_001 - 8191)


def test_too_old_is_refused_and_mark_ignores_it() -> None:
    window = ReplayWindow(size=16)
    accept(window, 100)
    assert not window.would_accept(84)
    assert window.would_accept(85)
    # Marking counters that fell out is a caller bug; it must not mark anything newer.
    for counter in range(85):
        window.mark(counter)
    assert all(window.would_accept(counter) for counter in range(85, 100))
    assert window.highest == 100


def test_huge_jumps_clear_the_window() -> None:
    window = ReplayWindow(size=8192)
    for counter in range(0, 8192, 3):
        accept(window, counter)
    jump = 8192 * 1000 + 5
    assert accept(window, jump)
    assert window.highest == jump
    # Counters that reuse the old counters' ring slots are all fresh.
    for counter in range(jump - 8191, jump):
        assert window.would_accept(counter)
    assert accept(window, 2**64 - 2)
    assert not window.would_accept(jump)
    assert window.would_accept(2**64 - 3)


def test_jump_smaller_than_the_window_keeps_recent_marks() -> None:
    window = ReplayWindow(size=128)
    for counter in range(200):
        accept(window, counter)
    assert accept(window, 300)
    assert not window.would_accept(199)  # seen, still inside (300 - 128, 300]
    assert not window.would_accept(173)
    assert not window.would_accept(172)  # too old now
    assert window.would_accept(200)


@pytest.mark.parametrize("counter", [-1, 2**64 - 1, 2**64, 2**70])
def test_reserved_and_out_of_range_counters(counter: int) -> None:
    window = ReplayWindow()
    assert not window.would_accept(counter)
    with pytest.raises(LocalProtocolError):
        window.mark(counter)
    assert REJECT_AFTER_COUNTER == 2**64 - 1


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ReplayWindow(size=0)
    window = ReplayWindow(size=1)
    assert accept(window, 5)
    assert not window.would_accept(4)
    assert accept(window, 6)


# Counters cluster so the model sees duplicates, reordering, boundaries and jumps.
def counters(size: int) -> st.SearchStrategy[int]:
    return st.one_of(
        st.integers(0, 4 * size),
        st.integers(0, 3).map(lambda k: k * size),
        st.integers(0, 2**64 + 2),
        st.integers(2**64 - 20, 2**64 - 1),
    )


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 80).flatmap(lambda n: st.tuples(st.just(n), st.lists(counters(n)))))
def test_matches_the_reference(case: tuple[int, list[int]]) -> None:
    size, sequence = case
    window, reference = ReplayWindow(size=size), ReferenceWindow(size)
    for counter in sequence:
        expected = reference.would_accept(counter)
        assert window.would_accept(counter) == expected, counter
        if expected:
            window.mark(counter)
            reference.mark(counter)
        assert window.highest == reference.highest


class ReplayWindowMachine(RuleBasedStateMachine):
    """Drives the window with steps relative to the highest counter, near the edges."""

    def __init__(self) -> None:
        super().__init__()
        self.window = ReplayWindow(size=1)
        self.reference = ReferenceWindow(1)

    @initialize(size=st.sampled_from([1, 7, 8, 9, 63, 64, 65, 100, 8192]))
    def create(self, size: int) -> None:
        self.window = ReplayWindow(size=size)
        self.reference = ReferenceWindow(size)

    def _offer(self, counter: int) -> None:
        expected = self.reference.would_accept(counter)
        assert self.window.would_accept(counter) == expected
        if expected:
            self.window.mark(counter)
            self.reference.mark(counter)

    @rule(step=st.integers(-10, 10))
    def near_the_top(self, step: int) -> None:
        self._offer(max(0, self.reference.highest + step))

    @rule(delta=st.integers(-2, 2))
    def near_the_bottom(self, delta: int) -> None:
        self._offer(max(0, self.reference.highest - self.reference.size + delta))

    @rule(jump=st.integers(1, 20_000))
    def jump_ahead(self, jump: int) -> None:
        self._offer(self.reference.highest + jump)

    @rule(data=st.data())
    def replay_something_seen(self, data: st.DataObject) -> None:
        if self.reference.seen:
            self._offer(data.draw(st.sampled_from(sorted(self.reference.seen))))

    @invariant()
    def same_highest(self) -> None:
        assert self.window.highest == self.reference.highest


TestReplayWindowMachine = ReplayWindowMachine.TestCase
TestReplayWindowMachine.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)
