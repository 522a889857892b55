"""The flood of issue 7: two real peers exchange messages while an attacker floods both
with 100k hostile datagrams, random and mutated from real captured packets (bit flips,
truncations, extensions, header rewrites, replays, initiations with a valid mac1).

Whatever arrives: nothing raises (no internal error), every datagram is accounted for,
memory stays bounded (tracemalloc), and every message is delivered exactly once.

Cost: the flood is injected in batches of 1000 at one virtual instant, and virtual time
moves 50 ms between batches, so the real peers make progress in between; each hostile
datagram costs one call into a Node.
"""

from __future__ import annotations

import tracemalloc
from collections import Counter

from node_harness import Lab, SimNode

from fuzz.mutations import KINDS, Mutator
from pilot_proto import MessageDelivered, MessageReceived, NodeConfig
from pilot_proto.delivery import DeliveryConfig
from pilot_proto.node import ACCEPTED_OUTCOMES
from pilot_proto.simulator import Datagram, Network

FLOOD = 100_000
BATCH = 1000
MESSAGES_PER_BATCH = 2
#: Peak Python memory above the pre-flood level, all nodes and the flood in flight.
MAX_PEAK_GROWTH = 8 * 1024 * 1024
#: What may remain allocated once the flood is over (caches, counters, delivered messages).
MAX_LASTING_GROWTH = 2 * 1024 * 1024

#: Hostile datagrams are mutated from real ones up to this size (an internet path's MTU;
#: PMTU probes of 64 KiB would only make the batches in flight heavier).
MAX_DATAGRAM = 1500

ATTACKERS = [(f"203.0.113.{i}", 1000 + i) for i in range(1, 60)]


def _accounted(sim: SimNode) -> bool:
    stats = sim.node.stats
    drops = sum(n for reason, n in stats.items() if reason.startswith("drop_"))
    return stats["datagrams_received"] == drops + sum(stats[k] for k in ACCEPTED_OUTCOMES)


def test_a_flood_of_100k_hostile_datagrams_changes_nothing_for_real_peers() -> None:
    lab = Lab(seed=77)
    # No capture ring: it would keep the last 1024 hostile datagrams alive and blur the
    # memory figures. A tap records the real traffic to mutate instead.
    lab.net = Network(77, capture_limit=0)
    wire: list[bytes] = []

    def record(datagram: Datagram) -> None:
        if len(datagram.data) <= MAX_DATAGRAM:
            wire.append(datagram.data)

    lab.net.add_tap(record)
    config = NodeConfig(delivery=DeliveryConfig(auto_confirm=True))
    a, b = lab.node("a", config), lab.node("b", config)
    lab.introduce(a, b)
    sent: dict[str, list[bytes]] = {a.address: [], b.address: []}

    def send(src: SimNode, dst: SimNode, n: int) -> None:
        for _ in range(n):
            data = b"m%06d from %s" % (len(sent[src.address]), src.name.encode())
            sent[src.address].append(src.node.send_message(dst.address, data, lab.net.now))

    # Warm up: a session both ways, real traffic to mutate.
    send(a, b, 5)
    send(b, a, 5)
    assert lab.run_until(lambda: len(a.of(MessageDelivered)) == 5 == len(b.of(MessageDelivered)))
    lab.net.remove_tap(record)
    captured = list(wire)
    assert len(captured) >= 10
    mutators = {
        b.addr: Mutator(1, captured, target_static_public=b.identity.static_public),
        a.addr: Mutator(2, captured, target_static_public=a.identity.static_public),
    }
    pick = lab.net.random_for("flood targets")

    tracemalloc.start()
    try:
        lab.settle(0.1)
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(FLOOD // BATCH):
            for _ in range(BATCH):
                target = b.addr if pick.randrange(10) < 7 else a.addr
                roll = pick.randrange(20)
                # Mostly strangers; sometimes the other peer's own address (spoofed).
                if roll == 0:
                    source = a.addr if target == b.addr else b.addr
                else:
                    source = ATTACKERS[pick.randrange(len(ATTACKERS))]
                lab.net.inject(source, target, mutators[target].next())
            send(a, b, MESSAGES_PER_BATCH)
            send(b, a, MESSAGES_PER_BATCH // 2)
            lab.net.flush()
            lab.net.run_for(0.05)
        peak = tracemalloc.get_traced_memory()[1]
        expected = (len(sent[a.address]), len(sent[b.address]))
        assert lab.run_until(
            lambda: (len(a.of(MessageDelivered)), len(b.of(MessageDelivered))) == expected,
            timeout=120.0,
        ), "messages not delivered after the flood"
        lab.settle(1.0)
        lasting = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()

    injected = sum(sum(m.counts.values()) for m in mutators.values())
    assert injected == FLOOD
    assert all(m.counts[kind] > 0 for m in mutators.values() for kind in KINDS)
    for sim in (a, b):
        assert sim.node.stats["internal_error"] == 0
        assert _accounted(sim), dict(sim.node.stats)
    # Delivered exactly once each, and only what was sent.
    for receiver, sender in ((b, a), (a, b)):
        got = Counter(e.message_id for e in receiver.of(MessageReceived))
        assert set(got) == set(sent[sender.address])
        assert max(got.values()) == 1, "a message was delivered twice"
        delivered = Counter(e.message_id for e in sender.of(MessageDelivered))
        assert set(delivered) == set(sent[sender.address]) and max(delivered.values()) == 1
    # Nobody moved the peers' paths: each still talks to the other's real address.
    assert a.node.peer_path(b.address) == b.addr and b.node.peer_path(a.address) == a.addr
    # The flood reached the nodes and was dropped, not silently ignored.
    flooded = b.node.stats["datagrams_received"] + a.node.stats["datagrams_received"]
    assert flooded >= FLOOD
    assert b.node.stats["cookie_replies_sent"] > 0  # initiations with a valid mac1: cookies
    assert peak - baseline < MAX_PEAK_GROWTH, f"peak grew by {peak - baseline} bytes"
    assert lasting - baseline < MAX_LASTING_GROWTH, f"kept {lasting - baseline} bytes"
