"""In-memory network simulator: a virtual clock, seeded randomness and a pump for sans-IO endpoints.

The test bed of the project. Any object with the four sans-IO methods (`SimEndpoint`) can be
placed on the simulated network at an address; the `Network` moves datagrams between them
through per-direction link conditions (loss, delay, jitter, reordering, duplication,
corruption, MTU, a bandwidth bottleneck with a drop-tail queue, blackholing), lets an
adversary watch, rewrite, drop and inject datagrams, and fires endpoint timers in virtual
time. The same seed gives the same run, event for event.

The pump is also the harness benchmarks run in, so the path of a datagram over a link
without impairments is kept short: one heap push, one heap pop, no random draws.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from heapq import heappop, heappush
from typing import Any, NamedTuple, Protocol

from .errors import LocalProtocolError
from .transmit import Addr, Transmit

__all__ = [
    "DROP_REASONS",
    "Datagram",
    "Host",
    "LinkConditions",
    "Middlebox",
    "Network",
    "NetworkStats",
    "PassThroughMiddlebox",
    "SeededRandom",
    "SimEndpoint",
    "Tap",
]

_MASK64 = (1 << 64) - 1

#: Every reason a datagram can be dropped for, the keys of `NetworkStats.dropped`.
DROP_REASONS = ("loss", "mtu", "queue", "unknown", "blackhole", "tap", "middlebox", "ttl")

#: Routers a datagram crosses between two NATs (the "internet" core): a datagram that
#: leaves its host's middlebox with a TTL this low expires before the other side, as a
#: TTL-2 opener does in the NAT lab (DESIGN 7).
CORE_HOPS = 1

# Past this many firings in a row that leave the timer due at once, a host's timer counts as
# stuck even if it keeps sending.
_MAX_IMMEDIATE_REFIRES = 1000

_INF = float("inf")

# Link resolutions are cached per (src, dst); spoofed sources could grow the cache without
# bound, so it is simply cleared past this size.
_LINK_CACHE_LIMIT = 1 << 16


class SeededRandom:
    """A small deterministic PRNG: xoshiro256** seeded through splitmix64.

    The core may not import `random`, and tests need streams that depend only on the seed.
    Not for cryptographic use: simulated keys are predictable on purpose.
    """

    __slots__ = ("_s0", "_s1", "_s2", "_s3")

    def __init__(self, seed: int) -> None:
        # splitmix64 expands one seed into four well-mixed state words (never all zero).
        x = seed & _MASK64
        words = []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & _MASK64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
            words.append(z ^ (z >> 31))
        self._s0, self._s1, self._s2, self._s3 = words

    def next_u64(self) -> int:
        """The next 64-bit output of the generator."""
        s0, s1, s2, s3 = self._s0, self._s1, self._s2, self._s3
        x = (s1 * 5) & _MASK64
        result = ((((x << 7) | (x >> 57)) & _MASK64) * 9) & _MASK64
        t = (s1 << 17) & _MASK64
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        self._s0, self._s1, self._s2 = s0, s1, s2
        self._s3 = ((s3 << 45) | (s3 >> 19)) & _MASK64
        return result

    def random(self) -> float:
        """A float uniformly distributed in [0, 1), with 53 bits of precision."""
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))

    def uniform(self, low: float, high: float) -> float:
        """A float uniformly distributed in [low, high)."""
        return low + (high - low) * self.random()

    def getrandbits(self, k: int) -> int:
        """A non-negative integer with `k` random bits."""
        if k < 0:
            raise LocalProtocolError("number of bits must be non-negative")
        value = 0
        produced = 0
        while produced < k:
            value = (value << 64) | self.next_u64()
            produced += 64
        return value >> (produced - k)

    def randrange(self, start: int, stop: int | None = None) -> int:
        """A uniform integer in [start, stop), or in [0, start) when `stop` is omitted."""
        if stop is None:
            start, stop = 0, start
        width = stop - start
        if width <= 0:
            raise LocalProtocolError(f"empty range for randrange({start}, {stop})")
        bits = width.bit_length()
        # Rejection sampling keeps the result unbiased for widths that are not powers of two.
        while True:
            r = self.getrandbits(bits)
            if r < width:
                return start + r

    def bytes(self, n: int) -> bytes:
        """`n` pseudo-random bytes; usable as a Node's `rng` callable."""
        if n < 0:
            raise LocalProtocolError("number of bytes must be non-negative")
        chunks = [self.next_u64().to_bytes(8, "little") for _ in range((n + 7) // 8)]
        return b"".join(chunks)[:n]


class SimEndpoint(Protocol):
    """What the simulator drives: the sans-IO surface of `pilot_proto.Node` (DESIGN section 2)."""

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None: ...

    def datagrams_to_send(self, now: float) -> list[Transmit]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


class Datagram(NamedTuple):
    """One datagram on the simulated wire: what taps see and `Network.captured` records."""

    src: Addr
    dst: Addr
    data: bytes
    time: float


#: An adversary on the path. Returns None to let the datagram pass unchanged, or the datagrams
#: to put on the wire instead (an empty list drops it; a later `time` holds it back).
Tap = Callable[[Datagram], Iterable[Datagram] | None]


class Middlebox:
    """A box that rewrites addresses at the edge of a host, such as a NAT.

    Hosts are attached with `Network.add_host(..., middlebox=box)`. Datagrams leaving such a
    host pass `outbound`; datagrams arriving for one of the box's `public_ips`, or for a host
    behind it, pass `inbound`. Returning None drops the datagram (counted as "middlebox").
    This base class translates nothing; NAT models override both methods.
    """

    #: IPs the box answers for on the outside; datagrams to them are routed to `inbound`.
    public_ips: frozenset[str] = frozenset()

    def outbound(self, src: Addr, dst: Addr, now: float) -> Addr | None:
        """The source address a datagram from inside host `src` to `dst` leaves with."""
        return src

    def inbound(self, src: Addr, dst: Addr, now: float) -> Addr | None:
        """The inside address a datagram from `src` to `dst` is delivered to."""
        return dst


class PassThroughMiddlebox(Middlebox):
    """A middlebox that translates nothing but counts what it saw (the trivial model)."""

    def __init__(self) -> None:
        self.outbound_count = 0
        self.inbound_count = 0

    def outbound(self, src: Addr, dst: Addr, now: float) -> Addr | None:
        self.outbound_count += 1
        return src

    def inbound(self, src: Addr, dst: Addr, now: float) -> Addr | None:
        self.inbound_count += 1
        return dst


@dataclass(frozen=True, slots=True)
class LinkConditions:
    """Impairments of one direction of a link. The default is a perfect, instant link.

    `delay` and `jitter` are seconds (each datagram waits `delay` plus a uniform draw in
    [0, jitter)); `reorder` is the probability a datagram is held back an extra
    `reorder_delay`; `bandwidth` is bytes per second through a drop-tail queue of
    `queue_bytes`.
    """

    loss: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.01
    duplicate: float = 0.0
    corrupt: float = 0.0
    mtu: int | None = None
    bandwidth: float | None = None
    queue_bytes: int = 64 * 1024
    blackhole: bool = False
    #: Whether anything differs from a perfect link; False selects the pump's fast path.
    impaired: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("loss", "reorder", "duplicate", "corrupt"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise LocalProtocolError(f"{name} is a probability in [0, 1], got {value}")
        for name in ("delay", "jitter", "reorder_delay"):
            if getattr(self, name) < 0:
                raise LocalProtocolError(f"{name} must be non-negative seconds")
        if self.mtu is not None and self.mtu < 0:
            raise LocalProtocolError("mtu must be non-negative")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise LocalProtocolError("bandwidth must be positive bytes per second")
        if self.queue_bytes < 0:
            raise LocalProtocolError("queue_bytes must be non-negative")
        impaired = bool(
            self.loss
            or self.delay
            or self.jitter
            or self.reorder
            or self.duplicate
            or self.corrupt
            or self.mtu is not None
            or self.bandwidth is not None
            or self.blackhole
        )
        object.__setattr__(self, "impaired", impaired)


@dataclass(slots=True)
class NetworkStats:
    """Counters of everything the network did; `dropped` is keyed by `DROP_REASONS`."""

    sent: int = 0
    delivered: int = 0
    bytes_sent: int = 0
    bytes_delivered: int = 0
    injected: int = 0
    duplicated: int = 0
    corrupted: int = 0
    reordered: int = 0
    stuck_timers: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())


class Host:
    """An endpoint placed on the network at `addr`, optionally behind a `middlebox`."""

    __slots__ = (
        "_immediate_refires",
        "_removed",
        "_timer",
        "_timer_generation",
        "addr",
        "endpoint",
        "middlebox",
        "on_activity",
        "received",
        "sent",
    )

    def __init__(
        self,
        endpoint: SimEndpoint,
        addr: Addr,
        middlebox: Middlebox | None,
        on_activity: Callable[[float], None] | None,
    ) -> None:
        self.endpoint = endpoint
        self.addr = addr
        self.middlebox = middlebox
        #: Called with `now` after every call into the endpoint, before its datagrams are
        #: collected: the place for an application to drain events and react.
        self.on_activity = on_activity
        self.sent = 0
        self.received = 0
        self._timer: float | None = None
        self._timer_generation = 0
        self._immediate_refires = 0
        self._removed = False

    def __repr__(self) -> str:
        return f"Host({self.addr!r}, {type(self.endpoint).__name__})"


class _Link:
    """One direction of a link: its conditions and the state of its bottleneck queue."""

    __slots__ = ("busy_until", "conditions", "impaired")

    def __init__(self, conditions: LinkConditions) -> None:
        self.conditions = conditions
        self.impaired = conditions.impaired
        self.busy_until = 0.0


# A link rule names each end by a full address or by a bare IP (every port of that host).
LinkEnd = Addr | str

# Heap entries: (time, seq, src, dst, data) for a delivery, (time, seq, None, host,
# generation) for a timer. `seq` is unique, so comparison never looks past it.
_HeapEntry = tuple[float, int, Addr | None, Any, Any]


class Network:
    """The simulated network: hosts, links, adversary hooks, and the event pump.

    Time is virtual: `now` only moves when the pump processes an event at a later time, so
    hours of protocol time run in milliseconds and the same `seed` gives the same run.
    """

    def __init__(
        self, seed: int = 0, *, epoch: float = 1_700_000_000.0, capture_limit: int = 1024
    ) -> None:
        self.seed = seed
        #: Virtual monotonic seconds; pass `network.clock` where a monotonic clock is wanted.
        self.now = 0.0
        #: Virtual wall time at `now == 0`, for `wall_clock()`.
        self.epoch = epoch
        self.stats = NetworkStats()
        self.hosts: dict[Addr, Host] = {}
        self._rng = self._derive_random("network")
        self._node_rngs: dict[str, SeededRandom] = {}
        self._heap: list[_HeapEntry] = []
        self._seq = itertools.count()
        self._in_flight = 0
        self._default_link = _Link(LinkConditions())
        self._rules: dict[tuple[LinkEnd, LinkEnd], _Link] = {}
        self._link_cache: dict[tuple[Addr, Addr], _Link] = {}
        self._taps: list[Tap] = []
        self._public_ips: dict[str, Middlebox] = {}
        self._captured: deque[Datagram] | None = (
            deque(maxlen=capture_limit) if capture_limit > 0 else None
        )

    # ----------------------------------------------------------------- randomness and clocks

    def _derive_random(self, name: str) -> SeededRandom:
        digest = hashlib.sha256(f"{self.seed}\x00{name}".encode()).digest()
        return SeededRandom(int.from_bytes(digest[:8], "little"))

    def rng_for(self, name: str) -> Callable[[int], bytes]:
        """A deterministic `rng(n) -> bytes` for a node, one stream per (seed, name)."""
        rng = self._node_rngs.get(name)
        if rng is None:
            rng = self._node_rngs[name] = self._derive_random("node\x00" + name)
        return rng.bytes

    def random_for(self, name: str) -> SeededRandom:
        """A fresh seeded generator for a test's own choices, independent of the links."""
        return self._derive_random("user\x00" + name)

    def clock(self) -> float:
        """Virtual monotonic time (`now`), as a callable."""
        return self.now

    def wall_clock(self) -> float:
        """Virtual wall time: `epoch + now`, for a node's `wall_clock`."""
        return self.epoch + self.now

    # ------------------------------------------------------------------------------- topology

    def add_host(
        self,
        endpoint: SimEndpoint,
        addr: Addr,
        *,
        middlebox: Middlebox | None = None,
        on_activity: Callable[[float], None] | None = None,
    ) -> Host:
        """Place `endpoint` at `addr`; its pending datagrams and timer are picked up at once."""
        if addr in self.hosts:
            raise LocalProtocolError(f"address {addr!r} is already taken by {self.hosts[addr]!r}")
        host = Host(endpoint, addr, middlebox, on_activity)
        self.hosts[addr] = host
        if middlebox is not None:
            for ip in middlebox.public_ips:
                owner = self._public_ips.setdefault(ip, middlebox)
                if owner is not middlebox:
                    raise LocalProtocolError(f"public IP {ip} belongs to another middlebox")
        self._collect(host, self.now)
        return host

    def remove_host(self, addr: Addr) -> None:
        """Take a host off the network; datagrams still in flight to it count as unknown."""
        host = self.hosts.pop(addr, None)
        if host is None:
            raise LocalProtocolError(f"no host at {addr!r}")
        host._removed = True

    def set_default_link(self, conditions: LinkConditions) -> None:
        """Conditions for every direction without a rule of its own."""
        self._default_link = _Link(conditions)
        self._link_cache.clear()

    def set_link(
        self,
        src: LinkEnd,
        dst: LinkEnd,
        conditions: LinkConditions,
        *,
        both_directions: bool = False,
    ) -> None:
        """Conditions from `src` to `dst`, each a full address or a bare IP (any port).

        Ends are matched on wire addresses, after a middlebox has translated the source. A
        full-address rule wins over an IP rule. Every pair of addresses a rule matches
        shares its bottleneck queue, as hosts behind one access link do.
        """
        self._rules[(src, dst)] = _Link(conditions)
        if both_directions:
            self._rules[(dst, src)] = _Link(conditions)
        self._link_cache.clear()

    def _resolve_link(self, src: Addr, dst: Addr) -> _Link:
        rules = self._rules
        link = (
            rules.get((src, dst))
            or rules.get((src[0], dst))
            or rules.get((src, dst[0]))
            or rules.get((src[0], dst[0]))
        )
        if link is None:
            # Each pair gets its own queue on the default link: unrelated flows do not share
            # one imaginary bottleneck.
            default = self._default_link
            link = default if not default.impaired else _Link(default.conditions)
        if len(self._link_cache) >= _LINK_CACHE_LIMIT:
            self._link_cache.clear()
        self._link_cache[(src, dst)] = link
        return link

    # ------------------------------------------------------------------------ adversary hooks

    def add_tap(self, tap: Tap) -> None:
        """Let `tap` see (and replace) every datagram hosts send, in order of addition."""
        self._taps.append(tap)

    def remove_tap(self, tap: Tap) -> None:
        self._taps.remove(tap)

    def inject(self, src: Addr, dst: Addr, data: bytes, at: float | None = None) -> None:
        """Put `data` on the wire from a (possibly forged) `src`, delivered to `dst` at `at`.

        Injected datagrams bypass taps and link conditions: the adversary controls them.
        """
        when = self.now if at is None else at
        if when < self.now:
            raise LocalProtocolError(f"cannot inject in the past ({when} < now {self.now})")
        data = bytes(data)
        self.stats.injected += 1
        if self._captured is not None:
            self._captured.append(Datagram(src, dst, data, when))
        heappush(self._heap, (when, next(self._seq), src, dst, data))
        self._in_flight += 1

    @property
    def captured(self) -> deque[Datagram]:
        """The most recent datagrams put on the wire (sent by hosts before taps, or injected)."""
        if self._captured is None:
            raise LocalProtocolError("capture is disabled (capture_limit=0)")
        return self._captured

    @property
    def in_flight(self) -> int:
        """Datagrams scheduled for delivery but not yet delivered."""
        return self._in_flight

    # ---------------------------------------------------------------------------- the pump

    def flush(self) -> None:
        """Collect datagrams and timers from every host, for calls made from outside the pump."""
        now = self.now
        collect = self._collect
        for host in list(self.hosts.values()):
            collect(host, now)

    def next_event_time(self) -> float | None:
        """When the next delivery or timer is due, skipping timers that were re-armed."""
        heap = self._heap
        while heap:
            entry = heap[0]
            if entry[2] is None and self._is_stale(entry):
                heappop(heap)
                continue
            return entry[0]
        return None

    def step(self) -> bool:
        """Process the next event (a delivery or a timer); False if there is none."""
        self.flush()
        return self._step(_INF)

    def run(self, until: float) -> None:
        """Process every event due up to virtual time `until`, then set `now` to `until`."""
        if until < self.now:
            raise LocalProtocolError(
                f"run(until={until}) is in the past (now={self.now}); use run_for(seconds)"
            )
        self.flush()
        while self._step(until):
            pass
        self.now = until

    def run_for(self, seconds: float) -> None:
        """`run(now + seconds)`."""
        self.run(self.now + seconds)

    def run_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Run until `predicate()` holds or `timeout` virtual seconds pass; True if it held."""
        if predicate():
            return True
        deadline = self.now + timeout
        self.flush()
        while self._step(deadline):
            if predicate():
                return True
        self.now = deadline
        return predicate()

    def run_idle(self, max_time: float) -> bool:
        """Run until nothing is in flight and no timer is due within `max_time` virtual seconds.

        True if the network went idle; False if work remained at the limit (then `now` is
        the limit).
        """
        deadline = self.now + max_time
        self.flush()
        while True:
            if not self._in_flight:
                # Only timers remain; they count as idle when due after the deadline.
                due = self.next_event_time()
                if due is None or due > deadline:
                    return True
            if not self._step(deadline):
                self.now = deadline
                return False

    def _is_stale(self, entry: _HeapEntry) -> bool:
        host: Host = entry[3]
        return host._removed or entry[4] != host._timer_generation

    def _step(self, limit: float) -> bool:
        heap = self._heap
        while heap:
            entry = heap[0]
            when = entry[0]
            if when > limit:
                return False
            heappop(heap)
            src = entry[2]
            if src is None:
                if self._is_stale(entry):
                    continue
                self.now = when
                self._fire_timer(entry[3], when)
                return True
            self.now = when
            self._in_flight -= 1
            self._deliver(src, entry[3], entry[4], when)
            return True
        return False

    def _collect(self, host: Host, now: float) -> None:
        """After a call into `host`'s endpoint: send what it queued and re-arm its timer."""
        if host.on_activity is not None:
            host.on_activity(now)
        endpoint = host.endpoint
        transmits = endpoint.datagrams_to_send(now)
        if transmits:  # usually empty: two of the three collections per step find nothing
            send = self._send
            for transmit in transmits:
                send(host, transmit.data, transmit.addr, now, transmit.ttl)
        timer = endpoint.get_timer()
        if timer != host._timer:
            self._arm(host, timer, now)

    def _arm(self, host: Host, timer: float | None, now: float) -> None:
        host._timer = timer
        host._timer_generation += 1
        if timer is not None:
            # A deadline already past fires now; the clock never runs backwards.
            when = timer if timer > now else now
            heappush(self._heap, (when, next(self._seq), None, host, host._timer_generation))

    def _fire_timer(self, host: Host, now: float) -> None:
        fired = host._timer
        endpoint = host.endpoint
        endpoint.handle_timer(now)
        sent_before = self.stats.sent
        if host.on_activity is not None:
            host.on_activity(now)
        for transmit in endpoint.datagrams_to_send(now):
            self._send(host, transmit.data, transmit.addr, now, transmit.ttl)
        timer = endpoint.get_timer()
        if timer is not None and timer <= now:
            # It would fire again at once. Unchanged and silent means the endpoint ignores
            # its own deadline; asking again and again without letting time pass would hold
            # the clock still forever. Either way the pump counts it and moves on.
            host._immediate_refires += 1
            silent = timer == fired and self.stats.sent == sent_before
            if silent or host._immediate_refires >= _MAX_IMMEDIATE_REFIRES:
                self.stats.stuck_timers += 1
                host._immediate_refires = 0
                host._timer = timer
                host._timer_generation += 1
                return
        else:
            host._immediate_refires = 0
        self._arm(host, timer, now)

    def _send(
        self, host: Host, data: bytes, dst: Addr, now: float, ttl: int | None = None
    ) -> None:
        stats = self.stats
        stats.sent += 1
        stats.bytes_sent += len(data)
        host.sent += 1
        src = host.addr
        middlebox = host.middlebox
        if middlebox is not None:
            translated = middlebox.outbound(src, dst, now)
            if translated is None:
                stats.dropped["middlebox"] += 1
                return
            crossed = translated != src
            src = translated
            # The host's router decrements the TTL once, the core once more per hop; a
            # datagram that crossed its NAT with too little TTL dies in the core.
            if ttl is not None and crossed and ttl <= 1 + CORE_HOPS:
                stats.dropped["ttl"] += 1
                return
        elif ttl is not None and ttl <= CORE_HOPS:
            stats.dropped["ttl"] += 1
            return
        if self._captured is not None:
            self._captured.append(Datagram(src, dst, data, now))
        if self._taps:
            self._tap(src, dst, data, now)
            return
        # _transmit, inlined for the datagram every step sends.
        link = self._link_cache.get((src, dst)) or self._resolve_link(src, dst)
        if link.impaired:
            self._impair(link, src, dst, data, now)
            return
        heappush(self._heap, (now, next(self._seq), src, dst, data))
        self._in_flight += 1

    def _tap(self, src: Addr, dst: Addr, data: bytes, now: float) -> None:
        datagrams = [Datagram(src, dst, data, now)]
        for tap in self._taps:
            passed: list[Datagram] = []
            for datagram in datagrams:
                replacement = tap(datagram)
                if replacement is None:
                    passed.append(datagram)
                else:
                    passed.extend(replacement)
            datagrams = passed
        if not datagrams:
            self.stats.dropped["tap"] += 1
        for d in datagrams:
            self._transmit(d.src, d.dst, bytes(d.data), d.time if d.time > now else now)

    def _transmit(self, src: Addr, dst: Addr, data: bytes, now: float) -> None:
        """Put a datagram on the link from `src` to `dst` at time `now`."""
        link = self._link_cache.get((src, dst))
        if link is None:
            link = self._resolve_link(src, dst)
        if not link.impaired:
            heappush(self._heap, (now, next(self._seq), src, dst, data))
            self._in_flight += 1
            return
        self._impair(link, src, dst, data, now)

    def _impair(self, link: _Link, src: Addr, dst: Addr, data: bytes, now: float) -> None:
        c = link.conditions
        stats = self.stats
        rng = self._rng
        size = len(data)
        if c.blackhole:
            stats.dropped["blackhole"] += 1
            return
        if c.mtu is not None and size > c.mtu:
            stats.dropped["mtu"] += 1
            return
        if c.loss and rng.random() < c.loss:
            stats.dropped["loss"] += 1
            return
        depart = now
        if c.bandwidth is not None:
            busy = link.busy_until if link.busy_until > now else now
            backlog = (busy - now) * c.bandwidth
            # Drop-tail: an empty queue always takes the datagram, a full one never does.
            if backlog > 0 and backlog + size > c.queue_bytes:
                stats.dropped["queue"] += 1
                return
            depart = link.busy_until = busy + size / c.bandwidth
        copies = 2 if c.duplicate and rng.random() < c.duplicate else 1
        if copies == 2:
            stats.duplicated += 1
        for _ in range(copies):
            when = depart + c.delay
            if c.jitter:
                when += rng.random() * c.jitter
            if c.reorder and rng.random() < c.reorder:
                when += c.reorder_delay
                stats.reordered += 1
            payload = data
            if c.corrupt and size and rng.random() < c.corrupt:
                flipped = bytearray(data)
                bit = rng.randrange(size * 8)
                flipped[bit >> 3] ^= 1 << (bit & 7)
                payload = bytes(flipped)
                stats.corrupted += 1
            heappush(self._heap, (when, next(self._seq), src, dst, payload))
            self._in_flight += 1

    def _deliver(self, src: Addr, dst: Addr, data: bytes, now: float) -> None:
        stats = self.stats
        translated = False
        if self._public_ips:
            box = self._public_ips.get(dst[0])
            if box is not None:
                inner = box.inbound(src, dst, now)
                if inner is None:
                    stats.dropped["middlebox"] += 1
                    return
                dst = inner
                translated = True
        host = self.hosts.get(dst)
        if host is None:
            stats.dropped["unknown"] += 1
            return
        if host.middlebox is not None and not translated:
            inner = host.middlebox.inbound(src, dst, now)
            if inner is None:
                stats.dropped["middlebox"] += 1
                return
            if inner != dst:
                redirected = self.hosts.get(inner)
                if redirected is None:
                    stats.dropped["unknown"] += 1
                    return
                host = redirected
        stats.delivered += 1
        stats.bytes_delivered += len(data)
        host.received += 1
        host.endpoint.receive_datagram(data, src, now)
        self._collect(host, now)
