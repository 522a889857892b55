"""RFC 5780 NAT classification against hand-built servers and a small NAT model."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from pilot_proto.errors import LocalProtocolError
from pilot_proto.stun import build_binding_response, decode_message
from pilot_proto.stun_client import (
    ClassifierConfig,
    NatBehaviour,
    NatClassification,
    NatClassifier,
)
from pilot_proto.stun_server import answer_binding_request
from pilot_proto.transmit import Addr

IP1, IP2 = "198.51.100.1", "198.51.100.2"
P1, P2 = 3478, 3479
PRIMARY, ALTERNATE = (IP1, P1), (IP2, P2)
FOUR_ENDPOINTS = frozenset({(IP1, P1), (IP1, P2), (IP2, P1), (IP2, P2)})
PUBLIC_IP = "203.0.113.1"

EI = NatBehaviour.ENDPOINT_INDEPENDENT
AD = NatBehaviour.ADDRESS_DEPENDENT
APD = NatBehaviour.ADDRESS_AND_PORT_DEPENDENT
UNKNOWN = NatBehaviour.UNKNOWN


def counter_rng() -> Callable[[int], bytes]:
    counter = itertools.count()
    return lambda n: hashlib.sha256(str(next(counter)).encode()).digest()[:n]


@dataclass
class Nat:
    """RFC 4787 behaviours: mapping keyed by nothing, destination IP, or destination
    endpoint; filtering by nothing, contacted IPs, or contacted endpoints."""

    mapping: NatBehaviour
    filtering: NatBehaviour
    mappings: dict[object, Addr] = field(default_factory=dict)
    contacted: list[Addr] = field(default_factory=list)

    def outbound(self, dest: Addr) -> Addr:
        key: object = {EI: None, AD: dest[0], APD: dest}[self.mapping]
        if key not in self.mappings:
            self.mappings[key] = (PUBLIC_IP, 20000 + len(self.mappings))
        self.contacted.append(dest)
        return self.mappings[key]

    def admits(self, src: Addr) -> bool:
        if self.filtering is EI:
            return True
        if self.filtering is AD:
            return src[0] in {d[0] for d in self.contacted}
        return src in self.contacted


@dataclass
class Server:
    """A STUN server listening on some of the four RFC 5780 endpoints."""

    endpoints: frozenset[Addr] = FOUR_ENDPOINTS
    other_address: Addr | None = ALTERNATE
    supports_change: bool = True

    def handle(self, data: bytes, dest: Addr, source: Addr) -> tuple[bytes, Addr] | None:
        if dest not in self.endpoints:
            return None
        change = decode_message(data).change_request
        if not self.supports_change or change is None:
            answer = answer_binding_request(
                data, source, other_address=self.other_address, response_origin=dest
            )
            return None if answer is None else (answer, dest)
        ip = {IP1: IP2, IP2: IP1}[dest[0]] if change.change_ip else dest[0]
        port = {P1: P2, P2: P1}[dest[1]] if change.change_port else dest[1]
        origin = (ip, port)
        if origin not in self.endpoints:
            return None
        tid = data[8:20]
        answer = build_binding_response(
            tid, source, response_origin=origin, other_address=self.other_address, fingerprint=True
        )
        return answer, origin


def classify(
    nat: Nat,
    server: Server,
    *,
    alternate: Addr | None = None,
    config: ClassifierConfig | None = None,
) -> NatClassification:
    classifier = NatClassifier(counter_rng(), PRIMARY, alternate=alternate, config=config)
    now = 100.0
    classifier.start(now)
    for _ in range(500):
        # Each answer may start the next test: send until nothing is queued.
        while outgoing := classifier.datagrams_to_send(now):
            for tx in outgoing:
                reply = server.handle(tx.data, tx.addr, nat.outbound(tx.addr))
                if reply is not None and nat.admits(reply[1]):
                    assert classifier.receive_datagram(reply[0], reply[1], now)
        if classifier.done:
            break
        timer = classifier.get_timer()
        assert timer is not None, "the classifier stalled"
        now = timer
        classifier.handle_timer(now)
    result = classifier.result
    assert result is not None
    assert now - 100.0 < 15.0  # a full run, silent tests included, stays short
    return result


@pytest.mark.parametrize("mapping", [EI, AD, APD])
@pytest.mark.parametrize("filtering", [EI, AD, APD])
def test_full_rfc5780_server_classifies_every_behaviour(
    mapping: NatBehaviour, filtering: NatBehaviour
) -> None:
    nat = Nat(mapping, filtering)
    result = classify(nat, Server())
    assert (result.mapping, result.filtering) == (mapping, filtering)
    assert result.other_address == ALTERNATE
    assert result.reflexive_addresses[0] == (PUBLIC_IP, 20000)
    assert result.mapping_varies == (mapping is not EI)
    assert set(result.reflexive_addresses) == set(nat.mappings.values())
    # Filtering was tested before any packet went to the alternate address.
    assert nat.contacted.index(ALTERNATE) > 1
    assert all(dest == PRIMARY for dest in nat.contacted[: nat.contacted.index(ALTERNATE)])


def test_our_rendezvous_shape_endpoint_independent() -> None:
    # Two addresses only, and CHANGE-REQUEST refused with 420: filtering stays unknown.
    server = Server(endpoints=frozenset({PRIMARY, ALTERNATE}), supports_change=False)
    result = classify(Nat(EI, APD), server)
    assert result.mapping is EI
    assert result.filtering is UNKNOWN
    assert any("420" in note for note in result.notes)
    assert result.reflexive_addresses == ((PUBLIC_IP, 20000),)


def test_our_rendezvous_shape_dependent_mapping_is_not_guessed() -> None:
    server = Server(endpoints=frozenset({PRIMARY, ALTERNATE}), supports_change=False)
    result = classify(Nat(APD, APD), server)
    assert result.mapping is UNKNOWN  # address versus port could not be told apart
    assert result.mapping_varies
    assert len(result.reflexive_addresses) == 2
    assert any("did not answer" in note for note in result.notes)


def test_single_server_ip() -> None:
    alternate = (IP1, P2)
    endpoints = frozenset({PRIMARY, alternate})

    def one_ip_server() -> Server:
        server = Server(endpoints=endpoints, other_address=alternate)
        return server

    result = classify(Nat(APD, APD), one_ip_server())
    assert (result.mapping, result.filtering) == (APD, APD)
    result = classify(Nat(EI, EI), one_ip_server())
    assert (result.mapping, result.filtering) == (UNKNOWN, UNKNOWN)
    assert len(result.notes) == 2 and all("second server IP" in n for n in result.notes)
    assert not result.mapping_varies


def test_no_other_address() -> None:
    server = Server(other_address=None)
    result = classify(Nat(EI, EI), server)
    assert (result.mapping, result.filtering) == (UNKNOWN, UNKNOWN)
    assert result.reflexive_addresses == ((PUBLIC_IP, 20000),)
    assert result.other_address is None
    # Told where the second address is, the classifier can do without OTHER-ADDRESS.
    result = classify(Nat(AD, AD), server, alternate=ALTERNATE)
    assert (result.mapping, result.filtering) == (AD, AD)


def test_primary_silent() -> None:
    result = classify(Nat(EI, EI), Server(endpoints=frozenset()))
    assert (result.mapping, result.filtering) == (UNKNOWN, UNKNOWN)
    assert result.reflexive_addresses == ()
    assert "primary server did not answer" in result.notes[0]


def test_filtering_tests_can_be_disabled() -> None:
    nat = Nat(AD, APD)
    result = classify(nat, Server(), config=ClassifierConfig(test_filtering=False))
    assert (result.mapping, result.filtering) == (AD, UNKNOWN)
    assert nat.contacted[1] == ALTERNATE


def test_misuse_and_unrelated_datagrams() -> None:
    classifier = NatClassifier(counter_rng(), PRIMARY)
    assert classifier.get_timer() is None and not classifier.done
    classifier.start(0.0)
    with pytest.raises(LocalProtocolError):
        classifier.start(0.0)
    assert not classifier.receive_datagram(b"not stun", PRIMARY, 0.0)
    assert classifier.stats["drop_not_stun"] == 1
