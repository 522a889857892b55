"""Our bindings, two nodes in two processes: message round trips and stream goodput.

    python -m bench.workers.pilot_peer responder --binding B --seed S --peer-seed P \
        --mode echo|sink [--datagram-size N]                        # prints READY <port>
    python -m bench.workers.pilot_peer rtt --binding B --seed P --peer-seed S --port PORT \
        --size 200 --seconds 2
    python -m bench.workers.pilot_peer bulk --binding B --seed P --peer-seed S --port PORT \
        --bytes N --seconds 4 [--datagram-size N]

`B` is asyncio (on uvloop when installed, as the asyncio baselines), gevent (no
monkey-patching) or threads. Each side derives both identities from the seeds the
benchmark hands it, so no records need exchanging; each trusts the other. The session is
made (`connect`) before anything is timed.

- `rtt`: one request/reply exchange is `send_message(request)` (it returns once the
  responder's RECEIPT is back) and then `receive()` of the responder's reply (a message
  whose reply_to is the request). The responder loops `receive()` then `reply()`. The
  figure is the median time of the exchange, measured at the requester.
- `bulk`: the sender opens a stream to the responder's port, writes 256 KiB chunks until
  `--bytes` or `--seconds`, ends the stream; the responder reads everything, then writes
  back its total (8 bytes, big-endian) and ends its direction. Goodput = that total over
  the time from the first write to the total's arrival (as the aioquic baseline does).
  `--datagram-size` sets `DeliveryConfig(forced_datagram_size=N)` on both nodes; without
  it the transport finds the path MTU itself, and the sender reports the datagram size
  the session ended with.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import Any

from pilot_proto import DeliveryConfig, Identity, IdentityRecord, NodeConfig

from .common import HOST, RttSamples, announce_ready, install_uvloop, report, watch_parent

BINDINGS = ("asyncio", "gevent", "threads")
STREAM_PORT = 9
_CHUNK = 256 * 1024
_WARMUP = 50
_CONNECT_TIMEOUT = 20.0


class Setup:
    """What both roles derive from the command line: identities, the peer, the config."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.identity = Identity.from_private_bytes(bytes.fromhex(args.seed))
        peer = Identity.from_private_bytes(bytes.fromhex(args.peer_seed))
        self.peer_record = IdentityRecord.create(
            peer, hostname=None, sequence=1, expires_at=int(time.time()) + 86400
        )
        self.peer = self.peer_record.address
        delivery = DeliveryConfig()
        if args.datagram_size:
            delivery = replace(delivery, forced_datagram_size=args.datagram_size)
        self.config = NodeConfig(delivery=delivery)
        self.endpoints = [(HOST, args.port)] if args.port else []
        #: Node keyword arguments: the busy-poll window when the command line sets one.
        self.options: dict[str, Any] = (
            {} if args.busy_poll_us is None else {"busy_poll": args.busy_poll_us * 1e-6}
        )


def _total(data: bytes) -> int:
    return int.from_bytes(data[-8:], "big")


def _cpu_per_trip(cpu_start: float, trips: int) -> float:
    """This process's CPU time per round trip, in microseconds (where the time goes)."""
    return (time.process_time() - cpu_start) / max(trips, 1) * 1e6


def _datagrams_per_trip(
    before: dict[str, int], after: dict[str, int], trips: int
) -> dict[str, float]:
    """Datagrams this node sent and received per exchange (the raw echo baseline is one
    each way): what the figure compares like with like."""
    return {
        f"datagrams_{kind}_per_trip": (after.get(key, 0) - before.get(key, 0)) / max(trips, 1)
        for kind, key in (("sent", "datagrams_sent"), ("received", "datagrams_received"))
    }


def _goodput(
    total: int, elapsed: float, info: Any, cpu_start: float, stats: dict[str, int]
) -> dict[str, object]:
    """The transfer's figure, with what tells code from a busy machine: this process's
    CPU time over the transfer, and the packets the sender lost."""
    return {
        "bytes": total,
        "seconds": elapsed,
        "cpu_seconds": time.process_time() - cpu_start,
        "lost_packets": stats.get("lost_packets", 0),
        "bytes_per_second": total / elapsed,
        "datagram_size": getattr(info, "datagram_size", None),
    }


# -- asyncio --------------------------------------------------------------------------------


