"""QUIC variable-length integers (RFC 9000 section 16), the one integer encoding of every frame.

The two high bits of the first byte give the length (1, 2, 4 or 8 bytes); the rest, read
big-endian, is the value. Values go up to 2**62 - 1.
"""

from __future__ import annotations

import struct

__all__ = [
    "MAX_VARINT",
    "VarintError",
    "encode_varint",
    "read_varint",
    "read_varint_unchecked",
    "varint_size",
]

MAX_VARINT = (1 << 62) - 1

_pack_u16 = struct.Struct(">H").pack
_pack_u32 = struct.Struct(">I").pack
_pack_u64 = struct.Struct(">Q").pack
_unpack_u16 = struct.Struct(">H").unpack_from
_unpack_u32 = struct.Struct(">I").unpack_from
_unpack_u64 = struct.Struct(">Q").unpack_from

# One-byte encodings are by far the most common (frame types, small ids): build them once.
_ONE_BYTE = [bytes((value,)) for value in range(64)]


class VarintError(ValueError):
    """A value cannot be encoded, or the bytes end inside a varint."""


def encode_varint(value: int) -> bytes:
    """The shortest encoding of `value` (0 <= value < 2**62)."""
    if value < 0x40:
        if value < 0:
            raise VarintError(f"varint cannot encode negative value {value}")
        return _ONE_BYTE[value]
    if value < 0x4000:
        return _pack_u16(value | 0x4000)
    if value < 0x40000000:
        return _pack_u32(value | 0x80000000)
    if value <= MAX_VARINT:
        return _pack_u64(value | 0xC000000000000000)
    raise VarintError(f"varint cannot encode {value}: the largest is 2**62 - 1")


def varint_size(value: int) -> int:
    """How many bytes `encode_varint(value)` takes."""
    if value < 0x40:
        return 1
    if value < 0x4000:
        return 2
    if value < 0x40000000:
        return 4
    return 8


def read_varint_unchecked(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """`read_varint` for decoders that catch IndexError and struct.error themselves, once
    per payload (cheaper than translating them per varint)."""
    first = data[pos]
    prefix = first >> 6
    if prefix == 0:
        return first, pos + 1
    if prefix == 1:
        return _unpack_u16(data, pos)[0] & 0x3FFF, pos + 2
    if prefix == 2:
        return _unpack_u32(data, pos)[0] & 0x3FFFFFFF, pos + 4
    return _unpack_u64(data, pos)[0] & MAX_VARINT, pos + 8


def read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode the varint at `data[pos:]`; return (value, position after it).

    Raises VarintError if the data ends inside the varint.
    """
    try:
        return read_varint_unchecked(data, pos)
    except (IndexError, struct.error) as exc:
        raise VarintError("data ends inside a varint") from exc
