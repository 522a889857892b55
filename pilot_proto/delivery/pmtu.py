"""Path MTU discovery with padded probes (DPLPMTUD, RFC 8899 ideas).

Sizes are UDP payload bytes (what the Node hands the socket): the connection's own
payload is that minus `packet_overhead`. We start at the base size, 1200 bytes, which every
path we use must carry (RFC 8899 section 5.1.2, BASE_PLPMTU), then probe upward with
PING + PADDING packets. The search first tries common plateaus from the top (RFC 8899
section 5.3.2 allows any search): the configured maximum (loopback: 65507), jumbo frames
(8972) and Ethernet (1472), and stops at the first that works; only if none does, it
binary-searches between the base and the smallest failed plateau (tunnels). A search
after PMTU_RAISE_TIMER tries only the plateaus above the current size. A size
counts as too large after `max_probes` consecutive probe losses (RFC 8899 MAX_PROBES).
Probes do not count against the congestion window and their loss is no congestion
signal (RFC 8899 section 4.4). When packets of the confirmed size stop getting through
(repeated probe timeouts), we fall back to the base and search again (section 4.3, black
hole detection).
"""

from __future__ import annotations

import enum

__all__ = ["PLATEAUS", "PMTU_TRANSITIONS", "PathMtu", "PmtuEvent", "PmtuState"]

#: UDP payload sizes of common links over IPv4: 9000-byte jumbo frames and 1500-byte
#: Ethernet, minus 20 bytes of IPv4 and 8 of UDP header.
PLATEAUS = (8972, 1472)


class PmtuState(enum.Enum):
    DISABLED = "disabled"  # forced_datagram_size: one fixed size, no probes
    SEARCHING = "searching"
    SEARCH_COMPLETE = "search_complete"


# Enum members as module constants: `Enum.MEMBER` is a slow lookup on hot paths.
_PMTU_DISABLED = PmtuState.DISABLED
_PMTU_SEARCHING = PmtuState.SEARCHING
_PMTU_SEARCH_COMPLETE = PmtuState.SEARCH_COMPLETE


class PmtuEvent(enum.Enum):
    CONVERGED = "converged"  # the search range is narrower than the granularity
    RAISE_TIMER = "raise_timer"  # RFC 8899 PMTU_RAISE_TIMER: look for a larger MTU again
    BLACK_HOLE = "black_hole"  # the confirmed size stopped working: back to the base


PMTU_TRANSITIONS: dict[tuple[PmtuState, PmtuEvent], PmtuState] = {
    (PmtuState.SEARCHING, PmtuEvent.CONVERGED): PmtuState.SEARCH_COMPLETE,
    (PmtuState.SEARCHING, PmtuEvent.BLACK_HOLE): PmtuState.SEARCHING,
    (PmtuState.SEARCH_COMPLETE, PmtuEvent.RAISE_TIMER): PmtuState.SEARCHING,
    (PmtuState.SEARCH_COMPLETE, PmtuEvent.BLACK_HOLE): PmtuState.SEARCHING,
}


