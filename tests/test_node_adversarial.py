"""Three Nodes over a hostile simulated network, driven by Hypothesis.

The adversary drops, duplicates and reorders traffic, replays old packets, flips bits,
injects random datagrams and lets hours pass (forcing rekeys and key expiry). Whatever it
does: nothing raises out of the Node, every datagram delivered is one its sender really
sent to that receiver, none is delivered twice, and the junk shows up in drop counters.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from node_harness import Lab, session_config

from pilot_proto import DatagramReceived
from pilot_proto.node import ACCEPTED_OUTCOMES
from pilot_proto.simulator import LinkConditions

NAMES = ("a", "b", "c")


class AdversarialNetwork(RuleBasedStateMachine):
    @initialize(seed=st.integers(0, 2**16))
    def build(self, seed: int) -> None:
        self.lab = Lab(seed)
        config = session_config(rekey_after_time=120.0, rekey_after_packets=40)
        self.nodes = {name: self.lab.node(name, config) for name in NAMES}
        for i, x in enumerate(NAMES):
            for y in NAMES[i + 1 :]:
                self.lab.introduce(self.nodes[x], self.nodes[y])
        self.sent: dict[tuple[str, str], set[bytes]] = {}
        self.seen: dict[str, list[tuple[str, bytes]]] = {name: [] for name in NAMES}
        self.cursor = dict.fromkeys(NAMES, 0)
        self.counter = 0
        self.rng = self.lab.net.random_for("adversary")

    def _collect(self) -> None:
        for name, sim in self.nodes.items():
            events = sim.poll()
            for event in events[self.cursor[name] :]:
                if isinstance(event, DatagramReceived):
                    self.seen[name].append((event.address, event.data))
            self.cursor[name] = len(events)

    @rule(src=st.sampled_from(NAMES), dst=st.sampled_from(NAMES), size=st.integers(0, 300))
    def send(self, src: str, dst: str, size: int) -> None:
        if src == dst:
            return
        self.counter += 1
        data = b"%d:" % self.counter + bytes(size)
        sender, receiver = self.nodes[src], self.nodes[dst]
        self.sent.setdefault((sender.address, receiver.address), set()).add(data)
        sender.node.send_datagram(receiver.address, data, self.lab.net.now)
        self.lab.settle(0.05)

    @rule(
        loss=st.sampled_from([0.0, 0.1, 0.5]),
        duplicate=st.sampled_from([0.0, 0.2]),
        reorder=st.sampled_from([0.0, 0.3]),
    )
    def weather(self, loss: float, duplicate: float, reorder: float) -> None:
        self.lab.net.set_default_link(
            LinkConditions(loss=loss, duplicate=duplicate, reorder=reorder, delay=0.01, jitter=0.01)
        )

    @rule(seconds=st.sampled_from([0.05, 1.0, 30.0, 200.0, 3600.0]))
    def time_passes(self, seconds: float) -> None:
        self.lab.settle(seconds)
        self._collect()

    @precondition(lambda self: len(self.lab.net.captured) > 0)
    @rule(pick=st.integers(0, 10_000))
    def replay(self, pick: int) -> None:
        captured = self.lab.net.captured
        old = captured[pick % len(captured)]
        if old.dst in self.lab.net.hosts:
            self.lab.net.inject(old.src, old.dst, old.data)

    @precondition(lambda self: len(self.lab.net.captured) > 0)
    @rule(pick=st.integers(0, 10_000), bit=st.integers(0, 2**16))
    def flip_bit(self, pick: int, bit: int) -> None:
        captured = self.lab.net.captured
        old = captured[pick % len(captured)]
        if old.dst not in self.lab.net.hosts or not old.data:
            return
        data = bytearray(old.data)
        data[(bit // 8) % len(data)] ^= 1 << (bit % 8)
        self.lab.net.inject(old.src, old.dst, bytes(data))

    @rule(victim=st.sampled_from(NAMES), data=st.binary(max_size=400))
    def inject_garbage(self, victim: str, data: bytes) -> None:
        self.lab.net.inject(("203.0.113.66", 666), self.nodes[victim].addr, data)

    @rule(
        first=st.sampled_from([0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56]), size=st.integers(0, 300)
    )
    def inject_typed_garbage(self, first: int, size: int) -> None:
        data = bytes((first,)) + self.rng.bytes(size)
        target = NAMES[self.rng.randrange(len(NAMES))]
        self.lab.net.inject(("203.0.113.67", 667), self.nodes[target].addr, data)

    @invariant()
    def nothing_raised_and_nothing_forged(self) -> None:
        self._collect()
        for name, sim in self.nodes.items():
            assert sim.node.stats["internal_error"] == 0
            seen = self.seen[name]
            assert len(seen) == len(set(seen)), "a datagram was delivered twice"
            for sender, data in seen:
                assert data in self.sent.get((sender, sim.address), set()), "forged delivery"

    @invariant()
    def every_datagram_is_accounted_for(self) -> None:
        # Forged, replayed and corrupted datagrams never vanish silently: each one the
        # node saw ended in an accepted outcome or in a drop counter.
        for sim in self.nodes.values():
            stats = sim.node.stats
            drops = sum(n for reason, n in stats.items() if reason.startswith("drop_"))
            accepted = sum(stats[k] for k in ACCEPTED_OUTCOMES)
            assert stats["datagrams_received"] == drops + accepted


TestAdversarialNetwork = AdversarialNetwork.TestCase
TestAdversarialNetwork.settings = settings(max_examples=40, stateful_step_count=60, deadline=None)
