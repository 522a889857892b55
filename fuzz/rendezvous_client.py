"""Harness: the rendezvous client's receive path (rendezvous/client.py), as a node sees
whatever its rendezvous server sends, a lying or broken server included.

Each input runs against a fresh `RendezvousClient` on a Node that has made its IK
session with a server Node (pinned key) on the simulator and sent its registration.
The server here is a bare public Node: the input is a sequence of records
`length (2 bytes) || message bytes`, each sent by the server to the client as one binary
message. Neither the client nor its node may count an internal error.
"""

from __future__ import annotations

import functools

from pilot_proto.config import NodeConfig, SessionConfig
from pilot_proto.identity import Identity
from pilot_proto.node import Node
from pilot_proto.rendezvous import RendezvousClient
from pilot_proto.simulator import Network

from .connection import join_records, split_records
from .traffic import RvHost, Traffic

SERVER_ADDR = ("198.51.100.1", 7000)
CLIENT_ADDR = ("192.0.2.11", 5001)
SESSION = SessionConfig(handshake_retry=1.0, handshake_give_up=20.0)


@functools.cache
def _identities() -> tuple[Identity, Identity]:
    return (Identity.from_private_bytes(bytes(range(100, 132))),
            Identity.from_private_bytes(bytes(range(1, 33))))


class ClientSession:
    def __init__(self) -> None:
        server_identity, client_identity = _identities()
        self.net = Network(9, capture_limit=0)
        net = self.net
        self.server = Node(server_identity, NodeConfig(session=SESSION, public=True),
                           rng=net.rng_for("server"), wall_clock=net.wall_clock,
                           trust_policy=lambda address: True)
        net.add_host(RvHost(self.server, Traffic()), SERVER_ADDR)
        node = Node(client_identity, NodeConfig(session=SESSION), rng=net.rng_for("client"),
                    wall_clock=net.wall_clock)
        self.host = RvHost(node, Traffic())
        self.client = RendezvousClient(
            node, client_identity, SERVER_ADDR, server_identity.static_public,
            hostname="agent-a", public=False, candidates=[CLIENT_ADDR],
            rng=net.rng_for("client rv"), wall_clock=net.wall_clock,
        )
        self.host.client = self.client
        net.add_host(self.host, CLIENT_ADDR)
        self.client.start(net.now)
        net.flush()
        net.run_for(0.5)

    def push(self, data: bytes) -> None:
        self.server.send_message(self.client.node.address, data, self.net.now, type="binary")
        self.net.flush()
        self.net.run_for(0.05)

    def check(self) -> None:
        assert self.client.stats["internal_error"] == 0, "the client hit an internal error"
        assert self.client.node.stats["internal_error"] == 0


def test_one_input(data: bytes) -> None:
    session = ClientSession()
    for message in split_records(data)[:32]:
        session.push(message)
        session.check()
    session.net.run_for(60.0)  # timers: request timeouts, refresh, heartbeat
    session.check()


def seeds(traffic: Traffic) -> list[bytes]:
    replies = traffic.rendezvous_replies
    return [*(join_records([r]) for r in replies), join_records(replies)]
