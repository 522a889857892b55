"""NAT discovery on the node's own socket (DESIGN 7, RFC 5780 ideas).

`Node.discover_nat` runs a `NatClassifier` against a STUN server (the rendezvous'
`--listen` and `--listen2` addresses, or any STUN server): its requests leave from the
node's socket, so the mapping it measures is the one peers will see. STUN answers
(first byte 0-3, RFC 7983) are routed here; the outcome becomes a `NatDiscovered` event
and the node's mapping behaviour, which it tells peers in its probes so that both sides
can name why a punch failed (`symmetric-nat`).
"""

from __future__ import annotations

from collections.abc import Callable

from .events import NatDiscovered
from .stun_client import ClassifierConfig, NatBehaviour, NatClassification, NatClassifier
from .transmit import Addr, Transmit

__all__ = ["NatDiscovery", "nat_type"]


def nat_type(classification: NatClassification) -> str:
    """One word for `pilotctl info`: how peers can reach us through our NAT.

    - `endpoint-independent`: one mapping for every destination; punching works;
    - `symmetric`: the mapping changes with the destination (address- or
      address-and-port-dependent, or two servers saw two addresses); punching toward
      such a NAT fails, and the relay carries the traffic;
    - `unknown`: the server did not answer, or could not tell.
    """
    if classification.mapping is NatBehaviour.ENDPOINT_INDEPENDENT:
        return "endpoint-independent"
    if classification.mapping_varies or classification.mapping in (
        NatBehaviour.ADDRESS_DEPENDENT,
        NatBehaviour.ADDRESS_AND_PORT_DEPENDENT,
    ):
        return "symmetric"
    return "unknown"


def mapping_of(classification: NatClassification) -> str:
    """The mapping behaviour probes carry: a varying mapping counts as port-dependent
    when the server could not tell which kind it is."""
    if classification.mapping is NatBehaviour.UNKNOWN and classification.mapping_varies:
        return NatBehaviour.ADDRESS_AND_PORT_DEPENDENT.value
    return classification.mapping.value


class NatDiscovery:
    """One classification run; the Node forwards datagrams and timers to it."""

    def __init__(
        self,
        rng: Callable[[int], bytes],
        primary: Addr,
        alternate: Addr | None,
        config: ClassifierConfig | None = None,
    ) -> None:
        self.classifier = NatClassifier(rng, primary, alternate=alternate, config=config)

    def start(self, now: float) -> None:
        self.classifier.start(now)

    def receive(self, data: bytes, addr: Addr, now: float) -> bool:
        return self.classifier.receive_datagram(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        return self.classifier.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        return None if self.classifier.done else self.classifier.get_timer()

    def handle_timer(self, now: float) -> None:
        self.classifier.handle_timer(now)

    def outcome(self, own_address: str) -> NatDiscovered | None:
        result = self.classifier.result
        if result is None:
            return None
        return NatDiscovered(
            own_address,
            nat_type(result),
            mapping_of(result),
            result.filtering.value,
            result.reflexive_addresses,
            result.notes,
        )
