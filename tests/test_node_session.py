"""Session layer of the Node: IK handshakes, bindings, replay, cookies, rekey, close."""

from __future__ import annotations

from dataclasses import replace

import pytest
from node_harness import FAST_SESSION, Lab, SimNode, record_of, session_config

from pilot_proto.config import NodeConfig
from pilot_proto.delivery import DatagramReceived, MessageReceived
from pilot_proto.errors import PeerNotTrusted, UnknownPeer
from pilot_proto.events import HandshakeCompleted, HandshakeFailed, SessionClosed
from pilot_proto.identity import DOMAIN_STATIC_BINDING, Identity
from pilot_proto.packets import HANDSHAKE_INITIATION, HANDSHAKE_RESPONSE
from pilot_proto.simulator import LinkConditions


def datagrams(node: SimNode) -> list[bytes]:
    return [e.data for e in node.of(DatagramReceived)]


def connected_pair(lab: Lab) -> tuple[SimNode, SimNode]:
    a, b = lab.node("a"), lab.node("b")
    lab.introduce(a, b)
    a.node.connect(b.address, lab.net.now)
    assert lab.run_until(lambda: a.node.has_session(b.address) and b.node.has_session(a.address))
    return a, b


def test_handshake_then_datagrams_both_ways() -> None:
    lab = Lab()
    a, b = connected_pair(lab)
    assert [type(e) for e in a.of(HandshakeCompleted)] == [HandshakeCompleted]
    assert a.of(HandshakeCompleted)[0].initiator is True
    assert b.of(HandshakeCompleted)[0].initiator is False
    a.node.send_datagram(b.address, b"hello b", lab.net.now)
    b.node.send_datagram(a.address, b"hello a", lab.net.now)
    assert lab.run_until(lambda: datagrams(b) == [b"hello b"] and datagrams(a) == [b"hello a"])
    assert b.of(DatagramReceived)[0].address == a.address
    for n in (a, b):
        assert n.node.stats["internal_error"] == 0


def test_first_send_starts_the_handshake_and_nothing_precedes_keys() -> None:
    lab = Lab()
    a, b = lab.node("a"), lab.node("b")
    lab.introduce(a, b)
    a.node.send_datagram(b.address, b"early", lab.net.now)
    # The very first datagram on the wire is a handshake initiation, never data.
    lab.net.flush()
    first = [d.data[0] for d in lab.net.captured]
    assert first and first[0] == HANDSHAKE_INITIATION
    assert lab.run_until(lambda: datagrams(b) == [b"early"])


def test_wire_carries_no_plaintext() -> None:
    lab = Lab()
    a, b = connected_pair(lab)
    secret = b"the launch code is 0000"
    a.node.send_datagram(b.address, secret, lab.net.now)
    assert lab.run_until(lambda: datagrams(b) == [secret])
    assert all(secret not in d.data for d in lab.net.captured)


class WrongBindingIdentity:
    """Our real keys, but the static key binding of somebody else."""

    def __init__(self, real: Identity, other: Identity) -> None:
        self._real, self._other = real, other

    def __getattr__(self, name: str) -> object:
        if name == "static_binding":
            return self._other.static_binding
        return getattr(self._real, name)


def test_initiation_with_a_wrong_binding_is_rejected() -> None:
    lab = Lab()
    real = Identity.generate(lab.net.rng_for("real"))
    other = Identity.generate(lab.net.rng_for("other"))
    a = lab.node("a", identity=WrongBindingIdentity(real, other))  # type: ignore[arg-type]
    b = lab.node("b")
    a.node.add_peer(record_of(b.identity), [b.addr])
    b.node.add_peer(record_of(real), [a.addr])  # b trusts the real key
    a.node.connect(b.address, lab.net.now)
    lab.settle(3)
    assert not b.node.has_session(real.address)
    assert b.node.stats["drop_bad_initiation"] >= 1
    assert not any(d.data[0] == HANDSHAKE_RESPONSE for d in lab.net.captured)


