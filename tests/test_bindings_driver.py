"""The shared driver, without sockets: addresses, GSO/GRO planning, and waiters on a clock
the test owns (two Drivers whose datagrams a tiny pump carries)."""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import replace

import pytest

from pilot_proto import DeliveryConfig, Identity, IdentityRecord, Node, NodeConfig, Transmit
from pilot_proto.config import SessionConfig
from pilot_proto.delivery import MessageReceived
from pilot_proto.driver import (
    SOL_UDP,
    UDP_GRO,
    UDP_SEGMENT,
    Driver,
    Pending,
    buffer_shortfall,
    canonical_address,
    gso_batches,
    sendmsg_calls,
    socket_address,
    split_gro,
)
from pilot_proto.errors import (
    ConnectionFailed,
    ConnectionLost,
    DeliveryTimeout,
    LocalProtocolError,
    NodeClosed,
    PilotTimeout,
    StreamResetError,
    StreamStateError,
)

# ---------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        (("127.0.0.1", 5), ("127.0.0.1", 5)),
        (("::ffff:10.0.0.1", 5, 0, 0), ("10.0.0.1", 5)),
        (("2001:0db8:0:0::1", 5, 0, 0), ("2001:db8::1", 5)),
        (("fe80::1", 5, 0, 3), ("fe80::1%3", 5)),  # link-local: the scope matters
        (("fe80::1%eth0", 5), ("fe80::1%eth0", 5)),
        (("2001:db8::1", 5, 0, 3), ("2001:db8::1", 5)),  # global: a scope means nothing
        (("::1", 5), ("::1", 5)),
    ],
)
def test_canonical_address(raw: tuple[object, ...], canonical: tuple[str, int]) -> None:
    assert canonical_address(raw) == canonical


@pytest.mark.parametrize("raw", [("localhost", 5), ("127.0.0.1", 70000), ("1.2.3.4", "5")])
def test_canonical_address_refuses_what_is_not_an_ip_endpoint(raw: tuple[object, ...]) -> None:
    with pytest.raises(LocalProtocolError):
        canonical_address(raw)


def test_socket_address_for_each_family() -> None:
    assert socket_address(("10.0.0.1", 5), ipv6_socket=False) == ("10.0.0.1", 5)
    assert socket_address(("10.0.0.1", 5), ipv6_socket=True) == ("::ffff:10.0.0.1", 5, 0, 0)
    assert socket_address(("2001:db8::1", 5), ipv6_socket=False) is None
    assert socket_address(("fe80::1%3", 5), ipv6_socket=True) == ("fe80::1", 5, 0, 3)


# ---------------------------------------------------------------------- GSO and GRO

A, B = ("10.0.0.1", 1), ("10.0.0.2", 2)


def transmits(*spec: tuple[tuple[str, int], int]) -> list[Transmit]:
    return [Transmit(bytes(size), addr) for addr, size in spec]


def shape(batches: list[tuple[tuple[str, int], int, list[bytes]]]) -> list[tuple[object, ...]]:
    return [(addr, size, [len(d) for d in datagrams]) for addr, size, datagrams in batches]


def test_gso_batches_keep_order_and_the_kernel_rule() -> None:
    out = gso_batches(transmits((A, 100), (A, 100), (A, 60), (A, 100), (B, 100), (A, 100)))
    # A shorter datagram ends a batch; a new address starts one.
    assert shape(out) == [
        (A, 100, [100, 100, 60]),
        (A, 100, [100]),
        (B, 100, [100]),
        (A, 100, [100]),
    ]
    # A longer datagram never joins a batch of shorter segments.
    assert shape(gso_batches(transmits((A, 60), (A, 100)))) == [(A, 60, [60]), (A, 100, [100])]


def test_gso_batches_respect_segment_and_byte_limits() -> None:
    out = gso_batches(transmits(*[(A, 1000)] * 10), max_segments=4)
    assert [len(d) for _, _, d in out] == [4, 4, 2]
    out = gso_batches(transmits(*[(A, 1000)] * 10), max_bytes=3500)
    assert [len(d) for _, _, d in out] == [3, 3, 3, 1]