def run_asyncio(role: str, args: argparse.Namespace, setup: Setup) -> None:
    import asyncio

    from pilot_asyncio import Node, Stream

    loop_name = install_uvloop()

    async def respond(node: Node) -> None:
        if args.mode == "echo":
            while True:
                message = await node.receive()
                await node.reply(message, message.data, type=message.type)
        while True:
            stream = await node.accept(STREAM_PORT)
            asyncio.get_running_loop().create_task(sink(stream))

    async def sink(stream: Stream) -> None:
        total = 0
        while chunk := await stream.read():
            total += len(chunk)
        await stream.write(total.to_bytes(8, "big"), end=True)

    async def rtt(node: Node) -> dict[str, object]:
        samples = RttSamples()
        payload = bytes(args.size)
        clock = time.perf_counter
        end = clock() + args.seconds
        cpu = time.process_time()
        counters = node.stats()
        for done in range(1, _WARMUP + args.max_count + 1):
            start = clock()
            await node.send_message(setup.peer, payload, type="binary")
            await node.receive()
            now = clock()
            if done > _WARMUP:
                samples.add(now - start)
                if now >= end:
                    break
        return samples.summary(
            loop=loop_name, cpu_us=_cpu_per_trip(cpu, done),
            **_datagrams_per_trip(counters, node.stats(), done),
        )  # fmt: skip

    async def bulk(node: Node) -> dict[str, object]:
        chunk = bytes(_CHUNK)
        stream = node.open_stream(setup.peer, STREAM_PORT)
        clock = time.perf_counter
        cpu = time.process_time()
        start = clock()
        end = start + args.seconds
        sent = 0
        while sent < args.bytes and clock() < end:
            await stream.write(chunk)
            sent += len(chunk)
        stream.end()
        answer = b""
        while len(answer) < 8:
            data = await stream.read()
            if not data:
                break
            answer += data
        elapsed = clock() - start
        info = node.peer_info(setup.peer)
        return {**_goodput(_total(answer), elapsed, info, cpu, node.stats()), "sent": sent}

    async def main() -> None:
        async with Node(setup.identity, setup.config, host=HOST, **setup.options) as node:
            node.add_peer(setup.peer_record, setup.endpoints)
            if role == "responder":
                node.listen(STREAM_PORT)
                announce_ready(node.endpoint[1])
                await respond(node)
                return
            await node.connect(setup.peer, timeout=_CONNECT_TIMEOUT)
            result = await (rtt(node) if role == "rtt" else bulk(node))
            report({**result, "binding": "asyncio", "loop": loop_name})

    asyncio.run(main())


# -- gevent and threads (the same blocking API) ---------------------------------------------


def run_blocking(binding: str, role: str, args: argparse.Namespace, setup: Setup) -> None:
    if binding == "gevent":
        import gevent  # type: ignore[import-untyped]
        from pilot_gevent import Node

        def spawn(fn: Any, *fn_args: Any) -> None:
            gevent.spawn(fn, *fn_args)
    else:
        import threading

        from pilot_threads import Node  # type: ignore[assignment]

        def spawn(fn: Any, *fn_args: Any) -> None:
            threading.Thread(target=fn, args=fn_args, daemon=True).start()

    def sink(stream: Any) -> None:
        total = 0
        while chunk := stream.read():
            total += len(chunk)
        stream.write(total.to_bytes(8, "big"), end=True)

    def respond(node: Any) -> None:
        if args.mode == "echo":
            while True:
                message = node.receive()
                node.reply(message, message.data, type=message.type)
        while True:
            spawn(sink, node.accept(STREAM_PORT))

    def rtt(node: Any) -> dict[str, object]:
        samples = RttSamples()
        payload = bytes(args.size)
        clock = time.perf_counter
        end = clock() + args.seconds
        cpu = time.process_time()
        counters = node.stats()
        for done in range(1, _WARMUP + args.max_count + 1):
            start = clock()
            node.send_message(setup.peer, payload, type="binary")
            node.receive()
            now = clock()
            if done > _WARMUP:
                samples.add(now - start)
                if now >= end:
                    break
        return samples.summary(
            loop=binding, cpu_us=_cpu_per_trip(cpu, done),
            **_datagrams_per_trip(counters, node.stats(), done),
        )  # fmt: skip

    def bulk(node: Any) -> dict[str, object]:
        chunk = bytes(_CHUNK)
        stream = node.open_stream(setup.peer, STREAM_PORT)
        clock = time.perf_counter
        cpu = time.process_time()
        start = clock()
        end = start + args.seconds
        sent = 0
        while sent < args.bytes and clock() < end:
            stream.write(chunk)
            sent += len(chunk)
        stream.end()
        answer = b""
        while len(answer) < 8:
            data = stream.read()
            if not data:
                break
            answer += data
        elapsed = clock() - start
        info = node.peer_info(setup.peer)
        return {**_goodput(_total(answer), elapsed, info, cpu, node.stats()), "sent": sent}

    with Node(setup.identity, setup.config, host=HOST, **setup.options) as node:
        node.add_peer(setup.peer_record, setup.endpoints)
        if role == "responder":
            node.listen(STREAM_PORT)
            announce_ready(node.endpoint[1])
            respond(node)
            return
        node.connect(setup.peer, timeout=_CONNECT_TIMEOUT)
        result = rtt(node) if role == "rtt" else bulk(node)
        report({**result, "binding": binding, "loop": binding})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.workers.pilot_peer")
    parser.add_argument("role", choices=("responder", "rtt", "bulk"))
    parser.add_argument("--binding", choices=BINDINGS, required=True)
    parser.add_argument("--seed", required=True, help="this node's identity seed, hex")
    parser.add_argument("--peer-seed", required=True, help="the other node's seed, hex")
    parser.add_argument("--port", type=int, default=0, help="the responder's UDP port")
    parser.add_argument("--mode", choices=("echo", "sink"), default="echo")
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--bytes", type=int, default=200 * 1024 * 1024)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--max-count", type=int, default=1_000_000)
    parser.add_argument("--datagram-size", type=int, default=0)
    parser.add_argument("--lifetime", type=float, default=120.0)
    parser.add_argument("--busy-poll-us", type=float, default=None,
                        help="both nodes' busy-poll window (default: the binding's)")
    args = parser.parse_args()
    watch_parent(args.lifetime)
    setup = Setup(args)
    if args.binding == "asyncio":
        run_asyncio(args.role, args, setup)
    else:
        run_blocking(args.binding, args.role, args, setup)


if __name__ == "__main__":
    main()
