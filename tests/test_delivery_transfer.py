"""Streams and messages end to end through the two-Connection pump, with exact content
checks (SHA-256 of everything received equals what was sent, once, in order)."""

from __future__ import annotations

import hashlib
import random

import pytest
from delivery_harness import LinkConfig as Link
from delivery_harness import Pair

from pilot_proto.delivery import DeliveryConfig
from pilot_proto.errors import MessageTooLarge

SMALL = DeliveryConfig(forced_datagram_size=1200)


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def start_transfer(
    pair: Pair, size: int, messages: int = 0, seed: int = 0
) -> tuple[int, bytes, list[bytes], list[bytes]]:
    """A opens a stream to port 80, writes `size` bytes and ends it; and sends messages."""
    a = pair.a.connection
    stream_id = a.open_stream(80, pair.now)
    data = payload(size, seed)
    pair.send_stream_data(pair.a, stream_id, data)
    bodies = [payload(seed + 1 + i * 997 % 5000, seed + i) for i in range(messages)]
    ids = [a.send_message(body, pair.now, type="binary") for body in bodies]
    return stream_id, data, bodies, ids


def check_transfer(
    pair: Pair, stream_id: int, data: bytes, bodies: list[bytes], ids: list[bytes]
) -> None:
    receiver = pair.b.app
    peer_id = stream_id ^ 1
    assert receiver.opened == {peer_id: 80}
    assert receiver.count(peer_id) == len(data)
    assert receiver.digest(peer_id) == sha(data)
    assert receiver.ended == {peer_id}
    assert [m.data for m in receiver.messages] == bodies
    assert [m.message_id for m in receiver.messages] == ids
    assert sorted(pair.a.app.delivered) == sorted(ids)
    assert len(set(pair.a.app.delivered)) == len(ids)


def done(pair: Pair, stream_id: int, ids: list[bytes]) -> bool:
    return (stream_id ^ 1) in pair.b.app.ended and len(pair.a.app.delivered) == len(ids)


@pytest.mark.parametrize(
    ("loss", "size", "seed"),
    [(0.0, 1_000_000, 1), (0.01, 1_000_000, 2), (0.1, 400_000, 3), (0.3, 120_000, 4)],
)
def test_stream_and_messages_survive_loss(loss: float, size: int, seed: int) -> None:
    link = Link(loss=loss, delay=0.01)
    pair = Pair(SMALL, SMALL, link, link, seed=seed)
    stream_id, data, bodies, ids = start_transfer(pair, size, messages=12, seed=seed)
    assert pair.run(lambda: done(pair, stream_id, ids), timeout=900)
    check_transfer(pair, stream_id, data, bodies, ids)
    stats = pair.a.connection.stats
    if loss:
        assert stats["lost_packets"] > 0 and stats["retransmitted_frames"] > 0
    else:
        assert stats["lost_packets"] == 0


def test_reordering_and_duplication() -> None:
    link = Link(delay=0.01, jitter=0.02, duplicate=0.1)
    pair = Pair(SMALL, SMALL, link, link, seed=5)
    stream_id, data, bodies, ids = start_transfer(pair, 500_000, messages=20, seed=5)
    assert pair.run(lambda: done(pair, stream_id, ids), timeout=300)
    check_transfer(pair, stream_id, data, bodies, ids)
    assert pair.b.connection.stats["duplicate_packet"] > 0
    # Reordering was recognised (ACKs for packets declared lost) and tolerated.
    assert pair.a.connection.stats["spurious_losses"] > 0


def test_long_round_trip_keeps_the_pipe_full() -> None:
    link = Link(delay=0.1)  # 200 ms RTT
    pair = Pair(SMALL, SMALL, link, link, seed=6)
    stream_id, data, bodies, ids = start_transfer(pair, 2_000_000, messages=5, seed=6)
    assert pair.run(lambda: done(pair, stream_id, ids), timeout=60)
    check_transfer(pair, stream_id, data, bodies, ids)
    # Slow start doubles per RTT: 2 MB at 1200 bytes needs about 8 round trips, not 1700.
    assert pair.now < 3.0
    assert pair.a.connection.smoothed_rtt == pytest.approx(0.2, abs=0.03)


