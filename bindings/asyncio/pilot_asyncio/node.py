"""A pilot-proto node on an asyncio event loop: coroutines, async iterators, `async with`.

The loop is the core's single owner: the socket is read from an `add_reader` callback,
the one timer is a `call_at` handle, and application calls run on the loop and end by
scheduling one poll (`call_soon`), so calls made in the same loop turn share one flush.
Works on the default loop and on uvloop; the library never installs uvloop itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

from pilot_proto import Identity, IdentityRecord, NodeConfig
from pilot_proto import Node as CoreNode
from pilot_proto.delivery import DatagramReceived, MessageReceived
from pilot_proto.driver import BUSY_POLL_LIMIT, Driver, Pending, UdpPort
from pilot_proto.errors import NodeClosed
from pilot_proto.events import Event, PeerInfo
from pilot_proto.transmit import Addr, Transmit

from .stream import Stream

log = logging.getLogger("pilot_asyncio")

# The core wants fine-grained monotonic seconds: uvloop's loop.time() has millisecond
# resolution, too coarse for RTTs on a LAN.
_monotonic = time.monotonic


def _wake(pending: Pending) -> None:
    """Every call's notify: wake the task awaiting the call, unless it gave up already."""
    future = pending.waiter
    if future is not None and not future.done():
        future.set_result(None)