def test_sendmsg_calls_with_and_without_gso() -> None:
    stats: Counter[str] = Counter()
    items = transmits((A, 100), (A, 100), (("2001:db8::1", 3), 100))
    with_gso = sendmsg_calls(items, gso=True, ipv6_socket=False, stats=stats)
    assert [(target, len(buffers)) for target, buffers, _ in with_gso] == [(A, 2)]
    assert with_gso[0][2] == [(SOL_UDP, UDP_SEGMENT, (100).to_bytes(2, sys.byteorder))]
    assert stats["send_unreachable_family"] == 1
    without = sendmsg_calls(items[:2], gso=False, ipv6_socket=True, stats=stats)
    assert [(t, len(b), a) for t, b, a in without] == [(("::ffff:10.0.0.1", 1, 0, 0), 1, [])] * 2


def test_split_gro() -> None:
    data = b"a" * 10 + b"b" * 10 + b"c" * 4
    segment = (10).to_bytes(4, sys.byteorder)
    assert split_gro(data, [(SOL_UDP, UDP_GRO, segment)]) == [b"a" * 10, b"b" * 10, b"cccc"]
    assert split_gro(data, []) == [data]


def test_buffer_shortfall_names_the_sysctl() -> None:
    assert buffer_shortfall("receive", 4 << 20, 4 << 20, "rmem_max") is None
    message = buffer_shortfall("receive", 4 << 20, 212992, "rmem_max")
    assert message is not None and "net.core.rmem_max" in message and "212992" in message


def test_timer_rearms_only_for_an_earlier_deadline() -> None:
    assert Driver.timer_needs_rearm(None, 1.0)
    assert Driver.timer_needs_rearm(2.0, 1.0)
    assert not Driver.timer_needs_rearm(1.0, 2.0)  # fires early, polls, re-arms then
    assert not Driver.timer_needs_rearm(1.0, None)


# ---------------------------------------------------------------------- waiters


class Pair:
    """Two drivers joined by a lossless wire, on a clock the test advances."""

    def __init__(self, config: NodeConfig | None = None, **driver_options: bool) -> None:
        config = config or NodeConfig(session=replace(SessionConfig(), handshake_retry=0.5))
        self.now = 1000.0
        self.ids = [Identity.generate(os.urandom) for _ in range(2)]
        self.addrs = [("10.0.0.1", 1), ("10.0.0.2", 2)]
        self.drivers = [
            Driver(Node(i, config, rng=os.urandom, wall_clock=lambda: 1.7e9), **driver_options)
            for i in self.ids
        ]
        for me, other in ((0, 1), (1, 0)):
            record = IdentityRecord.create(
                self.ids[other], hostname=None, sequence=1, expires_at=2**40
            )
            self.drivers[me].add_peer(record, [self.addrs[other]], True)
        self.a, self.b = self.drivers
        self.wire_up = True

    @property
    def address_a(self) -> str:
        return self.ids[0].address

    @property
    def address_b(self) -> str:
        return self.ids[1].address

    def pump(self, seconds: float = 0.0) -> None:
        """Carry datagrams until quiet, then let `seconds` of timers run."""
        end = self.now + seconds
        for _ in range(100_000):
            moved = False
            for me, driver in enumerate(self.drivers):
                for transmit in driver.poll(self.now):
                    moved = True
                    if self.wire_up:
                        target = self.addrs.index(transmit.addr)
                        self.drivers[target].datagram_received(
                            transmit.data, self.addrs[me], self.now
                        )
            if moved:
                continue
            wakeups = [w for d in self.drivers if (w := d.next_wakeup()) is not None]
            if not wakeups or min(wakeups) > end:
                self.now = max(self.now, end)
                return
            self.now = max(self.now, min(wakeups))
        raise AssertionError("the pump never went quiet")


def notify(pending: Pending) -> None:
    """The binding's wake-up; these tests look at the Pending itself."""