class ImpostorIdentity:
    """Holds the victim's X25519 static key, but signs the binding with its own Ed25519 key."""

    def __init__(self, victim: Identity, impostor: Identity) -> None:
        self._victim, self._impostor = victim, impostor
        self.public_key = impostor.public_key
        self.static_binding = impostor.sign(
            DOMAIN_STATIC_BINDING, victim.static_public + impostor.public_key
        )

    def __getattr__(self, name: str) -> object:
        if name in ("static_private", "static_private_key", "static_public"):
            return getattr(self._victim, name)
        return getattr(self._impostor, name)


def test_responder_whose_key_does_not_hash_to_the_dialled_address_is_rejected() -> None:
    lab = Lab()
    victim = Identity.generate(lab.net.rng_for("victim"))
    impostor = Identity.generate(lab.net.rng_for("impostor"))
    a = lab.node("a")
    fake_b = lab.node("b", identity=ImpostorIdentity(victim, impostor))  # type: ignore[arg-type]
    # a dials the victim's address; the impostor answers with a valid binding of its own.
    a.node.add_peer(record_of(victim), [fake_b.addr])
    fake_b.node.add_peer(record_of(a.identity), [a.addr])
    a.node.connect(victim.address, lab.net.now)
    lab.settle(3)
    assert fake_b.node.stats["handshakes_answered"] >= 1
    assert a.node.stats["drop_bad_response"] >= 1
    assert not a.node.has_session(victim.address)
    assert a.of(HandshakeCompleted) == []


def test_replayed_initiation_creates_no_state_and_gets_no_reply() -> None:
    lab = Lab()
    a, b = connected_pair(lab)
    initiation = next(d for d in lab.net.captured if d.data[0] == HANDSHAKE_INITIATION)
    answered = b.node.stats["handshakes_answered"]
    sent_before = len(lab.net.captured)
    lab.net.inject(initiation.src, initiation.dst, initiation.data)
    lab.net.inject(("198.51.100.9", 9), initiation.dst, initiation.data)
    lab.settle(0.5)
    assert b.node.stats["drop_replayed_initiation"] == 2
    assert b.node.stats["handshakes_answered"] == answered
    replies = [d for d in list(lab.net.captured)[sent_before:] if d.data[0] == HANDSHAKE_RESPONSE]
    assert replies == []
    # The real session is untouched.
    a.node.send_datagram(b.address, b"still fine", lab.net.now)
    assert lab.run_until(lambda: b"still fine" in datagrams(b))


def test_initiation_flood_switches_responder_to_cookies_and_real_peers_still_connect() -> None:
    lab = Lab()
    config = session_config(cookie_load_threshold=5)
    b = lab.node("b", config)
    a = lab.node("a")
    c = lab.node("c")
    lab.introduce(a, b)
    lab.introduce(c, b)
    a.node.connect(b.address, lab.net.now)
    assert lab.run_until(lambda: b.node.has_session(a.address))
    initiation = next(d for d in lab.net.captured if d.data[0] == HANDSHAKE_INITIATION)
    for i in range(40):  # a flood of initiations with valid mac1 from many sources
        lab.net.inject((f"203.0.113.{i % 250}", 1000 + i), b.addr, initiation.data)
    lab.settle(0.01)
    assert b.node.stats["cookie_replies_sent"] >= 30
    # While under load, a new peer is asked for a cookie first, then completes.
    c.node.connect(b.address, lab.net.now)
    assert lab.run_until(
        lambda: c.node.has_session(b.address) and b.node.has_session(c.address), 10
    )
    assert c.node.stats["cookies_received"] >= 1


def test_wall_clock_stepping_back_does_not_lock_the_peer_out() -> None:
    lab = Lab()
    offset = [0.0]
    a = lab.node("a", wall_clock=lambda: lab.net.wall_clock() + offset[0])
    b = lab.node("b")
    lab.introduce(a, b)
    a.node.connect(b.address, lab.net.now)
    assert lab.run_until(lambda: b.node.has_session(a.address))
    offset[0] = -3600.0  # a's clock jumps back an hour
    a.node.close_peer(b.address, lab.net.now)
    assert lab.run_until(lambda: not a.node.has_session(b.address))
    a.node.send_datagram(b.address, b"after clock step", lab.net.now)
    assert lab.run_until(lambda: b"after clock step" in datagrams(b))


