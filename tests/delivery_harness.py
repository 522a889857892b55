"""A two-Connection pump for delivery tests: seeded loss, reordering, duplication, delay,
a bottleneck rate and an MTU limit, in virtual time driven by get_timer/handle_timer.

No Node and no encryption: payloads go straight from one Connection to the other, each
counted as `len(payload) + packet_overhead` bytes on the wire.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import strategies as st

from pilot_proto.delivery import (
    Connection,
    ConnectionClosed,
    DatagramReceived,
    DeliveryConfig,
    MessageDelivered,
    MessageReceived,
    PeerUnresponsive,
    PongReceived,
    StreamEnded,
    StreamOpened,
    StreamReadable,
    StreamReset,
    StreamWritable,
)
from pilot_proto.delivery.frames import (
    MESSAGE_TYPES,
    Ack,
    Close,
    Datagram,
    Frame,
    MaxData,
    MaxMessageData,
    MaxStreamData,
    Message,
    Ping,
    Pong,
    Receipt,
    Refused,
    Stream,
    TrustAccept,
    TrustReject,
    TrustRequest,
)
from pilot_proto.delivery.frames import (
    StreamReset as StreamResetFrame,
)
from pilot_proto.delivery.varint import MAX_VARINT
from pilot_proto.events import Event

ADDRESS_A = "aaaa:0000:0000:0000:0000:0000:0000:0001"
ADDRESS_B = "bbbb:0000:0000:0000:0000:0000:0000:0002"


@dataclass
class LinkConfig:
    """One direction of the path."""

    loss: float = 0.0
    delay: float = 0.0  # one-way, seconds
    jitter: float = 0.0  # extra uniform delay in [0, jitter): reorders packets
    duplicate: float = 0.0
    mtu: int = 65535  # largest datagram (payload + overhead) that passes
    rate: float | None = None  # bottleneck bytes per second (None: unlimited)
    queue_bytes: int = 256 * 1024  # drop-tail queue in front of the bottleneck


class Link:
    """Datagrams in flight in one direction."""

    def __init__(self, config: LinkConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self.in_flight: list[tuple[float, int, bytes]] = []
        self.sequence = 0
        self.busy_until = 0.0
        self.sent = 0
        self.dropped = 0
        self.too_big = 0
        self.largest_passed = 0
        self.blackout = False  # drop everything (a partition)

    def send(self, payload: bytes, wire_size: int, now: float) -> None:
        config = self.config
        self.sent += 1
        if wire_size > config.mtu:
            self.too_big += 1
            return
        if self.blackout or (config.loss and self.rng.random() < config.loss):
            self.dropped += 1
            return
        departure = now
        if config.rate is not None:
            start = max(now, self.busy_until)
            if (start - now) * config.rate > config.queue_bytes:
                self.dropped += 1
                return
            self.busy_until = start + wire_size / config.rate
            departure = self.busy_until
        copies = 2 if config.duplicate and self.rng.random() < config.duplicate else 1
        for _ in range(copies):
            arrival = departure + config.delay
            if config.jitter:
                arrival += self.rng.random() * config.jitter
            self.sequence += 1
            heapq.heappush(self.in_flight, (arrival, self.sequence, payload))
        if wire_size > self.largest_passed:
            self.largest_passed = wire_size

    def next_arrival(self) -> float | None:
        return self.in_flight[0][0] if self.in_flight else None

    def pop_due(self, now: float) -> list[bytes]:
        due = []
        while self.in_flight and self.in_flight[0][0] <= now:
            due.append(heapq.heappop(self.in_flight)[2])
        return due


@dataclass
class App:
    """What an application on one side does with events, and what it has seen."""

    reading: bool = True
    confirm: bool = True
    keep_data: bool = True  # False: only hash and count (large transfers)
    hash_data: bool = True  # False: only count (throughput measurements)
    events: list[Event] = field(default_factory=list)
    received: dict[int, bytearray] = field(default_factory=dict)
    hashes: dict[int, hashlib._Hash] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)
    unread: set[int] = field(default_factory=set)  # StreamReadable seen while not reading
    opened: dict[int, int] = field(default_factory=dict)
    resets: dict[int, str] = field(default_factory=dict)
    messages: list[MessageReceived] = field(default_factory=list)
    delivered: list[bytes] = field(default_factory=list)
    datagrams: list[bytes] = field(default_factory=list)
    pongs: list[PongReceived] = field(default_factory=list)
    closed: list[ConnectionClosed] = field(default_factory=list)
    unresponsive: int = 0
    writable: int = 0
    # Data waiting to be written per stream: (data, position, end_stream).
    outbox: dict[int, tuple[bytes, int, bool]] = field(default_factory=dict)

    def take(self, stream_id: int, data: bytes) -> None:
        if stream_id not in self.hashes:
            self.hashes[stream_id] = hashlib.sha256()
            self.counts[stream_id] = 0
        if self.hash_data:
            self.hashes[stream_id].update(data)
        self.counts[stream_id] += len(data)
        if self.keep_data:
            self.received.setdefault(stream_id, bytearray()).extend(data)

    def digest(self, stream_id: int) -> str:
        known = self.hashes.get(stream_id)
        return known.hexdigest() if known is not None else hashlib.sha256().hexdigest()

    def count(self, stream_id: int) -> int:
        return self.counts.get(stream_id, 0)


class Side:
    def __init__(self, connection: Connection, app: App) -> None:
        self.connection = connection
        self.app = app

    def write_pending(self, now: float) -> None:
        """Write queued stream data as far as each stream's send buffer allows."""
        connection = self.connection
        outbox = self.app.outbox
        for stream_id in list(outbox):
            data, position, end = outbox[stream_id]
            remaining = len(data) - position
            if remaining <= 0:
                if end:
                    connection.send_stream(stream_id, b"", now, end_stream=True)
                del outbox[stream_id]
                continue
            take = min(connection.stream_send_capacity(stream_id), remaining)
            if take <= 0:
                continue
            last = take == remaining
            connection.send_stream(
                stream_id, data[position : position + take], now, end_stream=end and last
            )
            if last:
                del outbox[stream_id]
            else:
                outbox[stream_id] = (data, position + take, end)

    def read_all(self) -> None:
        for stream_id in {*self.app.opened, *self.app.received, *self.app.unread}:
            self.read(stream_id)
        self.app.unread.clear()

    def read(self, stream_id: int) -> None:
        for _ in range(1000):
            data = self.connection.read_stream(stream_id, 1 << 22)
            if not data:
                return
            self.app.take(stream_id, data)

    def drain_events(self, now: float) -> None:
        connection = self.connection
        app = self.app
        while True:
            event = connection.next_event()
            if event is None:
                return
            app.events.append(event)
            if isinstance(event, StreamReadable):
                if app.reading:
                    self.read(event.stream_id)
                else:
                    app.unread.add(event.stream_id)
            elif isinstance(event, StreamOpened):
                app.opened[event.stream_id] = event.port
            elif isinstance(event, StreamEnded):
                assert event.stream_id not in app.ended, "StreamEnded twice"
                app.ended.add(event.stream_id)
            elif isinstance(event, StreamReset):
                app.resets[event.stream_id] = event.reason
            elif isinstance(event, StreamWritable):
                app.writable += 1
            elif isinstance(event, MessageReceived):
                app.messages.append(event)
                if app.confirm and not connection.config.auto_confirm:
                    connection.confirm_persisted(event.message_id, now)
            elif isinstance(event, MessageDelivered):
                app.delivered.append(event.message_id)
            elif isinstance(event, DatagramReceived):
                app.datagrams.append(event.data)
            elif isinstance(event, PongReceived):
                app.pongs.append(event)
            elif isinstance(event, ConnectionClosed):
                app.closed.append(event)
            elif isinstance(event, PeerUnresponsive):
                app.unresponsive += 1


