"""NAT traversal in the simulator (DESIGN 7 and 10): the whole matrix of NAT behaviours,
mapping expiry, hairpinning, the Linux conntrack trap, relay fallback, liveness, path
validation and the path report."""

from __future__ import annotations

import pytest
from nat_harness import SERVER, NatLab, PeerApp

from pilot_proto.config import PathConfig
from pilot_proto.nat_models import Behaviour, NatModel
from pilot_proto.paths import PATH_TRANSITIONS, PathEvent, PathState, next_state
from pilot_proto.simulator import LinkConditions

EI = Behaviour.ENDPOINT_INDEPENDENT
AD = Behaviour.ADDRESS_DEPENDENT
APD = Behaviour.ADDRESS_AND_PORT_DEPENDENT

A_PUBLIC, B_PUBLIC = "198.51.100.1", "198.51.100.2"
A_INSIDE, B_INSIDE = ("192.168.1.2", 4000), ("192.168.2.2", 4000)


INSIDE = {A_PUBLIC: "192.168.1.0/24", B_PUBLIC: "192.168.2.0/24"}


def nat(public: str, mapping: Behaviour, filtering: Behaviour, **kw: object) -> NatModel:
    """A NAT in front of its own LAN (192.168.1.0/24 for A, .2.0/24 for B)."""
    return NatModel(
        public, inside=[INSIDE[public]], mapping=mapping, filtering=filtering, **kw  # type: ignore[arg-type]
    )


def send_and_wait(lab: NatLab, a: PeerApp, b: PeerApp, data: bytes, timeout: float = 20.0) -> None:
    a.node.send_message(b.address, data, lab.net.now)
    a.pump(lab.net.now)
    assert lab.run_until(lambda: data in b.received(), timeout), "message not delivered"


def pair(
    mapping_a: Behaviour | None,
    filtering_a: Behaviour | None,
    mapping_b: Behaviour | None,
    filtering_b: Behaviour | None,
    seed: int = 1,
    **nat_options: object,
) -> tuple[NatLab, PeerApp, PeerApp]:
    lab = NatLab(seed)
    nat_a = (
        nat(A_PUBLIC, mapping_a, filtering_a, seed=1, **nat_options)
        if mapping_a and filtering_a
        else None
    )
    nat_b = (
        nat(B_PUBLIC, mapping_b, filtering_b, seed=2, **nat_options)
        if mapping_b and filtering_b
        else None
    )
    a = lab.peer("alice", A_INSIDE if nat_a else ("198.51.100.1", 4000), nat_a)
    b = lab.peer("bob", B_INSIDE if nat_b else ("198.51.100.2", 4000), nat_b)
    lab.connect(a, b)
    return lab, a, b


MATRIX = [
    # (A mapping, A filtering, B mapping, B filtering, expected path, expected reason)
    (None, None, None, None, "direct", None),
    (EI, EI, EI, EI, "direct", None),
    (EI, APD, EI, APD, "direct", None),
    (EI, AD, EI, APD, "direct", None),
    (EI, APD, None, None, "direct", None),
    (EI, EI, APD, APD, "direct", None),  # the symmetric side reaches the open one
    (EI, APD, APD, APD, "relay", "symmetric-nat"),
    # Address-dependent filtering lets in the other side's new port from the same IP.
    (EI, AD, AD, AD, "direct", None),
    (APD, APD, APD, APD, "relay", "symmetric-nat"),
    (AD, APD, APD, APD, "relay", "symmetric-nat"),
]


@pytest.mark.parametrize(("ma", "fa", "mb", "fb", "path", "reason"), MATRIX)
def test_nat_matrix(
    ma: Behaviour | None,
    fa: Behaviour | None,
    mb: Behaviour | None,
    fb: Behaviour | None,
    path: str,
    reason: str | None,
) -> None:
    lab, a, b = pair(ma, fa, mb, fb)
    # Traffic flows from the first packet, over the relay if nothing direct is ready.
    send_and_wait(lab, a, b, b"first", timeout=5.0)
    lab.settle(8.0)  # past the reason deadline
    for x, y in ((a, b), (b, a)):
        info = x.info(y)
        assert (info.path, info.reason) == (path, reason), (x.name, info)
    send_and_wait(lab, b, a, b"back")
    assert a.node.stats["internal_error"] == b.node.stats["internal_error"] == 0


