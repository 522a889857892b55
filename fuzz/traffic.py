"""Real traffic, recorded from the simulator, to seed the fuzzers and the flood tests.

`record()` runs, deterministically (seeded simulator, seeded keys):

- two Nodes making an IK session and exchanging messages, streams, pings and datagrams,
  a third pair forced through a cookie reply, and a client reaching a public node with
  Noise XX: every outer packet type, as captured on the simulated wire;
- two delivery `Connection`s talking directly: the plaintext payloads (frames) the
  session packets above carry, which no wire capture can show;
- STUN Binding requests and the answers of the STUN server side;
- identity records and locators; local API requests as pilotctl and curl send them.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from dataclasses import dataclass, field

from pilot_proto.config import NodeConfig, SessionConfig
from pilot_proto.delivery import Connection, DeliveryConfig, MessageReceived, StreamReadable
from pilot_proto.events import Event
from pilot_proto.identity import Identity
from pilot_proto.node import Node
from pilot_proto.packets import (
    COOKIE_REPLY,
    HANDSHAKE_INITIATION,
    HANDSHAKE_RESPONSE,
    TRANSPORT,
    XX_FINISH,
    XX_INIT,
    XX_RESPONSE,
)
from pilot_proto.records import IdentityRecord, Locator
from pilot_proto.rendezvous import (
    InMemoryRegistryStore,
    LookupResult,
    RendezvousClient,
    RendezvousServer,
)
from pilot_proto.rendezvous.messages import PostNote, PublishAllowList, decode_message
from pilot_proto.simulator import Datagram, Network
from pilot_proto.stun import ChangeRequest, build_binding_request
from pilot_proto.stun_server import answer_binding
from pilot_proto.transmit import Addr, Transmit

__all__ = ["Traffic", "connection_payloads", "record"]

KIND_NAMES = {
    HANDSHAKE_INITIATION: "initiation",
    HANDSHAKE_RESPONSE: "response",
    COOKIE_REPLY: "cookie_reply",
    TRANSPORT: "transport",
    XX_INIT: "xx_init",
    XX_RESPONSE: "xx_response",
    XX_FINISH: "xx_finish",
}

FAST = SessionConfig(handshake_retry=1.0, handshake_give_up=20.0)


@dataclass
class Traffic:
    """What `record()` saw, by kind. Every list is in capture order."""

    #: Outer datagrams by packet kind ("initiation", "transport", ..., "stun_request").
    datagrams: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    #: Every datagram on the simulated wire, in order (for replays and mutations).
    wire: list[Datagram] = field(default_factory=list)
    #: Plaintext session payloads (packet number + frames) from a Connection pair.
    payloads: list[bytes] = field(default_factory=list)
    identity_records: list[bytes] = field(default_factory=list)
    #: Rendezvous RPC: requests as the server received them, answers and pushes as the
    #: clients received them, and the sealed notes and allow lists inside the requests.
    rendezvous_requests: list[bytes] = field(default_factory=list)
    rendezvous_replies: list[bytes] = field(default_factory=list)
    sealed_notes: list[bytes] = field(default_factory=list)
    allow_lists: list[bytes] = field(default_factory=list)
    locators: list[bytes] = field(default_factory=list)
    http_requests: list[bytes] = field(default_factory=list)

    def all_datagrams(self) -> list[bytes]:
        return [d.data for d in self.wire]


def _node(net: Network, name: str, addr: Addr, config: NodeConfig) -> Node:
    identity = Identity.generate(net.rng_for("identity " + name))
    node = Node(identity, config, rng=net.rng_for(name), wall_clock=net.wall_clock)
    net.add_host(node, addr)
    return node


def _record(identity: Identity, hostname: str | None = None) -> IdentityRecord:
    return IdentityRecord.create(identity, hostname=hostname, sequence=1, expires_at=2**40)


def _drain(node: Node) -> list[Event]:
    events = []
    while (event := node.next_event()) is not None:
        events.append(event)
    return events


def _node_traffic(traffic: Traffic, seed: int) -> None:
    net = Network(seed, capture_limit=0)

    def tap(datagram: Datagram) -> None:
        traffic.wire.append(datagram)
        kind = KIND_NAMES.get(datagram.data[0]) if datagram.data else None
        if kind is not None:
            traffic.datagrams[kind].append(datagram.data)

    net.add_tap(tap)
    config = NodeConfig(session=FAST, delivery=DeliveryConfig(auto_confirm=True))
    a = _node(net, "a", ("192.0.2.1", 4001), config)
    b = _node(net, "b", ("192.0.2.2", 4002), config)
    a.add_peer(_record(b.identity, "agent-b"), [("192.0.2.2", 4002)])
    b.add_peer(_record(a.identity, "agent-a"), [("192.0.2.1", 4001)])
    a.listen(80)
    b.listen(80)
    now = net.now
    a.send_message(b.address, b"run subtask: analyze document X", now)
    a.send_message(b.address, json.dumps({"task": "x", "n": 3}).encode(), now, type="json")
    a.send_message(b.address, bytes(range(256)) * 20, now, type="binary")
    a.send_datagram(b.address, b"hello", now)
    net.run_for(1.0)
    for event in _drain(b):
        if isinstance(event, MessageReceived):
            b.send_message(a.address, b"done: 3 findings", net.now, reply_to=event.message_id)
    a.ping(b.address, net.now)
    stream = a.open_stream(b.address, 80, net.now)
    a.send_stream(b.address, stream, b"x" * 5000, net.now, end_stream=True)
    net.run_for(1.0)
    for event in _drain(b):
        if isinstance(event, StreamReadable):
            b.read_stream(a.address, event.stream_id)
    net.run_for(200.0)  # rekeys
    a.send_message(b.address, b"after the rekey", net.now)
    net.run_for(1.0)
    a.close_peer(b.address, net.now)
    net.run_for(2.0)

    # A responder under load answers with a cookie reply first.
    loaded = NodeConfig(session=SessionConfig(cookie_load_threshold=0, handshake_retry=1.0))
    c = _node(net, "c", ("192.0.2.3", 4003), config)
    d = _node(net, "d", ("192.0.2.4", 4004), loaded)
    c.add_peer(_record(d.identity), [("192.0.2.4", 4004)])
    d.add_peer(_record(c.identity), [("192.0.2.3", 4003)])
    c.send_datagram(d.address, b"through a cookie", net.now)
    net.run_for(3.0)

    # First contact with a public node (a rendezvous) uses Noise XX.
    server = _node(net, "rv", ("198.51.100.1", 7000), NodeConfig(session=FAST, public=True))
    client = _node(net, "client", ("192.0.2.5", 4005), config)
    client.connect_rendezvous(("198.51.100.1", 7000), None, net.now)
    net.run_for(2.0)
    # And with its key pinned, IK.
    client2 = _node(net, "client2", ("192.0.2.6", 4006), config)
    client2.connect_rendezvous(("198.51.100.1", 7000), server.identity.static_public, net.now)
    net.run_for(2.0)


@functools.cache
def connection_payloads(seed: int = 1) -> tuple[bytes, ...]:
    """Plaintext payloads of two Connections doing everything a session does."""
    payloads: list[bytes] = []
    config = DeliveryConfig(auto_confirm=True, forced_datagram_size=1200)

    net = Network(seed, capture_limit=0)
    a = Connection("a", config, rng=net.rng_for("ca"), now=0.0, listening_ports={80})
    b = Connection("b", config, rng=net.rng_for("cb"), now=0.0, listening_ports={80})
    now = 0.0

    def pump(until: float) -> None:
        nonlocal now
        for _ in range(10_000):
            moved = False
            for src, dst in ((a, b), (b, a)):
                for payload in src.payloads_to_send(now):
                    payloads.append(payload)
                    dst.receive_payload(payload, now)
                    moved = True
                while (event := src.next_event()) is not None:
                    if isinstance(event, StreamReadable):
                        src.read_stream(event.stream_id)
            if moved:
                continue
            timers = [t for t in (a.get_timer(), b.get_timer()) if t is not None]
            if not timers or min(timers) > until:
                now = until
                return
            now = max(now, min(timers))
            for side in (a, b):
                timer = side.get_timer()
                if timer is not None and timer <= now:
                    side.handle_timer(now)

    first = a.send_message(b"run subtask: analyze document X", now)
    a.send_message(bytes(range(256)) * 30, now, type="binary")
    a.send_message(b'{"ok": true}', now, type="json", reply_to=first)
    a.send_datagram(b"datagram", now)
    a.ping(now)
    stream = a.open_stream(80, now)
    a.send_stream(stream, b"s" * 3000, now, end_stream=True)
    refused = a.open_stream(81, now)
    a.send_stream(refused, b"nobody listens", now)
    pump(now + 2.0)
    other = b.open_stream(80, now)
    b.send_stream(other, b"half", now)
    b.reset_stream(other, now, "changed my mind")
    pump(now + 2.0)
    a.close(now, "goodbye")
    pump(now + 2.0)
    return tuple(payloads)


def _stun(traffic: Traffic) -> None:
    tid = bytes(range(12))
    requests = [
        build_binding_request(tid, fingerprint=False),
        build_binding_request(tid),
        build_binding_request(tid, software="pilot-proto"),
        build_binding_request(tid, change_request=ChangeRequest(True, True)),
        build_binding_request(tid, username="user", key=b"k" * 16),
        build_binding_request(tid, username="user", key=b"k" * 16, integrity="sha256"),
    ]
    for request in requests:
        traffic.datagrams["stun_request"].append(request)
        for source in (("192.0.2.9", 5000), ("2001:db8::9", 5000)):
            answer = answer_binding(
                request,
                source,
                other_address=("198.51.100.2", 7001),
                response_origin=("198.51.100.1", 7000),
            )
            if answer is not None:
                traffic.datagrams["stun_response"].append(answer.data)


def _records(traffic: Traffic, seed: int) -> None:
    net = Network(seed, capture_limit=0)
    identity = Identity.generate(net.rng_for("records"))
    for hostname in (None, "agent-a", "a" * 63):
        traffic.identity_records.append(_record(identity, hostname).encode())
    for endpoints in (
        [],
        [("192.0.2.1", 4001)],
        [("192.0.2.1", 4001), ("2001:db8::1", 4001), ("10.0.0.2", 65535)],
    ):
        locator = Locator.create(identity, endpoints=endpoints, sequence=7, expires_at=2**40)
        traffic.locators.append(locator.encode())


def _http(traffic: Traffic) -> None:
    def request(method: str, path: str, body: object | None = None) -> bytes:
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: pilotctl\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        return head.encode() + b"\r\n" + payload

    traffic.http_requests += [
        request("GET", "/v1/info"),
        request("GET", "/v1/health"),
        request("GET", "/v1/pending"),
        request("GET", "/v1/inbox?limit=10&since=2024-01-01"),
        request("POST", "/v1/handshake", {"target": "agent-b", "justification": "task routing"}),
        request("POST", "/v1/messages", {"target": "agent-b", "data": "run", "type": "text"}),
        request("DELETE", "/v1/inbox/abc%2F..%2Fx"),
        b"GET /v1/events?kinds=message HTTP/1.0\r\nExpect: 100-continue\r\n\r\n",
    ]


class RvHost:
    """A Node with the rendezvous client or server on top, as the daemon runs them."""

    def __init__(self, node: Node, traffic: Traffic) -> None:
        self.node = node
        self.traffic = traffic
        self.client: RendezvousClient | None = None
        self.server: RendezvousServer | None = None
        self.client_events: list[object] = []

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        self.node.receive_datagram(data, addr, now)
        self.pump(now)

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        return self.node.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        timers = [self.node.get_timer()]
        timers.append(self.client.get_timer() if self.client else None)
        timers.append(self.server.get_timer() if self.server else None)
        due = [t for t in timers if t is not None]
        return min(due) if due else None

    def handle_timer(self, now: float) -> None:
        self.node.handle_timer(now)
        if self.client is not None:
            self.client.handle_timer(now)
        if self.server is not None:
            self.server.handle_timer(now)
        self.pump(now)

    def pump(self, now: float) -> None:
        while True:
            event = self.node.next_event()
            if event is not None:
                self._route(event, now)
                continue
            if self.client is not None and (client_event := self.client.next_event()):
                self.client_events.append(client_event)
                continue
            return

    def _route(self, event: Event, now: float) -> None:
        if isinstance(event, MessageReceived):
            if self.server is None and self.client is None:
                pass  # a bare node (a harness plays the server): nothing to record
            elif self.server is not None:
                self.traffic.rendezvous_requests.append(event.data)
                self._unpack_request(event.data)
            else:
                self.traffic.rendezvous_replies.append(event.data)
        if self.client is not None and self.client.handle_event(event, now):
            return
        if self.server is not None:
            self.server.handle_event(event, now)

    def _unpack_request(self, data: bytes) -> None:
        message = decode_message(data)
        if isinstance(message, PostNote):
            self.traffic.sealed_notes.append(message.sealed)
        elif isinstance(message, PublishAllowList):
            self.traffic.allow_lists.append(message.allow_list.encode())


def _rendezvous_traffic(traffic: Traffic, seed: int) -> None:
    net = Network(seed, capture_limit=0)
    server_addr = ("198.51.100.1", 7000)
    server_identity = Identity.generate(net.rng_for("rv identity"))
    server_node = Node(server_identity, NodeConfig(session=FAST, public=True),
                       rng=net.rng_for("rv"), wall_clock=net.wall_clock,
                       trust_policy=lambda address: True)
    server = RvHost(server_node, traffic)
    server.server = RendezvousServer(server_node, InMemoryRegistryStore(),
                                     wall_clock=net.wall_clock)
    net.add_host(server, server_addr)
    clients = []
    for i, (name, pinned) in enumerate((("agent-a", False), ("agent-b", True)), start=1):
        identity = Identity.generate(net.rng_for("identity " + name))
        addr = (f"192.0.2.{10 + i}", 5000 + i)
        node = Node(identity, NodeConfig(session=FAST), rng=net.rng_for(name),
                    wall_clock=net.wall_clock)
        host = RvHost(node, traffic)
        host.client = RendezvousClient(
            node, identity, server_addr, server_identity.static_public if pinned else None,
            hostname=name, public=False, candidates=[addr, ("2001:db8::1", 5000 + i)],
            rng=net.rng_for(name + " client"), wall_clock=net.wall_clock,
        )
        net.add_host(host, addr)
        host.client.start(net.now)
        clients.append(host)
    net.run_for(2.0)
    a, b = clients
    assert a.client is not None and b.client is not None
    a.client.lookup("agent-b", net.now)
    a.client.lookup(b.node.address, net.now)
    a.client.lookup("nobody", net.now)
    net.flush()
    net.run_for(1.0)
    record_b = next(e.record for e in a.client_events if isinstance(e, LookupResult))
    a.client.post_note(record_b, "trust_request", bytes(range(16)), "task routing", net.now)
    b.client.publish_allow_list([a.node.address], net.now)
    net.flush()
    net.run_for(1.0)
    a.client.request_introduction(b.node.address, net.now)
    b.client.request_introduction(a.node.address, net.now)  # refused: looks unknown
    a.client.set_hostname("agent-a2", net.now)
    net.flush()
    net.run_for(30.0)  # heartbeats


@functools.cache
def record(seed: int = 7) -> Traffic:
    """Record the traffic described in the module docstring (cached per seed)."""
    traffic = Traffic()
    _node_traffic(traffic, seed)
    _rendezvous_traffic(traffic, seed)
    traffic.payloads.extend(connection_payloads(seed))
    _stun(traffic)
    _records(traffic, seed)
    _http(traffic)
    return traffic
