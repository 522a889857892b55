"""The streams of one connection: ids, opening and refusal by port, resets, and the
connection-level flow control that all of them share.

Stream ids: streams we open are even, streams the peer opens are odd. On the wire a frame
carries the sender's id; the receiver flips the low bit. A peer stream id seen for the
first time opens every lower one not seen yet (RFC 9000 section 3.2); its data waits
until the frame at offset 0 names the port.

A reset aborts both directions. Each side tells the other how much it sent (the final
size in STREAM_RESET), so connection-level flow control stays exact: a reset stream's
bytes count as consumed, and its entry is kept until the peer's final size is known.
"""

from __future__ import annotations

import enum
from collections import Counter, deque
from collections.abc import Callable, Collection
from typing import Any

from ..errors import InvalidPort, StreamStateError, UnknownStream
from ..events import Event
from .config import INITIAL_CONNECTION_CREDIT, INITIAL_STREAM_CREDIT, DeliveryConfig
from .events import StreamEnded, StreamOpened, StreamReadable, StreamReset, StreamWritable
from .flow import ReceiveWindow, SendCredit
from .frames import StreamReset as StreamResetFrame
from .frames import encode_frame
from .messages import OutgoingMessages
from .receive_stream import ReceiveStream, StreamViolation
from .send_stream import SendStream
from .stream_states import ReceiveState, SendState
from .varint import encode_varint

__all__ = ["KIND_MAX_DATA", "KIND_MAX_STREAM_DATA", "ResetCode", "StreamEntry", "StreamTable"]

# Enum members as module constants: `Enum.MEMBER` is a slow lookup on hot paths.
_RECV_DATA_READ = ReceiveState.DATA_READ
_RECV_DATA_RECVD = ReceiveState.DATA_RECVD
_RECV_RECV = ReceiveState.RECV
_RECV_RESET = ReceiveState.RESET
_SEND_DONE = SendState.DONE
_SEND_RESET = SendState.RESET


#: Sent-frame records of flow control frames (see connection.py for the others).
KIND_MAX_DATA = 3
KIND_MAX_STREAM_DATA = 4  # (KIND_MAX_STREAM_DATA, local stream id)

_MIN_FRAME_SPACE = 64


class ResetCode(enum.IntEnum):
    """STREAM_RESET codes (the text reason travels alongside)."""

    APPLICATION = 0
    PORT_NOT_LISTENING = 1
    TOO_MANY_STREAMS = 2
    #: The receiver does not trust the sender (DESIGN 8): the stream is refused.
    NOT_TRUSTED = 3


#: What a reset without a reason text means, by code (refusals carry no text, so they
#: are never larger than the frame that caused them).
_CODE_REASONS: dict[int, str] = {ResetCode.NOT_TRUSTED: "not trusted"}
#: Streams an untrusted peer may have waiting for its final size at once; beyond, its
#: STREAM frames are dropped without any state.
UNTRUSTED_STREAM_LIMIT = 16


class StreamEntry:
    """Both halves of one stream and what the application knows about it."""

    __slots__ = (
        "announced",
        "awaiting_final_size",
        "port",
        "readable_event",
        "receive",
        "reset",
        "send",
        "stream_id",
    )

    def __init__(
        self,
        stream_id: int,
        send: SendStream,
        receive: ReceiveStream,
        port: int | None,
        announced: bool,
    ) -> None:
        self.stream_id = stream_id
        self.send = send
        self.receive = receive
        self.port = port
        #: The application knows the stream (it opened it, or got StreamOpened).
        self.announced = announced
        #: Reset (by either side); no further stream events.
        self.reset = False
        #: We reset it and still need the peer's final size for connection flow control.
        self.awaiting_final_size = False
        self.readable_event: StreamReadable | None = None


