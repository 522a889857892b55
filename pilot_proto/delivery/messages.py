"""Messages: fragmentation, in-order reassembly, credit and receipts (DESIGN section 5).

Messages are laid end to end in a per-peer sequence: message k starts at `base` and takes
`len(data) + MESSAGE_ACCOUNTING_OVERHEAD` units of it. The base orders delivery (in order
per peer, each exactly once) and is also the flow-control offset: the receiver grants
MAX_MESSAGE_DATA in these units and returns credit as messages are delivered, so the
memory a peer can fill with unfinished messages is bounded by `message_receive_window`.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from .config import MESSAGE_ACCOUNTING_OVERHEAD
from .flow import ReceiveWindow, SendCredit
from .frames import message_frame_prefix
from .ranges import RangeSet
from .varint import MAX_VARINT, encode_varint, varint_size

__all__ = [
    "KIND_MESSAGE",
    "IncomingMessages",
    "OutgoingMessage",
    "OutgoingMessages",
]

#: First element of the sent-frame records of message chunks (see connection.py).
KIND_MESSAGE = 1

_OVERHEAD = MESSAGE_ACCOUNTING_OVERHEAD
_pack_zero_u16 = struct.Struct(">BH").pack
# What one partially received message costs us besides its data (its bookkeeping objects).
_ENTRY_COST = 512
# type + flags + id + content type + up to four 8-byte varints + reply_to
_MAX_HEADER = 1 + 1 + 16 + 1 + 4 * 8 + 16


class OutgoingMessage:
    """A message until its RECEIPT arrives."""

    __slots__ = (
        "base",
        "data",
        "header_prefix",
        "message_id",
        "next_offset",
        "receipted",
        "reply_to",
        "type_code",
    )

    def __init__(
        self, message_id: bytes, type_code: int, data: bytes, reply_to: bytes | None
    ) -> None:
        self.message_id = message_id
        self.type_code = type_code
        self.data = data
        self.reply_to = reply_to
        self.base = 0
        self.next_offset = 0
        self.receipted = False
        #: Every MESSAGE frame of this message up to its offset field (set by `add`).
        self.header_prefix = b""


class OutgoingMessages:
    """Messages we send: new chunks in base order, lost chunks first."""

    __slots__ = ("_fresh", "_lost", "credit", "in_ready", "next_base", "unreceipted")

    def __init__(self, initial_credit: int) -> None:
        self.credit = SendCredit(initial_credit)
        self.next_base = 0
        #: Every message not yet receipted, by id, in sending order.
        self.unreceipted: dict[bytes, OutgoingMessage] = {}
        self._fresh: deque[OutgoingMessage] = deque()
        self._lost: deque[tuple[OutgoingMessage, int, int]] = deque()
        #: In the connection's send ring (the scheduler's bookkeeping).
        self.in_ready = False

    def add(self, message: OutgoingMessage) -> None:
        message.base = base = self.next_base
        total = len(message.data)
        self.next_base += total + _OVERHEAD
        # The fields every chunk repeats, encoded once.
        message.header_prefix = message_frame_prefix(
            base, message.message_id, message.type_code, total, message.reply_to
        )
        self.unreceipted[message.message_id] = message
        self._fresh.append(message)

    def has_work(self, connection_available: int = 0) -> bool:
        """Whether `fill` could add a chunk now (stream credit does not apply)."""
        if self._lost:
            return True
        if not self._fresh:
            return False
        head = self._fresh[0]
        if not head.data:
            return head.base + _OVERHEAD <= self.credit.limit
        return head.base + _OVERHEAD + head.next_offset < self.credit.limit

    def _emit(
        self,
        parts: list[bytes | memoryview],
        frames: list[tuple[Any, ...]],
        message: OutgoingMessage,
        start: int,
        end: int,
    ) -> int:
        data = message.data
        length = end - start
        if start:
            header = message.header_prefix + encode_varint(start) + encode_varint(length)
        elif 0x40 <= length < 0x4000:  # a first chunk of 64 B to 16 KiB: offset 0, length
            header = message.header_prefix + _pack_zero_u16(0, length | 0x4000)
        else:
            header = message.header_prefix + b"\x00" + encode_varint(length)
        parts.append(header)
        if end > start:
            if start == 0 and end == len(data):
                parts.append(data)
            else:
                parts.append(memoryview(data)[start:end])
        frames.append((KIND_MESSAGE, message, start, end))
        return len(header) + end - start

    def fill(
        self,
        parts: list[bytes | memoryview],
        frames: list[tuple[Any, ...]],
        space: int,
        connection: SendCredit | None = None,
    ) -> tuple[int, bool]:
        """Append message chunks within `space` bytes; return the space left and
        `has_work` after it. (The connection's stream credit does not apply to messages:
        they have their own.)"""
        lost = self._lost
        while lost and space > _MAX_HEADER:
            message, start, end = lost[0]
            if message.receipted:
                lost.popleft()
                continue
            stop = min(end, start + space - _MAX_HEADER)
            if stop == end:
                lost.popleft()
            else:
                lost[0] = (message, stop, end)
            space -= self._emit(parts, frames, message, start, stop)
        fresh = self._fresh
        limit = self.credit.limit
        while fresh and space > _MAX_HEADER:
            message = fresh[0]
            start = message.next_offset
            total = len(message.data)
            allowed = limit - message.base - _OVERHEAD - start
            if allowed < 0 or (allowed == 0 and total > 0):
                break  # out of credit until MAX_MESSAGE_DATA
            # The prefix (type, flags, base, id, type, reply_to, total) and, at most as
            # long as the total's, the offset and the length.
            header_size = len(message.header_prefix) + 2 * varint_size(total)
            room = space - header_size
            want = min(total - start, allowed)
            if room < want and room < 256:
                break  # rather a fresh packet than a sliver of this one
            stop = start + min(want, room)
            message.next_offset = stop
            if stop == total:
                fresh.popleft()
            space -= self._emit(parts, frames, message, start, stop)
        return space, bool(lost) or (bool(fresh) and self.has_work())

    def on_lost(self, message: OutgoingMessage, start: int, end: int) -> bool:
        if message.receipted:
            return False
        self._lost.append((message, start, end))
        return True

    def refuse(self, message_id: bytes) -> OutgoingMessage | None:
        """The peer refused the message (it does not trust us): stop sending it. Its
        place in the sequence stays used (the peer skipped it). A message none of whose
        chunks left yet cannot have been refused: such a claim is ignored (None)."""
        message = self.unreceipted.get(message_id)
        if message is None or (message.next_offset == 0 and message in self._fresh):
            return None
        del self.unreceipted[message_id]
        message.receipted = True  # lost chunks of it are not resent either
        if message in self._fresh:
            self._fresh.remove(message)
        return message

    def on_receipt(self, message_id: bytes) -> OutgoingMessage | None:
        message = self.unreceipted.pop(message_id, None)
        if message is not None:
            message.receipted = True
        return message


class _Reassembly:
    """A message some of whose chunks arrived."""

    __slots__ = (
        "chunks",
        "complete",
        "content_type",
        "coverage",
        "held",
        "message_id",
        "rejected",
        "reply_to",
        "total",
    )

    def __init__(
        self,
        message_id: bytes,
        content_type: str,
        total: int,
        reply_to: bytes | None,
        rejected: bool,
    ) -> None:
        self.message_id = message_id
        self.content_type = content_type
        self.total = total
        self.reply_to = reply_to
        self.rejected = rejected
        self.chunks: dict[int, bytes | memoryview] = {}
        self.coverage = RangeSet()
        self.held = 0
        self.complete = rejected or total == 0

    def assemble(self) -> bytes:
        offsets = sorted(self.chunks)
        pieces = [self.chunks[offset] for offset in offsets]
        position = 0
        for offset, piece in zip(offsets, pieces, strict=True):
            if offset != position:
                break
            position += len(piece)
        else:
            if position == self.total:
                return b"".join(pieces)
        # Overlapping chunks (a resend cut at other sizes): place each one.
        buffer = bytearray(self.total)
        for offset, piece in zip(offsets, pieces, strict=True):
            buffer[offset : offset + len(piece)] = piece
        return bytes(buffer)


#: deliver(message_id, content_type, data, reply_to)
Deliver = Callable[[bytes, str, bytes, "bytes | None"], None]


class IncomingMessages:
    """Reassembly of the peer's messages and delivery in base order."""

    __slots__ = ("_deliver", "_held", "_max_size", "_partial", "expected_base", "window")

    def __init__(
        self, initial_credit: int, window: int, max_message_size: int, deliver: Deliver
    ) -> None:
        self.window = ReceiveWindow(initial_credit, window)
        self.expected_base = 0
        self._partial: dict[int, _Reassembly] = {}
        self._held = 0
        self._max_size = max_message_size
        self._deliver = deliver

    def on_chunk(
        self,
        base: int,
        message_id: bytes,
        content_type: str,
        total: int,
        offset: int,
        data: bytes | memoryview,
        reply_to: bytes | None,
    ) -> str | None:
        """Take one MESSAGE frame; return a reason if it was dropped, else None."""
        if base < self.expected_base:
            return "duplicate_message"
        if base + _OVERHEAD + total + self.window.window > MAX_VARINT:
            # Skipping it would push the credit we grant past the largest varint: no
            # sender reaches such totals (found by fuzz/connection).
            return "message_total_too_large"
        end = offset + len(data)
        if base + _OVERHEAD + end > self.window.advertised:
            return "message_credit_exceeded"
        if base == self.expected_base and offset == 0 and end == total:
            # The common case: a whole message, in order, in one frame.
            if self._partial:
                stale = self._partial.pop(base, None)
                if stale is not None:
                    self._held -= stale.held
            self._advance(total)
            if total > self._max_size:
                return "message_too_large"
            self._deliver(message_id, content_type, bytes(data), reply_to)
            if self._partial:
                self._deliver_ready()
            return None
        entry = self._partial.get(base)
        if entry is None:
            # Each entry costs memory of its own, data or not: charge it, so that empty
            # chunks at many bases cannot grow the table past the window either.
            if self._held + _ENTRY_COST > self.window.window:
                return "message_memory_exceeded"
            entry = _Reassembly(message_id, content_type, total, reply_to, total > self._max_size)
            entry.held = _ENTRY_COST
            self._held += _ENTRY_COST
            self._partial[base] = entry
        elif (
            entry.message_id != message_id
            or entry.total != total
            or entry.content_type != content_type
            or entry.reply_to != reply_to
        ):
            return "message_inconsistent"
        if not entry.complete and end > offset:
            if entry.coverage.first_end(offset) >= end:
                return "duplicate_message"
            if self._held + len(data) > self.window.window:
                return "message_memory_exceeded"
            known = entry.chunks.get(offset)
            if known is None or len(known) < len(data):
                grow = len(data) - (len(known) if known is not None else 0)
                entry.chunks[offset] = data
                entry.held += grow
                self._held += grow
                entry.coverage.add(offset, end)
                if entry.coverage.first_end(0) >= total:
                    entry.complete = True
        if base == self.expected_base:
            self._deliver_ready()
        return "message_too_large" if entry.rejected else None

    def refuse(
        self,
        base: int,
        message_id: bytes,
        content_type: str,
        total: int,
        reply_to: bytes | None,
        max_waiting: int,
    ) -> str | None:
        """A chunk of a message from a peer we do not trust: its place in the sequence is
        used up without delivering anything (so later messages, once trusted, still line
        up). Returns "refused" the first time a message is seen, else why it was dropped.
        Only the message's place is kept, never its data, and at most `max_waiting`
        refused messages wait out of order."""
        if base < self.expected_base:
            return "duplicate_message"
        if base + _OVERHEAD + total + self.window.window > MAX_VARINT:
            return "message_total_too_large"
        if base + _OVERHEAD > self.window.advertised:
            return "message_credit_exceeded"
        entry = self._partial.get(base)
        if entry is not None:
            return "duplicate_message"
        if base == self.expected_base:
            self._advance(total)
            if self._partial:
                self._deliver_ready()
            return "refused"
        if len(self._partial) >= max_waiting or self._held + _ENTRY_COST > self.window.window:
            return "refusal_backlog_full"
        entry = _Reassembly(message_id, content_type, total, reply_to, True)
        entry.held = _ENTRY_COST
        self._held += _ENTRY_COST
        self._partial[base] = entry
        return "refused"

    def _advance(self, total: int) -> None:
        self.expected_base += total + _OVERHEAD
        self.window.consumed = self.expected_base

    def _deliver_ready(self) -> None:
        partial = self._partial
        while True:
            entry = partial.get(self.expected_base)
            if entry is None or not entry.complete:
                return
            del partial[self.expected_base]
            self._held -= entry.held
            self._advance(entry.total)
            if not entry.rejected:
                self._deliver(
                    entry.message_id, entry.content_type, entry.assemble(), entry.reply_to
                )