class PathMtu:
    """The confirmed datagram size and the probe search above it."""

    __slots__ = (
        "_base",
        "_bisecting",
        "_failures",
        "_granularity",
        "_high",
        "_max_probes",
        "_maximum",
        "_plateaus",
        "_probe_deadline",
        "_probe_number",
        "_probe_sizes",
        "_raise_at",
        "_raise_interval",
        "current",
        "state",
    )

    def __init__(
        self,
        *,
        base: int,
        maximum: int,
        forced: int | None,
        max_probes: int,
        granularity: int,
        raise_interval: float,
    ) -> None:
        self._base = base
        self._maximum = maximum
        self._max_probes = max_probes
        self._granularity = granularity
        self._raise_interval = raise_interval
        self._probe_number: int | None = None
        self._probe_deadline: float | None = None
        self._probe_sizes: dict[int, int] = {}
        self._failures = 0
        self._raise_at: float | None = None
        self._plateaus: list[int] = []
        self._bisecting = False
        if forced is not None:
            self.state = _PMTU_DISABLED
            self.current = forced
            self._high = forced
        else:
            self.state = _PMTU_SEARCHING
            self.current = base
            self._high = maximum
            self._reset_plateaus()
            if maximum - base < granularity:
                self.state = _PMTU_SEARCH_COMPLETE

    def _reset_plateaus(self) -> None:
        self._bisecting = False
        sizes = {self._maximum, *(p for p in PLATEAUS if self._base < p < self._maximum)}
        self._plateaus = sorted((p for p in sizes if p > self.current), reverse=True)

    def _apply(self, event: PmtuEvent) -> None:
        self.state = PMTU_TRANSITIONS[(self.state, event)]

    def _check_converged(self, now: float) -> None:
        if self._high - self.current < self._granularity:
            self._apply(PmtuEvent.CONVERGED)
            self._raise_at = now + self._raise_interval

    # ------------------------------------------------------------------ probing

    def may_probe(self, now: float) -> bool:
        """False if `probe_size(now)` is surely None (and stays so until an ACK, a loss or
        a timer changes this object): lets the sender skip asking for every packet."""
        state = self.state
        if state is _PMTU_SEARCHING:
            return self._probe_number is None
        return (
            state is _PMTU_SEARCH_COMPLETE
            and self._raise_at is not None
            and now >= self._raise_at
            and self.current < self._maximum
        )

    def probe_size(self, now: float) -> int | None:
        """The datagram size to probe now, or None if no probe is due."""
        self._maybe_search_again(now)
        if self.state is not _PMTU_SEARCHING or self._probe_number is not None:
            return None
        if self._plateaus:
            return self._plateaus[0]
        if not self._bisecting:
            if self.current > self._base:
                # We stand on a plateau and no higher one works: done, no binary search.
                self._high = self.current
                self._check_converged(now)
                return None
            self._bisecting = True  # no plateau works at all: a tunnel, search between
        return (self.current + self._high + 1) // 2

    def _maybe_search_again(self, now: float) -> None:
        # RFC 8899 section 5.1.1 PMTU_RAISE_TIMER: a larger MTU may have become possible.
        if (
            self.state is _PMTU_SEARCH_COMPLETE
            and self._raise_at is not None
            and now >= self._raise_at
            and self.current < self._maximum
        ):
            self._apply(PmtuEvent.RAISE_TIMER)
            self._raise_at = None
            self._failures = 0
            self._high = self._maximum
            self._reset_plateaus()

    def on_probe_sent(self, packet_number: int, size: int, deadline: float) -> None:
        self._probe_number = packet_number
        self._probe_sizes[packet_number] = size
        self._probe_deadline = deadline

    def is_probe(self, packet_number: int) -> bool:
        return packet_number in self._probe_sizes

    def on_probe_acked(self, packet_number: int, now: float) -> bool:
        """A probe arrived: its size works. True if the confirmed size grew."""
        size = self._probe_sizes.pop(packet_number, None)
        if packet_number == self._probe_number:
            self._probe_number = None
            self._probe_deadline = None
        if size is None or self.state is _PMTU_DISABLED:
            return False
        self._failures = 0
        grew = size > self.current
        if grew:
            self.current = size
        if size > self._high:
            self._high = size
        if self._plateaus and size >= self._plateaus[-1]:
            # A plateau works: take it and stop (sizes between plateaus are rare).
            self._plateaus = []
            self._high = self.current
        if self.state is _PMTU_SEARCHING:
            self._check_converged(now)
        return grew

    def on_probe_lost(self, packet_number: int, now: float) -> bool:
        """A probe was declared lost (by loss detection or its own deadline). True the
        first time for each probe."""
        size = self._probe_sizes.pop(packet_number, None)
        if packet_number == self._probe_number:
            self._probe_number = None
            self._probe_deadline = None
        if size is None:
            return False
        if self.state is not _PMTU_SEARCHING or size <= self.current:
            return True
        self._failures += 1
        if self._failures >= self._max_probes:
            self._failures = 0
            self._high = min(self._high, size - 1)
            self._plateaus = [p for p in self._plateaus if p < size]
            self._check_converged(now)
        return True

    def on_black_hole(self, now: float) -> bool:
        """Datagrams of the confirmed size seem not to arrive: back to the base size.

        True if the size changed."""
        if self.state is _PMTU_DISABLED or self.current <= self._base:
            return False
        self._apply(PmtuEvent.BLACK_HOLE)
        self.current = self._base
        self._high = self._maximum
        self._reset_plateaus()
        self._failures = 0
        self._probe_number = None
        self._probe_deadline = None
        self._probe_sizes.clear()
        self._check_converged(now)
        return True

    # ------------------------------------------------------------------ timer

    def timer(self) -> float | None:
        """When the outstanding probe counts as lost, or when to search again."""
        if self._probe_deadline is not None:
            return self._probe_deadline
        if self.state is _PMTU_SEARCH_COMPLETE and self.current < self._maximum:
            return self._raise_at
        return None

    def handle_timer(self, now: float) -> bool:
        """True if the outstanding probe just counted as lost."""
        self._maybe_search_again(now)
        probe = self._probe_number
        if probe is not None and self._probe_deadline is not None and now >= self._probe_deadline:
            return self.on_probe_lost(probe, now)
        return False
