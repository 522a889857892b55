"""The send half of a stream: the bounded send buffer, what to (re)send next, and ACKs.

Data the application writes is kept as the bytes objects it handed us (no per-byte work),
from the oldest unacknowledged byte on. Frames are cut from it as memoryview slices.
Lost ranges are resent before new data (RFC 9000 section 13.3: frames, not packets, are
retransmitted). The first frame of a stream we opened carries its port; it is resent until
some frame at offset 0 is acknowledged.
"""

from __future__ import annotations

import struct
from bisect import bisect_right, insort
from typing import Any

from ..errors import StreamBufferFull
from .flow import SendCredit
from .frames import COPY_LIMIT, FrameType, stream_frame_header
from .ranges import RangeSet
from .stream_states import SendEvent, SendState, send_transition
from .varint import encode_varint, varint_size

__all__ = ["KIND_STREAM", "SendStream"]

# Enum members as module constants: `Enum.MEMBER` is a slow lookup on hot paths.
_SEND_ENDED = SendState.ENDED
_SEND_OPEN = SendState.OPEN
_SEND_RESET = SendState.RESET


#: First element of the sent-frame records of stream data (see connection.py).
KIND_STREAM = 0

# STREAM frame types with the LEN bit, without and with FIN (frames.py).
_DATA_TYPE = bytes((FrameType.STREAM | FrameType.STREAM_LEN,))
_FIN_TYPE = bytes((FrameType.STREAM | FrameType.STREAM_LEN | FrameType.STREAM_FIN,))

# Coalesce application writes smaller than this into one buffered chunk.
_SMALL_WRITE = 16 * 1024

# The offset and length varints of a bulk STREAM frame, packed at once: a 4-byte offset
# (2**14 <= offset < 2**30) with a 2-byte (64 <= length < 2**14) or 4-byte length.
_pack_offset_u16 = struct.Struct(">IH").pack
_pack_offset_u32 = struct.Struct(">II").pack