def test_restarted_node_with_persisted_floor_and_clock_set_back_reconnects() -> None:
    lab = Lab()
    a, b = connected_pair(lab)
    floor = a.node.initiation_floor
    lab.net.remove_host(a.addr)
    lab.nodes.remove(a)
    back = lab.node(
        "a",
        replace(a.node.config, initiation_floor_ns=floor),
        identity=a.identity,
        addr=a.addr,
        wall_clock=lambda: lab.net.wall_clock() - 86400,
    )
    lab.introduce(back, b, both=False)
    back.node.send_datagram(b.address, b"back again", lab.net.now)
    assert lab.run_until(lambda: b"back again" in datagrams(b))
    assert any(e.peer_restarted for e in b.of(HandshakeCompleted))


def test_restarted_peer_is_reconnected_and_unreceipted_messages_arrive() -> None:
    lab = Lab()
    a, b = connected_pair(lab)
    b2 = lab.restart(b)
    lab.introduce(b2, a, both=False)
    message_id = a.node.send_message(b.address, b"across the restart", lab.net.now)
    assert lab.run_until(
        lambda: any(m.message_id == message_id for m in b2.of(MessageReceived)), timeout=60
    )
    assert any(e.peer_restarted for e in a.of(HandshakeCompleted))


def test_simultaneous_initiations_end_with_one_working_pair() -> None:
    lab = Lab()
    lab.net.set_default_link(LinkConditions(delay=0.05))
    a, b = lab.node("a"), lab.node("b")
    lab.introduce(a, b)
    a.node.connect(b.address, lab.net.now)
    b.node.connect(a.address, lab.net.now)
    assert lab.run_until(lambda: a.node.has_session(b.address) and b.node.has_session(a.address))
    assert a.node.stats["handshakes_answered"] == 1 and b.node.stats["handshakes_answered"] == 1
    for i in range(50):
        a.node.send_datagram(b.address, b"a%d" % i, lab.net.now)
        b.node.send_datagram(a.address, b"b%d" % i, lab.net.now)
        lab.settle(0.02)
    lab.settle(1)
    assert datagrams(b) == [b"a%d" % i for i in range(50)]
    assert datagrams(a) == [b"b%d" % i for i in range(50)]
    assert len(a.of(HandshakeCompleted)) == 1 and len(b.of(HandshakeCompleted)) == 1


def test_rekey_by_time_loses_nothing_over_hours() -> None:
    lab = Lab()
    lab.net.set_default_link(LinkConditions(delay=0.02))
    a, b = lab.node("a"), lab.node("b")
    lab.introduce(a, b)
    sent: list[bytes] = []
    for i in range(400):  # one datagram every 15 s for 100 minutes
        data = b"tick %d" % i
        a.node.send_datagram(b.address, data, lab.net.now)
        sent.append(data)
        lab.settle(15)
    assert datagrams(b) == sent
    assert a.node.stats["rekeys"] >= 40
    assert len(a.of(HandshakeCompleted)) == 1


def test_idle_session_keys_expire_when_the_node_timer_says() -> None:
    """DESIGN 4: key pairs are dropped after reject_after_time even when nothing is sent,
    and the node's timer asks to be woken for it, not at some later unrelated event."""
    lab = Lab()
    # A lifetime no other timer (keepalives every 20 s) happens to fall on.
    config = session_config(reject_after_time=175.5)
    a, b = lab.node("a", config), lab.node("b", config)
    lab.introduce(a, b)
    a.node.connect(b.address, lab.net.now)
    assert lab.run_until(lambda: a.node.has_session(b.address) and b.node.has_session(a.address))
    lifetime = 175.5
    created = lab.net.now  # both sides hold their keys since this moment at the latest
    lab.net.run(created + lifetime - 1.0)
    assert a.node.has_session(b.address) and b.node.has_session(a.address)
    timer = a.node.get_timer()
    assert timer is not None and timer <= created + lifetime
    lab.net.run(created + lifetime + 0.01)
    assert not a.node.has_session(b.address) and not b.node.has_session(a.address)
    assert a.node.stats["rekeys"] == 0 and a.node.stats["internal_error"] == 0


