"""How long a binding keeps reading its socket after a send before it sleeps.

A reply on a LAN or loopback comes back within tens of microseconds, but a process that
sleeps in the event loop's wait in between pays for it twice: the wake-up itself, and then
running its Python with caches (and, on a virtual machine whose idle CPU halts, a CPU)
gone cold. Measured on the reference 2-core VM: one message exchange costs the core about
33 µs of CPU when the process never sleeps and about 95 µs when it sleeps 100 µs between
the halves; a 200-byte round trip between two asyncio nodes went from ~250 µs to ~96 µs
with a 150 µs window, and CPU per exchange went down (105 against 115-155 µs), because
spinning a little is cheaper than halting and waking.

The window adapts so that it only spins where spinning pays: a spin that catches an
arrival keeps (and doubles) the window, one that times out halves it, and after a few
misses (a peer across the internet, an idle session's keepalive) it is 0 and the binding
just sleeps. A datagram that then arrives within `limit` of the moment it went to sleep
says a spin might have caught it, and the window opens again; but where the answer can
only come while this thread sleeps (both nodes on one event loop), reopening never pays,
so each time a reopened window closes again without a catch, the next reopening waits
for twice as many such quick wake-ups (up to 1024). What spinning can cost is bounded: at
most `limit` of CPU per send, during which the loop runs nothing else.

Pure bookkeeping: the binding reads the clock and the socket (`UdpPort.send_and_linger`).
"""

from __future__ import annotations

__all__ = ["BUSY_POLL_LIMIT", "BusyPoll"]

#: Default longest spin after a send, in seconds: a loopback or LAN round trip through two
#: Python nodes with room to spare, short enough that a miss costs little.
BUSY_POLL_LIMIT = 200e-6

#: Below this fraction of the limit a halved window closes (spinning a few microseconds
#: catches nothing a sleep would not).
_SMALLEST = 1 / 8
#: The window a wake-up soon after sleeping reopens to, as a fraction of the limit.
_REOPEN = 1 / 2
#: Reopenings wait for 2**strikes quick wake-ups, strikes counting closings without a catch.
_MAX_STRIKES = 10


class BusyPoll:
    """The adaptive spin window of one socket (seconds; 0 = sleep at once)."""

    __slots__ = ("_asleep_since", "_quick_wakes", "_strikes", "limit", "window")

    def __init__(self, limit: float = BUSY_POLL_LIMIT) -> None:
        if limit < 0:
            raise ValueError(f"busy_poll must be >= 0 seconds, got {limit}")
        self.limit = limit
        self.window = limit
        self._asleep_since: float | None = None
        self._strikes = 0
        self._quick_wakes = 0

    def caught(self) -> None:
        """A spin read something before its window ran out."""
        self.window = min(self.limit, self.window * 2)
        self._asleep_since = None
        self._strikes = 0
        self._quick_wakes = 0

    def missed(self, now: float) -> None:
        """A spin ran out (or none ran, the window being 0) and the binding goes to sleep."""
        if self.window:
            half = self.window / 2
            if half >= self.limit * _SMALLEST:
                self.window = half
            else:
                self.window = 0.0
                self._strikes = min(self._strikes + 1, _MAX_STRIKES)
        self._asleep_since = now

    def woke(self, now: float) -> None:
        """The socket became readable while the binding slept."""
        since = self._asleep_since
        if since is None:
            return
        self._asleep_since = None
        if self.window or now - since > self.limit:
            return
        self._quick_wakes += 1  # a spin as long as the limit might have caught this one
        if self._quick_wakes >= 1 << self._strikes:
            self._quick_wakes = 0
            self.window = self.limit * _REOPEN