def test_direct_path_is_reported_with_its_endpoint_and_the_relay_kept_as_standby() -> None:
    lab, a, b = pair(EI, APD, EI, APD)
    send_and_wait(lab, a, b, b"hello")
    assert lab.run_until(lambda: a.info(b).path == "direct" and b.info(a).path == "direct", 5)
    assert a.info(b).endpoint == (B_PUBLIC, B_INSIDE[1])
    assert b.info(a).endpoint == (A_PUBLIC, A_INSIDE[1])
    assert "relay" in a.paths_seen(b)  # it started on the relay
    assert a.node.peer_info(b.address).rtt is not None


def test_nat_discovery_tells_mapping_behaviour() -> None:
    lab = NatLab(3)
    open_ = lab.peer("open", ("198.51.100.7", 4000))
    cone = lab.peer("cone", A_INSIDE, nat(A_PUBLIC, EI, APD))
    sym = lab.peer("sym", B_INSIDE, nat(B_PUBLIC, APD, APD))
    assert lab.run_until(lambda: all(lab.nat_known(p) for p in (open_, cone, sym)), 10)
    assert lab.nat_known(cone).mapping == "endpoint-independent"  # type: ignore[union-attr]
    assert lab.nat_known(sym).nat_type == "symmetric"  # type: ignore[union-attr]
    assert lab.nat_known(sym).reflexive[0][0] == B_PUBLIC  # type: ignore[union-attr]
    assert lab.nat_known(open_).mapping == "endpoint-independent"  # type: ignore[union-attr]
    for p in (open_, cone, sym):
        assert p.node.stats["drop_stun_unhandled"] == 0


def test_conntrack_trap_is_survived_thanks_to_the_low_ttl_opener() -> None:
    # Bob's introduction arrives late: Alice's punches knock on Bob's NAT first.
    lab = NatLab(4)
    a = lab.peer("alice", A_INSIDE, nat(A_PUBLIC, EI, APD, conntrack_trap=True, seed=1))
    b = lab.peer("bob", B_INSIDE, nat(B_PUBLIC, EI, APD, conntrack_trap=True, seed=2))
    lab.net.set_link(SERVER, B_PUBLIC, LinkConditions(delay=0.3))
    lab.connect(a, b)
    send_and_wait(lab, a, b, b"through the trap")
    assert lab.run_until(lambda: a.info(b).path == "direct" and b.info(a).path == "direct", 8)


def test_without_the_opener_the_trap_forces_the_relay() -> None:
    lab = NatLab(4, paths=PathConfig(opener_ttl=None, reason_deadline=6.0, direct_retry_max=4.0))
    a = lab.peer("alice", A_INSIDE, nat(A_PUBLIC, EI, APD, conntrack_trap=True, seed=1))
    b = lab.peer("bob", B_INSIDE, nat(B_PUBLIC, EI, APD, conntrack_trap=True, seed=2))
    # The server's one-way delays are unknown to it, so Alice starts 0.5 s early.
    lab.net.set_link(SERVER, B_PUBLIC, LinkConditions(delay=0.5))
    lab.connect(a, b)
    send_and_wait(lab, a, b, b"x")
    lab.settle(8.0)
    nats = [h.middlebox for h in lab.net.hosts.values() if h.middlebox is not None]
    assert any(box.stats["trap_port_changed"] for box in nats)  # type: ignore[attr-defined]
    assert b.info(a).path == "relay"


def test_udp_between_the_peers_blocked_gives_relay_peer_filtered() -> None:
    lab = NatLab(5)
    a = lab.peer("alice", A_INSIDE, nat(A_PUBLIC, EI, APD, seed=1))
    b = lab.peer("bob", B_INSIDE, nat(B_PUBLIC, EI, APD, seed=2))
    lab.net.set_link(A_PUBLIC, B_PUBLIC, LinkConditions(blackhole=True), both_directions=True)
    lab.connect(a, b)
    send_and_wait(lab, a, b, b"via relay")
    assert a.info(b).path == "relay"
    assert a.info(b).reason == "probing"
    assert a.info(b).endpoint == SERVER
    lab.settle(8.0)
    assert (a.info(b).path, a.info(b).reason) == ("relay", "peer-filtered")
    assert (b.info(a).path, b.info(a).reason) == ("relay", "peer-filtered")