def test_bottleneck_is_used_and_queue_overflow_is_recovered() -> None:
    forward = Link(delay=0.02, rate=1_000_000, queue_bytes=64 * 1024, mtu=1500)
    pair = Pair(link_ab=forward, link_ba=Link(delay=0.02, mtu=1500), seed=7)
    stream_id, data, bodies, ids = start_transfer(pair, 3_000_000, seed=7)
    assert pair.run(lambda: done(pair, stream_id, ids), timeout=60)
    check_transfer(pair, stream_id, data, bodies, ids)
    assert pair.link_ab.dropped > 0  # the queue overflowed: congestion happened
    assert 3.0 < pair.now < 3.0 / 0.85  # at least 85% of the bottleneck rate


def test_a_16_mib_message_arrives_whole() -> None:
    pair = Pair(seed=8)
    body = payload(16 * 1024 * 1024, 8)
    message_id = pair.a.connection.send_message(body, pair.now, type="binary")
    assert pair.run(lambda: message_id in pair.a.app.delivered, timeout=60)
    [received] = pair.b.app.messages
    assert received.message_id == message_id and received.type == "binary"
    assert sha(received.data) == sha(body)
    with pytest.raises(MessageTooLarge, match="16777216"):
        pair.a.connection.send_message(bytes(16 * 1024 * 1024 + 1), pair.now)


def test_a_16_mib_message_over_a_lossy_1200_byte_path() -> None:
    config = DeliveryConfig(forced_datagram_size=1200)
    link = Link(loss=0.02, delay=0.002)
    pair = Pair(config, config, link, link, seed=9)
    pair.b.app.keep_data = False
    body = payload(16 * 1024 * 1024, 9)
    first = pair.a.connection.send_message(b"first", pair.now)
    big = pair.a.connection.send_message(body, pair.now, type="binary")
    last = pair.a.connection.send_message(b"last", pair.now)
    assert pair.run(lambda: len(pair.a.app.delivered) == 3, timeout=600)
    assert [m.message_id for m in pair.b.app.messages] == [first, big, last]
    assert sha(pair.b.app.messages[1].data) == sha(body)


def test_one_hundred_concurrent_streams_share_the_path() -> None:
    link = Link(delay=0.005, rate=5_000_000, queue_bytes=128 * 1024)
    pair = Pair(SMALL, SMALL, link, Link(delay=0.005), seed=10)
    a = pair.a.connection
    sent = {}
    for index in range(100):
        stream_id = a.open_stream(80, pair.now)
        sent[stream_id] = payload(20_000, 100 + index)
        pair.send_stream_data(pair.a, stream_id, sent[stream_id])
    first_done: dict[int, int] = {}

    def all_done() -> bool:
        if not first_done and pair.b.app.ended:
            first_done.update({sid: pair.b.app.count(sid ^ 1) for sid in sent})
        return len(pair.b.app.ended) == 100

    assert pair.run(all_done, timeout=60)
    for stream_id, data in sent.items():
        assert pair.b.app.digest(stream_id ^ 1) == sha(data)
        assert pair.b.app.opened[stream_id ^ 1] == 80
    # Round robin, one packet per stream in turn: when the first stream finished, every
    # stream had most of its data.
    assert min(first_done.values()) >= 15_000


def test_receiver_that_stops_reading_bounds_memory_and_resumes() -> None:
    config = DeliveryConfig(stream_receive_window=1 << 20, stream_send_buffer=1 << 20)
    pair = Pair(config, config, Link(delay=0.005), Link(delay=0.005), seed=11)
    pair.b.app.reading = False
    stream_id, data, _, _ = start_transfer(pair, 20_000_000, seed=11)
    pair.run(timeout=5)  # the receiver reads nothing for 5 virtual seconds
    a = pair.a.connection
    assert pair.b.app.count(stream_id ^ 1) == 0
    # The application could hand the sender no more than the peer's window plus the
    # send buffer; the rest is still its own.
    _, position, _ = pair.a.app.outbox[stream_id]
    assert position <= (1 << 20) + (1 << 20)
    assert a.stream_send_capacity(stream_id) == 0
    # The receiver holds at most its window.
    held = pair.b.connection.read_stream(stream_id ^ 1)
    assert 0 < len(held) <= 1 << 20
    assert held == data[: len(held)]
    pair.b.app.take(stream_id ^ 1, held)
    pair.b.app.reading = True
    pair.b.read_all()
    assert pair.run(lambda: (stream_id ^ 1) in pair.b.app.ended, timeout=60)
    assert pair.b.app.digest(stream_id ^ 1) == sha(data)
    assert pair.a.app.writable > 0  # StreamWritable told the writer to continue


