"""Busy-polling after a send: it spins only where an answer comes while it spins, stops by
itself where none can (a far peer, two nodes on one event loop), and never drops what
arrives (pilot_proto/driver/busy_poll.py, UdpPort.send_and_linger)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import Counter
from collections.abc import Iterator

import pilot_asyncio
import pytest

from pilot_proto import Identity, IdentityRecord
from pilot_proto.driver import BusyPoll, UdpPort
from pilot_proto.transmit import Addr, Transmit

LIMIT = 200e-6


# ---------------------------------------------------------------------- the window


def test_a_caught_answer_keeps_the_window_and_misses_close_it() -> None:
    busy = BusyPoll(LIMIT)
    assert busy.window == LIMIT
    busy.missed(0.0)
    assert busy.window == LIMIT / 2
    busy.caught()
    assert busy.window == LIMIT  # doubled back, never above the limit
    busy.caught()
    assert busy.window == LIMIT
    for _ in range(4):
        busy.missed(0.0)
    assert busy.window == 0.0


def test_a_quick_wake_after_closing_reopens_and_slow_ones_do_not() -> None:
    busy = BusyPoll(LIMIT)
    for _ in range(4):
        busy.missed(1.0)
    busy.woke(1.0 + 10 * LIMIT)  # a far peer's answer: spinning would not have caught it
    assert busy.window == 0.0
    busy.missed(2.0)
    busy.woke(2.0 + LIMIT / 4)  # first closing: 2 quick wakes wanted
    assert busy.window == 0.0
    busy.missed(3.0)
    busy.woke(3.0 + LIMIT / 4)
    assert 0.0 < busy.window <= LIMIT


def test_reopening_backs_off_where_spinning_never_catches() -> None:
    """An answer that only comes while this thread sleeps: the spins it wastes grow ever
    rarer (here: fewer than 30 over 1000 exchanges)."""
    busy = BusyPoll(LIMIT)
    now, spins = 0.0, 0
    for _ in range(1000):
        if busy.window:
            spins += 1
            now += busy.window
        busy.missed(now)
        now += LIMIT / 4  # the answer comes soon after we sleep
        busy.woke(now)
        now += 1e-3
    assert spins < 30
    busy.caught()  # one catch forgives everything
    busy.missed(now)
    busy.woke(now + LIMIT / 4)
    assert busy.window > 0.0


def test_zero_never_spins_and_negative_is_refused() -> None:
    busy = BusyPoll(0.0)
    busy.missed(0.0)
    busy.woke(0.0)
    assert busy.window == 0.0
    with pytest.raises(ValueError, match="busy_poll"):
        BusyPoll(-1e-6)


# ---------------------------------------------------------------------- UdpPort.send_and_linger


class Port:
    """A UdpPort on loopback whose feed and poll are recorded, and a peer socket."""

    def __init__(self, busy_poll: float) -> None:
        self.fed: list[bytes] = []
        self.polls = 0
        self.stats: Counter[str] = Counter()
        self.port = UdpPort.open(
            socket, "127.0.0.1", 0, None, self.feed, self.stats,
            logging.getLogger("test"), busy_poll,
        )  # fmt: skip
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.peer.bind(("127.0.0.1", 0))

    def request(self) -> Transmit:
        """A datagram to the peer socket (which never answers by itself)."""
        host, port = self.peer.getsockname()
        return Transmit(b"request", (host, port))

    def feed(self, data: bytes, addr: Addr, now: float) -> None:
        self.fed.append(data)

    def poll(self, now: float) -> list[Transmit]:
        self.polls += 1
        return []

    def close(self) -> None:
        self.port.close()
        self.peer.close()


@pytest.fixture
def port() -> Iterator[Port]:
    p = Port(LIMIT)
    yield p
    p.close()


def test_linger_feeds_what_arrives_and_answers_it(port: Port) -> None:
    port.peer.sendto(b"answer", port.port.endpoint)
    port.port.send_and_linger([port.request()], port.poll, lambda: 0.0)
    assert port.fed == [b"answer"]
    assert port.polls == 1
    assert port.stats["busy_poll_caught"] == 1


def test_linger_gives_up_after_its_window_and_then_stops_spinning(port: Port) -> None:
    clock = iter(range(1000))  # 1 s per reading: every spin times out at once

    def now() -> float:
        return float(next(clock))

    for _ in range(8):
        port.port.send_and_linger([port.request()], port.poll, now)
    assert port.stats["busy_poll_missed"] == 4  # 200, 100, 50, 25 µs, then closed
    assert port.port.busy.window == 0.0
    assert port.fed == []
    assert port.stats["datagrams_sent"] == 8
    port.peer.sendto(b"late", port.port.endpoint)
    port.port.drain(port.poll, now)  # the datagram the binding's sleep then wakes for
    assert port.fed == [b"late"]


# ---------------------------------------------------------------------- a binding


def record_of(identity: Identity) -> IdentityRecord:
    return IdentityRecord.create(identity, hostname=None, sequence=1, expires_at=2**40)


def test_two_nodes_on_one_loop_stop_spinning_and_lose_nothing() -> None:
    """Each node's answer needs the loop the other spins on: its spins cannot be answered,
    so they must become rare while every message still arrives in order."""

    async def main() -> tuple[int, int, list[bytes]]:
        a = await pilot_asyncio.Node(Identity.generate(os.urandom)).start()
        b = await pilot_asyncio.Node(Identity.generate(os.urandom)).start()
        a.add_peer(record_of(b.identity), [b.endpoint])
        b.add_peer(record_of(a.identity), [a.endpoint])
        async with a, b:

            async def echo() -> None:
                while True:
                    message = await b.receive()
                    await b.reply(message, message.data)

            responder = asyncio.get_running_loop().create_task(echo())
            replies = []
            for i in range(300):
                await a.send_message(b.address, b"%d" % i, timeout=10)
                replies.append((await a.receive(timeout=10)).data)
            early = a.stats().get("busy_poll_missed", 0) + b.stats().get("busy_poll_missed", 0)
            for i in range(300):
                await a.send_message(b.address, b"late %d" % i, timeout=10)
                await a.receive(timeout=10)
            late = (
                a.stats().get("busy_poll_missed", 0) + b.stats().get("busy_poll_missed", 0) - early
            )
            responder.cancel()
            return early, late, replies

    early, late, replies = asyncio.run(main())
    assert replies == [b"%d" % i for i in range(300)]
    assert early < 80  # ~25 per node: 4, then 3 per reopening, reopenings ever rarer
    assert late < 10  # 600 sends over both nodes, almost none of them spun


def test_threads_exchange_in_order_and_zero_turns_spinning_off() -> None:
    import threading

    import pilot_threads

    a = pilot_threads.Node(Identity.generate(os.urandom), busy_poll=0.0).start()
    b = pilot_threads.Node(Identity.generate(os.urandom)).start()
    with a, b:
        a.add_peer(record_of(b.identity), [b.endpoint])
        b.add_peer(record_of(a.identity), [a.endpoint])

        def echo() -> None:
            for _ in range(100):
                message = b.receive(timeout=10)
                b.reply(message, message.data)

        responder = threading.Thread(target=echo, daemon=True)
        responder.start()
        replies = []
        for i in range(100):
            a.send_message(b.address, b"%d" % i, timeout=10)
            replies.append(a.receive(timeout=10).data)
        responder.join(10)
        assert replies == [b"%d" % i for i in range(100)]
        stats = a.stats()
        assert stats.get("busy_poll_caught", 0) == stats.get("busy_poll_missed", 0) == 0
        spun = b.stats()
        assert spun.get("busy_poll_caught", 0) + spun.get("busy_poll_missed", 0) > 0
