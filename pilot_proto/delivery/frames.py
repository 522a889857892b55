"""The one codec for the frames inside a session packet's plaintext (DESIGN section 5).

A payload is a packet number (varint) followed by one or more frames. Every frame starts
with its type (a varint; every type defined here is below 64, so it takes one byte).
Layouts are in docs/PROTOCOL.md section 6. Frames decode to small named tuples: cheap to
build on the hot path, and equal when their fields are equal (round-trip tests).

Decoding faces hostile input: `decode_payload` raises only `FrameDecodeError`.
"""

from __future__ import annotations

import re
import struct
from typing import Final, NamedTuple

from .varint import MAX_VARINT, VarintError, encode_varint, read_varint_unchecked

__all__ = [
    "CHALLENGE_SIZE",
    "MAX_ACK_RANGES",
    "MAX_JUSTIFICATION_BYTES",
    "MAX_REASON_BYTES",
    "MAX_REFUSED_IDS",
    "MESSAGE_ID_SIZE",
    "MESSAGE_TYPES",
    "TRUST_FRAMES",
    "Ack",
    "Close",
    "Datagram",
    "Frame",
    "FrameDecodeError",
    "FrameType",
    "ImmediateAck",
    "MaxData",
    "MaxMessageData",
    "MaxStreamData",
    "Message",
    "Padding",
    "Ping",
    "Pong",
    "Receipt",
    "Refused",
    "Stream",
    "StreamReset",
    "TrustAccept",
    "TrustReject",
    "TrustRequest",
    "decode_ack",
    "decode_frames",
    "decode_payload",
    "encode_ack",
    "encode_frame",
    "encode_payload",
    "message_frame_header",
    "message_frame_prefix",
    "stream_frame_header",
]

CHALLENGE_SIZE = 8
MESSAGE_ID_SIZE = 16
#: Reasons in CLOSE and STREAM_RESET are short UTF-8 texts; longer ones are garbage.
MAX_REASON_BYTES = 1024
#: An ACK with more ranges than this is garbage (we send at most `DeliveryConfig.max_ack_ranges`).
MAX_ACK_RANGES = 256
#: A TRUST_REQUEST's justification is a short UTF-8 text; longer is garbage (DESIGN 8).
MAX_JUSTIFICATION_BYTES = 1024
#: A REFUSED frame names at most this many messages (a sender refuses them in batches).
MAX_REFUSED_IDS = 64
#: Message content types, by their one-byte code on the wire.
MESSAGE_TYPES: tuple[str, ...] = ("text", "json", "binary")
_MESSAGE_TYPE_CODES = {name: code for code, name in enumerate(MESSAGE_TYPES)}


class FrameType:
    """Frame type numbers. 0x20-0x2f are trust frames (DESIGN 5 and 8): the only frames
    an untrusted peer's session carries to the application."""

    PADDING: Final = 0x00
    PING: Final = 0x01
    PONG: Final = 0x02
    ACK: Final = 0x03
    RECEIPT: Final = 0x04
    MAX_DATA: Final = 0x05
    MAX_STREAM_DATA: Final = 0x06
    MAX_MESSAGE_DATA: Final = 0x07
    STREAM_RESET: Final = 0x08
    DATAGRAM: Final = 0x09
    MESSAGE: Final = 0x0A
    CLOSE: Final = 0x0B
    IMMEDIATE_ACK: Final = 0x0C
    # STREAM is 0x10-0x17: the low three bits are flags.
    STREAM: Final = 0x10
    STREAM_FIN: Final = 0x01
    STREAM_LEN: Final = 0x02
    STREAM_PORT: Final = 0x04
    TRUST_REQUEST: Final = 0x20
    TRUST_ACCEPT: Final = 0x21
    TRUST_REJECT: Final = 0x22
    REFUSED: Final = 0x23
    TRUST_RESERVED_FIRST: Final = 0x20
    TRUST_RESERVED_LAST: Final = 0x2F


class FrameDecodeError(ValueError):
    """The payload is not a well-formed sequence of frames (the only error decoding raises)."""


class Padding(NamedTuple):
    length: int


class Ping(NamedTuple):
    """Ack-eliciting; answered by a PONG echoing the challenge, except the all-zero
    challenge (PMTU probes, PTO probes, keep-alives), which is never answered."""

    challenge: bytes