class Pair:
    """Two Connections joined by two Links, in virtual time."""

    def __init__(
        self,
        config_a: DeliveryConfig | None = None,
        config_b: DeliveryConfig | None = None,
        link_ab: LinkConfig | None = None,
        link_ba: LinkConfig | None = None,
        *,
        seed: int = 1,
        listening_a: set[int] | None = None,
        listening_b: set[int] | None = None,
        overhead: int = 29,
    ) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        rng_a = random.Random(seed * 7 + 1)
        rng_b = random.Random(seed * 7 + 2)
        self.listening_a = listening_a if listening_a is not None else {80}
        self.listening_b = listening_b if listening_b is not None else {80}
        a = Connection(
            ADDRESS_B,
            config_a or DeliveryConfig(),
            rng=rng_a.randbytes,
            now=0.0,
            listening_ports=self.listening_a,
        )
        b = Connection(
            ADDRESS_A,
            config_b or DeliveryConfig(),
            rng=rng_b.randbytes,
            now=0.0,
            listening_ports=self.listening_b,
        )
        a.packet_overhead = overhead
        b.packet_overhead = overhead
        self.a = Side(a, App())
        self.b = Side(b, App())
        self.link_ab = Link(link_ab or LinkConfig(), random.Random(seed * 7 + 3))
        self.link_ba = Link(link_ba or LinkConfig(), random.Random(seed * 7 + 4))
        self.iterations = 0

    @property
    def sides(self) -> tuple[tuple[Side, Link, Side], tuple[Side, Link, Side]]:
        return ((self.a, self.link_ab, self.b), (self.b, self.link_ba, self.a))

    def flush(self) -> int:
        """Apps write, both connections send; return how many payloads left."""
        count = 0
        for side, link, _ in self.sides:
            side.write_pending(self.now)
            connection = side.connection
            for payload in connection.payloads_to_send(self.now):
                link.send(payload, len(payload) + connection.packet_overhead, self.now)
                count += 1
        return count

    def deliver(self) -> int:
        count = 0
        for _, link, receiver in self.sides:
            for payload in link.pop_due(self.now):
                receiver.connection.receive_payload(payload, self.now)
                count += 1
        for side in (self.a, self.b):
            side.drain_events(self.now)
        return count

    def fire_timers(self) -> bool:
        fired = False
        for side in (self.a, self.b):
            timer = side.connection.get_timer()
            if timer is not None and timer <= self.now:
                side.connection.handle_timer(self.now)
                side.drain_events(self.now)
                fired = True
        return fired

    def next_time(self) -> float | None:
        candidates = [
            t
            for t in (
                self.link_ab.next_arrival(),
                self.link_ba.next_arrival(),
                self.a.connection.get_timer(),
                self.b.connection.get_timer(),
            )
            if t is not None
        ]
        return min(candidates) if candidates else None

    def run(
        self,
        condition: Callable[[], bool] | None = None,
        *,
        timeout: float = 60.0,
        max_iterations: int = 2_000_000,
    ) -> bool:
        """Pump until `condition()` holds (True), the network is quiet, or `timeout`
        virtual seconds pass (False)."""
        deadline = self.now + timeout
        for _ in range(max_iterations):
            self.iterations += 1
            if condition is not None and condition():
                return True
            sent = self.flush()
            delivered = self.deliver()
            if sent or delivered:
                continue
            if self.fire_timers():
                continue
            upcoming = self.next_time()
            if upcoming is None:
                return condition() if condition is not None else True
            if upcoming > deadline:
                self.now = deadline
                return condition() if condition is not None else False
            # Timers that stay in the past without effect would spin: step past them.
            self.now = max(self.now, upcoming)
        raise AssertionError("pump iteration limit reached: the connections spin")

    # ------------------------------------------------------------------ helpers

    def send_stream_data(self, side: Side, stream_id: int, data: bytes, end: bool = True) -> None:
        side.app.outbox[stream_id] = (data, 0, end)

    def quiet(self) -> bool:
        return not self.link_ab.in_flight and not self.link_ba.in_flight