def test_send_completes_with_the_receipt_once_the_message_is_taken() -> None:
    pair = Pair()
    seen: list[Pending] = []
    sent = pair.a.send_message(pair.address_b, b"one", pair.now, "text", None, 5.0, seen.append)
    pair.pump(0.1)
    assert not sent.done  # delivered, but nobody took it: no receipt yet
    taken = pair.b.receive_message(pair.now, None, seen.append)
    assert taken.done and isinstance(taken.result, MessageReceived)
    pair.pump(0.1)
    assert sent.done and sent.outcome() == taken.result.message_id
    assert seen == [taken, sent]


def test_route_lets_a_reply_leave_with_the_receipt_in_one_datagram() -> None:
    pair = Pair(NodeConfig(delivery=DeliveryConfig(forced_datagram_size=1200)))
    pair.a.connect(pair.address_b, pair.now, 5.0, notify)
    pair.pump(1.0)
    waiting = pair.b.receive_message(pair.now, None, notify)
    sent = pair.a.send_message(pair.address_b, b"ask", pair.now, "text", None, 5.0, notify)
    (request,) = pair.a.poll(pair.now)
    pair.b.datagram_received(request.data, pair.addrs[0], pair.now)
    pair.b.route(pair.now)  # the waiting receiver gets the request; nothing is built yet
    assert waiting.done and waiting.result.data == b"ask"
    pair.b.send_message(
        pair.address_a, b"answer", pair.now, "text", waiting.result.message_id, 5.0, notify
    )
    (answer,) = pair.b.poll(pair.now)  # the RECEIPT and the reply: one datagram
    pair.a.datagram_received(answer.data, pair.addrs[1], pair.now)
    pair.a.poll(pair.now)
    assert sent.done and sent.outcome() == waiting.result.message_id
    reply = pair.a.receive_message(pair.now, None, notify)
    assert reply.done and reply.result.data == b"answer"


def test_delivery_timeout_names_the_message_and_it_is_still_delivered() -> None:
    pair = Pair()
    sent = pair.a.send_message(pair.address_b, b"late", pair.now, "text", None, 0.5, notify)
    pair.pump(1.0)
    with pytest.raises(DeliveryTimeout) as timed_out:
        sent.outcome()
    assert timed_out.value.message_id == sent.result
    assert isinstance(timed_out.value, TimeoutError)
    assert pair.b.receive_message(pair.now, None, notify).result.data == b"late"


def test_a_message_given_to_a_cancelled_caller_goes_back_unconfirmed_once() -> None:
    pair = Pair()
    for text in (b"first", b"second"):
        pair.a.send_message(pair.address_b, text, pair.now, "text", None, None, notify)
    pair.pump(0.1)
    taken = pair.b.receive_message(pair.now, None, notify)
    pair.b.abandon(taken, pair.now)  # cancelled before it saw the result
    again = pair.b.receive_message(pair.now, None, notify)
    assert again.result.data == b"first"  # the same message, first in line again
    assert pair.b.receive_message(pair.now, None, notify).result.data == b"second"
    pair.pump(0.1)
    assert pair.b.node.stats["internal_error"] == 0


def test_receive_timeout_and_abandon_leave_no_waiter() -> None:
    pair = Pair()
    waiting = pair.b.receive_message(pair.now, 0.2, notify)
    pair.pump(0.5)
    with pytest.raises(PilotTimeout):
        waiting.outcome()
    abandoned = pair.b.receive_message(pair.now, None, notify)
    pair.b.abandon(abandoned, pair.now)
    pair.a.send_message(pair.address_b, b"kept", pair.now, "text", None, None, notify)
    pair.pump(0.1)
    # Neither the timed-out nor the abandoned caller swallowed the message.
    assert pair.b.receive_message(pair.now, None, notify).result.data == b"kept"


def test_ping_completes_with_the_rtt() -> None:
    pair = Pair()
    ping = pair.a.ping(pair.address_b, pair.now, 5.0, notify)
    pair.pump(0.1)
    assert ping.done and ping.outcome() >= 0.0


def small_buffers() -> NodeConfig:
    return NodeConfig(delivery=DeliveryConfig(stream_send_buffer=64 * 1024))


