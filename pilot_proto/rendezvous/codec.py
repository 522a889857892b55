"""Byte-level pieces shared by the rendezvous encodings (docs/PROTOCOL.md section 8).

Writers are plain functions returning bytes; `Reader` walks a buffer and raises only
`RendezvousDecodeError`, whatever is wrong with it (short, too long, bad UTF-8, ...).
Integers are QUIC varints (the project's one variable-length integer, RFC 9000 section
16) or fixed big-endian where a field has a natural width.
"""

from __future__ import annotations

import ipaddress
import struct

from ..delivery.varint import VarintError, encode_varint, read_varint, varint_size
from ..identity import address_bytes, address_from_bytes
from ..transmit import Addr
from .errors import RendezvousDecodeError

__all__ = [
    "Reader",
    "canonical_endpoint",
    "encode_address",
    "encode_blob",
    "encode_endpoint",
    "encode_text",
    "encode_varint",
]

_FAMILY_IPV4 = 4
_FAMILY_IPV6 = 6
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def encode_blob(data: bytes) -> bytes:
    """Length-prefixed bytes: varint length, then the bytes."""
    return encode_varint(len(data)) + bytes(data)


def encode_text(text: str) -> bytes:
    return encode_blob(text.encode("utf-8"))


def encode_address(address: str) -> bytes:
    """A node address travels as its 16 bytes (docs/PROTOCOL.md section 2.1)."""
    return address_bytes(address)


def canonical_endpoint(endpoint: Addr) -> Addr | None:
    """(ip, port) in canonical text form, or None if it cannot travel (not an IP literal,
    port 0). IPv4-mapped IPv6 becomes IPv4; a scope id means nothing on another host."""
    host, port = endpoint
    if not isinstance(port, int) or not 1 <= port <= 0xFFFF:
        return None
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except (ValueError, AttributeError):
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (str(ip), port)


def encode_endpoint(endpoint: Addr) -> bytes:
    """Family (4 or 6), the address in network order, the port: as in a locator."""
    canonical = canonical_endpoint(endpoint)
    if canonical is None:
        raise ValueError(f"endpoint {endpoint!r} is not an IP address and port 1-65535")
    ip = ipaddress.ip_address(canonical[0])
    family = _FAMILY_IPV4 if ip.version == 4 else _FAMILY_IPV6
    return bytes((family,)) + ip.packed + _U16.pack(canonical[1])


class Reader:
    """Reads fields from the front of a buffer; every failure is a RendezvousDecodeError."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, size: int) -> bytes:
        end = self._pos + size
        if size < 0 or end > len(self._data):
            raise RendezvousDecodeError("message ends inside a field")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(_U16.unpack(self.take(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self.take(8))[0])

    def varint(self) -> int:
        try:
            value, end = read_varint(self._data, self._pos)
        except VarintError:
            raise RendezvousDecodeError("message ends inside a varint") from None
        if end - self._pos != varint_size(value):
            # One encoding per value keeps encode(decode(b)) == b for every accepted b.
            raise RendezvousDecodeError("varint not in its shortest form")
        self._pos = end
        return value

    def blob(self, max_size: int) -> bytes:
        size = self.varint()
        if size > max_size:
            raise RendezvousDecodeError(f"field of {size} bytes exceeds its limit of {max_size}")
        return self.take(size)

    def text(self, max_size: int) -> str:
        try:
            return self.blob(max_size).decode("utf-8")
        except UnicodeDecodeError:
            raise RendezvousDecodeError("text field is not UTF-8") from None

    def address(self) -> str:
        return address_from_bytes(self.take(16))

    def endpoint(self) -> Addr:
        family = self.u8()
        if family == _FAMILY_IPV4:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(self.take(4))
        elif family == _FAMILY_IPV6:
            ip = ipaddress.IPv6Address(self.take(16))
            if ip.ipv4_mapped is not None:
                raise RendezvousDecodeError("IPv4-mapped endpoint: IPv4 travels as family 4")
        else:
            raise RendezvousDecodeError(f"unknown endpoint family {family}")
        port = self.u16()
        if port == 0:
            raise RendezvousDecodeError("endpoint port 0")
        return (str(ip), port)

    def end(self) -> None:
        """Canonical encodings: nothing may follow the last field."""
        if self._pos != len(self._data):
            raise RendezvousDecodeError(f"{self.remaining} unexpected bytes after the message")
