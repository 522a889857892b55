"""The API of the blocking bindings (pilot_gevent, pilot_threads), written once.

Both bindings offer the same calls in the same style: a method blocks its greenlet or
thread until the core has answered. What differs is only how a call reaches the core's
owner and how the caller waits, so a binding subclasses `BlockingNode` and supplies
`_submit` (run a driver call on the owner, return its result) and `_wait` (start a
driver operation on the owner, block until its `Pending` completes). Nothing here does
I/O or blocks by itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar

from ..delivery import DatagramReceived, MessageReceived
from ..errors import NodeClosed
from ..events import PeerInfo
from ..identity import Identity
from ..records import IdentityRecord
from .owner import Driver, StreamState
from .pending import Notify, Pending

__all__ = ["READ_SIZE", "BlockingNode", "BlockingStream", "Handoff", "Lock"]

T = TypeVar("T")

#: What `Stream.read` returns at most unless told otherwise.
READ_SIZE = 1 << 20


class Lock(Protocol):
    """A lock of real OS threads (`threading.Lock`, or the original under gevent)."""

    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...
    def release(self) -> None: ...


class Handoff:
    """A caller in one thread waiting for the core's owner in another.

    The caller queues `call` or `start` to the owner and blocks in `wait`; the owner runs
    it, and the lock is released exactly once: when the call returned, or when the
    operation's Pending completed. `on_complete` runs on the owner just before an
    operation's completion releases the caller (the threads binding lingers then, so the
    caller's next call can share the packet: a reply with its request's receipt)."""

    __slots__ = ("_error", "_lock", "_on_complete", "_result", "pending")

    def __init__(self, lock: Lock, on_complete: Callable[[], None] | None = None) -> None:
        lock.acquire()
        self._lock = lock
        self._on_complete = on_complete
        self._result: Any = None
        self._error: BaseException | None = None
        self.pending: Pending | None = None

    def call(self, call: Callable[[float], Any], now: float) -> None:
        """On the owner: run a plain driver call."""
        try:
            self._result = call(now)
        except BaseException as error:
            self._error = error
        self._lock.release()

    def start(self, start: Callable[[float, Notify], Pending], now: float) -> None:
        """On the owner: start a driver operation; its completion releases the caller.
        `pending` is known from here on, so a caller that gives up can abandon it."""
        try:
            self.pending = start(now, self._notify)
        except BaseException as error:
            self._error = error
            self._lock.release()

    def _notify(self, pending: Pending) -> None:
        self.pending = pending
        if self._on_complete is not None:
            self._on_complete()
        self._lock.release()

    def wait(self, timeout: float = -1) -> bool:
        """In the caller: block until the owner answered (False if `timeout` passed)."""
        return self._lock.acquire(True, timeout)

    def outcome(self) -> Any:
        if self._error is not None:
            raise self._error
        if self.pending is not None:
            return self.pending.outcome()
        return self._result


class BlockingNode(ABC):
    """A node's calls for blocking callers. Subclasses own the socket and the loop.

    Waiting methods take `timeout` seconds (None waits as long as it takes) and raise a
    `PilotTimeout` subclass when it passes.
    """

    identity: Identity
    _driver: Driver

    @abstractmethod
    def _submit(self, call: Callable[[float], T]) -> T:
        """Run `call(now)` on the core's owner and return its result."""

    @abstractmethod
    def _wait(self, start: Callable[[float, Notify], Pending]) -> Any:
        """Run `start(now, notify)` on the owner; block until the Pending completes and
        return its outcome. Giving up the wait must `abandon` the Pending."""

    @property
    def address(self) -> str:
        """This node's address (DESIGN 3)."""
        return self.identity.address

    # ------------------------------------------------------------------ peers

    def add_peer(
        self, record: IdentityRecord, endpoints: Iterable[Sequence[Any]] = (),
        *, trusted: bool = True,
    ) -> None:
        """Learn a peer from its identity record and the endpoints it may be reached at."""
        endpoints = list(endpoints)
        self._submit(lambda now: self._driver.add_peer(record, endpoints, trusted))

    def connect(self, address: str, *, timeout: float | None = 10.0) -> None:
        """Make a session with the peer (ConnectionFailed if that fails)."""
        self._wait(lambda now, notify: self._driver.connect(address, now, timeout, notify))

    def ping(self, address: str, *, timeout: float | None = 5.0) -> float:
        """Round-trip time to the peer, in seconds."""
        rtt: float = self._wait(
            lambda now, notify: self._driver.ping(address, now, timeout, notify)
        )
        return rtt

    def peer_info(self, address: str) -> PeerInfo:
        return self._submit(lambda now: self._driver.peer_info(address))

    def close_peer(self, address: str) -> None:
        """Close the session with the peer; it is told."""
        self._submit(lambda now: self._driver.close_peer(address, now))

    def send_trust_request(self, address: str, request_id: bytes, justification: str = "") -> None:
        """Ask the peer, inside a session (made if needed), to trust us. Its answer comes
        as a TrustAccepted or TrustRejected event, which `on_event` sees."""
        self._submit(lambda now: self._driver.send_trust_request(
            address, request_id, justification, now))

    def answer_trust(self, address: str, request_id: bytes, accept: bool) -> None:
        """Answer a TrustRequested event (set the peer's trust on the core first)."""
        self._submit(lambda now: self._driver.answer_trust(address, request_id, accept, now))

    def stats(self) -> dict[str, int]:
        """The core's drop and event counters together with the binding's own."""
        return self._submit(lambda now: self._driver.counters())

    # ------------------------------------------------------------------ messages

    def send_message(
        self,
        address: str,
        data: bytes,
        *,
        type: str = "text",
        reply_to: bytes | None = None,
        timeout: float | None = 30.0,
    ) -> bytes:
        """Send a message and return its id once the peer's application confirmed it
        (DeliveryTimeout if it did not within `timeout`)."""
        message_id: bytes = self._wait(
            lambda now, notify: self._driver.send_message(
                address, data, now, type, reply_to, timeout, notify
            )
        )
        return message_id

    def reply(
        self, message: MessageReceived, data: bytes, *, type: str = "text",
        timeout: float | None = 30.0,
    ) -> bytes:
        """Answer `message`: a message to its sender whose reply_to is its id."""
        return self.send_message(
            message.address, data, type=type, reply_to=message.message_id, timeout=timeout
        )

    def receive(self, *, timeout: float | None = None) -> MessageReceived:
        """The next message from any peer (confirmed now if the node auto-confirms)."""
        message: MessageReceived = self._wait(
            lambda now, notify: self._driver.receive_message(now, timeout, notify)
        )
        return message

    def messages(self) -> Iterator[MessageReceived]:
        """Every message as it arrives, until the node closes."""
        while True:
            try:
                yield self.receive()
            except NodeClosed:
                return

    def confirm(self, message: MessageReceived) -> None:
        """Tell the sender `message` is safely stored (only without auto_confirm)."""
        self._submit(lambda now: self._driver.confirm(message, now))

    def send_datagram(self, address: str, data: bytes) -> None:
        """Unreliable and unconfirmed: delivered at most once."""
        self._submit(lambda now: self._driver.send_datagram(address, data, now))

    def receive_datagram(self, *, timeout: float | None = None) -> DatagramReceived:
        datagram: DatagramReceived = self._wait(
            lambda now, notify: self._driver.receive_datagram(now, timeout, notify)
        )
        return datagram

    # ------------------------------------------------------------------ streams

    def listen(self, port: int) -> None:
        """Accept streams peers open to `port`."""
        self._submit(lambda now: self._driver.listen(port))

    def accept(self, port: int, *, timeout: float | None = None) -> BlockingStream:
        """The next stream a peer opened to `port` (after `listen(port)`)."""
        state = self._wait(lambda now, notify: self._driver.accept(port, now, timeout, notify))
        return BlockingStream(self, state)

    def open_stream(self, address: str, port: int) -> BlockingStream:
        """A new stream to the peer's `port`; the session is made if needed."""
        state = self._submit(lambda now: self._driver.open_stream(address, port, now))
        return BlockingStream(self, state)


