"""Rendezvous server and clients on the in-memory simulator.

`App` plays the daemon's part for one Node: it hands every node event to the rendezvous
client (or server) first, keeps what they did not consume, arms one timer for all of
them, and collects the client's events. `RvLab` builds a server and clients on one
simulated network with a shared in-memory store, so a server "restart" keeps its state
the way SQLite would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TypeVar

from pilot_proto import MessageReceived
from pilot_proto.config import NodeConfig, SessionConfig
from pilot_proto.events import Event, RendezvousConnected
from pilot_proto.identity import Identity
from pilot_proto.node import Node
from pilot_proto.records import IdentityRecord, Locator
from pilot_proto.rendezvous import (
    ClientConfig,
    ClientEvent,
    InMemoryRegistryStore,
    IntroductionReceived,
    RendezvousClient,
    RendezvousServer,
    ServerConfig,
)
from pilot_proto.rendezvous.messages import Register, decode_message, encode_message
from pilot_proto.simulator import Network
from pilot_proto.transmit import Addr, Transmit

C = TypeVar("C", bound=ClientEvent)

FAST_SESSION = SessionConfig(handshake_retry=1.0, handshake_give_up=20.0)
SERVER_ADDR: Addr = ("198.51.100.1", 7000)


class App:
    """One simulated host: a Node and the rendezvous client or server driving it."""

    def __init__(self, name: str, node: Node, addr: Addr) -> None:
        self.name = name
        self.node = node
        self.addr = addr
        self.client: RendezvousClient | None = None
        self.server: RendezvousServer | None = None
        #: Node events the rendezvous objects did not consume (the daemon's business).
        self.node_events: list[Event] = []
        self.events: list[ClientEvent] = []
        #: Plaintext of every message the server sent us, as our node received it.
        self.from_server: list[bytes] = []
        #: Act on introductions the way the daemon does: add the peer, connect.
        self.follow_introductions = False

    @property
    def address(self) -> str:
        return self.node.address

    def of(self, kind: type[C]) -> list[C]:
        return [e for e in self.events if isinstance(e, kind)]

    # the four sans-IO methods the simulator drives

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        self.node.receive_datagram(data, addr, now)
        self.pump(now)

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        return self.node.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        timers = [self.node.get_timer()]
        if self.client is not None:
            timers.append(self.client.get_timer())
        if self.server is not None:
            timers.append(self.server.get_timer())
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
                self.events.append(client_event)
                self._react(client_event, now)
                continue
            return

    def _route(self, event: Event, now: float) -> None:
        if self.client is not None:
            if isinstance(event, MessageReceived) and event.address == self.client.server_address:
                self.from_server.append(event.data)
            if self.client.handle_event(event, now):
                return
        if self.server is not None and self.server.handle_event(event, now):
            return
        self.node_events.append(event)

    def _react(self, event: ClientEvent, now: float) -> None:
        if self.follow_introductions and isinstance(event, IntroductionReceived):
            self.node.add_peer(event.record, event.candidates)
            self.node.connect(event.record.address, now)


class RvLab:
    """A rendezvous server and its clients on one simulated network."""

    def __init__(self, seed: int = 0, server_config: ServerConfig | None = None) -> None:
        self.net = Network(seed)
        self.store = InMemoryRegistryStore()
        self.server_config = server_config or ServerConfig()
        self.server_identity = Identity.generate(self.net.rng_for("server identity"))
        self.server = self._make_server(self.server_identity)
        self._count = 0

    @property
    def now(self) -> float:
        return self.net.now

    def _make_server(self, identity: Identity) -> App:
        node = Node(
            identity,
            NodeConfig(session=FAST_SESSION, public=True),
            rng=self.net.rng_for(f"server#{self.net.now}"),
            wall_clock=self.net.wall_clock,
            trust_policy=lambda address: True,
        )
        app = App("server", node, SERVER_ADDR)
        app.server = RendezvousServer(
            node, self.store, wall_clock=self.net.wall_clock, config=self.server_config
        )
        self.net.add_host(app, SERVER_ADDR)
        return app

    def restart_server(self, identity: Identity | None = None) -> App:
        """Same store, fresh node and server state; a new identity if given. Also brings
        back a server that was taken off the network."""
        if SERVER_ADDR in self.net.hosts:
            self.net.remove_host(SERVER_ADDR)
        if identity is not None:
            self.server_identity = identity
        self.server = self._make_server(self.server_identity)
        return self.server

    def leave(self, app: App) -> None:
        """Take a host off the network without a word (a crash, a cable pulled)."""
        self.net.remove_host(app.addr)

    def client(
        self,
        name: str,
        *,
        hostname: str | None = None,
        public: bool = False,
        pinned: bool = True,
        allow_list: Iterable[str] = (),
        candidates: Iterable[Addr] | None = None,
        config: ClientConfig | None = None,
        identity: Identity | None = None,
        addr: Addr | None = None,
        start: bool = True,
        session: SessionConfig = FAST_SESSION,
        wall_clock: Callable[[], float] | None = None,
    ) -> App:
        self._count += 1
        identity = identity or Identity.generate(self.net.rng_for("identity " + name))
        addr = addr or (f"192.0.2.{self._count}", 5000 + self._count)
        node = Node(
            identity,
            NodeConfig(session=session),
            rng=self.net.rng_for(f"{name}#{self._count}"),
            wall_clock=self.net.wall_clock,
        )
        app = App(name, node, addr)
        app.client = RendezvousClient(
            node,
            identity,
            SERVER_ADDR,
            self.server_identity.static_public if pinned else None,
            hostname=hostname,
            public=public,
            candidates=[addr] if candidates is None else candidates,
            rng=self.net.rng_for(f"{name} client#{self._count}"),
            wall_clock=wall_clock or self.net.wall_clock,
            config=config,
            allow_list=allow_list,
        )
        self.net.add_host(app, addr)
        if start:
            self.start(app)
        return app

    def start(self, app: App) -> None:
        assert app.client is not None
        app.client.start(self.net.now)
        self.net.flush()

    def restart_client(self, old: App, **changes: object) -> App:
        """The same identity at the same address, with every bit of state lost (also
        brings back a client that was taken off the network)."""
        addr = old.addr
        if addr in self.net.hosts:
            self.net.remove_host(addr)
        assert old.client is not None
        return self.client(
            old.name,
            identity=old.node.identity,
            addr=addr,
            hostname=changes.pop("hostname", old.client.hostname),  # type: ignore[arg-type]
            **changes,  # type: ignore[arg-type]
        )

    def run_until(self, predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
        self.net.flush()
        return self.net.run_until(predicate, timeout)

    def settle(self, seconds: float = 2.0) -> None:
        self.net.flush()
        self.net.run_for(seconds)

    def call(self, app: App, action: Callable[[RendezvousClient, float], int]) -> int:
        """Run a client request now, and let the network carry it."""
        assert app.client is not None
        rid = action(app.client, self.net.now)
        self.net.flush()
        return rid

    def result(self, app: App, rid: int, timeout: float = 30.0) -> ClientEvent:
        """The event that answers request `rid`."""

        def answer() -> ClientEvent | None:
            for event in app.events:
                if getattr(event, "request_id", None) == rid:
                    return event
            return None

        assert self.run_until(lambda: answer() is not None, timeout), f"no answer to {rid}"
        event = answer()
        assert event is not None
        return event


class RawClient:
    """A node with a session to the server and no RendezvousClient: sends what a test says."""

    def __init__(self, lab: RvLab, name: str, identity: Identity | None = None) -> None:
        self.lab = lab
        self.app = lab.client(name, identity=identity, start=False)
        self.app.client = None  # raw: every node event lands in app.node_events
        self.app.node.connect_rendezvous(SERVER_ADDR, lab.server_identity.static_public, lab.now)
        lab.net.flush()
        assert lab.run_until(lambda: bool(self.of(RendezvousConnected)))
        self.server = self.of(RendezvousConnected)[0].address

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [e for e in self.app.node_events if isinstance(e, kind)]

    def send(self, data: bytes) -> None:
        self.app.node.send_message(self.server, data, self.lab.now, type="binary")
        self.lab.net.flush()

    def answers(self) -> list[object]:
        return [decode_message(e.data) for e in self.of(MessageReceived)]

    def ask(self, data: bytes) -> object:
        before = len(self.of(MessageReceived))
        self.send(data)
        assert self.lab.run_until(lambda: len(self.of(MessageReceived)) > before)
        return self.answers()[before]


def register_message(identity: Identity, rid: int, sequence: int, expires_at: int) -> bytes:
    record = IdentityRecord.create(
        identity, hostname=None, sequence=sequence, expires_at=expires_at
    )
    locator = Locator.create(
        identity, endpoints=[("192.0.2.99", 9)], sequence=sequence, expires_at=expires_at
    )
    return encode_message(Register(rid, record, locator))


def client_config(**changes: object) -> ClientConfig:
    return replace(ClientConfig(), **changes)  # type: ignore[arg-type]


def server_config(**changes: object) -> ServerConfig:
    return replace(ServerConfig(), **changes)  # type: ignore[arg-type]
