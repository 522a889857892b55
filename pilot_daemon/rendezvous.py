"""`pilotctl rendezvous serve`: the rendezvous server process (DESIGN 6).

Runs in the foreground until SIGTERM or SIGINT, then exits 0. State lives in
`$PILOT_HOME` (created 0700 if missing): the server's identity (`rendezvous.key`, 0600,
so its key and address survive restarts) and the registry (`rendezvous.db`, SQLite).
Once the socket is bound it prints `HOST:PORT#KEY` as its first line of output (KEY: the
X25519 static public key in lowercase hex, what clients pin), or under `--json`
`{"status":"ok","data":{"listen","key","address","rendezvous","listen2"}}`.

The protocol is all in `pilot_proto.rendezvous.RendezvousServer`; this module is I/O:
a core `Node` on an asyncio datagram endpoint, one timer, signals. It drives the core
directly rather than through `pilot_asyncio.Node`, which builds its own core Node
without a trust policy and routes every event itself; the server needs the public node
with `trust_policy` and every event first.

Both sockets answer STUN Binding requests (RFC 8489; RFC 5780's OTHER-ADDRESS and
RESPONSE-ORIGIN name the other socket, and a CHANGE-REQUEST for IP and port is answered
from it), so nodes classify their NAT against the two addresses. RELAY datagrams
(first byte 0x57) on the main socket go to `RendezvousServer.relay_datagram`, which
forwards them between introduced pairs (DESIGN 6).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

from pilot_proto import DeliveryConfig, Identity, Node, NodeConfig
from pilot_proto.config import PathConfig
from pilot_proto.driver import canonical_address, socket_address
from pilot_proto.errors import InvalidIdentity, KeyFilePermissionError, LocalProtocolError
from pilot_proto.relay import RELAY
from pilot_proto.rendezvous import RendezvousServer, ServerConfig, encode_server_key
from pilot_proto.stun_server import answer_binding_pair
from pilot_proto.transmit import Addr

from .daemon import bind_udp
from .errors import ErrorCode, PilotctlError, ok_envelope
from .names import Endpoint
from .paths import StateDir, ensure_private_dir
from .rendezvous_store import SqliteRegistryStore

__all__ = ["DATABASE_NAME", "KEY_NAME", "serve"]

KEY_NAME = "rendezvous.key"
DATABASE_NAME = "rendezvous.db"
#: The largest request a client may send; big enough for an allow list of 8192 peers.
MAX_REQUEST_BYTES = 256 * 1024
#: A core timer still due right after it was handled is retried this much later.
_STUCK_TIMER_DELAY = 0.001


def serve(listen: Endpoint, listen2: Endpoint | None, state: StateDir, json_output: bool) -> int:
    """Run the server until SIGTERM or SIGINT; 0 on a clean stop. Failures before it is
    ready raise PilotctlError (pilotctl prints them with their code and exits 1)."""
    ensure_private_dir(state.root, parents=True)
    identity = load_identity(state.root / KEY_NAME)
    sock = bind_udp(listen)
    sock2 = None
    try:
        sock2 = bind_udp(listen2) if listen2 is not None else None
        store = SqliteRegistryStore(state.root / DATABASE_NAME)
        try:
            return asyncio.run(_serve(identity, sock, sock2, store, json_output))
        finally:
            store.close()
    finally:
        sock.close()
        if sock2 is not None:
            sock2.close()


def load_identity(path: Path) -> Identity:
    """The server's identity: created on first start (0600), the same ever after."""
    try:
        if path.exists():
            return Identity.load(path)
        identity = Identity.generate(os.urandom)
        identity.save(path)
        return identity
    except KeyFilePermissionError as exc:
        raise PilotctlError(ErrorCode.INVALID_ARGUMENT, str(exc), f"chmod 600 {path}") from None
    except InvalidIdentity as exc:
        raise PilotctlError(
            ErrorCode.INTERNAL,
            str(exc),
            "restore the key file from a backup; a new key means every client must re-pin",
        ) from None


def server_node(identity: Identity) -> Node:
    """A public node that answers every client proving its key (DESIGN 6)."""
    delivery = DeliveryConfig(max_message_size=MAX_REQUEST_BYTES, message_receive_window=1 << 20)
    # Clients keep their own NAT mappings alive; the server sends no keepalives.
    return Node(
        identity,
        NodeConfig(public=True, delivery=delivery, paths=PathConfig(keepalive_interval=None)),
        rng=os.urandom,
        wall_clock=time.time,
        trust_policy=lambda address: True,
    )


def format_endpoint(sockname: tuple[Any, ...]) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _serve(
    identity: Identity,
    sock: socket.socket,
    sock2: socket.socket | None,
    store: SqliteRegistryStore,
    json_output: bool,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    node = server_node(identity)
    server = RendezvousServer(
        node, store, wall_clock=time.time, config=ServerConfig(max_request_size=MAX_REQUEST_BYTES)
    )
    pump = ServerPump(loop, node, server, sock.family == socket.AF_INET6)
    pump.local = canonical_address(sock.getsockname())
    transport, _ = await loop.create_datagram_endpoint(lambda: pump, sock=sock)
    second = None
    if sock2 is not None:
        pump.other = canonical_address(sock2.getsockname())
        protocol = SecondAddress(pump)
        second, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock2)
        pump.second = second
    _announce(identity, sock, sock2, json_output)
    try:
        await stop.wait()
    finally:
        pump.close()
        transport.close()
        if second is not None:
            second.close()
    return 0