# --------------------------------------------------------------------- frame strategies

ids = st.binary(min_size=16, max_size=16)
challenges = st.binary(min_size=8, max_size=8)
varints = st.integers(min_value=0, max_value=MAX_VARINT)
small = st.integers(min_value=0, max_value=1 << 40)
reasons = st.text(max_size=200)


@st.composite
def ack_frames(draw: st.DrawFn) -> Ack:
    count = draw(st.integers(min_value=1, max_value=20))
    high = draw(st.integers(min_value=0, max_value=1 << 40))
    ranges: list[tuple[int, int]] = []
    for _ in range(count):
        length = draw(st.integers(min_value=0, max_value=min(50, high)))
        low = high - length
        ranges.append((low, high))
        high = low - 2 - draw(st.integers(min_value=0, max_value=50))
        if high < 0:
            break
    return Ack(tuple(ranges), draw(small))


@st.composite
def message_frames(draw: st.DrawFn) -> Message:
    data = draw(st.binary(max_size=300))
    offset = draw(st.integers(min_value=0, max_value=1000))
    total = offset + len(data) + draw(st.integers(min_value=0, max_value=1000))
    return Message(
        draw(small),
        draw(ids),
        draw(st.sampled_from(MESSAGE_TYPES)),
        total,
        offset,
        data,
        draw(st.none() | ids),
    )


frames_strategy: st.SearchStrategy[Frame] = st.one_of(
    st.builds(Ping, challenges),
    st.builds(Pong, challenges),
    ack_frames(),
    st.builds(Receipt, ids),
    st.builds(MaxData, varints),
    st.builds(MaxStreamData, varints, varints),
    st.builds(MaxMessageData, varints),
    st.builds(StreamResetFrame, varints, varints, varints, reasons),
    st.builds(Datagram, st.binary(max_size=300)),
    message_frames(),
    st.builds(Close, varints, reasons),
    st.builds(
        Stream,
        small,
        small,
        st.binary(max_size=300),
        st.booleans(),
        st.none() | st.integers(min_value=0, max_value=65535),
    ),
    st.builds(TrustRequest, ids, reasons),
    st.builds(TrustAccept, ids),
    st.builds(TrustReject, ids),
    st.builds(Refused, st.lists(ids, min_size=1, max_size=64).map(tuple)),
)