class SendStream:
    """The sending state of one stream."""

    __slots__ = (
        "_acked_beyond",
        "_chunk_starts",
        "_chunks",
        "_data_prefix",
        "_first",
        "_header_base",
        "_id_bytes",
        "_lost",
        "acked_end",
        "buffer_limit",
        "buffered_end",
        "credit",
        "fin_acked",
        "fin_lost",
        "fin_requested",
        "fin_sent",
        "in_ready",
        "next_offset",
        "open_acked",
        "open_pending",
        "port",
        "state",
        "stream_id",
        "want_writable",
    )

    def __init__(
        self, stream_id: int, port: int | None, initial_credit: int, buffer_limit: int
    ) -> None:
        self.stream_id = stream_id
        #: Set on streams we opened: frames at offset 0 carry it.
        self.port = port
        self.state = _SEND_OPEN
        self.credit = SendCredit(initial_credit)
        self.buffer_limit = buffer_limit
        self._chunks: list[bytes] = []
        self._chunk_starts: list[int] = []
        self._first = 0
        self._lost: list[tuple[int, int]] = []
        self._acked_beyond: RangeSet | None = None
        self.buffered_end = 0
        self.next_offset = 0
        self.acked_end = 0
        self.fin_requested = False
        self.fin_sent = False
        self.fin_lost = False
        self.fin_acked = False
        self.open_pending = port is not None
        self.open_acked = port is None
        self.want_writable = False
        self.in_ready = False
        # Frame header pieces that never change for this stream.
        self._id_bytes = encode_varint(stream_id)
        self._data_prefix = _DATA_TYPE + self._id_bytes
        self._header_base = 1 + len(self._id_bytes) + (varint_size(port) if port is not None else 0)

    # ------------------------------------------------------------------ application side

    @property
    def capacity(self) -> int:
        """Bytes the application may still write (unacknowledged data counts)."""
        if self.state is not _SEND_OPEN:
            return 0
        return max(self.buffer_limit - (self.buffered_end - self.acked_end), 0)

    def write(self, data: bytes, end: bool) -> None:
        if data:
            self.state = send_transition(self.state, SendEvent.WRITE)
            capacity = self.capacity
            if len(data) > capacity:
                self.want_writable = True
                raise StreamBufferFull(len(data), capacity)
            chunks = self._chunks
            last = len(chunks) - 1
            # Merge small writes into the last chunk if none of it was sent yet, so a
            # chatty writer does not make every frame a join of many pieces.
            if (
                last >= self._first
                and len(data) < _SMALL_WRITE
                and len(chunks[last]) < _SMALL_WRITE
                and self._chunk_starts[last] >= self.next_offset
            ):
                chunks[last] = chunks[last] + data
            else:
                chunks.append(data)
                self._chunk_starts.append(self.buffered_end)
            self.buffered_end += len(data)
            if self.capacity < self.buffer_limit >> 1:
                self.want_writable = True
        if end:
            self.state = send_transition(self.state, SendEvent.END)
            self.fin_requested = True

    def reset(self) -> int:
        """Abort sending; the final size (everything ever sent) goes in STREAM_RESET."""
        self.state = send_transition(self.state, SendEvent.RESET)
        self._chunks = []
        self._chunk_starts = []
        self._first = 0
        self._lost = []
        self.open_pending = False
        self.fin_lost = False
        return self.next_offset

    # ------------------------------------------------------------------ scheduler side

    def has_work(self, connection_available: int) -> bool:
        """Whether `fill` could put a frame in a packet now."""
        if self.state is _SEND_RESET:
            return False
        if self._lost or self.fin_lost or self.open_pending:
            return True
        if self.next_offset < self.buffered_end:
            return self.next_offset < self.credit.limit and connection_available > 0
        return self.fin_requested and not self.fin_sent

    def _slice(self, start: int, end: int) -> bytes | memoryview:
        starts = self._chunk_starts
        chunks = self._chunks
        index = bisect_right(starts, start, self._first) - 1
        chunk = chunks[index]
        chunk_start = starts[index]
        if end - chunk_start <= len(chunk):
            if start == chunk_start and end - start == len(chunk):
                return chunk
            return memoryview(chunk)[start - chunk_start : end - chunk_start]
        pieces: list[bytes | memoryview] = []
        while start < end:
            chunk = chunks[index]
            chunk_start = starts[index]
            stop = min(end, chunk_start + len(chunk))
            pieces.append(memoryview(chunk)[start - chunk_start : stop - chunk_start])
            start = stop
            index += 1
        return b"".join(pieces)

    def _emit(
        self,
        parts: list[bytes | memoryview],
        frames: list[tuple[Any, ...]],
        start: int,
        end: int,
        fin: bool,
    ) -> int:
        if start or self.port is None:
            header = b"".join(
                (
                    _FIN_TYPE if fin else _DATA_TYPE,
                    self._id_bytes,
                    encode_varint(start),
                    encode_varint(end - start),
                )
            )
        else:
            header = stream_frame_header(self.stream_id, start, end - start, fin, self.port)
        parts.append(header)
        if end > start:
            parts.append(self._slice(start, end))
        frames.append((KIND_STREAM, self, start, end, fin))
        if start == 0:
            self.open_pending = False
        if fin:
            self.fin_sent = True
            self.fin_lost = False
        return len(header) + end - start

    def fill(
        self,
        parts: list[bytes | memoryview],
        frames: list[tuple[Any, ...]],
        space: int,
        connection: SendCredit,
    ) -> tuple[int, bool]:
        """Append frames (wire parts and sent-frame records) within `space` bytes; return
        the space left and `has_work` after it (one call instead of two per packet). New
        data is limited by the stream's and the connection's credit."""
        offset = self.next_offset
        if (
            self._lost
            or self.open_pending
            or self.fin_lost
            or not offset
            or self.state is _SEND_RESET
        ):
            return self._fill_and_check(parts, frames, space, connection)
        # The bulk case: new data in the middle of the stream, nothing else. The same
        # frame `_fill` would make, without its generality.
        end = self.buffered_end
        if offset >= end:
            return self._fill_and_check(parts, frames, space, connection)  # a FIN, or nothing
        room = (
            space
            - self._header_base
            - (1 if space < 0x40 else 2 if space < 0x4000 else 4 if space < 0x40000000 else 8)
            - (1 if offset < 0x40 else 2 if offset < 0x4000 else 4 if offset < 0x40000000 else 8)
        )
        if room <= 0:
            return space, self.has_work(connection.limit - connection.used)
        length = end - offset
        limit = self.credit.limit - offset
        if limit < length:
            length = limit
        limit = connection.limit - connection.used
        if limit < length:
            length = limit
        if room < length:
            length = room
        if length <= 0:
            return space, self.has_work(connection.limit - connection.used)
        stop = offset + length
        if stop == end and self.fin_requested:
            return self._fill_and_check(parts, frames, space, connection)  # with the FIN
        if 0x4000 <= offset < 0x40000000 and 0x40 <= length < 0x40000000:
            if length < 0x4000:
                header = self._data_prefix + _pack_offset_u16(offset | 0x80000000, length | 0x4000)
            else:
                header = self._data_prefix + _pack_offset_u32(
                    offset | 0x80000000, length | 0x80000000
                )
        else:
            header = self._data_prefix + encode_varint(offset) + encode_varint(length)
        starts = self._chunk_starts
        index = bisect_right(starts, offset, self._first) - 1
        chunk = self._chunks[index]
        first = offset - starts[index]
        if first + length <= len(chunk):
            if length <= COPY_LIMIT:
                data: bytes | memoryview = chunk[first : first + length]
            elif length == len(chunk):
                data = chunk
            else:
                data = memoryview(chunk)[first : first + length]
        else:
            data = self._slice(offset, stop)
        connection.used += length
        self.next_offset = stop
        parts.append(header)
        parts.append(data)
        frames.append((KIND_STREAM, self, offset, stop, False))
        # has_work, knowing that nothing is lost, pending or finished: more new data?
        more = stop < end and stop < self.credit.limit and connection.used < connection.limit
        return space - len(header) - length, more

    def _fill_and_check(
        self,
        parts: list[bytes | memoryview],
        frames: list[tuple[Any, ...]],
        space: int,
        connection: SendCredit,
    ) -> tuple[int, bool]:
        space = self._fill(parts, frames, space, connection)
        return space, self.has_work(connection.limit - connection.used)

    def _fill(
        self,
        parts: list[bytes | memoryview],
        frames: list[tuple[Any, ...]],
        space: int,
        connection: SendCredit,
    ) -> int:
        if self.state is _SEND_RESET:
            return space
        overhead = self._header_base + varint_size(space)
        final = self.buffered_end if self.fin_requested else -1
        lost = self._lost
        while lost:
            start, end = lost[0]
            if start < self.acked_end:
                start = self.acked_end
            if end <= start:
                lost.pop(0)
                continue
            room = space - overhead - varint_size(start)
            if room <= 0:
                return space
            stop = min(end, start + room)
            if stop == end:
                lost.pop(0)
            else:
                lost[0] = (stop, end)
            space -= self._emit(parts, frames, start, stop, stop == final)
        offset = self.next_offset
        if offset < self.buffered_end or (offset == 0 and self.open_pending):
            room = space - overhead - varint_size(offset)
            allowed = min(
                self.buffered_end - offset,
                self.credit.limit - offset,
                connection.limit - connection.used,
            )
            stop = offset + min(room, allowed)
            if room > 0 and (stop > offset or offset == 0):
                connection.used += stop - offset
                self.next_offset = stop
                space -= self._emit(parts, frames, offset, stop, stop == final)
        if self.fin_requested and (not self.fin_sent or self.fin_lost):
            if self.next_offset == self.buffered_end and space > overhead + 8:
                space -= self._emit(parts, frames, self.buffered_end, self.buffered_end, True)
        if self.open_pending and space > overhead + 8:
            space -= self._emit(parts, frames, 0, 0, self.fin_requested and final == 0)
        return space

    # ------------------------------------------------------------------ ACK and loss

    def on_acked(self, start: int, end: int, fin: bool) -> None:
        if start == 0:
            self.open_acked = True
        if fin:
            self.fin_acked = True
        if start <= self.acked_end:
            if end > self.acked_end:
                self.acked_end = end
                beyond = self._acked_beyond
                if beyond:
                    self.acked_end = beyond.first_end(end)
                    beyond.remove_below(self.acked_end)
                self._trim()
        elif end > start:
            if self._acked_beyond is None:
                self._acked_beyond = RangeSet()
            self._acked_beyond.add(start, end)
        if self.fin_acked and self.state is _SEND_ENDED and self.acked_end >= self.buffered_end:
            self.state = send_transition(self.state, SendEvent.ALL_ACKED)

    def _trim(self) -> None:
        chunks = self._chunks
        starts = self._chunk_starts
        index = self._first
        acked = self.acked_end
        count = len(chunks)
        while index < count and starts[index] + len(chunks[index]) <= acked:
            chunks[index] = b""
            index += 1
        self._first = index
        if index > 64 and index * 2 > count:
            del chunks[:index]
            del starts[:index]
            self._first = 0

    def on_lost(self, start: int, end: int, fin: bool) -> bool:
        """Queue a lost frame's range again; True if there is something to resend."""
        if self.state is _SEND_RESET:
            return False
        queued = False
        if start == 0 and not self.open_acked:
            self.open_pending = True
            queued = True
        if fin and not self.fin_acked:
            self.fin_lost = True
            queued = True
        if end > self.acked_end and end > start:
            lost = self._lost
            if lost and start < lost[-1][0]:
                insort(lost, (start, end))
            else:
                lost.append((start, end))
            queued = True
        return queued
