"""A rendezvous (two addresses, STUN, relay) and peers behind NAT models, on the simulator.

`NatLab` builds the server the way the daemon runs it (`pilotctl rendezvous serve
--listen2`): a public Node with the RendezvousServer, STUN answered on both addresses,
RELAY datagrams handed to `RendezvousServer.relay_datagram`. Peers are Nodes with a
RendezvousClient that apply introductions the way the daemon does
(`node.add_peer` + `node.introduce(..., relay=server)`), each behind its own `NatModel`
or none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rendezvous_harness import App

from pilot_proto.config import NodeConfig, PathConfig, SessionConfig
from pilot_proto.delivery import MessageReceived
from pilot_proto.events import Event, NatDiscovered, PathChanged, PeerInfo
from pilot_proto.identity import Identity
from pilot_proto.nat_models import NatModel
from pilot_proto.node import Node
from pilot_proto.relay import RELAY
from pilot_proto.rendezvous import (
    ClientConfig,
    InMemoryRegistryStore,
    IntroductionReceived,
    RendezvousClient,
    RendezvousServer,
    ServerConfig,
)
from pilot_proto.simulator import Network
from pilot_proto.stun_client import ClassifierConfig
from pilot_proto.stun_server import answer_binding
from pilot_proto.transmit import Addr, Transmit

SERVER: Addr = ("203.0.113.10", 3478)
SERVER2: Addr = ("203.0.113.11", 3479)
FAST_SESSION = SessionConfig(handshake_retry=1.0, handshake_give_up=30.0)
FAST_PATHS = PathConfig(
    keepalive_interval=5.0,
    reason_deadline=6.0,
    direct_retry_min=0.5,
    direct_retry_max=4.0,
)


class ServerApp(App):
    """The rendezvous at SERVER: STUN and the relay first, then the Node."""

    def __init__(self, node: Node) -> None:
        super().__init__("server", node, SERVER)
        self.extra: list[Transmit] = []

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        if data and data[0] < 4:
            answer = answer_binding(data, addr, other_address=SERVER2, response_origin=SERVER)
            if answer is not None:
                self.extra.append(answer)
            return
        if data and data[0] == RELAY:
            assert self.server is not None
            forward = self.server.relay_datagram(data, addr, now)
            if forward is not None:
                self.extra.append(forward)
            return
        super().receive_datagram(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        out, self.extra = self.extra, []
        return out + self.node.datagrams_to_send(now)


class SecondAddress:
    """The `--listen2` socket: STUN only."""

    def __init__(self) -> None:
        self.out: list[Transmit] = []

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        answer = answer_binding(data, addr, other_address=SERVER, response_origin=SERVER2)
        if answer is not None:
            self.out.append(answer)

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        out, self.out = self.out, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


class PeerApp(App):
    """A node with a rendezvous client that follows introductions like the daemon."""

    def _react(self, event: object, now: float) -> None:  # type: ignore[override]
        if isinstance(event, IntroductionReceived):
            assert self.client is not None and self.client.server_address is not None
            self.node.add_peer(event.record)
            self.node.introduce(
                event.record.address,
                event.candidates,
                now,
                start_delay=event.start_delay,
                probe_limit=event.probe_limit,
                relay=self.client.server_address,
            )

    def node_of(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.node_events if isinstance(e, kind)]

    def received(self) -> list[bytes]:
        return [e.data for e in self.node_events if isinstance(e, MessageReceived)]

    def info(self, other: PeerApp) -> PeerInfo:
        return self.node.peer_info(other.address)

    def paths_seen(self, other: PeerApp) -> list[str]:
        return [
            e.path
            for e in self.node_events
            if isinstance(e, PathChanged) and e.address == other.address
        ]


@dataclass
class NatLab:
    seed: int = 0
    paths: PathConfig = FAST_PATHS
    server_config: ServerConfig = field(default_factory=ServerConfig)

    def __post_init__(self) -> None:
        self.net = Network(self.seed)
        self.store = InMemoryRegistryStore()
        identity = Identity.generate(self.net.rng_for("server identity"))
        self.server_identity = identity
        node = Node(
            identity,
            NodeConfig(
                session=FAST_SESSION, public=True, paths=PathConfig(keepalive_interval=None)
            ),
            rng=self.net.rng_for("server"),
            wall_clock=self.net.wall_clock,
            trust_policy=lambda address: True,
        )
        self.server = ServerApp(node)
        self.server.server = RendezvousServer(
            node, self.store, wall_clock=self.net.wall_clock, config=self.server_config
        )
        self.net.add_host(self.server, SERVER)
        self.net.add_host(SecondAddress(), SERVER2)
        self.peers: list[PeerApp] = []

    def peer(
        self,
        name: str,
        addr: Addr,
        nat: NatModel | None = None,
        *,
        local_candidates: bool = True,
        discover: bool = True,
        paths: PathConfig | None = None,
    ) -> PeerApp:
        identity = Identity.generate(self.net.rng_for("identity " + name))
        node = Node(
            identity,
            NodeConfig(session=FAST_SESSION, paths=paths or self.paths),
            rng=self.net.rng_for(name),
            wall_clock=self.net.wall_clock,
        )
        app = PeerApp(name, node, addr)
        app.client = RendezvousClient(
            node,
            identity,
            SERVER,
            self.server_identity.static_public,
            hostname=name,
            public=True,
            candidates=[addr] if local_candidates else [],
            rng=self.net.rng_for(name + " client"),
            wall_clock=self.net.wall_clock,
            config=ClientConfig(heartbeat_interval=5.0),
        )
        self.net.add_host(app, addr, middlebox=nat)
        now = self.net.now
        if local_candidates:
            node.set_local_candidates([addr], now)
        if discover:
            fast = ClassifierConfig(rto=0.2, rc=2, rm=2, test_filtering=False)
            node.discover_nat(SERVER, now, config=fast)
        app.client.start(now)
        app.pump(now)
        self.peers.append(app)
        return app

    def run_until(self, predicate: object, timeout: float = 30.0) -> bool:
        assert callable(predicate)
        self.net.flush()
        return self.net.run_until(predicate, timeout)

    def settle(self, seconds: float) -> None:
        self.net.flush()
        self.net.run_for(seconds)

    def registered(self) -> bool:
        return all(p.client is not None and p.client.registered for p in self.peers)

    def nat_known(self, app: PeerApp) -> NatDiscovered | None:
        found = [e for e in app.node_events if isinstance(e, NatDiscovered)]
        return found[-1] if found else None  # type: ignore[return-value]

    def connect(self, a: PeerApp, b: PeerApp) -> None:
        """Register both, let B accept A, introduce A to B."""
        assert self.run_until(self.registered, 20.0), "peers did not register"
        assert a.client is not None and b.client is not None
        a.client.publish_allow_list([b.address], self.net.now)
        b.client.publish_allow_list([a.address], self.net.now)
        self.settle(0.5)
        a.client.request_introduction(b.address, self.net.now)
        a.pump(self.net.now)
        assert self.run_until(
            lambda: b.address in a.node.peers() and a.address in b.node.peers(), 10.0
        ), "no introduction"