def _announce(
    identity: Identity, sock: socket.socket, sock2: socket.socket | None, json_output: bool
) -> None:
    listen = format_endpoint(sock.getsockname())
    key = encode_server_key(identity.static_public)
    if json_output:
        data = {
            "listen": listen,
            "key": key,
            "address": identity.address,
            "rendezvous": f"{listen}#{key}",
            "listen2": format_endpoint(sock2.getsockname()) if sock2 is not None else None,
        }
        line = json.dumps(ok_envelope(data))
    else:
        line = f"{listen}#{key}"
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class ServerPump(asyncio.DatagramProtocol):
    """Feeds the socket to the Node, the Node's events to the server, and sends what the
    Node queues; one timer for both. Everything runs on the loop, one call at a time."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        node: Node,
        server: RendezvousServer,
        ipv6_socket: bool,
    ) -> None:
        self.loop = loop
        self.node = node
        self.server = server
        self.ipv6_socket = ipv6_socket
        self.stats: Counter[str] = Counter()
        self.transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_scheduled = False
        #: The two STUN addresses, and the `--listen2` transport (None without one).
        self.local: Addr | None = None
        self.other: Addr | None = None
        self.second: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: CPython's selector transport does not subclass
        # DatagramTransport, though it is one.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            source = canonical_address(addr)
        except LocalProtocolError:
            self.stats["drop_bad_source"] += 1
            return
        if data and data[0] < 4:
            self.answer_stun(data, source, self.local, self.other, self.transport, self.second)
            return
        if data and data[0] == RELAY:
            forward = self.server.relay_datagram(data, source, time.monotonic())
            if forward is not None:
                self._send(self.transport, forward.data, forward.addr)
            return
        self.node.receive_datagram(data, source, time.monotonic())
        # Datagrams that arrive together are answered in one flush.
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def error_received(self, exc: Exception) -> None:
        self.stats["socket_errors"] += 1  # ICMP errors from clients that went away

    def answer_stun(
        self,
        data: bytes,
        source: Addr,
        local: Addr | None,
        other: Addr | None,
        here: asyncio.DatagramTransport | None,
        there: asyncio.DatagramTransport | None,
    ) -> None:
        if local is None:
            return
        answer = answer_binding_pair(data, source, local, other if there is not None else None)
        if answer is None:
            self.stats["stun_unanswered"] += 1
            return
        transmit, from_other = answer
        self.stats["stun_answered"] += 1
        self._send(there if from_other else here, transmit.data, transmit.addr)

    def _send(self, transport: asyncio.DatagramTransport | None, data: bytes, addr: Addr) -> None:
        if transport is None or transport.is_closing():
            return
        target = socket_address(addr, self.ipv6_socket)
        if target is None:
            self.stats["drop_unreachable_family"] += 1
            return
        transport.sendto(data, target)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        now = time.monotonic()
        self.node.handle_timer(now)
        self.server.handle_timer(now)
        self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.transport is None or self.transport.is_closing():
            return
        now = time.monotonic()
        # Answering queues datagrams; flushing them can close sessions, whose events may
        # queue more. A few rounds settle it; whatever is left waits for the next wake-up.
        for _ in range(8):
            routed = self._route_events(now)
            transmits = self.node.datagrams_to_send(now)
            for transmit in transmits:
                target = socket_address(transmit.addr, self.ipv6_socket)
                if target is None:
                    self.stats["drop_unreachable_family"] += 1
                    continue
                self.transport.sendto(transmit.data, target)
            if not transmits and not routed:
                break
        self._arm(now)

    def _route_events(self, now: float) -> int:
        count = 0
        while (event := self.node.next_event()) is not None:
            count += 1
            if not self.server.handle_event(event, now):
                self.stats["events_ignored"] += 1
        return count

    def _arm(self, now: float) -> None:
        due = [t for t in (self.node.get_timer(), self.server.get_timer()) if t is not None]
        if not due:
            return
        wanted = max(min(due), now + _STUCK_TIMER_DELAY) if min(due) <= now else min(due)
        if self._timer_at is not None and self._timer_at <= wanted:
            return  # an earlier wake-up is armed; it re-arms after it fires
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = wanted
        self._timer = self.loop.call_later(max(wanted - time.monotonic(), 0.0), self._on_timer)

    def close(self) -> None:
        """Tell connected clients we are going (a CLOSE each), then stop the timer."""
        now = time.monotonic()
        self.node.close(now)
        self._flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class SecondAddress(asyncio.DatagramProtocol):
    """The `--listen2` socket: STUN only (RFC 5780). A CHANGE-REQUEST that arrives here
    is answered from the main socket; anything but STUN is counted and dropped."""

    def __init__(self, pump: ServerPump) -> None:
        self.pump = pump

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        pump = self.pump
        try:
            source = canonical_address(addr)
        except LocalProtocolError:
            pump.stats["drop_bad_source"] += 1
            return
        if not data or data[0] >= 4:
            pump.stats["listen2_dropped"] += 1
            return
        pump.answer_stun(data, source, pump.other, pump.local, pump.second, pump.transport)
