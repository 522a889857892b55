"""A hypothesis state machine over the two-Connection pump: arbitrary interleavings of
sends, reads, losses, partitions, timer firings, resets and closes.

Invariants: what an application has read on a stream is a prefix of what the other side
wrote (so nothing twice, nothing reordered); messages arrive in order, each once; receipts
only for messages sent. When the network heals and nobody closed, every message and every
byte of every stream not reset arrives.
"""

from __future__ import annotations

import random

import pytest
from delivery_harness import LinkConfig as Link
from delivery_harness import Pair, Side
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from pilot_proto.delivery import DeliveryConfig
from pilot_proto.errors import ConnectionClosedError, StreamStateError

CONFIG = DeliveryConfig(
    forced_datagram_size=1200,
    stream_send_buffer=48 * 1024,
    stream_receive_window=64 * 1024,
    connection_receive_window=1 << 20,
    max_message_size=200_000,
    message_receive_window=1 << 20,
    initial_rtt=0.05,
)

sides = st.sampled_from(["a", "b"])


class DeliveryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pair = Pair(CONFIG, CONFIG, Link(delay=0.005), Link(delay=0.005), seed=21)
        self.data_rng = random.Random(5)
        # Per side: stream id (as the writer knows it) -> everything written to it.
        self.written: dict[str, dict[int, bytearray]] = {"a": {}, "b": {}}
        self.ended: dict[str, set[int]] = {"a": set(), "b": set()}
        self.reset: set[tuple[str, int]] = set()
        self.messages: dict[str, list[tuple[bytes, bytes]]] = {"a": [], "b": []}
        self.closed = False

    def side(self, name: str) -> Side:
        return self.pair.a if name == "a" else self.pair.b

    @staticmethod
    def other(name: str) -> str:
        return "b" if name == "a" else "a"

    # ------------------------------------------------------------------ actions

    @initialize(sizes=st.lists(st.integers(1, 40_000), min_size=4, max_size=4))
    def start_some_traffic(self, sizes: list[int]) -> None:
        """Streams both ways with data in flight, and a message each way, from step one."""
        for name, size in zip(("a", "b", "a", "b"), sizes, strict=True):
            self.open_stream(name)
            stream_id = max(self.written[name])
            self.write(name, stream_id, size, end=False)
        for name in ("a", "b"):
            self.send_message(name, 1000, big=False)

    @precondition(lambda self: not self.closed)
    @rule(name=sides)
    def open_stream(self, name: str) -> None:
        stream_id = self.side(name).connection.open_stream(80, self.pair.now)
        self.written[name][stream_id] = bytearray()

    @precondition(lambda self: not self.closed)
    @rule(name=sides, pick=st.integers(0, 1000), size=st.integers(1, 30_000), end=st.booleans())
    def write(self, name: str, pick: int, size: int, end: bool) -> None:
        connection = self.side(name).connection
        side = self.side(name)
        open_streams = [
            sid
            for sid in self._writable(name)
            if sid not in self.ended[name]
            and (name, sid) not in self.reset
            and sid not in side.app.resets
        ]
        if not open_streams:
            return
        stream_id = open_streams[pick % len(open_streams)]
        size = min(size, connection.stream_send_capacity(stream_id))
        data = self.data_rng.randbytes(size)
        try:
            connection.send_stream(stream_id, data, self.pair.now, end_stream=end)
        except StreamStateError:
            # Only allowed if the peer reset the stream (the event may still be queued).
            side.drain_events(self.pair.now)
            assert stream_id in side.app.resets
            return
        self.written[name].setdefault(stream_id, bytearray()).extend(data)
        if end:
            self.ended[name].add(stream_id)

    def _writable(self, name: str) -> list[int]:
        # Streams this side opened plus the ones the peer opened that it was told about.
        return sorted(set(self.written[name]) | set(self.side(name).app.opened))

    @precondition(lambda self: not self.closed)
    @rule(name=sides, pick=st.integers(0, 1000))
    def reset_stream(self, name: str, pick: int) -> None:
        streams = self._writable(name)
        if not streams:
            return
        stream_id = streams[pick % len(streams)]
        self.side(name).connection.reset_stream(stream_id, self.pair.now, "test reset")
        self.reset.add((name, stream_id))

    @precondition(lambda self: not self.closed)
    @rule(name=sides, size=st.integers(0, 5000), big=st.booleans())
    def send_message(self, name: str, size: int, big: bool) -> None:
        body = self.data_rng.randbytes(size * 40 if big else size)
        message_id = self.side(name).connection.send_message(body, self.pair.now, "binary")
        self.messages[name].append((message_id, body))

    @rule(name=sides, reading=st.booleans())
    def set_reading(self, name: str, reading: bool) -> None:
        side = self.side(name)
        side.app.reading = reading
        if reading:
            side.read_all()

    @rule(name=sides, pick=st.integers(0, 1000), amount=st.integers(1, 5000))
    def read_some(self, name: str, pick: int, amount: int) -> None:
        side = self.side(name)
        streams = sorted(side.app.opened) + sorted(self.written[name])
        if not streams:
            return
        stream_id = streams[pick % len(streams)]
        data = side.connection.read_stream(stream_id, amount)
        assert len(data) <= amount
        side.app.take(stream_id, data)

    @rule(
        direction=st.sampled_from(["ab", "ba"]),
        loss=st.sampled_from([0.0, 0.1, 0.5]),
        blackout=st.booleans(),
        jitter=st.sampled_from([0.0, 0.02]),
        duplicate=st.sampled_from([0.0, 0.2]),
    )
    def impair(
        self, direction: str, loss: float, blackout: bool, jitter: float, duplicate: float
    ) -> None:
        link = self.pair.link_ab if direction == "ab" else self.pair.link_ba
        link.config.loss = loss
        link.config.jitter = jitter  # reordering
        link.config.duplicate = duplicate
        link.blackout = blackout

    @rule(seconds=st.sampled_from([0.001, 0.01, 0.1, 1.0]))
    def run_for(self, seconds: float) -> None:
        self.pair.run(timeout=seconds)

    @rule()
    def one_step(self) -> None:
        self.pair.flush()
        self.pair.deliver()
        self.pair.fire_timers()

    @precondition(lambda self: not self.closed)
    @rule(name=sides, dice=st.integers(0, 7))
    def close(self, name: str, dice: int) -> None:
        if dice:  # rare: a closed connection ends the interesting part of a run
            return
        self.side(name).connection.close(self.pair.now, "done")
        self.closed = True
        with pytest.raises(ConnectionClosedError):
            self.side(name).connection.send_message(b"late", self.pair.now)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def stream_data_is_a_prefix_of_what_was_written(self) -> None:
        for writer in ("a", "b"):
            reader = self.side(self.other(writer)).app
            for stream_id, data in self.written[writer].items():
                received = reader.received.get(stream_id ^ 1, bytearray())
                assert data[: len(received)] == received

    @invariant()
    def messages_arrive_in_order_once(self) -> None:
        for sender in ("a", "b"):
            received = [(m.message_id, m.data) for m in self.side(self.other(sender)).app.messages]
            assert received == self.messages[sender][: len(received)]
            delivered = self.side(sender).app.delivered
            assert len(set(delivered)) == len(delivered)
            assert set(delivered) <= {message_id for message_id, _ in self.messages[sender]}

    def teardown(self) -> None:
        if self.closed:
            return
        pair = self.pair
        for link in (pair.link_ab, pair.link_ba):
            link.config.loss = 0.0
            link.blackout = False
        for name in ("a", "b"):
            side = self.side(name)
            side.app.reading = True
            side.read_all()
            side.connection.path_changed(pair.now)  # the Node would rehandshake if needed

        def complete() -> bool:
            for writer in ("a", "b"):
                reader = self.side(self.other(writer))
                reader.read_all()
                if len(self.side(writer).app.delivered) != len(self.messages[writer]):
                    return False
                for stream_id, data in self.written[writer].items():
                    if (writer, stream_id) in self.reset or (
                        self.other(writer),
                        stream_id ^ 1,
                    ) in self.reset:
                        continue
                    if stream_id in reader.app.resets or (stream_id ^ 1) in reader.app.resets:
                        continue
                    if len(reader.app.received.get(stream_id ^ 1, b"")) != len(data):
                        return False
            return True

        assert pair.run(complete, timeout=600), "the network healed but delivery did not finish"
        self.stream_data_is_a_prefix_of_what_was_written()
        self.messages_arrive_in_order_once()


DeliveryMachine.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestDeliveryStateMachine = DeliveryMachine.TestCase