class Node:
    """A node bound to a UDP socket on the running event loop.

    Coroutine methods take `timeout` seconds (None waits as long as it takes) and raise a
    `PilotTimeout` subclass when it passes; cancelling the awaiting task is always safe.
    Use `async with Node(identity) as node:`, or `await node.start()` and `await node.close()`.
    """

    def __init__(
        self,
        identity: Identity,
        config: NodeConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
        auto_confirm: bool = True,
        on_event: Callable[[Event], bool | None] | None = None,
        rng: Callable[[int], bytes] = os.urandom,
        wall_clock: Callable[[], float] = time.time,
        busy_poll: float = BUSY_POLL_LIMIT,
        trust_policy: Callable[[str], bool] | None = None,
    ) -> None:
        """`on_event` sees every core event first; returning True consumes it (the node
        does not route it). `trust_policy(address)` goes to the core Node: it decides
        for peers neither added with `add_peer` nor untrusted (e.g. a trust store)."""
        self.identity = identity
        core = CoreNode(
            identity, config, rng=rng, wall_clock=wall_clock, trust_policy=trust_policy
        )
        self._driver = Driver(core, auto_confirm=auto_confirm, on_event=on_event)
        self._bind = (host, port, sock)
        self._busy_poll = busy_poll
        self._owns_socket = sock is None
        self._udp: UdpPort | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poll_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    # ------------------------------------------------------------------ life cycle

    @property
    def address(self) -> str:
        """This node's address (DESIGN 3)."""
        return self.identity.address

    @property
    def endpoint(self) -> Addr:
        """The bound UDP endpoint, canonical (host, port)."""
        if self._udp is None:
            raise NodeClosed("the node is not started; call start() first")
        return self._udp.endpoint

    @property
    def core(self) -> CoreNode:
        """The sans-IO core, for calls the binding does not wrap. Call it only on the
        loop, and call `flush()` afterwards so what it queued goes out."""
        return self._driver.node

    def flush(self) -> None:
        """Poll the core in this loop turn: send what direct core calls queued and re-arm
        the timer (also for timers added with `add_timer`)."""
        self._kick()

    def add_timer(
        self, get_timer: Callable[[], float | None], handle_timer: Callable[[float], None]
    ) -> None:
        """Arm another sans-IO object's timer next to the core's (e.g. a rendezvous
        client on `core`): `handle_timer(now)` runs on the loop once `get_timer()` is
        due. Call `flush()` after calling that object directly."""
        self._driver.add_timer(get_timer, handle_timer)
        self._kick()

    async def start(self) -> Node:
        """Bind the socket on the running loop. Returns the node."""
        if self._loop is not None:
            return self
        host, port, sock = self._bind
        self._loop = asyncio.get_running_loop()
        driver = self._driver
        self._udp = UdpPort.open(
            socket, host, port, sock, driver.datagram_received, driver.stats, log,
            self._busy_poll,
        )
        self._loop.add_reader(self._udp.sock.fileno(), self._on_readable)
        return self

    async def __aenter__(self) -> Node:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, graceful: bool = True) -> None:
        """Close every session (telling the peers when `graceful`), fail every waiting call
        with NodeClosed, release the socket. Idempotent."""
        udp, loop = self._udp, self._loop
        if udp is None or loop is None or self._driver.closed:
            return
        now = _monotonic()
        self._driver.close(now, graceful)
        udp.send(self._driver.poll(now))
        loop.remove_reader(udp.sock.fileno())
        if self._timer is not None:
            self._timer.cancel()
        if self._owns_socket:
            udp.close()

    # ------------------------------------------------------------------ loop callbacks

    def _on_readable(self) -> None:
        assert self._udp is not None
        self._udp.drain(self._poll_after_read, _monotonic)
        self._arm_timer()

    def _poll_after_read(self, now: float) -> Sequence[Transmit]:
        """The drain's poll. When what arrived completed an awaiting task, build nothing
        yet: the poll scheduled now runs after that task's step in this loop turn, so
        its next call (a reply, the next request) shares the packet with the RECEIPT
        and ACK that are due."""
        if self._driver.route(now):
            self._kick()
            return ()
        return self._driver.poll(now)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._poll()

    def _poll(self) -> None:
        self._poll_scheduled = False
        if self._driver.closed:
            return
        assert self._udp is not None
        out = self._driver.poll(_monotonic())
        self._udp.send_and_linger(out, self._poll_after_read, _monotonic)
        self._arm_timer()

    def _arm_timer(self) -> None:
        wanted = self._driver.next_wakeup()
        if Driver.timer_needs_rearm(self._timer_at, wanted):
            assert wanted is not None and self._loop is not None
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = wanted
            self._timer = self._loop.call_later(max(wanted - _monotonic(), 0.0), self._on_timer)

    def _kick(self) -> None:
        """Schedule one poll for this loop turn: what the calls queued goes out together."""
        if not self._poll_scheduled and self._loop is not None:
            self._poll_scheduled = True
            self._loop.call_soon(self._poll)

    def _now(self) -> float:
        if self._loop is None:
            raise NodeClosed("the node is not started; call start() first")
        return _monotonic()

    #: The notify every driver operation of this binding is started with (see `_finish`).
    _notify = staticmethod(_wake)

    async def _finish(self, pending: Pending) -> Any:
        """Await a driver operation started with `_wake` as its notify, then hand over
        its outcome. The future is made only when the call has to wait (a receive often
        finds its message queued)."""
        self._kick()
        if not pending.done:
            loop = self._loop
            assert loop is not None
            future: asyncio.Future[None] = loop.create_future()
            pending.waiter = future
            try:
                await future
            except asyncio.CancelledError:
                self._driver.abandon(pending, _monotonic())
                self._kick()
                raise
        return pending.outcome()

    def _call(self, call: Callable[[float], Any]) -> Any:
        result = call(self._now())
        self._kick()
        return result

    # ------------------------------------------------------------------ peers

    def add_peer(
        self, record: IdentityRecord, endpoints: Iterable[Sequence[Any]] = (),
        *, trusted: bool = True,
    ) -> None:
        """Learn a peer from its identity record and the endpoints it may be reached at."""
        self._call(lambda now: self._driver.add_peer(record, endpoints, trusted))

    async def connect(self, address: str, *, timeout: float | None = 10.0) -> None:
        """Make a session with the peer (ConnectionFailed if that fails)."""
        await self._finish(self._driver.connect(address, self._now(), timeout, _wake))

    async def ping(self, address: str, *, timeout: float | None = 5.0) -> float:
        """Round-trip time to the peer, in seconds."""
        rtt: float = await self._finish(self._driver.ping(address, self._now(), timeout, _wake))
        return rtt

    def peer_info(self, address: str) -> PeerInfo:
        return self._driver.peer_info(address)

    def send_trust_request(self, address: str, request_id: bytes, justification: str = "") -> None:
        """Ask the peer, inside a session (made if needed), to trust us. Its answer comes
        as a TrustAccepted or TrustRejected event, which `on_event` sees."""
        self._call(lambda now: self._driver.send_trust_request(
            address, request_id, justification, now))

    def answer_trust(self, address: str, request_id: bytes, accept: bool) -> None:
        """Answer a TrustRequested event (set the peer's trust in `core` first)."""
        self._call(lambda now: self._driver.answer_trust(address, request_id, accept, now))

    def close_peer(self, address: str) -> None:
        """Close the session with the peer; it is told."""
        self._call(lambda now: self._driver.close_peer(address, now))

    def stats(self) -> dict[str, int]:
        """The core's drop and event counters together with the binding's own."""
        return self._driver.counters()

    # ------------------------------------------------------------------ messages

    async def send_message(
        self,
        address: str,
        data: bytes,
        *,
        type: str = "text",
        reply_to: bytes | None = None,
        timeout: float | None = 30.0,
        message_id: bytes | None = None,
    ) -> bytes:
        """Send a message and return its id once the peer's application confirmed it
        (DeliveryTimeout if it did not within `timeout`). `message_id` (16 bytes) sends
        it under an id the caller chose; a receiver that has it already just receipts."""
        sent_id: bytes = await self._finish(self._driver.send_message(
            address, data, self._now(), type, reply_to, timeout, _wake, message_id
        ))
        return sent_id

    async def reply(
        self, message: MessageReceived, data: bytes, *, type: str = "text",
        timeout: float | None = 30.0,
    ) -> bytes:
        """Answer `message`: a message to its sender whose reply_to is its id."""
        return await self.send_message(
            message.address, data, type=type, reply_to=message.message_id, timeout=timeout
        )

    async def receive(self, *, timeout: float | None = None) -> MessageReceived:
        """The next message from any peer (confirmed now if the node auto-confirms)."""
        message: MessageReceived = await self._finish(
            self._driver.receive_message(self._now(), timeout, _wake)
        )
        return message

    async def messages(self) -> AsyncIterator[MessageReceived]:
        """Every message as it arrives, until the node closes."""
        while True:
            try:
                message = await self.receive()
            except NodeClosed:
                return
            yield message

    def confirm(self, message: MessageReceived) -> None:
        """Tell the sender `message` is safely stored (only without auto_confirm)."""
        self._call(lambda now: self._driver.confirm(message, now))

    def send_datagram(self, address: str, data: bytes) -> None:
        """Unreliable and unconfirmed: delivered at most once."""
        self._call(lambda now: self._driver.send_datagram(address, data, now))

    async def receive_datagram(self, *, timeout: float | None = None) -> DatagramReceived:
        datagram: DatagramReceived = await self._finish(
            self._driver.receive_datagram(self._now(), timeout, _wake)
        )
        return datagram

    # ------------------------------------------------------------------ streams

    def listen(self, port: int) -> None:
        """Accept streams peers open to `port`."""
        self._driver.listen(port)

    async def accept(self, port: int, *, timeout: float | None = None) -> Stream:
        """The next stream a peer opened to `port` (after `listen(port)`)."""
        state = await self._finish(self._driver.accept(port, self._now(), timeout, _wake))
        return Stream(self, state)

    def open_stream(self, address: str, port: int) -> Stream:
        """A new stream to the peer's `port`; the session is made if needed."""
        state = self._call(lambda now: self._driver.open_stream(address, port, now))
        return Stream(self, state)
