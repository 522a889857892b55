"""A node with many idle peers: what one busy peer's exchange costs (issue: timers with
many peers).

A public node holds up to `max_untrusted_connections` strangers with sessions besides its
trusted peers, and the binding asks `get_timer` after every call. The figure is the CPU
time of one message exchange (message out, receipt back) between the node and its one
active peer in the simulator's pump while the node also holds live, idle sessions with
IDLE other peers; the same-run baseline is the same exchange with no idle peer. The
target, ratio <= 1.2, says per-packet cost does not grow with the number of idle peers.

The idle peers' hosts leave the network once their sessions are up: the simulator's
pump asks every host for output on each step, and that cost is the simulator's, not the
node's.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import replace

from pilot_proto import (
    DeliveryConfig,
    Identity,
    IdentityRecord,
    MessageDelivered,
    Node,
    NodeConfig,
)
from pilot_proto.simulator import Network
from pilot_proto.transmit import Addr

from .framework import BenchContext, Result

__all__ = ["Hub", "run"]

#: The ratio of the figure to its no-idle-peer baseline the design aims at.
TARGET_RATIO = 1.2
IDLE = 1000


def _address(i: int) -> Addr:
    return (f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 7000)


class Hub:
    """Node `hub` with a session to `active` and to `idle` other nodes (idle thereafter)."""

    def __init__(self, idle: int) -> None:
        self.net = net = Network(seed=1, capture_limit=0)
        delivery = replace(DeliveryConfig(), auto_confirm=True)
        config = NodeConfig(delivery=delivery)
        ids = [Identity.generate(os.urandom) for _ in range(idle + 2)]
        records = [
            IdentityRecord.create(i, hostname=None, sequence=1, expires_at=2**40) for i in ids
        ]
        nodes = [Node(i, config, rng=os.urandom, wall_clock=net.wall_clock) for i in ids]
        for i, node in enumerate(nodes):
            net.add_host(node, _address(i))
        self.hub, self.active = nodes[0], nodes[1]
        for i, node in enumerate(nodes[1:], start=1):
            self.hub.add_peer(records[i], [_address(i)])
            node.add_peer(records[0], [_address(0)])
            # Every idle peer has delivery state on the hub, as after any exchange.
            node.send_message(self.hub.address, b"hello", net.now)
        if not net.run_until(lambda: all(n.has_session(self.hub.address) for n in nodes[1:]), 30):
            raise RuntimeError("not every peer got a session with the hub")
        net.run_for(0.5)  # the hellos and their receipts
        for i in range(2, idle + 2):
            net.remove_host(_address(i))
        while self.hub.next_event() is not None:
            pass
        self.payload = bytes(200)

    def exchanges(self, count: int) -> float:
        """CPU seconds per exchange: a 200-byte message to the active peer, until receipted."""
        net, hub, active, payload = self.net, self.hub, self.active, self.payload
        address = active.address
        start = time.process_time()
        for _ in range(count):
            hub.send_message(address, payload, net.now, type="binary")
            delivered = False
            while not delivered:
                if not net.step():
                    raise RuntimeError("the pump went idle before the receipt came back")
                while active.next_event() is not None:
                    pass
                while (event := hub.next_event()) is not None:
                    delivered = delivered or isinstance(event, MessageDelivered)
        return (time.process_time() - start) / count


def _figure(idle: int, count: int, rounds: int) -> tuple[float, tuple[float, ...], float]:
    """Median µs per exchange with `idle` idle peers and with none, taking turns."""
    busy, alone = Hub(idle), Hub(0)
    busy.exchanges(50)  # warm both: RTT estimates, caches
    alone.exchanges(50)
    with_idle: list[float] = []
    without: list[float] = []
    for _ in range(rounds):
        with_idle.append(busy.exchanges(count) * 1e6)
        without.append(alone.exchanges(count) * 1e6)
    return statistics.median(with_idle), tuple(with_idle), statistics.median(without)


def run(ctx: BenchContext) -> list[Result]:
    idle = 100 if ctx.quick else IDLE
    count, rounds = (100, 1) if ctx.quick else (2000, 5)
    value, samples, baseline_value = _figure(idle, count, rounds)
    baseline = Result(
        name="peers.exchange.0_idle",
        value=baseline_value,
        unit="µs",
        better="lower",
        layout="one process",
    )
    ratio = value / baseline_value
    return [
        Result(
            name=f"peers.exchange.{idle}_idle",
            value=value,
            unit="µs",
            better="lower",
            layout="one process",
            baseline=baseline.as_baseline(),
            target=f"ratio <= {TARGET_RATIO:g}",
            target_met=ratio <= TARGET_RATIO,
            samples=samples if rounds > 1 else (),
            method=(
                f"CPU time per message exchange with the active peer (simulator pump), "
                f"median of {rounds} runs of {count}, alternating with the 0-idle baseline"
            ),
        )
    ]