class BlockingStream:
    """A reliable, ordered byte stream with one peer, in both directions.

    `write` blocks while the send buffer is full (back-pressure); `read` blocks until data
    or the end arrives. As a context manager it ends our direction on a normal exit and
    resets the stream when the block raises.
    """

    def __init__(self, node: BlockingNode, state: StreamState) -> None:
        self._node = node
        self._state = state

    @property
    def address(self) -> str:
        """The peer's address."""
        return self._state.address

    @property
    def stream_id(self) -> int:
        return self._state.stream_id

    @property
    def port(self) -> int:
        return self._state.port

    def write(self, data: bytes, *, end: bool = False, timeout: float | None = None) -> None:
        """Return once all of `data` is in the send buffer; with `end`, our direction ends
        after it. A write given up part-way (timeout, a killed greenlet) resets the stream."""
        node, state = self._node, self._state
        node._wait(
            lambda now, notify: node._driver.stream_write(state, data, end, now, timeout, notify)
        )

    def end(self) -> None:
        """Half-close: no more data from us; the peer reads to the end."""
        node, state = self._node, self._state
        node._submit(lambda now: node._driver.stream_end(state, now))

    def read(self, max_bytes: int = READ_SIZE, *, timeout: float | None = None) -> bytes:
        """Up to `max_bytes` bytes (at least one), or b"" once the peer ended the stream."""
        node, state = self._node, self._state
        data: bytes = node._wait(
            lambda now, notify: node._driver.stream_read(state, max_bytes, now, timeout, notify)
        )
        return data

    def reset(self, reason: str = "") -> None:
        """Abort both directions; the peer gets StreamResetError(reason)."""
        node, state = self._node, self._state
        node._submit(lambda now: node._driver.stream_reset(state, reason, now))

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read():
            yield chunk

    def __enter__(self) -> BlockingStream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state.error is not None or self._node._driver.closed:
            return
        if kind is None:
            self.end()
        else:
            self.reset(f"the application failed: {kind.__name__}")

    def __repr__(self) -> str:
        return f"<Stream {self.stream_id} with {self.address} port {self.port}>"
