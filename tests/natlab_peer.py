"""One NAT-lab host: a real Node on a real UDP socket with a rendezvous client, run inside
a network namespace by tests/natlab.py (`ip netns exec NS python natlab_peer.py ...`).

It discovers its NAT against the rendezvous' two addresses, registers, accepts the one
peer it is told about, applies introductions the way the daemon does (`add_peer` then
`introduce(..., relay=server)`), and obeys one JSON command per stdin line, answering on
stdout with one JSON object per line:

- {"cmd": "introduce"}: ask the rendezvous to introduce us to the peer;
- {"cmd": "messages", "count": N}: send N numbered messages to the peer;
- {"cmd": "stream", "bytes": N}: send N pseudo-random bytes on a stream (a file);
- {"cmd": "status"}: path, reason, endpoint, rtt, NAT, messages and stream received.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time
from collections import Counter
from typing import Any

from pilot_proto.config import NodeConfig, PathConfig, SessionConfig
from pilot_proto.delivery import (
    MessageReceived,
    StreamEnded,
    StreamOpened,
    StreamReadable,
    StreamWritable,
)
from pilot_proto.driver import canonical_address, socket_address
from pilot_proto.events import NatDiscovered, PathChanged
from pilot_proto.identity import Identity
from pilot_proto.node import Node
from pilot_proto.rendezvous import (
    ClientConfig,
    IntroductionReceived,
    Registered,
    RendezvousClient,
    decode_server_key,
)
from pilot_proto.stun_client import ClassifierConfig

STREAM_PORT = 7


def pattern(n: int) -> bytes:
    """The bytes a stream of n bytes carries: deterministic, so both ends can hash them."""
    block = hashlib.sha256(b"natlab").digest() * 2048  # 64 KiB
    whole, rest = divmod(n, len(block))
    return block * whole + block[:rest]


class Peer(asyncio.DatagramProtocol):
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loop = asyncio.get_running_loop()
        self.identity = Identity.from_private_bytes(bytes.fromhex(args.seed))
        paths = PathConfig(**json.loads(args.paths))
        self.node = Node(
            self.identity,
            NodeConfig(session=SessionConfig(handshake_retry=1.0), paths=paths),
            rng=os.urandom,
            wall_clock=time.time,
        )
        host, _, rest = args.rendezvous.rpartition(":")
        port, _, key = rest.partition("#")
        self.server = (host, int(port))
        self.client = RendezvousClient(
            self.node,
            self.identity,
            self.server,
            decode_server_key(key),
            hostname=None,
            public=False,
            candidates=[],
            rng=os.urandom,
            wall_clock=time.time,
            config=ClientConfig(heartbeat_interval=args.heartbeat),
            allow_list=[args.peer],
        )
        self.transport: asyncio.DatagramTransport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.nat: dict[str, Any] | None = None
        self.registered = False
        self.received: Counter[bytes] = Counter()
        self.paths_seen: list[str] = []
        self.stream_hash = hashlib.sha256()
        self.stream_bytes = 0
        self.stream_done = False
        self.outgoing: tuple[int, memoryview] | None = None
        # The core refuses streams to ports nobody listens on: without this the peer's
        # "stream" never delivered a byte (the old lab's "stall after the switch").
        self.node.listen(STREAM_PORT)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        local = canonical_address(transport.get_extra_info("sockname"))
        now = time.monotonic()
        self.node.set_local_candidates([local], now)
        self.client.set_candidates([local], now)
        classifier = ClassifierConfig(rto=0.2, rc=3, rm=3, test_filtering=False)
        self.node.discover_nat(self.server, now, config=classifier)
        self.client.start(now)
        self.flush()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.node.receive_datagram(data, canonical_address(addr), time.monotonic())
        self.flush()

    def on_timer(self) -> None:
        self.timer = None
        now = time.monotonic()
        self.node.handle_timer(now)
        self.client.handle_timer(now)
        self.flush()

    def flush(self) -> None:
        now = time.monotonic()
        for _ in range(16):
            busy = False
            while (event := self.node.next_event()) is not None:
                busy = True
                if not self.client.handle_event(event, now):
                    self.on_event(event, now)
            while (client_event := self.client.next_event()) is not None:
                busy = True
                self.on_client_event(client_event, now)
            self.pump_stream(now)
            out = self.node.datagrams_to_send(now)
            assert self.transport is not None
            for t in out:
                target = socket_address(t.addr, False)
                if target is None:
                    continue
                if t.ttl is not None:
                    sock = self.transport.get_extra_info("socket")
                    sock.setsockopt(0, 2, t.ttl)  # IP_TTL for this one datagram
                    self.transport.sendto(t.data, target)
                    sock.setsockopt(0, 2, 64)
                else:
                    self.transport.sendto(t.data, target)
            if not out and not busy:
                break
        due = [t for t in (self.node.get_timer(), self.client.get_timer()) if t is not None]
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if due:
            self.timer = self.loop.call_later(max(min(due) - time.monotonic(), 0.0005),
                                              self.on_timer)

    def on_client_event(self, event: object, now: float) -> None:
        if isinstance(event, Registered):
            self.registered = True
            self.report_ready()
        elif isinstance(event, IntroductionReceived):
            assert self.client.server_address is not None
            self.node.add_peer(event.record)
            self.node.introduce(event.record.address, event.candidates, now,
                                start_delay=event.start_delay, probe_limit=event.probe_limit,
                                relay=self.client.server_address)
            self.emit({"event": "introduced", "candidates": [list(c) for c in event.candidates]})

    def on_event(self, event: object, now: float) -> None:
        if isinstance(event, NatDiscovered):
            self.nat = {"nat_type": event.nat_type, "mapping": event.mapping,
                        "reflexive": [list(a) for a in event.reflexive]}
            self.report_ready()
        elif isinstance(event, MessageReceived):
            self.received[event.data] += 1
            self.node.confirm_persisted(event.address, event.message_id, now)
        elif isinstance(event, PathChanged):
            self.paths_seen.append(event.path)
            self.emit({"event": "path", "path": event.path, "reason": event.reason,
                       "t": time.monotonic()})
        elif isinstance(event, StreamOpened | StreamReadable):
            data = self.node.read_stream(event.address, event.stream_id)
            self.stream_hash.update(data)
            self.stream_bytes += len(data)
        elif isinstance(event, StreamEnded):
            self.stream_done = True
            self.emit({"event": "stream_done", "bytes": self.stream_bytes,
                       "sha256": self.stream_hash.hexdigest()})
        elif isinstance(event, StreamWritable):
            pass  # pump_stream writes what fits after every event

    def pump_stream(self, now: float) -> None:
        if self.outgoing is None:
            return
        stream_id, rest = self.outgoing
        room = self.node.stream_send_capacity(self.args.peer, stream_id)
        if room <= 0:
            return
        chunk, rest = rest[:room], rest[room:]
        self.node.send_stream(self.args.peer, stream_id, bytes(chunk), now,
                              end_stream=not rest)
        self.outgoing = (stream_id, rest) if rest else None

    def report_ready(self) -> None:
        if self.registered and self.nat is not None:
            self.emit({"event": "ready", "address": self.identity.address, "nat": self.nat})

    def emit(self, obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def command(self, line: str) -> None:
        cmd = json.loads(line)
        now = time.monotonic()
        name = cmd["cmd"]
        if name == "introduce":
            self.client.request_introduction(self.args.peer, now)
        elif name == "messages":
            for i in range(cmd["count"]):
                self.node.send_message(self.args.peer, f"m{i}".encode(), now)
        elif name == "stream":
            stream_id = self.node.open_stream(self.args.peer, STREAM_PORT, now)
            self.outgoing = (stream_id, memoryview(pattern(cmd["bytes"])))
        elif name == "status":
            status: dict[str, Any] = {"event": "status", "nat": self.nat}
            if self.args.peer in self.node.peers():
                info = self.node.peer_info(self.args.peer)
                status.update(path=info.path, reason=info.reason, rtt=info.rtt,
                              endpoint=list(info.endpoint) if info.endpoint else None)
            status["received"] = {k.decode(): v for k, v in self.received.items()}
            status["paths_seen"] = self.paths_seen
            self.emit(status)
        self.flush()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", required=True)
    parser.add_argument("--peer", required=True)
    parser.add_argument("--rendezvous", required=True)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--paths", default="{}")
    parser.add_argument("--heartbeat", type=float, default=20.0)
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(
        lambda: Peer(args), local_addr=(host, int(port))
    )
    sock = transport.get_extra_info("socket")
    sock.setsockopt(1, 32, 4 << 20)  # SO_SNDBUFFORCE
    sock.setsockopt(1, 33, 4 << 20)  # SO_RCVBUFFORCE
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip():
            peer.command(line.decode())
    transport.close()


if __name__ == "__main__":
    asyncio.run(main())
