"""Harness: the rendezvous server's receive path (rendezvous/server.py) behind a real
public Node, as a client with a genuine session reaches it.

Each input runs against a fresh server (a public Node trusting every key, a
`RendezvousServer` and an in-memory store that already holds one registered node,
`agent-b`, whose allow list accepts our client). The client is a `ScriptedPeer` with
its own delivery `Connection`: the input is a sequence of records
`length (2 bytes) || request bytes`, each sent as one binary message, the way
`RendezvousClient` sends requests. After each the server takes its node's events.

Neither the node nor the server may count an internal error, and every answer the
client gets decodes as a rendezvous message.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from pilot_proto.config import NodeConfig, SessionConfig
from pilot_proto.delivery import MessageReceived
from pilot_proto.identity import Identity
from pilot_proto.node import Node
from pilot_proto.records import IdentityRecord, Locator
from pilot_proto.rendezvous import (
    AllowList,
    HostnameClaim,
    InMemoryRegistryStore,
    Registration,
    RendezvousServer,
    seal_note,
)
from pilot_proto.rendezvous.messages import (
    Introduce,
    Lookup,
    Ping,
    PostNote,
    PublishAllowList,
    Register,
    decode_message,
    encode_message,
)
from pilot_proto.simulator import SeededRandom

from .connection import join_records, split_records
from .scripted_peer import ScriptedPeer

if TYPE_CHECKING:
    from .traffic import Traffic

EPOCH = 1_700_000_000.0
CLIENT_ADDR = ("192.0.2.20", 5020)
CONFIG = NodeConfig(session=SessionConfig(handshake_retry=1.0), public=True)


@functools.cache
def _identities() -> tuple[Identity, Identity, Identity]:
    return (
        Identity.from_private_bytes(bytes(range(100, 132))),  # server
        Identity.from_private_bytes(bytes(range(1, 33))),  # our client
        Identity.from_private_bytes(bytes(range(7, 39))),  # agent-b, registered
    )


@functools.cache
def _agent_b() -> tuple[Registration, AllowList, IdentityRecord]:
    _, client, agent_b = _identities()
    expires = int(EPOCH) + 86400
    record = IdentityRecord.create(agent_b, hostname="agent-b", sequence=1, expires_at=expires)
    locator = Locator.create(agent_b, endpoints=[("192.0.2.30", 5030)], sequence=1,
                             expires_at=expires)
    allow = AllowList.create(agent_b, [client.address], public=False, sequence=1)
    return Registration(record, locator), allow, record


class RendezvousSession:
    def __init__(self) -> None:
        server_identity, client_identity, _ = _identities()
        self.now = 0.0
        self.node = Node(server_identity, CONFIG, rng=SeededRandom(3).bytes,
                         wall_clock=self.wall_clock, trust_policy=lambda address: True)
        store = InMemoryRegistryStore()
        registration, allow, record = _agent_b()
        store.save_registration(registration, HostnameClaim("agent-b", record.address,
                                                            EPOCH + 30 * 86400))
        store.save_allow_list(allow)
        self.server = RendezvousServer(self.node, store, wall_clock=self.wall_clock)
        self.client = ScriptedPeer(client_identity, CLIENT_ADDR, SeededRandom(4).bytes)
        self.client.handshake(self.node, self.now)
        self.client.attach_connection(self.node, self.now)
        self.answers: list[bytes] = []

    def wall_clock(self) -> float:
        return EPOCH + self.now

    def take_events(self, now: float) -> None:
        while (event := self.node.next_event()) is not None:
            self.server.handle_event(event, now)

    def request(self, data: bytes) -> None:
        connection = self.client.connection
        assert connection is not None
        connection.send_message(data, self.now, type="binary")
        for event in self.client.exchange(self.node, self.now, self.take_events):
            if isinstance(event, MessageReceived):
                self.answers.append(event.data)
                connection.confirm_persisted(event.message_id, self.now)
        self.now += 0.01
        if (timer := self.server.get_timer()) is not None and timer <= self.now:
            self.server.handle_timer(self.now)

    def check(self) -> None:
        assert self.node.stats["internal_error"] == 0, "the server's node hit an internal error"
        assert self.server.stats["internal_error"] == 0, "the server hit an internal error"
        for answer in self.answers:
            decode_message(answer)  # the server's own answers always decode


def test_one_input(data: bytes) -> None:
    session = RendezvousSession()
    for request in split_records(data)[:32]:
        session.request(request)
    session.now += 100.0
    session.server.handle_timer(session.now)
    session.check()


def requests() -> list[bytes]:
    """Genuine requests of our client, valid at the harness's wall clock."""
    _, client, agent_b = _identities()
    expires = int(EPOCH) + 86400
    record = IdentityRecord.create(client, hostname="agent-a", sequence=5, expires_at=expires)
    locator = Locator.create(client, endpoints=[CLIENT_ADDR, ("2001:db8::20", 5020)],
                             sequence=5, expires_at=expires)
    allow = AllowList.create(client, [agent_b.address], public=False, sequence=2)
    b_record = _agent_b()[2]
    sealed = seal_note(client, b_record, "trust_request", bytes(16), "task routing",
                       now_wall=EPOCH, rng=SeededRandom(5).bytes)
    return [
        encode_message(Register(1, record, locator)),
        encode_message(PublishAllowList(2, allow)),
        encode_message(Lookup(3, "agent-b")),
        encode_message(Lookup(4, agent_b.address)),
        encode_message(PostNote(5, agent_b.address, sealed)),
        encode_message(Introduce(6, agent_b.address)),
        encode_message(Ping(7)),
    ]


def seeds(traffic: Traffic) -> list[bytes]:
    ours = requests()
    out = [join_records([r]) for r in ours]
    out.append(join_records(ours))
    out.append(join_records(traffic.rendezvous_requests))
    return out