class Pong(NamedTuple):
    challenge: bytes


class Ack(NamedTuple):
    """Acknowledged packet numbers as inclusive (smallest, largest) ranges, largest first."""

    ranges: tuple[tuple[int, int], ...]
    delay_us: int


class Receipt(NamedTuple):
    message_id: bytes


class MaxData(NamedTuple):
    maximum: int


class MaxStreamData(NamedTuple):
    stream_id: int
    maximum: int


class MaxMessageData(NamedTuple):
    maximum: int


class StreamReset(NamedTuple):
    stream_id: int
    final_size: int
    code: int
    reason: str


class Datagram(NamedTuple):
    data: bytes | memoryview


class Message(NamedTuple):
    """One chunk of a message. `base` is the message's place in the per-peer message sequence."""

    base: int
    message_id: bytes
    content_type: str
    total_length: int
    offset: int
    data: bytes | memoryview
    reply_to: bytes | None


class Close(NamedTuple):
    code: int
    reason: str


class ImmediateAck(NamedTuple):
    """Asks the receiver to ACK this packet at once (draft-ietf-quic-ack-frequency ideas):
    the sender's window is full, or it has nothing more to send."""


class Stream(NamedTuple):
    """Stream data. `port` is present on frames at offset 0 (the stream's opening)."""

    stream_id: int
    offset: int
    data: bytes | memoryview
    fin: bool
    port: int | None


class TrustRequest(NamedTuple):
    """Asks the peer to trust us; answered by TRUST_ACCEPT or TRUST_REJECT naming the same
    16-byte request id."""

    request_id: bytes
    justification: str


class TrustAccept(NamedTuple):
    request_id: bytes


class TrustReject(NamedTuple):
    request_id: bytes


class Refused(NamedTuple):
    """The peer does not trust us: it refused these messages (never delivered, not to be
    resent). Streams are refused by STREAM_RESET with code NOT_TRUSTED instead."""

    message_ids: tuple[bytes, ...]


#: Trust frames: the only ones an untrusted peer's session passes on (DESIGN 8).
TRUST_FRAMES = (TrustRequest, TrustAccept, TrustReject, Refused)

Frame = (
    Padding
    | Ping
    | Pong
    | Ack
    | Receipt
    | MaxData
    | MaxStreamData
    | MaxMessageData
    | StreamReset
    | Datagram
    | Message
    | Close
    | ImmediateAck
    | Stream
    | TrustRequest
    | TrustAccept
    | TrustReject
    | Refused
)

# --------------------------------------------------------------------------- encoding

_ONE = [bytes((value,)) for value in range(256)]
_pack_u16 = struct.Struct(">H").pack


def stream_frame_header(
    stream_id: int, offset: int, length: int, fin: bool, port: int | None
) -> bytes:
    """Everything of a STREAM frame before its data (the LEN field is always written)."""
    frame_type = FrameType.STREAM | FrameType.STREAM_LEN
    if fin:
        frame_type |= FrameType.STREAM_FIN
    if port is None:
        return b"".join(
            (
                _ONE[frame_type],
                encode_varint(stream_id),
                encode_varint(offset),
                encode_varint(length),
            )
        )
    frame_type |= FrameType.STREAM_PORT
    return b"".join(
        (
            _ONE[frame_type],
            encode_varint(stream_id),
            encode_varint(offset),
            encode_varint(port),
            encode_varint(length),
        )
    )


def message_frame_prefix(
    base: int, message_id: bytes, type_code: int, total_length: int, reply_to: bytes | None
) -> bytes:
    """A MESSAGE frame up to its offset field: what every chunk of one message repeats."""
    return b"".join(
        (
            b"\x0a\x00" if reply_to is None else b"\x0a\x01",
            encode_varint(base),
            message_id,
            _ONE[type_code],
            reply_to or b"",
            encode_varint(total_length),
        )
    )


def message_frame_header(
    base: int,
    message_id: bytes,
    type_code: int,
    total_length: int,
    offset: int,
    length: int,
    reply_to: bytes | None,
) -> bytes:
    """Everything of a MESSAGE frame before its chunk."""
    prefix = message_frame_prefix(base, message_id, type_code, total_length, reply_to)
    return prefix + encode_varint(offset) + encode_varint(length)


