"""UdpPort.send on a real socket: what it sends arrives, and what it cannot send is
counted, never raised (the core's loss recovery resends)."""

from __future__ import annotations

import logging
import socket
from collections import Counter
from collections.abc import Iterator

import pytest

from pilot_proto.driver.udp import UdpPort
from pilot_proto.transmit import Transmit


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    yield sock
    sock.close()


def open_port(stats: Counter[str]) -> UdpPort:
    return UdpPort.open(
        socket, "127.0.0.1", 0, None, lambda *a: None, stats, logging.getLogger("t")
    )


def test_a_lone_datagram_and_a_batch_arrive_in_order_and_are_counted(
    receiver: socket.socket,
) -> None:
    stats: Counter[str] = Counter()
    port = open_port(stats)
    try:
        target = receiver.getsockname()
        port.send([Transmit(b"alone", target)])
        port.send([Transmit(b"first", target), Transmit(b"second", target)])
        got = [receiver.recvfrom(64) for _ in range(3)]
        assert got == [(b"alone", port.endpoint), (b"first", port.endpoint),
                       (b"second", port.endpoint)]
        assert stats["datagrams_sent"] == 3
    finally:
        port.close()


def test_a_lone_datagram_it_cannot_send_is_counted_not_raised() -> None:
    stats: Counter[str] = Counter()
    port = open_port(stats)
    try:
        port.send([Transmit(b"x", ("2001:db8::1", 9))])  # an IPv4 socket cannot reach it
        assert stats["send_unreachable_family"] == 1
        port.send([Transmit(b"x", ("127.0.0.1", 0))])  # the OS refuses port 0
        assert stats["send_error"] == 1
        assert stats["datagrams_sent"] == 0
    finally:
        port.close()
