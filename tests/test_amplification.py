"""Amplification (DESIGN 4 and 6): no request whose source address is unproven gets more
than 3x its size back, whatever it is.

An attacker spoofs a victim's address as the source and lets our answers hit the victim.
What a node answers before a handshake proves the sender can receive at its address:

- an IK initiation: the response, or under load a cookie reply; nothing for a stranger
  to a private node, nothing for a replay;
- XX message 1 (first contact with a public node): message 2, which message 1 is padded
  to match; nothing under load;
- a transport packet for an unknown session index, or garbage: nothing;
- a STUN Binding request (the rendezvous, from either of its addresses): a response
  trimmed to fit;
- a RELAY datagram (the rendezvous): forwarded, same size, to the other end of an
  introduced pair only, never back toward its source.

A session proves the client's first address only: an authenticated packet arriving from a
new address is the same attack by a client with keys (anyone can get a session with a
public rendezvous), so requests over it get no more than 3x either until the new path is
validated (DESIGN 7; RFC 9000 section 8 sets the same 3x limit).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz import node as node_harness
from fuzz.rendezvous_relay import RelaySession
from fuzz.rendezvous_server import RendezvousSession, requests
from fuzz.scripted_peer import ScriptedPeer
from fuzz.traffic import record
from pilot_proto.config import NodeConfig, SessionConfig
from pilot_proto.handshake_xx import XXInitiator
from pilot_proto.identity import Identity
from pilot_proto.node import Node
from pilot_proto.packets import (
    COOKIE_REPLY_SIZE,
    INITIATION_SIZE,
    RESPONSE_SIZE,
    XX_INIT_SIZE,
    XX_RESPONSE_SIZE,
    encode_xx_init,
    transport_header,
)
from pilot_proto.relay import encode_relay
from pilot_proto.rendezvous.messages import decode_message
from pilot_proto.simulator import SeededRandom
from pilot_proto.stun import ChangeRequest, build_binding_request
from pilot_proto.stun_server import answer_binding, answer_binding_pair, answer_binding_request
from pilot_proto.transmit import Addr

FACTOR = 3
VICTIM: Addr = ("203.0.113.50", 6000)
PEER: Addr = ("192.0.2.7", 4000)
EPOCH = 1_700_000_000.0


def bytes_sent_to(node: Node, addr: Addr, now: float, seconds: float = 30.0) -> int:
    """Everything `node` sends to `addr` from `now` on, timers included, for `seconds`."""
    total = sum(len(t.data) for t in node.datagrams_to_send(now) if t.addr == addr)
    end = now + seconds
    while (timer := node.get_timer()) is not None and timer <= end:
        now = max(now, timer)
        node.handle_timer(now)
        total += sum(len(t.data) for t in node.datagrams_to_send(now) if t.addr == addr)
    return total


def make_node(seed: int, *, public: bool = False, load_threshold: int = 100) -> Node:
    identity = Identity.generate(SeededRandom(seed).bytes)
    config = NodeConfig(
        session=SessionConfig(handshake_retry=1.0, cookie_load_threshold=load_threshold),
        public=public,
    )
    return Node(identity, config, rng=SeededRandom(seed + 1).bytes, wall_clock=lambda: EPOCH)


def scripted_peer(seed: int, addr: Addr = PEER) -> ScriptedPeer:
    rng = SeededRandom(seed).bytes
    return ScriptedPeer(Identity.generate(rng), addr, rng)


def test_the_packet_sizes_themselves_do_not_amplify() -> None:
    assert RESPONSE_SIZE <= FACTOR * INITIATION_SIZE
    assert COOKIE_REPLY_SIZE <= FACTOR * INITIATION_SIZE
    assert XX_RESPONSE_SIZE <= XX_INIT_SIZE  # message 1 is padded to the size of message 2


def test_a_spoofed_initiation_gets_one_response_at_most_three_times_its_size() -> None:
    node = make_node(1)
    peer = scripted_peer(2, addr=VICTIM)  # the attacker replays a trusted peer's initiation
    node.add_peer(peer.record(), [PEER])
    packet, _, _ = peer.initiation(node, 0.0)
    node.receive_datagram(packet, VICTIM, 0.0)
    back = bytes_sent_to(node, VICTIM, 0.0)
    assert 0 < back <= FACTOR * len(packet)
    assert node.stats["handshakes_answered"] == 1
    # The same initiation again, from anywhere: a replay gets nothing at all.
    node.receive_datagram(packet, VICTIM, 1.0)
    node.receive_datagram(packet, ("203.0.113.51", 1), 1.0)
    assert bytes_sent_to(node, VICTIM, 1.0) == 0
    assert bytes_sent_to(node, ("203.0.113.51", 1), 1.0) == 0
    assert node.stats["drop_replayed_initiation"] == 2


def test_under_load_initiations_get_cookie_replies_no_larger() -> None:
    node = make_node(3, load_threshold=0)
    peer = scripted_peer(4, addr=VICTIM)
    node.add_peer(peer.record(), [PEER])
    for i in range(50):
        packet, _, _ = peer.initiation(node, float(i))
        node.receive_datagram(packet, VICTIM, float(i))
        assert bytes_sent_to(node, VICTIM, float(i), seconds=0.5) <= FACTOR * len(packet)
    assert node.stats["cookie_replies_sent"] == 50
    assert node.stats["handshakes_answered"] == 0


def test_a_private_node_answers_strangers_nothing() -> None:
    node = make_node(5)
    stranger = scripted_peer(6, addr=VICTIM)
    packet, _, _ = stranger.initiation(node, 0.0)
    node.receive_datagram(packet, VICTIM, 0.0)
    assert bytes_sent_to(node, VICTIM, 0.0) == 0
    assert node.stats["drop_untrusted_initiation"] == 1


def test_xx_message_1_gets_a_message_2_no_larger_and_nothing_under_load() -> None:
    node = make_node(7, public=True)
    rng = SeededRandom(8).bytes
    client = XXInitiator(Identity.generate(rng), 1, rng)
    packet = encode_xx_init(1, client.ephemeral)
    node.receive_datagram(packet, VICTIM, 0.0)
    assert 0 < bytes_sent_to(node, VICTIM, 0.0) <= len(packet)
    loaded = make_node(9, public=True, load_threshold=0)
    loaded.receive_datagram(packet, VICTIM, 0.0)
    assert bytes_sent_to(loaded, VICTIM, 0.0) == 0
    private = make_node(10)
    private.receive_datagram(packet, VICTIM, 0.0)
    assert bytes_sent_to(private, VICTIM, 0.0) == 0


def test_transport_packets_for_unknown_sessions_get_nothing() -> None:
    session = node_harness.Session()
    for index in (0, 1, 2**32 - 1):
        for size in (0, 16, 100, 1400):
            data = transport_header(index, 7) + bytes(size)
            session.node.receive_datagram(data, VICTIM, session.now)
            assert bytes_sent_to(session.node, VICTIM, session.now, seconds=1.0) == 0
    # And a genuine packet of the session replayed from elsewhere: nothing either.
    sealed = session.peer.seal(b"")
    session.node.receive_datagram(sealed, PEER, session.now)
    session.node.receive_datagram(sealed, VICTIM, session.now)
    assert bytes_sent_to(session.node, VICTIM, session.now, seconds=1.0) == 0


def _mutations() -> st.SearchStrategy[bytes]:
    captured = record().all_datagrams()

    def mutate(data: bytes, position: int, value: int, cut: int) -> bytes:
        out = bytearray(data)
        if out:
            out[position % len(out)] = value
        return bytes(out[: len(out) - cut % 8])

    return st.builds(mutate, st.sampled_from(captured), st.integers(0, 2**16),
                     st.integers(0, 255), st.integers(0, 64))


@settings(max_examples=200)
@given(
    data=st.one_of(
        st.binary(max_size=1500),
        st.builds(lambda t, b: bytes((t,)) + b, st.integers(0x50, 0x56), st.binary(max_size=300)),
        st.sampled_from(record().all_datagrams()),
        _mutations(),
    )
)
def test_no_datagram_from_an_unproven_source_gets_more_than_three_times_back(
    data: bytes,
) -> None:
    session = node_harness.Session()
    session.node.receive_datagram(data, VICTIM, session.now)
    assert bytes_sent_to(session.node, VICTIM, session.now, seconds=5.0) <= FACTOR * len(data)
    assert session.node.stats["internal_error"] == 0


# ------------------------------------------------------------------------ STUN (rendezvous)


def stun_requests() -> list[bytes]:
    tid = bytes(range(12))
    return [
        build_binding_request(tid, fingerprint=False),
        build_binding_request(tid),
        build_binding_request(tid, software="x" * 100),
        build_binding_request(tid, change_request=ChangeRequest(True, True)),
        build_binding_request(tid, change_request=ChangeRequest(False, False)),
        build_binding_request(tid, username="u", key=b"k" * 16, integrity="both"),
        build_binding_request(tid, username="u" * 500, fingerprint=True),
    ]


@pytest.mark.parametrize("request_bytes", stun_requests())
@pytest.mark.parametrize("source", [("192.0.2.9", 5000), ("2001:db8::9", 5000)])
def test_stun_answers_stay_within_three_times_the_request(
    request_bytes: bytes, source: Addr
) -> None:
    for answer in (
        answer_binding(request_bytes, source, other_address=("2001:db8::1", 7001),
                       response_origin=("2001:db8::2", 7000)),
        answer_binding(request_bytes, source),
    ):
        assert answer is None or len(answer.data) <= FACTOR * len(request_bytes)
        assert answer is None or answer.addr[0] == source[0]
    plain = answer_binding_request(request_bytes, source)
    assert plain is None or len(plain) <= FACTOR * len(request_bytes)


@settings(max_examples=300)
@given(data=st.one_of(st.binary(max_size=600), _mutations(),
                      st.sampled_from(stun_requests()).map(lambda b: b[:-4] + b"\0\0\0\0")))
def test_stun_never_amplifies_any_bytes(data: bytes) -> None:
    answer = answer_binding(data, VICTIM, other_address=("2001:db8::1", 7001),
                            response_origin=("2001:db8::2", 7000))
    assert answer is None or len(answer.data) <= FACTOR * len(data)


# ----------------------------------------------------------------- the rendezvous server


def test_the_rendezvous_answers_handshakes_within_the_limit() -> None:
    session = RendezvousSession()
    stranger = scripted_peer(11, addr=VICTIM)
    packet, _, _ = stranger.initiation(session.node, session.now)
    session.node.receive_datagram(packet, VICTIM, session.now)
    assert 0 < bytes_sent_to(session.node, VICTIM, session.now) <= FACTOR * len(packet)
    rng = SeededRandom(12).bytes
    client = XXInitiator(Identity.generate(rng), 1, rng)
    xx = encode_xx_init(1, client.ephemeral)
    session.node.receive_datagram(xx, ("203.0.113.52", 1), session.now)
    assert 0 < bytes_sent_to(session.node, ("203.0.113.52", 1), session.now) <= len(xx)


REQUEST_KINDS = ("register", "allow_list", "lookup_hostname", "lookup_address", "post_note",
                 "introduce", "ping")


def _spoofed_request(session: RendezvousSession, request: bytes) -> tuple[int, int]:
    """Send `request` over the client's session, from the victim's address; return
    (bytes the victim's address sent, bytes the server sent there)."""
    connection = session.client.connection
    assert connection is not None
    connection.send_message(request, session.now, type="binary")
    sent = 0
    for payload in connection.payloads_to_send(session.now):
        packet = session.client.seal(payload)
        sent += len(packet)
        session.node.receive_datagram(packet, VICTIM, session.now)
        session.take_events(session.now)
    return sent, bytes_sent_to(session.node, VICTIM, session.now, seconds=5.0)


def test_rendezvous_requests_from_an_unvalidated_address_do_not_amplify() -> None:
    """A registered client (anyone) sends each request over its genuine session, but from
    the victim's address. Until the new path is validated, the server may send there no
    more than 3x what came from there, answers and PMTU probes included."""
    offenders = []
    for kind, request in zip(REQUEST_KINDS, requests(), strict=True):
        session = RendezvousSession()
        # The session is made from the client's real address, and used there first.
        session.request(requests()[REQUEST_KINDS.index("ping")])
        session.now += 1.0
        assert decode_message(request) is not None
        sent, back = _spoofed_request(session, request)
        if back > FACTOR * sent:
            offenders.append(f"{kind}: {sent} bytes drew {back}")
    assert not offenders, "; ".join(offenders)


def test_stun_answers_from_the_second_address_stay_within_three_times_the_request() -> None:
    local, other = ("198.51.100.1", 7000), ("198.51.100.2", 7001)
    tid = bytes(range(12))
    for change in (ChangeRequest(True, True), ChangeRequest(False, True), None):
        for fingerprint in (False, True):
            request = build_binding_request(tid, change_request=change, fingerprint=fingerprint)
            answer = answer_binding_pair(request, VICTIM, local, other)
            assert answer is not None
            transmit, _from_other = answer
            assert len(transmit.data) <= FACTOR * len(request)
            assert transmit.addr == VICTIM


def test_the_relay_forwards_no_more_than_it_gets_and_only_for_introduced_pairs() -> None:
    session = RelaySession()
    inner = bytes(1200)
    to_b = encode_relay(session.b.address, inner)
    forward = session.server.relay_datagram(to_b, session.a.addr, session.now)
    assert forward is not None and forward.addr == session.b.addr
    assert len(forward.data) == len(to_b)
    # From anyone but a client's session path: nothing goes anywhere.
    assert session.server.relay_datagram(to_b, VICTIM, session.now) is None
    # Toward a node that did not accept us (not introduced): nothing either.
    stranger = Identity.generate(SeededRandom(13).bytes)
    to_stranger = encode_relay(stranger.address, inner)
    assert session.server.relay_datagram(to_stranger, session.a.addr, session.now) is None
    # A relayed datagram never goes back toward its source, even addressed to itself.
    to_self = encode_relay(session.a.address, inner)
    assert session.server.relay_datagram(to_self, session.a.addr, session.now) is None
    stats = session.server.relay.stats
    assert stats["relayed"] == 1 and stats["relay_drop_unknown_sender"] == 1
    assert stats["relay_drop_target_offline"] + stats["relay_drop_not_introduced"] == 2
