"""The core's single owner, as every binding shares it: route events to waiters, decide
when to wake.

A binding (pilot_asyncio, pilot_gevent, pilot_threads) owns a UDP socket, a monotonic
clock and one timer, and is the single owner of a `Driver`. It feeds what the socket
yields to `datagram_received`, calls `poll` once per wake-up and sends what it returns,
and arms its one timer at `next_wakeup()`. Application calls become `Pending` operations
that the driver completes when the core's events say so: a RECEIPT completes a send, a
PONG a ping, room in a stream's send buffer resumes a write. A binding only turns a
`Pending` into its own way of waiting (a future, a gevent event, a lock).
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..delivery import (
    DatagramReceived,
    MessageDelivered,
    MessageFailed,
    MessageReceived,
    PongReceived,
    StreamEnded,
    StreamOpened,
    StreamReadable,
    StreamReset,
    StreamWritable,
)
from ..delivery.streams import ResetCode
from ..errors import (
    ConnectionFailed,
    ConnectionLost,
    ConnectTimeout,
    DeliveryTimeout,
    LocalProtocolError,
    MessageRefused,
    NodeClosed,
    PilotError,
    PilotTimeout,
    StreamRefused,
    StreamResetError,
    StreamStateError,
)
from ..events import Event, HandshakeCompleted, HandshakeFailed, PeerInfo, SessionClosed
from ..node import Node
from ..records import IdentityRecord
from ..transmit import Addr, Transmit
from .addresses import canonical_address
from .pending import Notify, Pending, copy_error

__all__ = ["DATAGRAM_QUEUE_LIMIT", "Driver", "StreamState"]

#: Unreliable datagrams kept for `receive_datagram`; the oldest go first beyond this.
DATAGRAM_QUEUE_LIMIT = 1024
#: A core timer that stays due after handle_timer is retried this much later, not at once.
_STUCK_TIMER_DELAY = 0.001
_ADDRESS_CACHE_LIMIT = 4096


class _Write:
    __slots__ = ("data", "end", "offset", "pending")

    def __init__(self, pending: Pending, data: bytes, end: bool) -> None:
        self.pending = pending
        self.data = data
        self.end = end
        self.offset = 0


class StreamState:
    """What the driver knows of one stream: who waits to read it or to write into it."""

    __slots__ = ("address", "end_queued", "error", "peer_ended", "port", "readers",
                 "stream_id", "unread", "writes")

    def __init__(self, address: str, stream_id: int, port: int) -> None:
        self.address = address
        self.stream_id = stream_id
        self.port = port
        self.peer_ended = False  # the peer's FIN and every byte before it were read
        self.end_queued = False  # our FIN is queued: no more writes
        self.error: PilotError | None = None  # reset or session lost
        self.readers: deque[tuple[Pending, int]] = deque()
        self.writes: deque[_Write] = deque()
        self.unread = b""  # data read from the core for a caller who was then cancelled


class Driver:
    """The single owner's view of a Node: route events to waiters, decide when to wake.

    Every method runs on the binding's owner (event loop, hub, I/O thread) and takes the
    binding's monotonic `now`. Operations that wait return a `Pending`, possibly done
    already; `timeout` (seconds or None) makes the driver fail it with a PilotTimeout.
    """

    def __init__(
        self,
        node: Node,
        *,
        auto_confirm: bool = True,
        on_event: Callable[[Event], bool | None] | None = None,
    ) -> None:
        self.node = node
        #: Confirm a message (its RECEIPT goes back) when it is handed to the application.
        self.auto_confirm = auto_confirm and not node.config.delivery.auto_confirm
        #: Sees every core event first; a true result consumes it (the driver does not
        #: route it), so a second sans-IO object on the same node (a rendezvous client)
        #: can take its own traffic before the application sees it.
        self.on_event = on_event
        self.closed = False
        #: Waiting calls completed so far (results and errors): a binding compares it
        #: around a call to learn whether a caller was released.
        self.completions = 0
        #: Timers of other sans-IO objects on this node: (get_timer, handle_timer).
        self._timer_sources: list[tuple[Callable[[], float | None], Callable[[float], None]]] = []
        #: Binding-level counters (datagrams dropped on a full send buffer, GSO sends...).
        self.stats: Counter[str] = Counter()
        self._connects: dict[str, list[Pending]] = {}
        self._deliveries: dict[bytes, tuple[str, Pending]] = {}
        self._pings: dict[bytes, tuple[str, Pending]] = {}
        self._messages: deque[tuple[MessageReceived, bool]] = deque()  # (message, confirmed)
        self._message_waiters: deque[Pending] = deque()
        self._datagrams: deque[DatagramReceived] = deque()
        self._datagram_waiters: deque[Pending] = deque()
        self._streams: dict[tuple[str, int], StreamState] = {}
        self._incoming: dict[int, deque[StreamState]] = {}
        self._accept_waiters: dict[int, deque[Pending]] = {}
        self._deadlines: list[tuple[float, int, Pending]] = []
        self._deadline_seq = 0
        self._stale_deadlines = 0
        self._wakeup: float | None = None
        self._core_timer: float | None = None
        self._addresses: dict[tuple[Any, ...], Addr] = {}
        self._handlers: dict[type[Event], Callable[[Any, float], None]] = {
            MessageReceived: self._on_message,
            MessageDelivered: self._on_delivered,
            MessageFailed: self._on_message_failed,
            PongReceived: self._on_pong,
            StreamReadable: self._on_readable,
            StreamWritable: self._on_writable,
            StreamEnded: self._on_ended,
            StreamReset: self._on_reset,
            StreamOpened: self._on_opened,
            DatagramReceived: self._on_datagram,
            HandshakeCompleted: self._on_handshake,
            HandshakeFailed: self._on_handshake_failed,
            SessionClosed: self._on_session_closed,
        }

    # ------------------------------------------------------------------ I/O side

    def datagram_received(self, data: bytes, raw_addr: tuple[Any, ...], now: float) -> None:
        """One datagram from the socket, with the address exactly as the socket gave it."""
        if len(raw_addr) == 2:
            addr: Addr = raw_addr  # AF_INET gives canonical (host, port) already
        else:
            cached = self._addresses.get(raw_addr)
            if cached is None:
                if len(self._addresses) >= _ADDRESS_CACHE_LIMIT:
                    self._addresses.clear()
                cached = self._addresses[raw_addr] = canonical_address(raw_addr)
            addr = cached
        self.node.receive_datagram(data, addr, now)

    def poll(self, now: float) -> list[Transmit]:
        """Run what is due, route the core's events, and return the datagrams to send.
        Call once per wake-up (after reading the socket, a timer, or application calls)."""
        node = self.node
        # The core's timer as of the last poll: operations since then only arm later ones.
        if self._core_timer is not None and self._core_timer <= now:
            node.handle_timer(now)
        for get_timer, handle_timer in self._timer_sources:
            due = get_timer()
            if due is not None and due <= now:
                handle_timer(now)
        if self._deadlines and self._deadlines[0][0] <= now:
            self._expire(now)
        if self._stale_deadlines > 1024 and 2 * self._stale_deadlines > len(self._deadlines):
            self._compact_deadlines()
        out = self._flush(now)
        timer = node.get_timer()
        if timer is not None and timer <= now:
            # Due already (armed by an operation since the last poll): run it now, once.
            node.handle_timer(now)
            out += self._flush(now)
            timer = node.get_timer()
            if timer is not None and timer <= now:
                self.stats["timer_stuck"] += 1  # the core did not advance it: do not spin
                timer = now + _STUCK_TIMER_DELAY
        self._core_timer = timer
        if self._deadlines:
            deadline = self._deadlines[0][0]
            if timer is None or deadline < timer:
                timer = deadline
        for get_timer, _ in self._timer_sources:
            due = get_timer()
            if due is not None:
                if due <= now:
                    due = now + _STUCK_TIMER_DELAY  # handled next wake-up, not in a spin
                if timer is None or due < timer:
                    timer = due
        self._wakeup = timer
        return out

    def route(self, now: float) -> bool:
        """Route the core's queued events to their waiters without building packets yet;
        True if that completed a waiting call. The binding then lets the callers it
        completed make their next call (a reply, the next request) before it polls, in
        the same wake-up, and all of it shares one packet: a reply leaves with the
        RECEIPT of the request it answers instead of a datagram each."""
        before = self.completions
        self._dispatch(now)
        return self.completions != before

    def _flush(self, now: float) -> list[Transmit]:
        self._dispatch(now)
        out = self.node.datagrams_to_send(now)
        # Flushing can close sessions; routing those events may queue more (one round).
        if self._dispatch(now):
            out += self.node.datagrams_to_send(now)
        return out

    def next_wakeup(self) -> float | None:
        """When the binding's timer must call `poll` next (as of the last poll)."""
        return self._wakeup

    def add_timer(
        self, get_timer: Callable[[], float | None], handle_timer: Callable[[float], None]
    ) -> None:
        """Arm another sans-IO object's timer next to the core's: `poll` calls
        `handle_timer(now)` once `get_timer()` is due and wakes for it. After calling that
        object outside `poll`, the binding must poll again (its deadline may have moved)."""
        self._timer_sources.append((get_timer, handle_timer))

    @staticmethod
    def timer_needs_rearm(armed: float | None, wanted: float | None) -> bool:
        """Re-arm only for an earlier deadline: a timer that fires early just polls and
        re-arms, which is cheaper than cancelling one on every change."""
        return wanted is not None and (armed is None or wanted < armed)

    # ------------------------------------------------------------------ operations

    def _pending(
        self, notify: Notify, now: float, timeout: float | None,
        on_timeout: Callable[[], BaseException],
    ) -> Pending:
        if self.closed:
            raise NodeClosed()
        pending = Pending(notify)
        if timeout is not None:
            pending._on_timeout = on_timeout
            self._deadline_seq += 1
            heapq.heappush(self._deadlines, (now + timeout, self._deadline_seq, pending))
        return pending

    def _check_open(self) -> None:
        if self.closed:
            raise NodeClosed()

    def add_peer(
        self, record: IdentityRecord, endpoints: Iterable[Sequence[Any]], trusted: bool
    ) -> None:
        self._check_open()
        self.node.add_peer(record, [canonical_address(e) for e in endpoints], trusted=trusted)

    def connect(
        self, address: str, now: float, timeout: float | None, notify: Notify
    ) -> Pending:
        """Completes (None) once a session with the peer is ready."""
        self._check_open()
        ready = self.node.has_session(address)
        if not ready:
            self.node.connect(address, now)
        pending = self._pending(
            notify, now, timeout,
            lambda: ConnectTimeout(address, f"no handshake within {timeout:g} s"),
        )
        if ready:
            return self._resolve(pending, None)
        waiters = self._connects.setdefault(address, [])
        waiters.append(pending)
        pending._cleanup = lambda now: _discard(waiters, pending)
        return pending

    def send_message(
        self,
        address: str,
        data: bytes,
        now: float,
        type: str,
        reply_to: bytes | None,
        timeout: float | None,
        notify: Notify,
        message_id: bytes | None = None,
    ) -> Pending:
        """Queues the message; completes with its id once its RECEIPT arrives. Pass
        `message_id` to send under an id the caller chose (e.g. one it already recorded)."""
        self._check_open()
        message_id = self.node.send_message(
            address, data, now, type=type, reply_to=reply_to, message_id=message_id
        )
        pending = self._pending(
            notify, now, timeout, lambda: DeliveryTimeout(address, message_id, timeout or 0.0)
        )
        pending.result = message_id
        deliveries = self._deliveries
        deliveries[message_id] = (address, pending)
        pending._cleanup = lambda now: _forget(deliveries, message_id)
        return pending

    def send_trust_request(
        self, address: str, request_id: bytes, justification: str, now: float
    ) -> None:
        """TRUST_REQUEST inside a session (made if needed); the answer is a core event
        (TrustAccepted / TrustRejected) the binding's `on_event` sees."""
        self._check_open()
        self.node.send_trust_request(address, request_id, justification, now)

    def answer_trust(self, address: str, request_id: bytes, accept: bool, now: float) -> None:
        self._check_open()
        self.node.answer_trust(address, request_id, accept, now)

    def confirm(self, message: MessageReceived, now: float) -> None:
        """The application persisted `message`: its RECEIPT goes back to the sender."""
        self._check_open()
        self.node.confirm_persisted(message.address, message.message_id, now)

    def receive_message(self, now: float, timeout: float | None, notify: Notify) -> Pending:
        """Completes with the next MessageReceived, from any peer, in arrival order."""
        pending = self._pending(notify, now, timeout, _timeout("no message arrived", timeout))
        if self._messages:
            message, confirmed = self._messages.popleft()
            return self._hand_message(pending, message, confirmed, now)
        self._message_waiters.append(pending)
        pending._cleanup = lambda now: _discard(self._message_waiters, pending)
        return pending

    def _hand_message(
        self, pending: Pending, message: MessageReceived, confirmed: bool, now: float
    ) -> Pending:
        if self.auto_confirm and not confirmed:
            # Without a session the confirmation would start a handshake with a peer that
            # left; its message stays unreceipted and is resent if it comes back.
            if self.node.has_session(message.address):
                try:
                    self.node.confirm_persisted(message.address, message.message_id, now)
                except PilotError:
                    self.stats["confirm_failed"] += 1
            else:
                self.stats["confirm_skipped_no_session"] += 1
        pending._give_back = lambda: self._messages.appendleft((message, True))
        return self._resolve(pending, message)

    def send_datagram(self, address: str, data: bytes, now: float) -> None:
        self._check_open()
        self.node.send_datagram(address, data, now)

    def receive_datagram(self, now: float, timeout: float | None, notify: Notify) -> Pending:
        """Completes with the next DatagramReceived."""
        pending = self._pending(notify, now, timeout, _timeout("no datagram arrived", timeout))
        if self._datagrams:
            return self._hand_datagram(pending, self._datagrams.popleft())
        self._datagram_waiters.append(pending)
        pending._cleanup = lambda now: _discard(self._datagram_waiters, pending)
        return pending

    def _hand_datagram(self, pending: Pending, datagram: DatagramReceived) -> Pending:
        pending._give_back = lambda: self._datagrams.appendleft(datagram)
        return self._resolve(pending, datagram)

    def ping(self, address: str, now: float, timeout: float | None, notify: Notify) -> Pending:
        """Completes with the round-trip time in seconds."""
        self._check_open()
        challenge = self.node.ping(address, now)
        pending = self._pending(
            notify, now, timeout, _timeout(f"no answer to a ping from {address}", timeout)
        )
        pings = self._pings
        pings[challenge] = (address, pending)
        pending._cleanup = lambda now: _forget(pings, challenge)
        return pending

    def peer_info(self, address: str) -> PeerInfo:
        return self.node.peer_info(address)

    def counters(self) -> dict[str, int]:
        """The core's drop and event counters together with the binding's own."""
        return {**self.node.stats, **self.stats}

    def close_peer(self, address: str, now: float) -> None:
        self._check_open()
        self.node.close_peer(address, now)

    # ------------------------------------------------------------------ streams

    def listen(self, port: int) -> None:
        self._check_open()
        self.node.listen(port)
        self._incoming.setdefault(port, deque())
        self._accept_waiters.setdefault(port, deque())

    def accept(self, port: int, now: float, timeout: float | None, notify: Notify) -> Pending:
        """Completes with the StreamState of the next stream a peer opens to `port`."""
        incoming = self._incoming.get(port)
        if incoming is None:
            raise LocalProtocolError(f"port {port} is not listening; call listen({port}) first")
        pending = self._pending(
            notify, now, timeout, _timeout(f"no stream was opened to port {port}", timeout)
        )
        if incoming:
            return self._hand_stream(pending, incoming, incoming.popleft())
        waiters = self._accept_waiters[port]
        waiters.append(pending)
        pending._cleanup = lambda now: _discard(waiters, pending)
        return pending

    def _hand_stream(
        self, pending: Pending, incoming: deque[StreamState], stream: StreamState
    ) -> Pending:
        pending._give_back = lambda: incoming.appendleft(stream)
        return self._resolve(pending, stream)

    def open_stream(self, address: str, port: int, now: float) -> StreamState:
        self._check_open()
        stream_id = self.node.open_stream(address, port, now)
        stream = StreamState(address, stream_id, port)
        self._streams[(address, stream_id)] = stream
        return stream

    def stream_read(
        self,
        stream: StreamState,
        max_bytes: int,
        now: float,
        timeout: float | None,
        notify: Notify,
    ) -> Pending:
        """Completes with up to `max_bytes` bytes (at least one), or b"" once the peer
        ended the stream and everything before the end was read."""
        pending = self._pending(
            notify, now, timeout, _timeout(f"no data on stream {stream.stream_id}", timeout)
        )
        if stream.readers or not self._read_now(stream, pending, max_bytes, now):
            stream.readers.append((pending, max_bytes))
            pending._cleanup = lambda now: _discard_reader(stream.readers, pending)
        return pending

    def _read_now(self, stream: StreamState, pending: Pending, max_bytes: int, now: float) -> bool:
        """Complete `pending` from what is readable now; False if it has to wait."""
        if stream.unread:
            data, stream.unread = stream.unread, b""
            if 0 <= max_bytes < len(data):
                data, stream.unread = data[:max_bytes], data[max_bytes:]
        else:
            if stream.error is not None:
                self._fail(pending, stream.error)
                return True
            try:
                data = self.node.read_stream(stream.address, stream.stream_id, max_bytes)
            except PilotError as error:
                self._fail(pending, error)
                return True
            if not data:
                if stream.peer_ended:
                    self._resolve(pending, b"")
                    return True
                return False
            self._return_credit(stream, now)
        pending._give_back = lambda: _unread(stream, data)
        self._resolve(pending, data)
        return True

    def _return_credit(self, stream: StreamState, now: float) -> None:
        # Node.read_stream frees flow-control credit but does not mark the peer for
        # sending, so the window update (and StreamEnded) would wait for the next packet
        # or timer. An empty send_stream marks it and changes nothing else.
        try:
            self.node.send_stream(stream.address, stream.stream_id, b"", now)
        except PilotError:
            pass

    def stream_write(
        self,
        stream: StreamState,
        data: bytes,
        end: bool,
        now: float,
        timeout: float | None,
        notify: Notify,
    ) -> Pending:
        """Completes (None) once all of `data` is in the stream's send buffer, writing as
        much as `stream_send_capacity` allows and the rest on each StreamWritable. With
        `end`, our direction of the stream ends after it. A write the caller gives up
        part-way resets the stream: the peer must not take a truncated stream for whole."""
        if stream.error is not None:
            raise copy_error(stream.error)
        if stream.end_queued:
            raise StreamStateError(f"stream {stream.stream_id} was ended; it takes no more data")
        pending = self._pending(
            notify, now, timeout,
            _timeout(f"stream {stream.stream_id} had no room for the data", timeout),
        )
        write = _Write(pending, bytes(data), end)
        stream.end_queued = end
        stream.writes.append(write)
        pending._cleanup = lambda now: self._abandon_write(stream, write, now)
        self._pump_writes(stream, now)
        return pending

    def _pump_writes(self, stream: StreamState, now: float) -> None:
        node = self.node
        address, stream_id = stream.address, stream.stream_id
        writes = stream.writes
        try:
            while writes:
                write = writes[0]
                remaining = len(write.data) - write.offset
                if remaining:
                    room = node.stream_send_capacity(address, stream_id)
                    if room <= 0:
                        return  # resumed by StreamWritable
                    take = min(room, remaining)
                    start = write.offset
                    data = write.data
                    chunk = data if take == len(data) else data[start : start + take]
                    write.offset += take
                    last = take == remaining
                    node.send_stream(address, stream_id, chunk, now, end_stream=write.end and last)
                    if not last:
                        continue
                elif write.end:
                    node.send_stream(address, stream_id, b"", now, end_stream=True)
                writes.popleft()
                self._resolve(write.pending, None)
        except PilotError as error:
            self._fail_stream(stream, error, remove=False)
            return
        self._maybe_forget(stream)

    def _maybe_forget(self, stream: StreamState) -> None:
        """Both directions are finished: nothing can wait on the stream any more."""
        if stream.peer_ended and stream.end_queued and not stream.writes and not stream.unread:
            self._streams.pop((stream.address, stream.stream_id), None)

    def _abandon_write(self, stream: StreamState, write: _Write, now: float) -> None:
        if write in stream.writes:
            started = write.offset > 0
            stream.writes.remove(write)
            if write.end:
                stream.end_queued = False
            if started:
                self.stats["writes_abandoned_partway"] += 1
                self.stream_reset(stream, "a write was cancelled part-way", now)

    def stream_end(self, stream: StreamState, now: float) -> None:
        """Half-close: our FIN goes after whatever writes are queued."""
        if stream.error is not None:
            raise copy_error(stream.error)
        if stream.end_queued:
            return
        self.stream_write(stream, b"", True, now, None, _ignore)

    def stream_reset(self, stream: StreamState, reason: str, now: float) -> None:
        """Abort the stream both ways; local waiters get StreamResetError."""
        if stream.error is not None:
            return
        try:
            self.node.reset_stream(stream.address, stream.stream_id, now, reason)
        except PilotError:
            pass  # the session is gone: nothing to tell the peer
        self._fail_stream(
            stream, StreamResetError(stream.address, stream.stream_id, reason or "reset locally")
        )

    # ------------------------------------------------------------------ giving up

    def abandon(self, pending: Pending, now: float) -> None:
        """The caller stopped waiting (cancelled, killed, interrupted). Undo what waits on
        its behalf; an item already handed to it goes back where it came from."""
        if pending.done:
            give_back = pending._give_back
            if give_back is not None:
                pending._give_back = None
                give_back()
            return
        pending.done = True
        pending.error = PilotTimeout("the caller stopped waiting")
        if pending._on_timeout is not None:
            self._stale_deadlines += 1
        if pending._cleanup is not None:
            pending._cleanup(now)

    def _expire(self, now: float) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, _, pending = heapq.heappop(deadlines)
            if pending.done:
                self._stale_deadlines -= 1
                continue
            if pending._cleanup is not None:
                pending._cleanup(now)
            on_timeout = pending._on_timeout
            self._fail(pending, on_timeout() if on_timeout else PilotTimeout("timed out"))

    def close(self, now: float, graceful: bool = True) -> None:
        """Close every session (told to the peers when `graceful`) and fail every waiter
        with NodeClosed. A last `poll` then returns the CLOSE packets to send."""
        if self.closed:
            return
        if graceful:
            self.node.close(now)
        self.closed = True
        error = NodeClosed()
        for waiters in self._connects.values():
            self._fail_all(waiters, error)
        self._fail_all([p for _, p in self._deliveries.values()], error)
        self._fail_all([p for _, p in self._pings.values()], error)
        self._fail_all(self._message_waiters, error)
        self._fail_all(self._datagram_waiters, error)
        for accept_waiters in self._accept_waiters.values():
            self._fail_all(accept_waiters, error)
        for stream in list(self._streams.values()):
            self._fail_stream(stream, error)
        self._connects.clear()
        self._deliveries.clear()
        self._pings.clear()
        self._deadlines.clear()
        self._stale_deadlines = 0

    # ------------------------------------------------------------------ completing

    def _resolve(self, pending: Pending, result: Any) -> Pending:
        if not pending.done:
            pending.result = result
            pending.done = True
            if pending._on_timeout is not None:
                self._stale_deadlines += 1
            self.completions += 1
            pending._notify(pending)
        return pending

    def _fail(self, pending: Pending, error: BaseException) -> Pending:
        if not pending.done:
            pending.error = error
            pending.done = True
            pending._give_back = None
            if pending._on_timeout is not None:
                self._stale_deadlines += 1
            self.completions += 1
            pending._notify(pending)
        return pending

    def _compact_deadlines(self) -> None:
        # Completed operations leave their deadline in the heap until it passes; with many
        # quick operations under long timeouts that would grow without bound.
        self._deadlines = [entry for entry in self._deadlines if not entry[2].done]
        heapq.heapify(self._deadlines)
        self._stale_deadlines = 0

    def _fail_all(self, pendings: Iterable[Pending], error: BaseException) -> None:
        for pending in list(pendings):
            self._fail(pending, error)
        if isinstance(pendings, deque | list):
            pendings.clear()

    def _fail_stream(self, stream: StreamState, error: PilotError, remove: bool = True) -> None:
        stream.error = error
        self._fail_all([p for p, _ in stream.readers], error)
        self._fail_all([w.pending for w in stream.writes], error)
        stream.readers.clear()
        stream.writes.clear()
        if remove:
            self._streams.pop((stream.address, stream.stream_id), None)

    # ------------------------------------------------------------------ events

    def _dispatch(self, now: float) -> bool:
        """Route every queued core event; True if there were any."""
        events = self.node.events
        if not events:
            return False  # most calls: an exchange routes its events in one of three
        handlers = self._handlers
        hook = self.on_event
        while events:
            event = events.popleft()
            if hook is not None and hook(event):
                continue
            handler = handlers.get(type(event))
            if handler is not None:
                handler(event, now)
        return True

    def _on_message(self, event: MessageReceived, now: float) -> None:
        pending = _first_waiting(self._message_waiters)
        if pending is None:
            self._messages.append((event, False))
        else:
            self._hand_message(pending, event, False, now)

    def _on_delivered(self, event: MessageDelivered, now: float) -> None:
        entry = self._deliveries.pop(event.message_id, None)
        if entry is not None:
            self._resolve(entry[1], event.message_id)

    def _on_message_failed(self, event: MessageFailed, now: float) -> None:
        entry = self._deliveries.pop(event.message_id, None)
        if entry is not None:
            self._fail(entry[1], MessageRefused(event.address, event.message_id))

    def _on_pong(self, event: PongReceived, now: float) -> None:
        entry = self._pings.pop(event.challenge, None)
        if entry is not None:
            self._resolve(entry[1], event.rtt)

    def _on_datagram(self, event: DatagramReceived, now: float) -> None:
        pending = _first_waiting(self._datagram_waiters)
        if pending is not None:
            self._hand_datagram(pending, event)
            return
        if len(self._datagrams) >= DATAGRAM_QUEUE_LIMIT:
            self._datagrams.popleft()
            self.stats["datagrams_dropped_unread"] += 1
        self._datagrams.append(event)

    def _on_handshake(self, event: HandshakeCompleted, now: float) -> None:
        for pending in self._connects.pop(event.address, ()):
            self._resolve(pending, None)

    def _on_handshake_failed(self, event: HandshakeFailed, now: float) -> None:
        self._fail_peer(event.address, ConnectionFailed(event.address, event.reason), False)

    def _on_session_closed(self, event: SessionClosed, now: float) -> None:
        who = "the peer" if event.by_peer else "this node"
        reason = f"session closed by {who}: {event.reason}"
        self._fail_peer(event.address, ConnectionLost(event.address, reason), True)

    def _fail_peer(self, address: str, error: PilotError, streams: bool) -> None:
        self._fail_all(self._connects.pop(address, ()), error)
        for table in (self._deliveries, self._pings):
            for key, (peer, pending) in list(table.items()):
                if peer == address:
                    del table[key]
                    self._fail(pending, error)
        if streams:
            for stream in [s for s in self._streams.values() if s.address == address]:
                self._fail_stream(stream, error)

    def _on_opened(self, event: StreamOpened, now: float) -> None:
        stream = StreamState(event.address, event.stream_id, event.port)
        self._streams[(event.address, event.stream_id)] = stream
        incoming = self._incoming.setdefault(event.port, deque())
        pending = _first_waiting(self._accept_waiters.get(event.port))
        if pending is None:
            incoming.append(stream)
        else:
            self._hand_stream(pending, incoming, stream)

    def _on_readable(self, event: StreamReadable, now: float) -> None:
        stream = self._streams.get((event.address, event.stream_id))
        if stream is not None:
            self._serve_readers(stream, now)

    def _serve_readers(self, stream: StreamState, now: float) -> None:
        readers = stream.readers
        while readers:
            pending, max_bytes = readers[0]
            if pending.done:
                readers.popleft()
                continue
            if not self._read_now(stream, pending, max_bytes, now):
                return
            readers.popleft()

    def _on_ended(self, event: StreamEnded, now: float) -> None:
        stream = self._streams.get((event.address, event.stream_id))
        if stream is not None:
            stream.peer_ended = True
            self._serve_readers(stream, now)
            self._maybe_forget(stream)

    def _on_writable(self, event: StreamWritable, now: float) -> None:
        stream = self._streams.get((event.address, event.stream_id))
        if stream is not None:
            self._pump_writes(stream, now)

    def _on_reset(self, event: StreamReset, now: float) -> None:
        stream = self._streams.get((event.address, event.stream_id))
        if stream is not None:
            error = (
                StreamRefused(event.address, event.stream_id)
                if event.code == ResetCode.NOT_TRUSTED
                else StreamResetError(event.address, event.stream_id, event.reason)
            )
            self._fail_stream(stream, error)


# ---------------------------------------------------------------------- helpers


def _timeout(what: str, timeout: float | None) -> Callable[[], BaseException]:
    return lambda: PilotTimeout(f"{what} within {timeout:g} s")


def _first_waiting(waiters: deque[Pending] | None) -> Pending | None:
    """The longest-waiting caller still waiting; callers who gave up are dropped."""
    while waiters:
        pending = waiters.popleft()
        if not pending.done:
            return pending
    return None


def _discard(waiters: deque[Pending] | list[Pending], pending: Pending) -> None:
    try:
        waiters.remove(pending)
    except ValueError:
        pass


def _discard_reader(readers: deque[tuple[Pending, int]], pending: Pending) -> None:
    for entry in readers:
        if entry[0] is pending:
            readers.remove(entry)
            return


def _forget(table: dict[bytes, tuple[str, Pending]], key: bytes) -> None:
    table.pop(key, None)


def _unread(stream: StreamState, data: bytes) -> None:
    stream.unread = data + stream.unread


def _ignore(pending: Pending) -> None:
    pass
