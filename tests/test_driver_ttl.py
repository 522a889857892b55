"""A Transmit with `ttl` leaves the shared UDP driver with that IP TTL (DESIGN 7's opener),
alone, while the others keep their order and default TTL."""

from __future__ import annotations

import logging
import socket
from collections import Counter

from pilot_proto.driver.udp import UdpPort, gso_batches, sendmsg_calls
from pilot_proto.transmit import Transmit

IP_RECVTTL = 12


def test_low_ttl_transmit_is_sent_alone_with_its_ttl() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    receiver.settimeout(2.0)
    port = UdpPort.open(
        socket, "127.0.0.1", 0, None, lambda *a: None, Counter(), logging.getLogger("t")
    )
    try:
        target = receiver.getsockname()
        port.send([Transmit(b"a", target), Transmit(b"b", target, ttl=2), Transmit(b"c", target)])
        ttls = {}
        for _ in range(3):
            data, ancillary, _, _ = receiver.recvmsg(16, 64)
            ttls[data] = int.from_bytes(ancillary[0][2][:4], "little")
        assert ttls[b"b"] == 2
        assert ttls[b"a"] == ttls[b"c"] > 2
    finally:
        port.close()
        receiver.close()


def test_ttl_transmits_never_join_a_gso_batch() -> None:
    addr = ("192.0.2.1", 9)
    transmits = [Transmit(b"x" * 100, addr), Transmit(b"x" * 100, addr, ttl=2),
                 Transmit(b"x" * 100, addr)]
    batches = gso_batches(transmits)
    assert sum(len(d) for _, _, d in batches) == 2
    calls = sendmsg_calls(transmits, True, False, Counter())
    assert sum(len(buffers) for _, buffers, _ in calls) == 3
    assert [anc for _, _, anc in calls if anc and anc[0][1] == 2]