def test_a_write_larger_than_the_send_buffer_waits_for_room() -> None:
    pair = Pair(small_buffers())
    pair.b.listen(7)
    accepted = pair.b.accept(7, pair.now, None, notify)
    stream = pair.a.open_stream(pair.address_b, 7, pair.now)
    data = os.urandom(1 << 20)
    write = pair.a.stream_write(stream, data, True, pair.now, None, notify)
    assert not write.done  # 1 MiB does not fit a 64 KiB buffer
    received = bytearray()
    for _ in range(1000):
        pair.pump(0.01)
        if accepted.done:
            read = pair.b.stream_read(accepted.result, 1 << 20, pair.now, None, notify)
            if read.done:
                if not read.outcome():
                    break
                received += read.outcome()
            else:
                pair.b.abandon(read, pair.now)
    assert write.done and write.outcome() is None
    assert bytes(received) == data
    with pytest.raises(StreamStateError):
        pair.a.stream_write(stream, b"after the end", False, pair.now, None, notify)


def test_a_write_given_up_partway_resets_the_stream_for_both_sides() -> None:
    pair = Pair(small_buffers())
    pair.b.listen(7)
    accepted = pair.b.accept(7, pair.now, None, notify)
    stream = pair.a.open_stream(pair.address_b, 7, pair.now)
    # More than the peer's receive window while it reads nothing: the write must stall.
    write = pair.a.stream_write(stream, bytes(8 << 20), False, pair.now, 0.05, notify)
    pair.pump(0.2)
    with pytest.raises(PilotTimeout):
        write.outcome()
    with pytest.raises(StreamResetError):
        pair.a.stream_write(stream, b"more", False, pair.now, None, notify)
    pair.pump(0.2)
    reads = []
    for _ in range(100):  # what arrived before the reset may be read; then the reset shows
        read = pair.b.stream_read(accepted.result, 1 << 20, pair.now, None, notify)
        pair.pump(0.01)
        reads.append(read)
        if read.error is not None:
            break
    assert isinstance(reads[-1].error, StreamResetError)
    assert "cancelled" in str(reads[-1].error)


def test_each_waiter_gets_its_own_copy_of_a_shared_error() -> None:
    pair = Pair()
    one = pair.b.receive_message(pair.now, None, notify)
    two = pair.b.receive_message(pair.now, None, notify)
    pair.b.close(pair.now)
    errors = []
    for pending in (one, two):
        with pytest.raises(NodeClosed) as closed:
            pending.outcome()
        errors.append(closed.value)
    assert errors[0] is not errors[1]
    with pytest.raises(NodeClosed):
        pair.b.receive_message(pair.now, None, notify)
    with pytest.raises(NodeClosed):
        pair.b.send_message(pair.address_a, b"x", pair.now, "text", None, None, notify)


def test_a_peer_closing_fails_what_waits_on_it() -> None:
    pair = Pair()
    pair.b.listen(7)
    accepted = pair.b.accept(7, pair.now, None, notify)
    stream = pair.a.open_stream(pair.address_b, 7, pair.now)
    pair.a.stream_write(stream, b"hello", False, pair.now, None, notify)
    pair.pump(0.1)
    read = pair.b.stream_read(accepted.result, 100, pair.now, None, notify)
    assert read.outcome() == b"hello"
    read = pair.b.stream_read(accepted.result, 100, pair.now, None, notify)
    ping = pair.b.ping(pair.address_a, pair.now, None, notify)  # no answer: a closes first
    pair.a.close(pair.now)
    pair.pump(0.1)
    for pending in (read, ping):
        with pytest.raises(ConnectionLost, match="closed by the peer"):
            pending.outcome()


def test_an_unreachable_peer_fails_connect() -> None:
    config = NodeConfig(
        session=replace(SessionConfig(), handshake_retry=0.5, handshake_give_up=2.0)
    )
    pair = Pair(config)
    pair.wire_up = False
    connect = pair.a.connect(pair.address_b, pair.now, None, notify)
    pair.pump(5.0)
    with pytest.raises(ConnectionFailed) as failed:
        connect.outcome()
    assert failed.value.address == pair.address_b
