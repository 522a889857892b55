"""The message exchange of `bindings.<b>.message_rtt`, without sockets or an event loop:
two shared Drivers in one process make the same calls, in the same order, as the asyncio
binding and `bench/workers/pilot_peer.py` do, so what it costs is the core and the driver
alone (issue 4: where an exchange's CPU goes, and what a change to it saves).

One exchange: the requester's `send_message(request)` and poll (one datagram); the
responder reads it, `route` completes its waiting `receive`, it replies and waits for the
next message, then polls (RECEIPT + reply + ACK: one datagram); the requester reads it,
`route` completes the send, its `receive` takes the reply (auto-confirmed), and the next
request's poll carries that RECEIPT.

    .venv/bin/python -m bench.exchange --trips 2000            # µs per exchange (CPU)
    .venv/bin/python -m bench.exchange --trips 2000 --profile  # cProfile: where it goes
    .venv/bin/python -m bench.exchange --callgrind             # instructions per exchange

`--callgrind` runs this module twice under `valgrind --tool=callgrind` (two trip counts)
and divides the difference, so setup (keys, handshake) is not counted: a count that is
the same from run to run on a noisy machine, unlike a clock.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time

from pilot_proto import Identity, IdentityRecord, Node, NodeConfig, Transmit
from pilot_proto.delivery import MessageReceived
from pilot_proto.driver import Driver, Pending

from . import pure
from .framework import core_build

SIZE = 200
#: The virtual clock's step per hop: about a loopback exchange, so RTT estimates and
#: timers see what they see in the bench.
HOP = 50e-6
_SEED_A, _SEED_B = bytes(range(32)), bytes(range(1, 33))
_ADDRS = (("127.0.0.1", 40001), ("127.0.0.1", 40002))


def _notify(pending: Pending) -> None:
    """The binding's wake-up; the loop below looks at each Pending itself."""


class Exchange:
    """Requester `a` and responder `b`, connected, the responder waiting for a message."""

    def __init__(self, config: NodeConfig | None = None) -> None:
        config = config or NodeConfig()
        self.now = 1000.0
        ids = [Identity.from_private_bytes(seed) for seed in (_SEED_A, _SEED_B)]
        self.a, self.b = (
            Driver(Node(i, config, rng=os.urandom, wall_clock=lambda: 1.7e9)) for i in ids
        )
        for me, other in ((self.a, 1), (self.b, 0)):
            record = IdentityRecord.create(ids[other], hostname=None, sequence=1, expires_at=2**40)
            me.add_peer(record, [_ADDRS[other]], True)
        self.address_b = ids[1].address
        connected = self.a.connect(self.address_b, self.now, 5.0, _notify)
        for _ in range(100):
            if connected.done:
                break
            self._carry(self.b, 1, self.a.poll(self.now))
            self._carry(self.a, 0, self.b.poll(self.now))
        connected.outcome()
        self.waiting = self.b.receive_message(self.now, None, _notify)
        self.payload = bytes(SIZE)

    def _carry(self, receiver: Driver, to: int, out: list[Transmit]) -> None:
        self.now += HOP
        for transmit in out:
            receiver.datagram_received(transmit.data, _ADDRS[1 - to], self.now)

    def run(self, trips: int) -> int:
        """`trips` exchanges; returns the datagrams sent (2 per exchange when all is well)."""
        a, b, address_b, payload = self.a, self.b, self.address_b, self.payload
        datagrams = 0
        for _ in range(trips):
            sent = a.send_message(address_b, payload, self.now, "text", None, 30.0, _notify)
            out = a.poll(self.now)
            datagrams += len(out)
            self.now += HOP
            for transmit in out:
                b.datagram_received(transmit.data, _ADDRS[0], self.now)
            if b.route(self.now):  # the responder's receive completed: it replies
                request = self.waiting.outcome()
                b.send_message(
                    request.address, request.data, self.now, request.type,
                    request.message_id, 30.0, _notify,
                )
                self.waiting = b.receive_message(self.now, None, _notify)
            out = b.poll(self.now)
            datagrams += len(out)
            self.now += HOP
            for transmit in out:
                a.datagram_received(transmit.data, _ADDRS[1], self.now)
            a.route(self.now)
            if not sent.done:
                raise RuntimeError("the RECEIPT did not come back with the reply")
            reply = a.receive_message(self.now, None, _notify)
            if not reply.done or not isinstance(reply.result, MessageReceived):
                raise RuntimeError("the reply did not come back in one datagram")
        return datagrams


build = core_build


def _callgrind_instructions(trips: int) -> int:
    # Under bench.pure (the pure baseline of a compiled tree) the child runs under it too.
    runner = ["bench.pure", "bench.exchange"] if pure.active() else ["bench.exchange"]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             sys.executable, "-m", *runner, "--trips", str(trips), "--quiet"],
            check=True, capture_output=True,
        )
        with open(out) as f:
            text = f.read()
    match = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    if match is None:
        raise RuntimeError("callgrind wrote no total")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.exchange")
    parser.add_argument("--trips", type=int, default=2000)
    parser.add_argument("--profile", action="store_true", help="cProfile, sorted by own time")
    parser.add_argument("--callgrind", action="store_true",
                        help="instructions per exchange (valgrind, two runs)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--json", action="store_true",
                        help='one line: {"us": CPU µs per exchange, "build": "pure"|"mypyc"}')
    args = parser.parse_args()
    if args.callgrind:
        low, high = 200, 200 + args.trips
        per = (_callgrind_instructions(high) - _callgrind_instructions(low)) / args.trips
        print(f"{per:,.0f} instructions per exchange (both sides, {args.trips} exchanges, "
              f"{build()} build)")
        return
    exchange = Exchange()
    exchange.run(50)  # warm: RTT estimate, caches
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        exchange.run(args.trips)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return
    start = time.process_time()
    datagrams = exchange.run(args.trips)
    cpu = time.process_time() - start
    if args.json:
        print(json.dumps({"us": cpu / args.trips * 1e6, "build": build()}))
    elif not args.quiet:
        print(f"{cpu / args.trips * 1e6:.1f} µs CPU per exchange (both sides), "
              f"{datagrams / args.trips:g} datagrams per exchange, {build()} build")


if __name__ == "__main__":
    main()
