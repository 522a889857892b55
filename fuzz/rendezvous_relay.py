"""Harness: the rendezvous relay (`RendezvousServer.relay_datagram`, DESIGN 6), which the
rendezvous process calls for every datagram whose first byte is RELAY (0x57).

Each input runs against a fresh server with two registered clients, A and B, whose
sessions and paths are real (`ScriptedPeer`s with delivery Connections); B's allow list
accepts A and A asked for an introduction, so A and B may relay to each other. The input
is a sequence of records `source (1 byte) || length (2 bytes) || datagram`: source 0 is
A's path, 1 is B's, 2 a stranger's. Nothing may raise; what is forwarded goes only to
the other client of an introduced pair, and is exactly as large as what came in (the
relay never amplifies).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from pilot_proto.config import NodeConfig, SessionConfig
from pilot_proto.identity import Identity
from pilot_proto.node import Node
from pilot_proto.records import IdentityRecord, Locator
from pilot_proto.relay import encode_relay
from pilot_proto.rendezvous import AllowList, InMemoryRegistryStore, RendezvousServer
from pilot_proto.rendezvous.messages import (
    Introduce,
    PublishAllowList,
    Register,
    encode_message,
)
from pilot_proto.rendezvous.relay import RelayConfig
from pilot_proto.simulator import SeededRandom
from pilot_proto.transmit import Addr

from .node import join, records
from .scripted_peer import ScriptedPeer

if TYPE_CHECKING:
    from .traffic import Traffic

EPOCH = 1_700_000_000.0
A_ADDR: Addr = ("192.0.2.31", 5031)
B_ADDR: Addr = ("198.51.100.32", 5032)
STRANGER: Addr = ("203.0.113.33", 5033)
CONFIG = NodeConfig(session=SessionConfig(handshake_retry=1.0), public=True)


@functools.cache
def _identities() -> tuple[Identity, Identity, Identity]:
    return (Identity.from_private_bytes(bytes(range(100, 132))),
            Identity.from_private_bytes(bytes(range(1, 33))),
            Identity.from_private_bytes(bytes(range(7, 39))))


class RelaySession:
    """A rendezvous server with two registered, introduced clients, in virtual time."""

    def __init__(self, relay_config: RelayConfig | None = None) -> None:
        server_identity, a_identity, b_identity = _identities()
        self.now = 0.0
        self.node = Node(server_identity, CONFIG, rng=SeededRandom(3).bytes,
                         wall_clock=self.wall_clock, trust_policy=lambda address: True)
        self.server = RendezvousServer(self.node, InMemoryRegistryStore(),
                                       wall_clock=self.wall_clock, relay_config=relay_config)
        self.a = ScriptedPeer(a_identity, A_ADDR, SeededRandom(4).bytes)
        self.b = ScriptedPeer(b_identity, B_ADDR, SeededRandom(5).bytes)
        for client, allowed in ((self.b, self.a), (self.a, self.b)):
            client.handshake(self.node, self.now)
            client.attach_connection(self.node, self.now)
            expires = int(EPOCH) + 86400
            record = IdentityRecord.create(client.identity, hostname=None, sequence=1,
                                           expires_at=expires)
            locator = Locator.create(client.identity, endpoints=[client.addr], sequence=1,
                                     expires_at=expires)
            allow = AllowList.create(client.identity, [allowed.address], public=False,
                                     sequence=1)
            self.request(client, encode_message(Register(1, record, locator)))
            self.request(client, encode_message(PublishAllowList(2, allow)))
        self.request(self.a, encode_message(Introduce(3, self.b.address)))
        self.sources = {0: A_ADDR, 1: B_ADDR, 2: STRANGER}
        self.peers = {A_ADDR: self.a, B_ADDR: self.b}

    def wall_clock(self) -> float:
        return EPOCH + self.now

    def take_events(self, now: float) -> None:
        while (event := self.node.next_event()) is not None:
            self.server.handle_event(event, now)

    def request(self, client: ScriptedPeer, data: bytes) -> None:
        assert client.connection is not None
        client.connection.send_message(data, self.now, type="binary")
        client.exchange(self.node, self.now, self.take_events)

    def relay(self, data: bytes, source: Addr) -> None:
        forward = self.server.relay_datagram(data, source, self.now)
        if forward is None:
            return
        assert len(forward.data) == len(data), "the relay changed a datagram's size"
        sender = self.peers.get(source)
        assert sender is not None, "a datagram from a stranger was relayed"
        other = self.b if sender is self.a else self.a
        assert forward.addr == other.addr, f"relayed to {forward.addr}, not the introduced peer"
        assert forward.data[1:17] == bytes.fromhex(sender.address.replace(":", ""))

    def check(self) -> None:
        assert self.node.stats["internal_error"] == 0
        assert self.server.stats["internal_error"] == 0


def test_one_input(data: bytes) -> None:
    session = RelaySession()
    for op, body in records(data)[:64]:
        session.relay(body, session.sources[op % 3])
        session.now += 0.001
    session.check()


def seeds(traffic: Traffic) -> list[bytes]:
    _, a, b = _identities()
    inner = bytes(range(256)) * 4
    to_b = encode_relay(b.address, inner[:100])
    to_a = encode_relay(a.address, inner)
    return [
        join([(0, to_b)]),
        join([(1, to_a)]),
        join([(2, to_b), (0, to_b), (1, to_a), (0, encode_relay(a.address, b"x"))]),
        join([(0, encode_relay(b.address, packet)) for packet in traffic.all_datagrams()[:20]]),
    ]
