"""The Node's one timer with many peers: every peer's timers fire at their deadlines while
another peer is busy, and `get_timer` is always the earliest deadline of all peers."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from node_harness import Lab, SimNode, session_config

from pilot_proto.node import Node
from pilot_proto.peer import Peer
from pilot_proto.simulator import Datagram

LIFETIME = 175.5  # key lifetime; no keepalive (every 20 s) falls on it
KEEPALIVE = 20.0  # PathConfig.keepalive_interval


def _hub_with_idle_peers(idle: int, spacing: float) -> tuple[Lab, SimNode, SimNode, list[float]]:
    """A hub, one busy peer and `idle` peers whose sessions start `spacing` s apart, then
    go silent."""
    lab = Lab(seed=3)
    config = session_config(reject_after_time=LIFETIME)
    hub, busy = lab.node("hub", config), lab.node("busy", config)
    lab.introduce(hub, busy)
    started: list[float] = []
    for i in range(idle):
        peer = lab.node(f"idle{i}", config)
        lab.introduce(hub, peer)
        started.append(lab.net.now)
        peer.node.connect(hub.address, lab.net.now)
        assert lab.run_until(lambda p=peer: hub.node.has_session(p.address), 5)
        lab.net.run_for(spacing - (lab.net.now - started[-1]))
    for peer in lab.nodes[2:]:
        # Silent from now on: only the hub's own timers can act on these sessions.
        lab.net.remove_host(peer.addr)
    return lab, hub, busy, started


def _busy_until(lab: Lab, hub: SimNode, busy: SimNode, until: float) -> None:
    """The hub sends its busy peer a message every 50 ms until `until`."""
    while lab.net.now < until:
        hub.node.send_message(busy.address, b"work", lab.net.now)
        lab.net.flush()
        lab.net.run(min(lab.net.now + 0.05, until))
        hub.poll()
        busy.poll()


def test_idle_peers_keepalives_and_key_expiry_are_on_time_while_one_peer_is_busy() -> None:
    lab, hub, busy, started = _hub_with_idle_peers(idle=24, spacing=0.7)
    idle = lab.nodes[2:]
    addr_of = {n.addr: n.address for n in idle}
    sent_at: dict[str, list[float]] = {n.address: [] for n in idle}

    def tap(datagram: Datagram) -> None:
        if datagram.src == hub.addr and datagram.dst in addr_of:
            sent_at[addr_of[datagram.dst]].append(datagram.time)

    lab.net.add_tap(tap)
    watch_from = lab.net.now
    _busy_until(lab, hub, busy, watch_from + 120.0)
    # Deadlines the busy peer superseded do not pile up with its traffic.
    assert len(hub.node._deadlines) <= 2 * len(hub.node.peers()) + 64
    for address, times in sent_at.items():
        # A keepalive every 20 s on each idle direct path, not later.
        gaps = [b - a for a, b in zip([watch_from, *times], times, strict=False)]
        assert len(times) >= 5, (address, times)
        assert max(gaps) <= KEEPALIVE + 0.05, (address, gaps)

    # Each idle peer's keys expire at their own deadline, not at some later event.
    for peer, start in zip(idle, started, strict=True):
        _busy_until(lab, hub, busy, start + LIFETIME - 0.05)
        assert hub.node.has_session(peer.address)
        _busy_until(lab, hub, busy, start + LIFETIME + 0.05)
        assert not hub.node.has_session(peer.address), (peer.name, lab.net.now)
    assert hub.node.has_session(busy.address)
    assert hub.node.stats["internal_error"] == 0


def _deadline_of(node: Node, peer: Peer) -> float | None:
    """Brute force: every timer of one peer, recomputed from its state."""
    times: list[float] = []
    if peer.handshake_retry_at is not None:
        times.append(peer.handshake_retry_at)
    if peer.keys.keypairs:
        times.append(min(kp.created_at for kp in peer.keys.keypairs) + LIFETIME)
    elif not peer.explicit and peer.handshake is None:
        times.append(node._last_now)  # a stranger without keys: forgotten at once
    paths = peer.paths
    paths.session_up = peer.keys.sending is not None
    if peer.connection is not None:
        if paths.relay is not None and peer.keys.sending is not None:
            paths.rto = peer.connection.rto
        t = peer.connection.get_timer()
        if t is not None:
            times.append(t)
        live = paths.liveness_deadline(peer.connection.silence_start)
        if live is not None:
            times.append(live)
    t = paths.deadline()
    if t is not None:
        times.append(t)
    return min(times, default=None)


def _brute_force_timer(node: Node) -> float | None:
    times = [t for p in node._peers.values() if (t := _deadline_of(node, p)) is not None]
    times += [pending.retry_at for pending in node._rendezvous.values()]
    return min(times, default=None)


operations = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "hub_sends",
                "peer_sends",
                "advance",
                "remove",
                "close",
                "connect",
                "untrust",
                "retrust",
            ]
        ),
        st.integers(0, 3),
        st.floats(0.001, 40.0),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations)
def test_get_timer_is_the_earliest_deadline_of_all_peers(
    ops: list[tuple[str, int, float]],
) -> None:
    lab = Lab(seed=5)
    config = session_config(reject_after_time=LIFETIME)
    hub = lab.node("hub", config)
    others = [lab.node(f"p{i}", config) for i in range(4)]
    for other in others:
        lab.introduce(hub, other)
        other.node.connect(hub.address, lab.net.now)
    lab.settle(1.0)
    for op, i, dt in ops:
        other, now = others[i], lab.net.now
        known = other.address in hub.node.peers()
        if op == "hub_sends" and known and hub.node.is_trusted(other.address):
            hub.node.send_message(other.address, b"x" * 300, now)
        elif op == "peer_sends":
            other.node.send_message(hub.address, b"y" * 300, now)
        elif op == "advance":
            lab.net.flush()
            lab.net.run_for(dt)
        elif op == "remove":
            hub.node.remove_peer(other.address, now)
        elif op == "close" and known:
            hub.node.close_peer(other.address, now)
        elif op == "connect" and known:
            hub.node.connect(other.address, now)
        elif op in ("untrust", "retrust") and known:
            hub.node.set_trust(other.address, op == "retrust", now)
        lab.net.flush()  # the binding's poll: send what is queued, then ask for the timer
        assert hub.node.get_timer() == _brute_force_timer(hub.node), (op, i)
        hub.poll()
    assert hub.node.stats["internal_error"] == 0