def _encode_reason(reason: str, limit: int = MAX_REASON_BYTES) -> bytes:
    raw = reason.encode("utf-8")
    if len(raw) > limit:
        # Cut on a character boundary so the peer can decode it.
        raw = raw[:limit].decode("utf-8", "ignore").encode("utf-8")
    return encode_varint(len(raw)) + raw


def encode_ack(ranges: tuple[tuple[int, int], ...], delay_us: int) -> bytes:
    """An ACK frame: inclusive (smallest, largest) ranges, largest first."""
    if not ranges:
        raise ValueError("an ACK frame needs at least one range")
    smallest, largest = ranges[0]
    parts = [
        b"\x03",
        encode_varint(largest),
        encode_varint(delay_us),
        encode_varint(len(ranges) - 1),
        encode_varint(largest - smallest),
    ]
    # RFC 9000 section 19.3.1: each further range is a gap and a length below the previous.
    for low, high in ranges[1:]:
        gap = smallest - high - 2
        if gap < 0 or high < low:
            raise ValueError("ACK ranges must be disjoint, largest first")
        parts.append(encode_varint(gap))
        parts.append(encode_varint(high - low))
        smallest = low
    return b"".join(parts)


def encode_frame(frame: Frame) -> bytes:
    """The wire form of one frame."""
    if isinstance(frame, Stream):
        return stream_frame_header(
            frame.stream_id, frame.offset, len(frame.data), frame.fin, frame.port
        ) + bytes(frame.data)
    if isinstance(frame, Ack):
        return encode_ack(frame.ranges, frame.delay_us)
    if isinstance(frame, Message):
        if len(frame.message_id) != MESSAGE_ID_SIZE:
            raise ValueError("message ids are 16 bytes")
        if frame.reply_to is not None and len(frame.reply_to) != MESSAGE_ID_SIZE:
            raise ValueError("reply_to is a 16-byte message id")
        return message_frame_header(
            frame.base,
            frame.message_id,
            _MESSAGE_TYPE_CODES[frame.content_type],
            frame.total_length,
            frame.offset,
            len(frame.data),
            frame.reply_to,
        ) + bytes(frame.data)
    if isinstance(frame, Padding):
        return bytes(frame.length)
    if isinstance(frame, Ping | Pong):
        if len(frame.challenge) != CHALLENGE_SIZE:
            raise ValueError("PING and PONG carry an 8-byte challenge")
        return (b"\x01" if isinstance(frame, Ping) else b"\x02") + frame.challenge
    if isinstance(frame, Receipt):
        if len(frame.message_id) != MESSAGE_ID_SIZE:
            raise ValueError("message ids are 16 bytes")
        return b"\x04" + frame.message_id
    if isinstance(frame, MaxData):
        return b"\x05" + encode_varint(frame.maximum)
    if isinstance(frame, MaxStreamData):
        return b"\x06" + encode_varint(frame.stream_id) + encode_varint(frame.maximum)
    if isinstance(frame, MaxMessageData):
        return b"\x07" + encode_varint(frame.maximum)
    if isinstance(frame, StreamReset):
        return b"".join(
            (
                b"\x08",
                encode_varint(frame.stream_id),
                encode_varint(frame.final_size),
                encode_varint(frame.code),
                _encode_reason(frame.reason),
            )
        )
    if isinstance(frame, Datagram):
        return b"\x09" + encode_varint(len(frame.data)) + bytes(frame.data)
    if isinstance(frame, Close):
        return b"\x0b" + encode_varint(frame.code) + _encode_reason(frame.reason)
    if isinstance(frame, ImmediateAck):
        return b"\x0c"
    if isinstance(frame, TrustRequest | TrustAccept | TrustReject | Refused):
        return encode_trust_frame(frame)
    raise TypeError(f"not a frame: {frame!r}")