class StreamTable:
    """Every stream of one connection, and the flow control they share."""

    def __init__(
        self,
        address: str,
        config: DeliveryConfig,
        listening_ports: Collection[int] | Callable[[int], bool],
        *,
        events: deque[Event],
        stats: Counter[str],
        control: list[bytes],
        ready: deque[SendStream | OutgoingMessages],
    ) -> None:
        self.address = address
        self.config = config
        self.listening_ports = listening_ports
        # Shared with the connection: its event queue, counters, control frames to send
        # (STREAM_RESET) and the round-robin ring of senders.
        self._events = events
        self._stats = stats
        self._control = control
        self._ready = ready
        self.entries: dict[int, StreamEntry] = {}
        self.next_local = 0
        self.next_peer = 1
        self._peer_count = 0
        self.send_credit = SendCredit(INITIAL_CONNECTION_CREDIT)
        self.receive_window = ReceiveWindow(
            INITIAL_CONNECTION_CREDIT, config.connection_receive_window
        )
        # Grant our configured window at once (the protocol's initial credit is small).
        self.max_data_due = self.receive_window.update_due()
        self.max_stream_data_due: set[int] = set()

    # ------------------------------------------------------------------ application side

    def open(self, port: int) -> int:
        if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
            raise InvalidPort(f"port {port!r} is not in 0-65535")
        stream_id = self.next_local
        self.next_local += 2
        config = self.config
        entry = StreamEntry(
            stream_id,
            SendStream(stream_id, port, INITIAL_STREAM_CREDIT, config.stream_send_buffer),
            ReceiveStream(INITIAL_STREAM_CREDIT, config.stream_receive_window),
            port,
            announced=True,
        )
        self.entries[stream_id] = entry
        self.max_stream_data_due.add(stream_id)
        self.schedule(entry.send)
        return stream_id

    def was_open(self, stream_id: int) -> bool:
        """A stream that existed and has been forgotten (both directions finished)."""
        if not isinstance(stream_id, int) or stream_id < 0:
            return False
        if stream_id & 1:
            return stream_id < self.next_peer
        return stream_id < self.next_local

    def entry(self, stream_id: int) -> StreamEntry:
        """The stream the application names; UnknownStream or StreamStateError if none."""
        entry = self.entries.get(stream_id)
        if entry is None or not entry.announced:
            if self.was_open(stream_id):
                raise StreamStateError(f"stream {stream_id} is closed")
            raise UnknownStream(f"stream {stream_id} was never opened")
        return entry

    def write(self, stream_id: int, data: bytes, end: bool) -> None:
        entry = self.entry(stream_id)
        entry.send.write(data if type(data) is bytes else bytes(data), end)
        self.schedule(entry.send)

    def capacity(self, stream_id: int) -> int:
        if stream_id not in self.entries and self.was_open(stream_id):
            return 0
        return self.entry(stream_id).send.capacity

    def read(self, stream_id: int, max_bytes: int) -> bytes:
        entry = self.entries.get(stream_id)
        if entry is None or not entry.announced:
            if stream_id not in self.entries and self.was_open(stream_id):
                return b""
            entry = self.entry(stream_id)  # raises
        receive = entry.receive
        data = receive.read(max_bytes)
        if data:
            window = self.receive_window
            consumed = window.consumed = window.consumed + len(data)
            # ReceiveWindow.update_due, inlined for both windows: a quarter consumed.
            size = window.window
            if consumed + size - window.advertised >= size >> 2:
                self.max_data_due = True
            window = receive.window
            size = window.window
            if window.consumed + size - window.advertised >= size >> 2:
                self.max_stream_data_due.add(stream_id)
        if not receive.readable_bytes:
            receive.readable_signalled = False
        if receive.state is _RECV_DATA_RECVD and receive.finish_if_read():
            self._events.append(StreamEnded(self.address, stream_id))
            self._maybe_forget(entry)
        return data

    def reset_by_application(self, stream_id: int, reason: str) -> None:
        if stream_id not in self.entries and self.was_open(stream_id):
            return
        entry = self.entry(stream_id)
        if not entry.reset:
            self._reset(entry, ResetCode.APPLICATION, reason)

    def schedule(self, send: SendStream) -> None:
        """Put the stream in the send ring if it has something to send."""
        if not send.in_ready and send.has_work(self.send_credit.available):
            send.in_ready = True
            self._ready.append(send)

    def announced_open_streams(self) -> list[int]:
        """Streams the application knows that were not reset (for `successor`)."""
        return [sid for sid, entry in self.entries.items() if entry.announced and not entry.reset]

    # ------------------------------------------------------------------ frames

    def on_stream_frame(
        self, wire_id: int, offset: int, data: bytes | memoryview, fin: bool, port: int | None
    ) -> None:
        """One STREAM frame. `data` is a view into the payload only if the frame is most
        of it: a small chunk must not pin a large packet (credit counts the chunk)."""
        stream_id = wire_id ^ 1
        entry = self.entries.get(stream_id) or self._incoming(stream_id)
        if entry is None:
            return
        receive = entry.receive
        if not fin and offset == receive.recv_end and receive.state is _RECV_RECV:
            # In order, the bulk case.
            dropped = receive.take_in_order(data, self.receive_window)
            if dropped is not None:
                self._stats[dropped] += 1
                return
            if port is not None and entry.port is None:
                self._on_port(entry, port)
            if entry.announced and receive.readable_bytes and not receive.readable_signalled:
                receive.readable_signalled = True
                event = entry.readable_event
                if event is None:  # built once per stream: events are immutable values
                    event = entry.readable_event = StreamReadable(self.address, stream_id)
                self._events.append(event)
            return
        try:
            grow = receive.check(offset, len(data), fin)
        except StreamViolation as violation:
            self._stats[violation.reason] += 1
            return
        window = self.receive_window
        if grow:
            if window.highest + grow > window.advertised:
                self._stats["connection_credit_exceeded"] += 1
                return
            window.highest += grow
        if receive.state is _RECV_RESET:
            # We reset it: count the bytes for flow control and drop them.
            receive.highest += grow
            receive.read_offset = receive.highest
            window.consumed += grow
            if fin:
                receive.final_size = offset + len(data)
                entry.awaiting_final_size = False
                self._maybe_forget(entry)
            if window.update_due():
                self.max_data_due = True
            return
        receive.on_data(offset, data, fin)
        if port is not None and entry.port is None:
            self._on_port(entry, port)
        if entry.announced:
            if receive.readable_bytes and not receive.readable_signalled:
                receive.readable_signalled = True
                event = entry.readable_event
                if event is None:  # built once per stream: events are immutable values
                    event = entry.readable_event = StreamReadable(self.address, stream_id)
                self._events.append(event)
            elif receive.finish_if_read():
                self._events.append(StreamEnded(self.address, stream_id))
                self._maybe_forget(entry)

    def on_reset_frame(self, frame: StreamResetFrame) -> None:
        stream_id = frame.stream_id ^ 1
        entry = self.entries.get(stream_id) or self._incoming(stream_id)
        if entry is None:
            return
        receive = entry.receive
        final = frame.final_size
        known = receive.final_size
        if final < receive.highest or (known is not None and known != final):
            self._stats["stream_reset_bad_final_size"] += 1
            return
        window = self.receive_window
        grow = final - receive.highest
        if window.highest + grow > window.advertised:
            self._stats["connection_credit_exceeded"] += 1
            return
        window.highest += grow
        receive.highest = final
        window.consumed += receive.discard()
        receive.final_size = final
        entry.awaiting_final_size = False
        if window.update_due():
            self.max_data_due = True
        if not entry.reset:
            entry.reset = True
            self._queue_reset_frame(entry, frame.code, frame.reason)
            if entry.announced:
                reason = frame.reason or _CODE_REASONS.get(frame.code, "")
                self._events.append(StreamReset(self.address, stream_id, reason, frame.code))
        self._maybe_forget(entry)

    def refuse(
        self, wire_id: int, offset: int, data: bytes | memoryview, fin: bool
    ) -> int | None:
        """A STREAM frame from a peer we do not trust: reset its stream (and any lower one
        it implicitly opens) with NOT_TRUSTED, once, and count its bytes for flow control
        only. Returns how many streams were newly refused, or None when the frame must
        wait: at most UNTRUSTED_STREAM_LIMIT refused streams are held (until the peer's
        final size comes back), and the caller leaves the packet unacknowledged so the
        peer sends the frame again later."""
        stream_id = wire_id ^ 1
        fresh = 0
        if stream_id not in self.entries:
            first = self.next_peer
            opened = (stream_id - first) // 2 + 1 if stream_id & 1 else 0
            if opened > 0 and len(self.entries) + opened > UNTRUSTED_STREAM_LIMIT:
                self._stats["untrusted_stream_deferred"] += 1
                return None
            if self._incoming(stream_id) is None:
                return 0
            for new_id in range(first, stream_id + 1, 2):
                entry = self.entries.get(new_id)
                if entry is not None and not entry.reset:
                    # No reason text: a refusal is never larger than what caused it.
                    self._reset(entry, ResetCode.NOT_TRUSTED, "")
                    fresh += 1
        self.on_stream_frame(wire_id, offset, data, fin, None)
        return fresh

    def on_max_data(self, maximum: int) -> None:
        if self.send_credit.raise_limit(maximum):
            for entry in self.entries.values():
                self.schedule(entry.send)

    def on_max_stream_data(self, wire_id: int, maximum: int) -> None:
        entry = self.entries.get(wire_id ^ 1)
        if entry is not None and entry.send.credit.raise_limit(maximum):
            self.schedule(entry.send)

    def _incoming(self, stream_id: int) -> StreamEntry | None:
        """The entry for a peer stream seen for the first time, opening every lower id
        implicitly; None if the frame must be dropped."""
        stats = self._stats
        if not stream_id & 1:
            closed = stream_id < self.next_local
            stats["frame_for_closed_stream" if closed else "frame_for_unknown_local_stream"] += 1
            return None
        if stream_id < self.next_peer:
            stats["frame_for_closed_stream"] += 1
            return None
        limit = self.config.max_incoming_streams
        # Hard bounds on what a peer can make us create, even with resets outstanding.
        if (stream_id - self.next_peer) // 2 > 2 * limit or len(self.entries) >= 4 * limit + 64:
            stats["stream_limit_violation"] += 1
            return None
        config = self.config
        entry: StreamEntry | None = None
        while self.next_peer <= stream_id:
            new_id = self.next_peer
            self.next_peer += 2
            entry = StreamEntry(
                new_id,
                SendStream(new_id, None, INITIAL_STREAM_CREDIT, config.stream_send_buffer),
                ReceiveStream(INITIAL_STREAM_CREDIT, config.stream_receive_window),
                None,
                announced=False,
            )
            self.entries[new_id] = entry
            self._peer_count += 1
            if self._peer_count > limit:
                self._reset(entry, ResetCode.TOO_MANY_STREAMS, "too many streams")
        return entry

    def _port_listening(self, port: int) -> bool:
        listening = self.listening_ports
        if callable(listening):
            return bool(listening(port))
        return port in listening

    def _on_port(self, entry: StreamEntry, port: int) -> None:
        entry.port = port
        if entry.reset:
            return
        if not self._port_listening(port):
            self._stats["stream_refused"] += 1
            self._reset(entry, ResetCode.PORT_NOT_LISTENING, f"port {port} is not listening")
            return
        entry.announced = True
        self._events.append(StreamOpened(self.address, entry.stream_id, port))
        self.max_stream_data_due.add(entry.stream_id)

    # ------------------------------------------------------------------ resets

    def _reset(self, entry: StreamEntry, code: int, reason: str) -> None:
        """Abort a stream from our side: tell the peer, drop what we hold."""
        entry.reset = True
        self._queue_reset_frame(entry, code, reason)
        receive = entry.receive
        self.receive_window.consumed += receive.discard()
        if self.receive_window.update_due():
            self.max_data_due = True
        entry.awaiting_final_size = receive.final_size is None
        self._maybe_forget(entry)

    def _queue_reset_frame(self, entry: StreamEntry, code: int, reason: str) -> None:
        send = entry.send
        final = send.next_offset if send.state is _SEND_RESET else send.reset()
        self._control.append(encode_frame(StreamResetFrame(entry.stream_id, final, code, reason)))

    def _maybe_forget(self, entry: StreamEntry) -> None:
        if entry.awaiting_final_size:
            return
        if entry.send.state not in (_SEND_DONE, _SEND_RESET):
            return
        if entry.receive.state not in (_RECV_DATA_READ, _RECV_RESET):
            return
        if self.entries.pop(entry.stream_id, None) is not None and entry.stream_id & 1:
            self._peer_count -= 1

    # ------------------------------------------------------------------ ACKs and loss

    def after_acked(self, send: SendStream) -> None:
        """Some of this stream's frames were acknowledged: writable again? finished?"""
        if send.want_writable and send.capacity >= send.buffer_limit >> 1:
            send.want_writable = False
            entry = self.entries.get(send.stream_id)
            if entry is not None and entry.announced and not entry.reset:
                self._events.append(StreamWritable(self.address, send.stream_id))
        if send.state is _SEND_DONE:
            entry = self.entries.get(send.stream_id)
            if entry is not None:
                self._maybe_forget(entry)

    def requeue_flow_control(self, record: tuple[Any, ...]) -> None:
        """A lost MAX_DATA or MAX_STREAM_DATA: send the current value again."""
        if record[0] == KIND_MAX_DATA:
            self.max_data_due = True
        elif record[1] in self.entries:
            self.max_stream_data_due.add(record[1])

    # ------------------------------------------------------------------ sending

    def has_flow_frames(self) -> bool:
        return self.max_data_due or bool(self.max_stream_data_due)

    def add_flow_frames(
        self, parts: list[bytes | memoryview], records: list[tuple[Any, ...]], space: int
    ) -> int:
        """Append due MAX_DATA / MAX_STREAM_DATA frames; return the space left."""
        if self.max_data_due:
            self.max_data_due = False
            frame = b"\x05" + encode_varint(self.receive_window.next_limit())
            parts.append(frame)
            records.append((KIND_MAX_DATA,))
            space -= len(frame)
        due = self.max_stream_data_due
        while due and space > _MIN_FRAME_SPACE:
            stream_id = due.pop()
            entry = self.entries.get(stream_id)
            if entry is None or entry.reset:
                continue
            frame = (
                b"\x06"
                + encode_varint(stream_id)
                + encode_varint(entry.receive.window.next_limit())
            )
            parts.append(frame)
            records.append((KIND_MAX_STREAM_DATA, stream_id))
            space -= len(frame)
        return space