def test_rekey_by_packet_count() -> None:
    lab = Lab()
    a, b = lab.node("a", session_config(rekey_after_packets=50)), lab.node("b")
    lab.introduce(a, b)
    for i in range(300):
        a.node.send_datagram(b.address, b"%d" % i, lab.net.now)
        lab.settle(0.01)
    lab.settle(2)
    assert a.node.stats["rekeys"] >= 4
    assert len(datagrams(b)) == 300


def test_explicit_close_reaches_the_peer() -> None:
    lab = Lab()
    a, b = connected_pair(lab)
    a.node.close_peer(b.address, lab.net.now, "done for today")
    assert lab.run_until(lambda: bool(b.of(SessionClosed)) and bool(a.of(SessionClosed)))
    closed = b.of(SessionClosed)[0]
    assert closed.by_peer and closed.reason == "done for today"
    assert not a.node.has_session(b.address) and not b.node.has_session(a.address)


def test_private_node_ignores_untrusted_initiator() -> None:
    lab = Lab()
    a, b = lab.node("a"), lab.node("b")
    a.node.add_peer(record_of(b.identity), [b.addr])
    a.node.connect(b.address, lab.net.now)
    lab.settle(3)
    assert b.node.stats["drop_untrusted_initiation"] >= 1
    assert not any(d.data[0] == HANDSHAKE_RESPONSE for d in lab.net.captured)


def test_public_node_completes_handshake_but_gives_untrusted_peer_no_events() -> None:
    lab = Lab()
    a = lab.node("a")
    b = lab.node("b", NodeConfig(session=FAST_SESSION, public=True))
    a.node.add_peer(record_of(b.identity), [b.addr])
    a.node.send_datagram(b.address, b"let me in", lab.net.now)
    assert lab.run_until(lambda: a.node.has_session(b.address))
    lab.settle(2)
    assert b.node.stats["untrusted_datagram_frames"] >= 1
    assert datagrams(b) == []
    with pytest.raises(PeerNotTrusted):
        b.node.send_datagram(a.address, b"no", lab.net.now)


def test_unknown_peer_is_a_local_error() -> None:
    lab = Lab()
    a = lab.node("a")
    stranger = Identity.generate(lab.net.rng_for("stranger"))
    with pytest.raises(UnknownPeer, match="add_peer"):
        a.node.send_datagram(stranger.address, b"x", 0.0)


def test_unreachable_peer_reports_handshake_failed() -> None:
    lab = Lab()
    a, b = lab.node("a"), lab.node("b")
    lab.introduce(a, b)
    lab.net.set_link(a.addr, b.addr, LinkConditions(blackhole=True))
    a.node.connect(b.address, lab.net.now)
    assert lab.run_until(lambda: bool(a.of(HandshakeFailed)), timeout=60)
    assert a.node.stats["initiations_sent"] >= 10


def test_removed_peer_is_forgotten_and_its_packets_dropped() -> None:
    lab = Lab()
    a, b = connected_pair(lab)
    b.node.remove_peer(a.address, lab.net.now)
    assert a.address not in b.node.peers()
    a.node.send_datagram(b.address, b"anyone there?", lab.net.now)
    lab.settle(2)
    assert datagrams(b) == []
    assert b.node.stats["drop_unknown_index"] >= 1


def test_public_node_forgets_a_stranger_but_still_refuses_its_old_initiation() -> None:
    lab = Lab()
    a = lab.node("a")
    b = lab.node("b", NodeConfig(session=FAST_SESSION, public=True))
    a.node.add_peer(record_of(b.identity), [b.addr])
    a.node.connect(b.address, lab.net.now)
    assert lab.run_until(lambda: a.node.has_session(b.address))
    initiation = next(d for d in lab.net.captured if d.data[0] == HANDSHAKE_INITIATION)
    a.node.close_peer(b.address, lab.net.now)
    lab.settle(400)  # past the 180 s key lifetime
    assert b.node.stats["strangers_forgotten"] == 1
    assert a.address not in b.node.peers()
    lab.net.inject(initiation.src, initiation.dst, initiation.data)
    lab.settle(1)
    assert b.node.stats["drop_replayed_initiation"] == 1
    assert a.address not in b.node.peers()