def encode_trust_frame(frame: TrustRequest | TrustAccept | TrustReject | Refused) -> bytes:
    """The wire form of a trust frame (docs/PROTOCOL.md section 6.7)."""
    if isinstance(frame, Refused):
        ids = frame.message_ids
        if not 0 < len(ids) <= MAX_REFUSED_IDS or any(len(i) != MESSAGE_ID_SIZE for i in ids):
            raise ValueError(f"REFUSED names 1-{MAX_REFUSED_IDS} 16-byte message ids")
        return b"\x23" + encode_varint(len(ids)) + b"".join(ids)
    if len(frame.request_id) != MESSAGE_ID_SIZE:
        raise ValueError("trust request ids are 16 bytes")
    if isinstance(frame, TrustAccept):
        return b"\x21" + frame.request_id
    if isinstance(frame, TrustReject):
        return b"\x22" + frame.request_id
    return b"\x20" + frame.request_id + _encode_reason(frame.justification, MAX_JUSTIFICATION_BYTES)


def encode_payload(packet_number: int, frames: list[Frame]) -> bytes:
    """A whole payload: packet number then frames (tests and probes; the sender builds inline)."""
    return encode_varint(packet_number) + b"".join(encode_frame(frame) for frame in frames)


# --------------------------------------------------------------------------- decoding

_IMMEDIATE_ACK = ImmediateAck()
_NON_ZERO = re.compile(b"[^\\x00]")
_varint = read_varint_unchecked
# Frames are built with tuple.__new__: a NamedTuple's own __new__ is a Python function.
_new = tuple.__new__
#: Chunks up to this size are copied out of the payload (cheaper than a memoryview slice,
#: and pins nothing); larger ones are memoryview slices of it.
COPY_LIMIT = 4096


def decode_ack(data: bytes, pos: int, end: int) -> tuple[tuple[tuple[int, int], ...], int, int]:
    """The ACK frame whose fields start at `pos`: (ranges, delay_us, position after it).
    Raises FrameDecodeError, IndexError or struct.error."""
    # One- and two-byte varints inline: a packet number, a delay in microseconds and a
    # range length of a running exchange are seldom larger.
    largest = data[pos]
    if largest < 0x40:
        pos += 1
    elif largest < 0x80:
        largest = (largest & 0x3F) << 8 | data[pos + 1]
        pos += 2
    else:
        largest, pos = _varint(data, pos)
    delay = data[pos]
    if delay < 0x40:
        pos += 1
    elif delay < 0x80:
        delay = (delay & 0x3F) << 8 | data[pos + 1]
        pos += 2
    else:
        delay, pos = _varint(data, pos)
    count = data[pos]
    if count < 0x40:
        pos += 1
    else:
        count, pos = _varint(data, pos)
        if count >= MAX_ACK_RANGES:
            raise FrameDecodeError("too many ACK ranges")
    first = data[pos]
    if first < 0x40:
        pos += 1
    elif first < 0x80:
        first = (first & 0x3F) << 8 | data[pos + 1]
        pos += 2
    else:
        first, pos = _varint(data, pos)
    smallest = largest - first
    if smallest < 0:
        raise FrameDecodeError("ACK range below packet number zero")
    if not count:
        if pos > end:
            raise FrameDecodeError("ACK runs past the end of the payload")
        return ((smallest, largest),), delay, pos
    ranges = [(smallest, largest)]
    for _ in range(count):
        gap, pos = _varint(data, pos)
        length, pos = _varint(data, pos)
        high = smallest - gap - 2
        low = high - length
        if low < 0:
            raise FrameDecodeError("ACK range below packet number zero")
        ranges.append((low, high))
        smallest = low
    if pos > end:
        raise FrameDecodeError("ACK runs past the end of the payload")
    return tuple(ranges), delay, pos


def _reason(data: bytes, pos: int, end: int, limit: int = MAX_REASON_BYTES) -> tuple[str, int]:
    length, pos = _varint(data, pos)
    if length > limit:
        raise FrameDecodeError("text too long")
    stop = pos + length
    if stop > end:
        raise FrameDecodeError("frame runs past the end of the payload")
    return data[pos:stop].decode("utf-8", "replace"), stop


