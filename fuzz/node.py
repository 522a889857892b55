"""Harness: `Node.receive_datagram`, the one door the network has into a node.

Each input runs against a fresh Node (public, so first-contact XX is answered too) that
already has an established IK session with a trusted peer. That peer is a
`ScriptedPeer`: it holds the session keys, so the fuzzer's bytes can reach the delivery
layer *inside* authenticated packets, where random datagrams never get.

The input is a sequence of records `op (1 byte) || length (2 bytes) || body`:

- op 0: `body` as a raw datagram from the peer's address;
- op 1: `body` as a raw datagram from a stranger's address;
- op 2: `body` as plaintext, sealed by the peer under the session keys;
- op 3: the last datagram delivered, again (a replay);
- op 4: the last datagram delivered with one bit flipped (position from `body`);
- op 5: let `body` (as a number of milliseconds) pass and fire the node's timers.

After every record the node's output is drained, events are taken and messages are
confirmed, as a binding and an application would. The node must never count an internal
error, and every datagram it saw must end in exactly one outcome counter.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from pilot_proto.config import NodeConfig, SessionConfig
from pilot_proto.delivery import (
    DatagramReceived,
    DeliveryConfig,
    MessageReceived,
    StreamOpened,
    StreamReadable,
)
from pilot_proto.identity import Identity
from pilot_proto.node import ACCEPTED_OUTCOMES, Node
from pilot_proto.records import IdentityRecord
from pilot_proto.simulator import SeededRandom

from .scripted_peer import ScriptedPeer

if TYPE_CHECKING:
    from .traffic import Traffic

PEER_ADDR = ("192.0.2.7", 4000)
STRANGER_ADDR = ("203.0.113.66", 666)
EPOCH = 1_700_000_000.0

CONFIG = NodeConfig(
    session=SessionConfig(handshake_retry=1.0, handshake_give_up=20.0),
    delivery=DeliveryConfig(
        max_message_size=1 << 16,
        message_receive_window=1 << 20,
        stream_receive_window=1 << 16,
        connection_receive_window=1 << 20,
        max_incoming_streams=8,
    ),
    public=True,
)


#: What an untrusted peer must never cause (DESIGN 2: only trust frames reach the app).
_APPLICATION_EVENTS = (MessageReceived, StreamOpened, StreamReadable, DatagramReceived)


@functools.cache
def _identities() -> tuple[Identity, Identity, IdentityRecord]:
    node = Identity.from_private_bytes(bytes(range(32)))
    peer = Identity.from_private_bytes(bytes(range(1, 33)))
    record = IdentityRecord.create(peer, hostname="peer", sequence=1, expires_at=2**40)
    return node, peer, record


class Session:
    """A node with an established session to a scripted peer, in virtual time."""

    def __init__(self, *, trusted: bool = True) -> None:
        """`trusted=False`: the peer is a stranger the (public) node never added, so
        everything it sends takes the trust gate; the application must see nothing of
        it but session and trust events (`app_events` counts the rest)."""
        node_identity, peer_identity, record = _identities()
        rng = SeededRandom(1)
        self.now = 0.0
        self.node = Node(node_identity, CONFIG, rng=rng.bytes, wall_clock=self.wall_clock)
        self.node.listen(80)
        self.peer = ScriptedPeer(peer_identity, PEER_ADDR, SeededRandom(2).bytes)
        if trusted:
            self.node.add_peer(record, [PEER_ADDR])
        self.peer.handshake(self.node, self.now)
        self.last: tuple[bytes, tuple[str, int]] | None = None
        self.app_events = 0

    def wall_clock(self) -> float:
        return EPOCH + self.now

    def deliver(self, data: bytes, addr: tuple[str, int]) -> None:
        self.last = (data, addr)
        self.node.receive_datagram(data, addr, self.now)
        self.settle()

    def settle(self) -> None:
        node = self.node
        node.datagrams_to_send(self.now)
        while (event := node.next_event()) is not None:
            if isinstance(event, _APPLICATION_EVENTS):
                self.app_events += 1
            if isinstance(event, MessageReceived):
                node.confirm_persisted(event.address, event.message_id, self.now)
        node.datagrams_to_send(self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        timer = self.node.get_timer()
        if timer is not None and timer <= self.now:
            self.node.handle_timer(self.now)
        self.settle()

    def check(self) -> None:
        stats = self.node.stats
        assert stats["internal_error"] == 0, "receive_datagram hit an internal error"
        drops = sum(n for reason, n in stats.items() if reason.startswith("drop_"))
        accepted = sum(stats[k] for k in ACCEPTED_OUTCOMES)
        assert stats["datagrams_received"] == drops + accepted, dict(stats)


def records(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while pos + 3 <= len(data):
        op = data[pos]
        length = int.from_bytes(data[pos + 1 : pos + 3], "big")
        out.append((op, data[pos + 3 : pos + 3 + length]))
        pos += 3 + length
    return out


def join(items: list[tuple[int, bytes]]) -> bytes:
    return b"".join(bytes((op,)) + len(b).to_bytes(2, "big") + b for op, b in items)


def run(data: bytes) -> Session:
    session = Session()
    for op, body in records(data):
        op %= 6
        if op == 0:
            session.deliver(body, PEER_ADDR)
        elif op == 1:
            session.deliver(body, STRANGER_ADDR)
        elif op == 2:
            session.deliver(session.peer.seal(body), PEER_ADDR)
        elif op == 3:
            if session.last is not None:
                session.deliver(*session.last)
        elif op == 4:
            if session.last is not None and session.last[0]:
                packet = bytearray(session.last[0])
                bit = int.from_bytes(body[:4] or b"\0", "big") % (8 * len(packet))
                packet[bit // 8] ^= 1 << (bit % 8)
                session.deliver(bytes(packet), session.last[1])
        else:
            session.advance(int.from_bytes(body[:2] or b"\0", "big") / 1000)
        session.check()
    session.advance(30.0)
    session.check()
    return session


def test_one_input(data: bytes) -> None:
    run(data)


def seeds(traffic: Traffic) -> list[bytes]:
    from .traffic import connection_payloads

    payloads = connection_payloads()
    out = [join([(2, p)]) for p in payloads]
    out.append(join([(2, p) for p in payloads[:10]] + [(3, b""), (4, b"\x00\x00\x00\x63")]))
    out.append(join([(2, p) for p in payloads] + [(5, b"\x03\xe8")]))
    for kind, packets in traffic.datagrams.items():
        if kind.startswith("stun"):
            continue
        out.append(join([(0, packets[0]), (1, packets[-1]), (3, b"")]))
    return out
