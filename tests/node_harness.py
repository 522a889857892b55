"""Builds real Nodes on the in-memory simulator for session-layer tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from pilot_proto.config import NodeConfig, SessionConfig
from pilot_proto.events import Event
from pilot_proto.identity import Identity
from pilot_proto.node import Node
from pilot_proto.records import IdentityRecord
from pilot_proto.simulator import Network
from pilot_proto.transmit import Addr

E = TypeVar("E", bound=Event)

FAST_SESSION = SessionConfig(handshake_retry=1.0, handshake_give_up=20.0)


def record_of(identity: Identity, hostname: str | None = None) -> IdentityRecord:
    return IdentityRecord.create(identity, hostname=hostname, sequence=1, expires_at=2**40)


@dataclass
class SimNode:
    """A Node on the simulated network, with every event it emitted kept in order."""

    name: str
    node: Node
    addr: Addr
    identity: Identity
    events: list[Event] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.node.address

    def poll(self) -> list[Event]:
        while (event := self.node.next_event()) is not None:
            self.events.append(event)
        return self.events

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.poll() if isinstance(e, kind)]


class Lab:
    """A simulated network plus helpers to make and introduce nodes."""

    def __init__(self, seed: int = 0) -> None:
        self.net = Network(seed)
        self.nodes: list[SimNode] = []

    def node(
        self,
        name: str,
        config: NodeConfig | None = None,
        *,
        identity: Identity | None = None,
        addr: Addr | None = None,
        wall_clock: Callable[[], float] | None = None,
        trust_policy: Callable[[str], bool] | None = None,
    ) -> SimNode:
        identity = identity or Identity.generate(self.net.rng_for("identity " + name))
        config = config or NodeConfig(session=FAST_SESSION)
        node = Node(
            identity,
            config,
            rng=self.net.rng_for(f"{name}#{len(self.nodes)}"),
            wall_clock=wall_clock or self.net.wall_clock,
            trust_policy=trust_policy,
        )
        addr = addr or (f"192.0.2.{len(self.nodes) + 1}", 4000 + len(self.nodes))
        self.net.add_host(node, addr)
        sim = SimNode(name, node, addr, identity)
        self.nodes.append(sim)
        return sim

    def restart(self, old: SimNode, config: NodeConfig | None = None) -> SimNode:
        """The same identity at the same address, with all session state lost."""
        self.net.remove_host(old.addr)
        self.nodes.remove(old)
        return self.node(old.name, config or old.node.config, identity=old.identity, addr=old.addr)

    @staticmethod
    def introduce(a: SimNode, b: SimNode, *, trusted: bool = True, both: bool = True) -> None:
        a.node.add_peer(record_of(b.identity), [b.addr], trusted=trusted)
        if both:
            b.node.add_peer(record_of(a.identity), [a.addr], trusted=trusted)

    def run_until(self, predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
        def check() -> bool:
            for n in self.nodes:
                n.poll()
            return predicate()

        self.net.flush()
        return self.net.run_until(check, timeout)

    def settle(self, seconds: float = 5.0) -> None:
        self.net.flush()
        self.net.run_for(seconds)
        for n in self.nodes:
            n.poll()


def session_config(**changes: object) -> NodeConfig:
    return NodeConfig(session=replace(FAST_SESSION, **changes))  # type: ignore[arg-type]