def _decode_trust_frame(data: bytes, pos: int, end: int, frame_type: int) -> tuple[Frame, int]:
    """The trust frame (0x20-0x23) whose fields start at `pos`; FrameDecodeError (or
    IndexError/VarintError, turned into it by the caller) when malformed."""
    if frame_type == FrameType.REFUSED:
        count, pos = _varint(data, pos)
        if not 0 < count <= MAX_REFUSED_IDS:
            raise FrameDecodeError("REFUSED names 1-64 message ids")
        stop = pos + count * MESSAGE_ID_SIZE
        if stop > end:
            raise FrameDecodeError("frame runs past the end of the payload")
        ids = tuple(data[at : at + MESSAGE_ID_SIZE] for at in range(pos, stop, MESSAGE_ID_SIZE))
        return _new(Refused, (ids,)), stop
    if frame_type > FrameType.REFUSED:
        raise FrameDecodeError(f"unknown frame type {frame_type:#x}")
    stop = pos + MESSAGE_ID_SIZE
    if stop > end:
        raise FrameDecodeError("frame runs past the end of the payload")
    request_id = data[pos:stop]
    if frame_type == FrameType.TRUST_ACCEPT:
        return _new(TrustAccept, (request_id,)), stop
    if frame_type == FrameType.TRUST_REJECT:
        return _new(TrustReject, (request_id,)), stop
    text, stop = _reason(data, stop, end, MAX_JUSTIFICATION_BYTES)
    return _new(TrustRequest, (request_id, text)), stop


def decode_payload(payload: bytes | memoryview) -> tuple[int, list[Frame]]:
    """Split a payload into its packet number and frames.

    Raises FrameDecodeError (only) on anything malformed: truncated fields, unknown frame
    types, lengths past the end, or a payload without frames. Data fields are bytes, or
    memoryview slices of the payload when longer than COPY_LIMIT.
    """
    data = payload if type(payload) is bytes else bytes(payload)
    try:
        packet_number = data[0]
        if packet_number < 0x40:
            pos = 1
        else:
            packet_number, pos = _varint(data, 0)
    except (IndexError, struct.error) as exc:
        raise FrameDecodeError("truncated frame") from exc
    return packet_number, decode_frames(data, pos, [])


