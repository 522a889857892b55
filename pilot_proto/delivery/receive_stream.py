"""The receive half of a stream: reassembly in order, the read buffer and its window.

The read side is a pull API: data waits here until the application calls `read`, and
stream credit (MAX_STREAM_DATA) goes back only as it reads, so a receiver that stops
reading holds at most the stream window per stream (RFC 9000 section 4.1).
"""

from __future__ import annotations

from heapq import heappop, heappush

from .flow import ReceiveWindow
from .stream_states import (
    RECEIVE_TRANSITIONS,
    ReceiveEvent,
    ReceiveState,
    receive_transition,
)

__all__ = ["ReceiveStream", "StreamViolation"]

# Enum members as module constants: `Enum.MEMBER` is a slow lookup on hot paths.
_RECV_DATA_RECVD = ReceiveState.DATA_RECVD
_RECV_RECV = ReceiveState.RECV
_RECV_SIZE_KNOWN = ReceiveState.SIZE_KNOWN


class StreamViolation(Exception):
    """The peer broke the stream's rules (credit, final size); the frame is dropped and
    counted under `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReceiveStream:
    """The receiving state of one stream."""

    __slots__ = (
        "_pending",
        "_pending_bytes",
        "_pending_offsets",
        "_ready",
        "final_size",
        "highest",
        "read_offset",
        "readable_bytes",
        "readable_signalled",
        "recv_end",
        "state",
        "window",
    )

    def __init__(self, initial_credit: int, window: int) -> None:
        self.state = _RECV_RECV
        self.window = ReceiveWindow(initial_credit, window)
        self.read_offset = 0
        #: Everything below recv_end has arrived; [read_offset, recv_end) waits in _ready.
        self.recv_end = 0
        self.highest = 0
        self.final_size: int | None = None
        self._ready: list[bytes | memoryview] = []
        #: In-order bytes waiting for `read`.
        self.readable_bytes = 0
        # Out-of-order data: offset -> chunk, and a heap of those offsets.
        self._pending: dict[int, bytes | memoryview] = {}
        self._pending_offsets: list[int] = []
        self._pending_bytes = 0
        #: A StreamReadable event is outstanding (cleared when a read drains the buffer).
        self.readable_signalled = False

    @property
    def at_end(self) -> bool:
        """Every byte up to the FIN has been read."""
        return self.final_size is not None and self.read_offset == self.final_size

    def check(self, offset: int, length: int, fin: bool) -> int:
        """Validate a frame; return how far it raises `highest` (connection accounting)."""
        end = offset + length
        final = self.final_size
        if final is not None:
            if end > final or (fin and end != final):
                raise StreamViolation("stream_data_beyond_final_size")
        elif fin and end < self.highest:
            raise StreamViolation("stream_final_size_below_received")
        if end > self.window.advertised:
            raise StreamViolation("stream_credit_exceeded")
        return end - self.highest if end > self.highest else 0

    def take_in_order(self, data: bytes | memoryview, connection: ReceiveWindow) -> str | None:
        """`check`, the connection's credit and `on_data` at once for the bulk case: data
        at `recv_end`, no FIN, in state RECV. A reason if the frame must be dropped."""
        end = self.recv_end + len(data)
        if end > self.window.advertised:
            return "stream_credit_exceeded"
        highest = self.highest
        if end > highest:
            grow = end - highest
            if connection.highest + grow > connection.advertised:
                return "connection_credit_exceeded"
            connection.highest += grow
            self.highest = end
        if end > self.recv_end:
            self._ready.append(data)
            self.readable_bytes += len(data)
            self.recv_end = end
            if self._pending_offsets:
                self._drain_pending()
        return None

    def on_data(self, offset: int, data: bytes | memoryview, fin: bool) -> None:
        """Take a frame `check` accepted."""
        end = offset + len(data)
        if end > self.highest:
            self.highest = end
        recv_end = self.recv_end
        if end > recv_end:
            if offset <= recv_end:
                self._ready.append(data if offset == recv_end else data[recv_end - offset :])
                self.readable_bytes += end - recv_end
                self.recv_end = end
                if self._pending_offsets:
                    self._drain_pending()
            elif self._pending_bytes + len(data) <= self.window.window:
                known = self._pending.get(offset)
                if known is None:
                    heappush(self._pending_offsets, offset)
                    self._pending[offset] = data
                    self._pending_bytes += len(data)
                elif len(known) < len(data):
                    self._pending[offset] = data
                    self._pending_bytes += len(data) - len(known)
        if fin and self.final_size is None:
            self.final_size = end
            self.state = receive_transition(self.state, ReceiveEvent.FIN)
        if self.final_size is not None and self.recv_end == self.final_size:
            if self.state is _RECV_SIZE_KNOWN:
                self.state = receive_transition(self.state, ReceiveEvent.ALL_RECEIVED)

    def _drain_pending(self) -> None:
        offsets = self._pending_offsets
        pending = self._pending
        recv_end = self.recv_end
        while offsets and offsets[0] <= recv_end:
            offset = heappop(offsets)
            chunk = pending.pop(offset)
            self._pending_bytes -= len(chunk)
            end = offset + len(chunk)
            if end > recv_end:
                self._ready.append(chunk[recv_end - offset :])
                self.readable_bytes += end - recv_end
                recv_end = end
        self.recv_end = recv_end

    def read(self, max_bytes: int) -> bytes:
        """Up to `max_bytes` (all if negative) of the in-order data."""
        ready = self._ready
        if not ready:
            return b""
        if max_bytes < 0 or max_bytes >= self.readable_bytes:
            data = ready[0] if len(ready) == 1 else b"".join(ready)
            ready.clear()
        else:
            taken: list[bytes | memoryview] = []
            need = max_bytes
            while need:
                piece = ready[0]
                if len(piece) <= need:
                    taken.append(piece)
                    need -= len(piece)
                    del ready[0]
                else:
                    taken.append(piece[:need])
                    ready[0] = piece[need:]
                    need = 0
            data = b"".join(taken)
        if not isinstance(data, bytes):
            data = bytes(data)
        self.readable_bytes -= len(data)
        self.read_offset += len(data)
        self.window.consumed += len(data)
        return data

    def finish_if_read(self) -> bool:
        """Move to DATA_READ if the FIN arrived and nothing is left to read."""
        if self.state is _RECV_DATA_RECVD and self.at_end:
            self.state = receive_transition(self.state, ReceiveEvent.ALL_READ)
            return True
        return False

    def discard(self) -> int:
        """Abort: drop buffered data; return the bytes that now count as consumed."""
        if (self.state, ReceiveEvent.RESET) in RECEIVE_TRANSITIONS:
            self.state = receive_transition(self.state, ReceiveEvent.RESET)
        released = self.highest - self.read_offset
        self._ready = []
        self.readable_bytes = 0
        self._pending = {}
        self._pending_offsets = []
        self._pending_bytes = 0
        self.read_offset = self.highest
        self.window.consumed = self.highest
        return released