def test_path_mtu_grows_on_a_big_mtu_path() -> None:
    pair = Pair(seed=12)  # links pass 65535-byte datagrams
    stream_id, data, _, _ = start_transfer(pair, 3_000_000, seed=12)
    assert pair.run(lambda: (stream_id ^ 1) in pair.b.app.ended, timeout=30)
    assert pair.a.connection.datagram_size == 65507
    assert pair.b.app.digest(stream_id ^ 1) == sha(data)
    assert pair.link_ab.largest_passed == 65507
    assert pair.a.connection.stats["packets_sent"] < 100  # big datagrams, not 2500 small


@pytest.mark.parametrize(("mtu", "expected"), [(1200, 1200), (1500, 1472), (9000, 8972)])
def test_path_mtu_settles_below_the_path_limit(mtu: int, expected: int) -> None:
    link = Link(delay=0.005, mtu=mtu)
    pair = Pair(link_ab=link, link_ba=link, seed=13)
    stream_id, data, _, _ = start_transfer(pair, 300_000, seed=13)
    assert pair.run(lambda: (stream_id ^ 1) in pair.b.app.ended, timeout=30)
    pair.run(timeout=30)  # let the search finish
    assert pair.a.connection.datagram_size == expected
    assert pair.b.app.digest(stream_id ^ 1) == sha(data)
    assert pair.link_ab.too_big == pair.a.connection.stats["pmtu_probes_lost"]


def test_forced_datagram_size_never_probes() -> None:
    config = DeliveryConfig(forced_datagram_size=1200)
    pair = Pair(config, config, seed=14)
    stream_id, data, _, _ = start_transfer(pair, 200_000, seed=14)
    assert pair.run(lambda: (stream_id ^ 1) in pair.b.app.ended, timeout=30)
    assert 1199 <= pair.link_ab.largest_passed <= 1200  # one byte may stay unused
    assert pair.b.app.digest(stream_id ^ 1) == sha(data)
    assert pair.a.connection.stats["pmtu_probes_sent"] == 0


def test_path_mtu_black_hole_falls_back_and_the_transfer_completes() -> None:
    link = Link(delay=0.005)
    pair = Pair(link_ab=link, link_ba=Link(delay=0.005), seed=15)
    stream_id, data, _, _ = start_transfer(pair, 2_000_000, seed=15)
    assert pair.run(lambda: pair.a.connection.datagram_size == 65507, timeout=5)
    assert pair.run(lambda: pair.b.app.count(stream_id ^ 1) > 200_000, timeout=5)
    link.mtu = 1500  # the route changed: big datagrams vanish from now on
    assert pair.run(lambda: (stream_id ^ 1) in pair.b.app.ended, timeout=120)
    assert pair.b.app.digest(stream_id ^ 1) == sha(data)
    assert pair.a.connection.stats["pmtu_black_hole"] >= 1
    assert pair.a.connection.datagram_size <= 1472


def test_path_mtu_is_searched_again_after_the_raise_interval() -> None:
    config = DeliveryConfig(pmtu_raise_interval=5.0)
    link = Link(delay=0.005, mtu=1500)
    pair = Pair(config, config, link, Link(delay=0.005, mtu=1500), seed=16)
    pair.run(timeout=4)  # idle: the search alone settles on Ethernet
    assert pair.a.connection.datagram_size == 1472
    first_search = pair.a.connection.stats["pmtu_probes_sent"]
    link.mtu = 9000  # a better route appears
    pair.link_ba.config.mtu = 9000
    pair.run(timeout=10)
    assert pair.a.connection.datagram_size == 8972
    assert pair.a.connection.stats["pmtu_probes_sent"] > first_search


def test_path_mtu_binary_search_finds_a_tunnel_mtu() -> None:
    link = Link(delay=0.005, mtu=1420)  # below Ethernet: e.g. a WireGuard tunnel
    pair = Pair(link_ab=link, link_ba=Link(delay=0.005, mtu=1420), seed=17)
    pair.run(timeout=20)
    assert 1420 - 32 < pair.a.connection.datagram_size <= 1420