def decode_frames(data: bytes, pos: int, frames: list[Frame]) -> list[Frame]:
    """The frames of `data` from `pos` to its end, appended to `frames` (which may hold
    the frames before `pos`, already decoded); raises FrameDecodeError as decode_payload."""
    end = len(data)
    append = frames.append
    view: memoryview | None = None
    try:
        while pos < end:
            frame_type = data[pos]
            pos += 1
            if frame_type >= 0x10:
                # The hot path (bulk data), decoded inline.
                if frame_type > 0x17:
                    # Trust frames (0x20-0x23): rare, decoded out of line.
                    if frame_type < 0x20:
                        raise FrameDecodeError(f"unknown frame type {frame_type:#x}")
                    frame, pos = _decode_trust_frame(data, pos, end, frame_type)
                    append(frame)
                    continue
                stream_id = data[pos]
                if stream_id < 0x40:
                    pos += 1
                else:
                    stream_id, pos = _varint(data, pos)
                offset, pos = _varint(data, pos)
                port = None
                if frame_type & 0x04:
                    port, pos = _varint(data, pos)
                if frame_type & 0x02:
                    length, pos = _varint(data, pos)
                else:
                    length = end - pos
                stop = pos + length
                if stop > end or offset + length > MAX_VARINT:
                    raise FrameDecodeError("STREAM frame past the end of the payload")
                if length <= COPY_LIMIT:
                    chunk: bytes | memoryview = data[pos:stop]
                else:
                    if view is None:
                        view = memoryview(data)
                    chunk = view[pos:stop]
                append(_new(Stream, (stream_id, offset, chunk, frame_type & 1 == 1, port)))
                pos = stop
            elif frame_type == 0x0A:  # MESSAGE
                flags = data[pos]
                if flags > 1:
                    raise FrameDecodeError("unknown MESSAGE flags")
                base = data[pos + 1]
                if base < 0x40:
                    pos += 2
                else:
                    base, pos = _varint(data, pos + 1)
                stop = pos + MESSAGE_ID_SIZE
                type_code = data[stop]  # IndexError if the id runs past the end
                message_id = data[pos:stop]
                if type_code >= 3:
                    raise FrameDecodeError("unknown message type")
                pos = stop + 1
                reply_to = None
                if flags:
                    stop = pos + MESSAGE_ID_SIZE
                    if stop > end:
                        raise FrameDecodeError("frame runs past the end of the payload")
                    reply_to = data[pos:stop]
                    pos = stop
                total = data[pos]
                if total < 0x40:
                    pos += 1
                elif total < 0x80:
                    total = (total & 0x3F) << 8 | data[pos + 1]
                    pos += 2
                else:
                    total, pos = _varint(data, pos)
                offset = data[pos]
                if offset < 0x40:
                    pos += 1
                else:
                    offset, pos = _varint(data, pos)
                length = data[pos]
                if length < 0x40:
                    pos += 1
                elif length < 0x80:
                    length = (length & 0x3F) << 8 | data[pos + 1]
                    pos += 2
                else:
                    length, pos = _varint(data, pos)
                if offset + length > total:
                    raise FrameDecodeError("message chunk beyond the message's length")
                stop = pos + length
                if stop > end:
                    raise FrameDecodeError("frame runs past the end of the payload")
                if length <= COPY_LIMIT:
                    chunk = data[pos:stop]
                else:
                    if view is None:
                        view = memoryview(data)
                    chunk = view[pos:stop]
                pos = stop
                content_type = MESSAGE_TYPES[type_code]
                append(
                    _new(Message, (base, message_id, content_type, total, offset, chunk, reply_to))
                )
            elif frame_type == 0x04:  # RECEIPT (with a reply: next most common)
                stop = pos + MESSAGE_ID_SIZE
                if stop > end:
                    raise FrameDecodeError("frame runs past the end of the payload")
                append(_new(Receipt, (data[pos:stop],)))
                pos = stop
            elif frame_type == 0x03:  # ACK
                ranges, delay, pos = decode_ack(data, pos, end)
                append(_new(Ack, (ranges, delay)))
            elif frame_type == 0x0C:  # IMMEDIATE_ACK
                append(_IMMEDIATE_ACK)
            elif frame_type == 0x00:  # PADDING
                # Probes carry tens of kilobytes of padding: find its end in C, not per byte.
                start = pos - 1
                found = _NON_ZERO.search(data, pos)
                pos = found.start() if found is not None else end
                append(_new(Padding, (pos - start,)))
            elif frame_type == 0x01 or frame_type == 0x02:  # PING, PONG
                stop = pos + CHALLENGE_SIZE
                if stop > end:
                    raise FrameDecodeError("frame runs past the end of the payload")
                if frame_type == 0x01:
                    append(_new(Ping, (data[pos:stop],)))
                else:
                    append(_new(Pong, (data[pos:stop],)))
                pos = stop
            elif frame_type == 0x05:  # MAX_DATA
                maximum, pos = _varint(data, pos)
                append(_new(MaxData, (maximum,)))
            elif frame_type == 0x06:  # MAX_STREAM_DATA
                stream_id, pos = _varint(data, pos)
                maximum, pos = _varint(data, pos)
                append(_new(MaxStreamData, (stream_id, maximum)))
            elif frame_type == 0x07:  # MAX_MESSAGE_DATA
                maximum, pos = _varint(data, pos)
                append(_new(MaxMessageData, (maximum,)))
            elif frame_type == 0x08:  # STREAM_RESET
                stream_id, pos = _varint(data, pos)
                final_size, pos = _varint(data, pos)
                code, pos = _varint(data, pos)
                reason, pos = _reason(data, pos, end)
                append(_new(StreamReset, (stream_id, final_size, code, reason)))
            elif frame_type == 0x09:  # DATAGRAM
                length, pos = _varint(data, pos)
                stop = pos + length
                if stop > end:
                    raise FrameDecodeError("frame runs past the end of the payload")
                append(_new(Datagram, (data[pos:stop],)))
                pos = stop
            elif frame_type == 0x0B:  # CLOSE
                code, pos = _varint(data, pos)
                reason, pos = _reason(data, pos, end)
                append(_new(Close, (code, reason)))
            else:
                raise FrameDecodeError(f"unknown frame type {frame_type:#x}")
        if pos > end:
            raise FrameDecodeError("frame runs past the end of the payload")
    except (IndexError, struct.error, VarintError) as exc:
        raise FrameDecodeError("truncated frame") from exc
    if not frames:
        raise FrameDecodeError("payload without frames")
    return frames