def test_same_nat_goes_direct_over_local_addresses() -> None:
    lab = NatLab(6)
    box = nat(A_PUBLIC, EI, APD)
    a = lab.peer("alice", ("192.168.1.2", 4000), box)
    b = lab.peer("bob", ("192.168.1.3", 4000), box)
    lab.connect(a, b)
    send_and_wait(lab, a, b, b"neighbours")
    assert lab.run_until(lambda: a.info(b).path == "direct" and b.info(a).path == "direct", 8)
    assert a.info(b).endpoint == ("192.168.1.3", 4000)


def test_same_nat_with_hairpinning_still_prefers_the_lan() -> None:
    lab = NatLab(6)
    box = nat(A_PUBLIC, EI, EI, hairpin=True)
    a = lab.peer("alice", ("192.168.1.2", 4000), box)
    b = lab.peer("bob", ("192.168.1.3", 4000), box)
    lab.connect(a, b)
    send_and_wait(lab, a, b, b"neighbours")
    lab.settle(3.0)
    assert a.info(b).path == "direct"
    assert a.info(b).endpoint is not None and a.info(b).endpoint[0].startswith("192.168.")


def test_no_candidates_is_reported() -> None:
    lab = NatLab(7)
    a = lab.peer("alice", A_INSIDE, nat(A_PUBLIC, EI, APD, seed=1), local_candidates=False)
    b = lab.peer("bob", B_INSIDE, nat(B_PUBLIC, EI, APD, seed=2), local_candidates=False)
    # A server that saw nothing to hand out: introductions carry no candidates at all.
    lab.server.server._reflexive = lambda address: ()  # type: ignore[method-assign,union-attr]
    lab.connect(a, b)
    send_and_wait(lab, a, b, b"x")
    assert (a.info(b).path, a.info(b).reason) == ("relay", "no-candidates")


def test_relay_only_is_configured() -> None:
    lab = NatLab(8, paths=PathConfig(relay_only=True))
    a = lab.peer("alice", A_INSIDE, nat(A_PUBLIC, EI, EI, seed=1))
    b = lab.peer("bob", B_INSIDE, nat(B_PUBLIC, EI, EI, seed=2))
    lab.connect(a, b)
    send_and_wait(lab, a, b, b"x")
    lab.settle(8.0)
    assert (a.info(b).path, a.info(b).reason) == ("relay", "relay-only")


def test_cut_direct_path_moves_to_relay_quickly_and_back_when_lifted() -> None:
    lab, a, b = pair(EI, APD, EI, APD, seed=9)
    send_and_wait(lab, a, b, b"warm up")
    assert lab.run_until(lambda: a.info(b).path == "direct" and b.info(a).path == "direct", 8)
    cut = LinkConditions(blackhole=True)
    lab.net.set_link(A_PUBLIC, B_PUBLIC, cut, both_directions=True)
    cut_at = lab.net.now
    big = bytes(200_000)
    a.node.send_message(b.address, big, lab.net.now)
    a.pump(lab.net.now)
    assert lab.run_until(lambda: a.info(b).path == "relay", 5)
    rto = a.node.peer_info(b.address).rtt or 0.0
    assert lab.net.now - cut_at < 2.5  # 2 RTOs (about 1 s here) and a few delays
    assert lab.run_until(lambda: big in b.received(), 20)
    assert b.info(a).path == "relay"  # the receiver followed the sender's packets
    lab.net.set_link(A_PUBLIC, B_PUBLIC, LinkConditions(), both_directions=True)
    assert lab.run_until(lambda: a.info(b).path == "direct" and b.info(a).path == "direct", 15)
    send_and_wait(lab, b, a, b"after" + bytes(rto > 0))


def test_keepalive_below_mapping_timeout_keeps_the_path_direct() -> None:
    lab, a, b = pair(EI, APD, EI, APD, seed=10, timeout=8.0)
    send_and_wait(lab, a, b, b"x")
    assert lab.run_until(lambda: a.info(b).path == "direct" and b.info(a).path == "direct", 8)
    lab.settle(60.0)  # idle: keepalives every 5 s keep the 8 s mappings
    assert a.info(b).path == "direct"
    send_and_wait(lab, b, a, b"still direct", timeout=3.0)
    assert a.info(b).path == "direct"


