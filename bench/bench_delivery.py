"""Reliable delivery through two real Nodes in the simulator's pump (issue 3).

One process drives both sides over a perfect in-memory link, so the figures are pure
core cost: framing, ACKs, loss recovery bookkeeping, congestion control and encryption.
Each is compared with raw AES-GCM seal+open of the same bytes in the same run.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

from pilot_proto import (
    DeliveryConfig,
    Identity,
    IdentityRecord,
    MessageDelivered,
    Node,
    NodeConfig,
    StreamOpened,
    StreamReadable,
)
from pilot_proto.simulator import Network

from .bench_crypto import MIB, aesgcm_baseline, raw_aesgcm_rate
from .framework import Baseline, BenchContext, Result

PORT = 9


def _pair(delivery: DeliveryConfig) -> tuple[Network, Node, Node]:
    net = Network(seed=1, capture_limit=0)
    config = NodeConfig(delivery=delivery)
    ids = [Identity.generate(os.urandom) for _ in range(2)]
    nodes = [Node(i, config, rng=os.urandom, wall_clock=net.wall_clock) for i in ids]
    addrs = [("192.0.2.1", 1), ("192.0.2.2", 2)]
    for node, addr in zip(nodes, addrs, strict=True):
        net.add_host(node, addr)
    for me, other, other_addr in ((0, 1, addrs[1]), (1, 0, addrs[0])):
        record = IdentityRecord.create(ids[other], hostname=None, sequence=1, expires_at=2**40)
        nodes[me].add_peer(record, [other_addr])
    nodes[0].connect(nodes[1].address, net.now)
    net.run_until(lambda: nodes[0].has_session(nodes[1].address), 5)
    return net, nodes[0], nodes[1]


def stream_goodput(datagram_size: int, total: int) -> float:
    """MiB/s of CPU time moving `total` bytes over one stream at a fixed datagram size."""
    net, a, b = _pair(DeliveryConfig(forced_datagram_size=datagram_size))
    b.listen(PORT)
    a_address, b_address = a.address, b.address  # the application's loop, not core cost
    stream = a.open_stream(b_address, PORT, net.now)
    chunk = bytes(256 * 1024)
    sent = received = 0
    start = time.perf_counter()
    while received < total:
        room = a.stream_send_capacity(b_address, stream) if sent < total else 0
        if room:
            n = min(room, total - sent, len(chunk))
            a.send_stream(b_address, stream, chunk[:n], net.now, end_stream=sent + n == total)
            sent += n
        net.step()
        while (event := b.next_event()) is not None:
            if isinstance(event, StreamReadable | StreamOpened):
                received += len(b.read_stream(a_address, event.stream_id))
        while a.next_event() is not None:
            pass
    return total / (time.perf_counter() - start) / MIB


def message_rate(count: int, size: int = 200) -> float:
    """Messages per second of CPU time, sent until every receipt is back."""
    net, a, b = _pair(replace(DeliveryConfig(), auto_confirm=True))
    payload = bytes(size)
    delivered = 0
    start = time.perf_counter()
    for _ in range(count):
        a.send_message(b.address, payload, net.now, type="binary")
    while delivered < count:
        if not net.step():
            break
        while b.next_event() is not None:
            pass
        while (event := a.next_event()) is not None:
            delivered += isinstance(event, MessageDelivered)
    elapsed = time.perf_counter() - start
    if delivered < count:
        raise RuntimeError(f"only {delivered} of {count} messages were receipted")
    return count / elapsed


def run(ctx: BenchContext) -> list[Result]:
    total = 8 * MIB if ctx.quick else 128 * MIB
    results = []
    for size, target in ((1200, 40.0), (64000, 400.0)):
        baseline = aesgcm_baseline(ctx, 1200 if size == 1200 else 64000)
        value = stream_goodput(size, total if size == 64000 else total // 4)
        results.append(
            Result(
                name=f"delivery.stream_goodput.{size}B",
                value=value,
                unit="MiB/s",
                better="higher",
                layout="one process",
                baseline=baseline,
                target=f">= {target:g} MiB/s",
                target_met=value >= target,
            )
        )
    count = 2000 if ctx.quick else 50_000
    seconds = 0.05 if ctx.quick else ctx.seconds
    seal_open = raw_aesgcm_rate(200, seconds) * MIB / 200
    rate = message_rate(count)
    results.append(
        Result(
            name="delivery.messages.200B",
            value=rate,
            unit="messages/s",
            better="higher",
            layout="one process",
            baseline=Baseline("crypto.aesgcm_seal_open.200B", seal_open, "messages/s"),
            target=">= 30000 messages/s",
            target_met=rate >= 30_000,
        )
    )
    return results