def test_mapping_expiry_without_keepalive_loses_the_direct_path_then_relay_carries_on() -> None:
    paths = PathConfig(keepalive_interval=None, reason_deadline=6.0, direct_retry_max=4.0)
    lab = NatLab(11, paths=paths)
    a = lab.peer("alice", A_INSIDE, nat(A_PUBLIC, EI, APD, timeout=8.0, seed=1))
    b = lab.peer("bob", B_INSIDE, nat(B_PUBLIC, EI, APD, timeout=8.0, seed=2))
    lab.connect(a, b)
    send_and_wait(lab, a, b, b"x")
    lab.settle(30.0)
    send_and_wait(lab, b, a, b"after the mapping expired", timeout=15.0)
    boxes = [h.middlebox for h in lab.net.hosts.values() if h.middlebox is not None]
    assert any(box.stats["flows_expired"] for box in boxes)  # type: ignore[attr-defined]


def test_path_validation_a_roaming_peer_is_challenged_before_traffic_moves() -> None:
    # Bob's NAT filters nothing, so Alice's packets from her new port reach him.
    lab, a, b = pair(EI, APD, EI, EI, seed=12)
    send_and_wait(lab, a, b, b"x")
    assert lab.run_until(lambda: a.info(b).path == "direct" and b.info(a).path == "direct", 8)
    # Alice's NAT reboots: new mappings, new public port.
    box = lab.net.hosts[A_INSIDE].middlebox
    assert isinstance(box, NatModel)
    box.reboot()
    before = b.node.stats["probes_sent"]
    send_and_wait(lab, a, b, b"from a new port")
    assert lab.run_until(lambda: b.info(a).endpoint not in (None, (A_PUBLIC, A_INSIDE[1])), 5)
    assert b.info(a).path == "direct"
    assert b.node.stats["probes_sent"] > before  # Bob challenged the new address first
    send_and_wait(lab, b, a, b"answer reaches the new port")


def test_lossy_delayed_path_delivers_each_message_exactly_once() -> None:
    lab, a, b = pair(EI, APD, EI, APD, seed=13)
    lossy = LinkConditions(delay=0.05, loss=0.05)
    for ip in (A_PUBLIC, B_PUBLIC):
        lab.net.set_link(ip, "0.0.0.0", lossy)
    lab.net.set_link(A_PUBLIC, B_PUBLIC, lossy, both_directions=True)
    sent = [f"m{i}".encode() for i in range(40)]
    for data in sent:
        a.node.send_message(b.address, data, lab.net.now)
    a.pump(lab.net.now)
    assert lab.run_until(lambda: all(d in b.received() for d in sent), 60)
    lab.settle(5.0)
    got = [d for d in b.received() if d.startswith(b"m")]
    assert sorted(got) == sorted(sent)  # exactly once


def test_the_relay_refuses_pairs_it_did_not_introduce() -> None:
    lab = NatLab(14)
    a = lab.peer("alice", A_INSIDE, nat(A_PUBLIC, EI, APD, seed=1))
    b = lab.peer("bob", B_INSIDE, nat(B_PUBLIC, EI, APD, seed=2))
    assert lab.run_until(lab.registered, 20)
    from pilot_proto.relay import encode_relay

    assert lab.server.server is not None
    src = lab.server.node.peer_path(a.address)
    assert src is not None
    forwarded = lab.server.server.relay_datagram(encode_relay(b.address, b"\x53" * 40), src, 1.0)
    assert forwarded is None
    assert lab.server.server.relay.stats["relay_drop_not_introduced"] == 1
    spoofed = lab.server.server.relay_datagram(
        encode_relay(b.address, b"\x53" * 40), ("203.0.113.99", 1), 1.0
    )
    assert spoofed is None
    assert lab.server.server.relay.stats["relay_drop_unknown_sender"] == 1


def test_path_transition_table_rows() -> None:
    for (state, event), new in PATH_TRANSITIONS.items():
        assert next_state(state, event, relay=True) is new
    # Without a relay there is nowhere to fall back to: the direct path stays.
    assert next_state(PathState.DIRECT, PathEvent.DIRECT_FAILED, relay=False) is PathState.DIRECT
    assert next_state(PathState.NONE, PathEvent.RELAY_KNOWN, relay=False) is PathState.NONE
    assert next_state(PathState.RELAY, PathEvent.DIRECT_FAILED, relay=True) is PathState.RELAY
