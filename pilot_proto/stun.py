"""STUN message codec (RFC 8489) with the NAT-behaviour attributes of RFC 5780.

Sans-IO and stateless: bytes in, `StunMessage` out, and back. `decode_message` is the one
entry point for remote input and raises only `StunDecodeError`; `is_stun`,
`check_fingerprint` and `check_integrity` never raise at all. The server side (answering
Binding requests) is in `stun_server`, the client transactions in `stun_client`.

A message keeps its attributes as an ordered tuple of `(type, value)` with the values
unpadded, so unknown attributes survive a decode and re-encode untouched; typed accessors
read the known ones. Padding bytes are ignored on input (RFC 8489 section 14: they may hold
any value) and written as zeros.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import ipaddress
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from .errors import LocalProtocolError, PilotError
from .transmit import Addr

__all__ = [
    "FINGERPRINT_XOR",
    "HEADER_SIZE",
    "MAGIC_COOKIE",
    "TRANSACTION_ID_SIZE",
    "Attribute",
    "ChangeRequest",
    "ErrorCode",
    "IntegrityAlgorithm",
    "StunAttr",
    "StunClass",
    "StunDecodeError",
    "StunMessage",
    "StunMethod",
    "address_attribute",
    "build_binding_request",
    "build_binding_response",
    "build_error_response",
    "change_request_attribute",
    "check_fingerprint",
    "check_integrity",
    "decode_message",
    "encode_message",
    "error_code_attribute",
    "has_attribute",
    "is_stun",
    "long_term_key",
    "peek_header",
    "response_port_attribute",
    "short_term_key",
    "text_attribute",
    "unknown_attributes_attribute",
    "xor_address_attribute",
]

#: RFC 8489 section 5: the fixed value in bytes 4-7 of every message.
MAGIC_COOKIE = 0x2112A442
_COOKIE_BYTES = struct.pack("!I", MAGIC_COOKIE)
HEADER_SIZE = 20
TRANSACTION_ID_SIZE = 12
#: RFC 8489 section 14.7: FINGERPRINT is CRC-32 XOR 0x5354554e ("STUN").
FINGERPRINT_XOR = 0x5354554E
# RFC 7983 section 7: methods 0x100-0xFFF are reserved, so the first byte stays in 0-3.
_MAX_METHOD = 0xFF
_MAX_FIRST_BYTE = 3
_MAX_BODY = 0xFFFF - 3  # the 16-bit length field, rounded down to a multiple of 4
#: RFC 8489 section 14.8: the reason phrase is at most 127 characters.
_MAX_REASON_CHARS = 127

_HEADER = struct.Struct("!HHI12s")
_ATTR_HEADER = struct.Struct("!HH")

IntegrityAlgorithm = Literal["sha1", "sha256", "both"]
#: One attribute as it sits in a message: its type and its unpadded value.
Attribute = tuple[int, bytes]


class StunDecodeError(PilotError):
    """Bytes from the network are not a well-formed STUN message.

    The only exception `decode_message` raises (and the typed accessors of a message that
    was built locally with a malformed value).
    """


class StunClass(IntEnum):
    """The two class bits of the message type (RFC 8489 section 5)."""

    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS_RESPONSE = 0b10
    ERROR_RESPONSE = 0b11


class StunMethod(IntEnum):
    """Methods this module builds; decoding keeps any other method (0-0xFF) as a plain int."""

    BINDING = 0x001


class StunAttr(IntEnum):
    """Attribute types this module understands (RFC 8489 section 18.3, RFC 5780 section 7)."""

    MAPPED_ADDRESS = 0x0001
    CHANGE_REQUEST = 0x0003
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    REALM = 0x0014
    NONCE = 0x0015
    MESSAGE_INTEGRITY_SHA256 = 0x001C
    XOR_MAPPED_ADDRESS = 0x0020
    PADDING = 0x0026
    RESPONSE_PORT = 0x0027
    SOFTWARE = 0x8022
    FINGERPRINT = 0x8028
    RESPONSE_ORIGIN = 0x802B
    OTHER_ADDRESS = 0x802C


_ADDRESS_ATTRS = frozenset(
    {StunAttr.MAPPED_ADDRESS, StunAttr.RESPONSE_ORIGIN, StunAttr.OTHER_ADDRESS}
)
_TEXT_ATTRS = frozenset({StunAttr.USERNAME, StunAttr.REALM, StunAttr.NONCE, StunAttr.SOFTWARE})
# RFC 8489 section 14: at most this many bytes of value for the text attributes.
_TEXT_LIMITS: dict[int, int] = {
    StunAttr.USERNAME: 513,
    StunAttr.REALM: 763,
    StunAttr.NONCE: 763,
    StunAttr.SOFTWARE: 763,
}
_FAMILY_IPV4 = 0x01
_FAMILY_IPV6 = 0x02
# RFC 5780 section 7.2: the two flags of CHANGE-REQUEST.
_CHANGE_IP = 0x04
_CHANGE_PORT = 0x02

_DEFAULT_REASONS = {
    300: "Try Alternate",
    400: "Bad Request",
    401: "Unauthenticated",
    403: "Forbidden",
    420: "Unknown Attribute",
    438: "Stale Nonce",
    500: "Server Error",
}


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """The value of an ERROR-CODE attribute: a 300-699 code and its reason phrase."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class ChangeRequest:
    """The value of a CHANGE-REQUEST attribute (RFC 5780 section 7.2)."""

    change_ip: bool
    change_port: bool


@dataclass(frozen=True, slots=True)
class StunMessage:
    """One STUN message: header fields and attributes in wire order.

    `attributes` holds unpadded values. A decoded message keeps MESSAGE-INTEGRITY,
    MESSAGE-INTEGRITY-SHA256 and FINGERPRINT as they were; attributes that followed them
    on the wire (which RFC 8489 section 14.5 says to ignore) are left out.
    """

    method: int
    message_class: StunClass
    transaction_id: bytes
    attributes: tuple[Attribute, ...] = ()

    # -------------------------------------------------------------- raw access

    def get(self, attr_type: int) -> bytes | None:
        """The value of the first attribute of this type (RFC 8489 section 14: only the
        first occurrence is significant), or None."""
        for t, v in self.attributes:
            if t == attr_type:
                return v
        return None

    def get_all(self, attr_type: int) -> tuple[bytes, ...]:
        return tuple(v for t, v in self.attributes if t == attr_type)

    def has(self, attr_type: int) -> bool:
        return any(t == attr_type for t, _ in self.attributes)

    @property
    def attribute_types(self) -> tuple[int, ...]:
        return tuple(t for t, _ in self.attributes)

    # -------------------------------------------------------------- typed accessors

    @property
    def xor_mapped_address(self) -> Addr | None:
        v = self.get(StunAttr.XOR_MAPPED_ADDRESS)
        return None if v is None else _decode_xor_address(v, self.transaction_id)

    @property
    def mapped_address(self) -> Addr | None:
        v = self.get(StunAttr.MAPPED_ADDRESS)
        return None if v is None else _decode_address(v)

    @property
    def response_origin(self) -> Addr | None:
        v = self.get(StunAttr.RESPONSE_ORIGIN)
        return None if v is None else _decode_address(v)

    @property
    def other_address(self) -> Addr | None:
        v = self.get(StunAttr.OTHER_ADDRESS)
        return None if v is None else _decode_address(v)

    @property
    def username(self) -> str | None:
        return self._text(StunAttr.USERNAME)

    @property
    def realm(self) -> str | None:
        return self._text(StunAttr.REALM)

    @property
    def nonce(self) -> str | None:
        return self._text(StunAttr.NONCE)

    @property
    def software(self) -> str | None:
        # Informational only: a broken one is shown, never fatal.
        v = self.get(StunAttr.SOFTWARE)
        return None if v is None else v.decode("utf-8", errors="replace")

    @property
    def error_code(self) -> ErrorCode | None:
        v = self.get(StunAttr.ERROR_CODE)
        return None if v is None else _decode_error_code(v)

    @property
    def unknown_attributes(self) -> tuple[int, ...]:
        v = self.get(StunAttr.UNKNOWN_ATTRIBUTES)
        return () if v is None else _decode_unknown_attributes(v)

    @property
    def change_request(self) -> ChangeRequest | None:
        v = self.get(StunAttr.CHANGE_REQUEST)
        return None if v is None else _decode_change_request(v)

    @property
    def response_port(self) -> int | None:
        v = self.get(StunAttr.RESPONSE_PORT)
        return None if v is None else _decode_response_port(v)

    @property
    def fingerprint(self) -> int | None:
        v = self.get(StunAttr.FINGERPRINT)
        return None if v is None else _decode_fingerprint(v)

    def _text(self, attr_type: StunAttr) -> str | None:
        v = self.get(attr_type)
        return None if v is None else _decode_text(attr_type, v)


# ------------------------------------------------------------------ message type bits


def _message_type(method: int, message_class: int) -> int:
    # RFC 8489 section 5: M11..M7 C1 M6..M4 C0 M3..M0.
    return (
        ((method & 0xF80) << 2)
        | ((method & 0x070) << 1)
        | (method & 0x00F)
        | ((message_class & 0b10) << 7)
        | ((message_class & 0b01) << 4)
    )


def _split_message_type(message_type: int) -> tuple[int, StunClass]:
    method = (
        (message_type & 0x000F) | ((message_type & 0x00E0) >> 1) | ((message_type & 0x3E00) >> 2)
    )
    message_class = ((message_type >> 7) & 0b10) | ((message_type >> 4) & 0b01)
    return method, StunClass(message_class)


# ------------------------------------------------------------------ attribute values


def _pad(n: int) -> int:
    return (4 - n % 4) % 4


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        raise LocalProtocolError(f"not an IP address literal: {host!r}") from None


def _check_port(port: int) -> int:
    if not 0 <= port <= 0xFFFF:
        raise LocalProtocolError(f"port out of range: {port}")
    return port


def _encode_address(addr: Addr) -> bytes:
    ip = _ip(addr[0])
    family = _FAMILY_IPV4 if ip.version == 4 else _FAMILY_IPV6
    return struct.pack("!BBH", 0, family, _check_port(addr[1])) + ip.packed


def _decode_address(value: bytes) -> Addr:
    # RFC 8489 section 14.1: reserved byte, family, port, 4 or 16 address bytes.
    if len(value) == 8 and value[1] == _FAMILY_IPV4:
        return str(ipaddress.IPv4Address(value[4:])), int.from_bytes(value[2:4], "big")
    if len(value) == 20 and value[1] == _FAMILY_IPV6:
        return str(ipaddress.IPv6Address(value[4:])), int.from_bytes(value[2:4], "big")
    raise StunDecodeError("address attribute with a bad family or length")


def _xor_with_mask(raw: bytes, transaction_id: bytes) -> bytes:
    # RFC 8489 section 14.2: IPv4 is XORed with the cookie, IPv6 with cookie || transaction id.
    mask = (_COOKIE_BYTES + transaction_id)[: len(raw)]
    return bytes(a ^ b for a, b in zip(raw, mask, strict=True))


def _encode_xor_address(addr: Addr, transaction_id: bytes) -> bytes:
    ip = _ip(addr[0])
    family = _FAMILY_IPV4 if ip.version == 4 else _FAMILY_IPV6
    xport = _check_port(addr[1]) ^ (MAGIC_COOKIE >> 16)
    return struct.pack("!BBH", 0, family, xport) + _xor_with_mask(ip.packed, transaction_id)


def _decode_xor_address(value: bytes, transaction_id: bytes) -> Addr:
    if len(value) not in (8, 20) or value[1] not in (_FAMILY_IPV4, _FAMILY_IPV6):
        raise StunDecodeError("XOR address attribute with a bad family or length")
    if (value[1] == _FAMILY_IPV4) != (len(value) == 8):
        raise StunDecodeError("XOR address attribute whose length does not match its family")
    port = int.from_bytes(value[2:4], "big") ^ (MAGIC_COOKIE >> 16)
    if len(transaction_id) != TRANSACTION_ID_SIZE:
        raise StunDecodeError("XOR address in a message whose transaction id is not 12 bytes")
    plain = _xor_with_mask(value[4:], transaction_id)
    if len(plain) == 4:
        return str(ipaddress.IPv4Address(plain)), port
    return str(ipaddress.IPv6Address(plain)), port


def _decode_text(attr_type: int, value: bytes) -> str:
    limit = _TEXT_LIMITS.get(attr_type, 763)
    if len(value) > limit:
        raise StunDecodeError(f"attribute 0x{attr_type:04x} longer than {limit} bytes")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise StunDecodeError(f"attribute 0x{attr_type:04x} is not UTF-8") from None


def _encode_error_code(code: int, reason: str) -> bytes:
    if not 300 <= code <= 699:
        raise LocalProtocolError(f"STUN error codes are 300-699, not {code}")
    if len(reason) > _MAX_REASON_CHARS:
        raise LocalProtocolError(f"reason phrase longer than {_MAX_REASON_CHARS} characters")
    # RFC 8489 section 14.8: 21 reserved bits, class (hundreds, 3 bits), number (0-99).
    return struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode("utf-8")


def _decode_error_code(value: bytes) -> ErrorCode:
    if len(value) < 4:
        raise StunDecodeError("ERROR-CODE shorter than 4 bytes")
    klass, number = value[2] & 0x07, value[3]
    if not 3 <= klass <= 6 or number > 99:
        raise StunDecodeError("ERROR-CODE outside 300-699")
    # The phrase is for humans: a broken one must not cost the error response itself.
    return ErrorCode(klass * 100 + number, value[4:].decode("utf-8", errors="replace"))


def _decode_unknown_attributes(value: bytes) -> tuple[int, ...]:
    if len(value) % 2:
        raise StunDecodeError("UNKNOWN-ATTRIBUTES of odd length")
    return tuple(int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value), 2))


def _decode_change_request(value: bytes) -> ChangeRequest:
    if len(value) != 4:
        raise StunDecodeError("CHANGE-REQUEST is not 4 bytes")
    flags = value[3]
    return ChangeRequest(bool(flags & _CHANGE_IP), bool(flags & _CHANGE_PORT))


def _decode_response_port(value: bytes) -> int:
    # RFC 5780 section 7.5: a 16-bit port and 2 bytes of padding.
    if len(value) != 4:
        raise StunDecodeError("RESPONSE-PORT is not 4 bytes")
    return int.from_bytes(value[:2], "big")


def _decode_fingerprint(value: bytes) -> int:
    if len(value) != 4:
        raise StunDecodeError("FINGERPRINT is not 4 bytes")
    return int.from_bytes(value, "big")


def _validate_value(attr_type: int, value: bytes, transaction_id: bytes) -> None:
    """Reject a known attribute whose value cannot be read, so accessors never fail."""
    if attr_type in _ADDRESS_ATTRS:
        _decode_address(value)
    elif attr_type == StunAttr.XOR_MAPPED_ADDRESS:
        _decode_xor_address(value, transaction_id)
    elif attr_type in _TEXT_ATTRS:
        if attr_type != StunAttr.SOFTWARE:  # SOFTWARE is informational: never fatal
            _decode_text(attr_type, value)
    elif attr_type == StunAttr.ERROR_CODE:
        _decode_error_code(value)
    elif attr_type == StunAttr.UNKNOWN_ATTRIBUTES:
        _decode_unknown_attributes(value)
    elif attr_type == StunAttr.CHANGE_REQUEST:
        _decode_change_request(value)
    elif attr_type == StunAttr.FINGERPRINT:
        _decode_fingerprint(value)
    elif attr_type == StunAttr.RESPONSE_PORT:
        _decode_response_port(value)
    elif attr_type == StunAttr.MESSAGE_INTEGRITY:
        if len(value) != 20:
            raise StunDecodeError("MESSAGE-INTEGRITY is not 20 bytes")
    elif attr_type == StunAttr.MESSAGE_INTEGRITY_SHA256 and not _valid_sha256_length(len(value)):
        raise StunDecodeError("MESSAGE-INTEGRITY-SHA256 is not 16-32 bytes in steps of 4")


def _valid_sha256_length(n: int) -> bool:
    # RFC 8489 section 14.6: truncated to at least 16 bytes, a multiple of 4, at most 32.
    return 16 <= n <= 32 and n % 4 == 0


# ------------------------------------------------------------------ attribute constructors


def address_attribute(attr_type: int, addr: Addr) -> Attribute:
    """MAPPED-ADDRESS, RESPONSE-ORIGIN or OTHER-ADDRESS carrying `addr`."""
    if attr_type not in _ADDRESS_ATTRS:
        raise LocalProtocolError(f"0x{attr_type:04x} is not a plain address attribute")
    return attr_type, _encode_address(addr)


def xor_address_attribute(addr: Addr, transaction_id: bytes) -> Attribute:
    """XOR-MAPPED-ADDRESS for `addr`; the mask depends on the message's transaction id."""
    return StunAttr.XOR_MAPPED_ADDRESS, _encode_xor_address(addr, _check_tid(transaction_id))


def text_attribute(attr_type: int, text: str) -> Attribute:
    """USERNAME, REALM, NONCE or SOFTWARE as UTF-8."""
    if attr_type not in _TEXT_ATTRS:
        raise LocalProtocolError(f"0x{attr_type:04x} is not a text attribute")
    value = text.encode("utf-8")
    limit = _TEXT_LIMITS[StunAttr(attr_type)]
    if len(value) > limit:
        raise LocalProtocolError(f"{StunAttr(attr_type).name} longer than {limit} bytes")
    return attr_type, value


def error_code_attribute(code: int, reason: str | None = None) -> Attribute:
    if reason is None:
        reason = _DEFAULT_REASONS.get(code, "")
    return StunAttr.ERROR_CODE, _encode_error_code(code, reason)


def unknown_attributes_attribute(types: Iterable[int]) -> Attribute:
    values = list(types)
    if any(not 0 <= t <= 0xFFFF for t in values):
        raise LocalProtocolError("attribute types are 16-bit")
    return StunAttr.UNKNOWN_ATTRIBUTES, b"".join(t.to_bytes(2, "big") for t in values)


def change_request_attribute(change_ip: bool, change_port: bool) -> Attribute:
    flags = (_CHANGE_IP if change_ip else 0) | (_CHANGE_PORT if change_port else 0)
    return StunAttr.CHANGE_REQUEST, flags.to_bytes(4, "big")


def response_port_attribute(port: int) -> Attribute:
    """RESPONSE-PORT (RFC 5780 section 7.5): answer me at this port of my address."""
    return StunAttr.RESPONSE_PORT, _check_port(port).to_bytes(2, "big") + bytes(2)


# ------------------------------------------------------------------ keys


def short_term_key(password: str | bytes) -> bytes:
    """RFC 8489 section 9.1.1: the key is the password after OpaqueString (RFC 8265).

    We do not run the PRECIS profile: a str is taken as already prepared and encoded as
    UTF-8 (ASCII passwords, the common case, are unchanged by OpaqueString).
    """
    return password.encode("utf-8") if isinstance(password, str) else bytes(password)


def long_term_key(
    username: str | bytes,
    realm: str | bytes,
    password: str | bytes,
    *,
    algorithm: Literal["md5", "sha256"] = "md5",
) -> bytes:
    """RFC 8489 section 9.2.2: key = H(username ":" realm ":" password), H being MD5 or
    SHA-256 by PASSWORD-ALGORITHM. Inputs are taken as already prepared."""
    parts = [p.encode("utf-8") if isinstance(p, str) else bytes(p) for p in (username, realm)]
    material = parts[0] + b":" + parts[1] + b":" + short_term_key(password)
    if algorithm == "md5":
        return hashlib.md5(material, usedforsecurity=False).digest()
    return hashlib.sha256(material).digest()


# ------------------------------------------------------------------ encoding


def _check_tid(transaction_id: bytes) -> bytes:
    if len(transaction_id) != TRANSACTION_ID_SIZE:
        raise LocalProtocolError("a STUN transaction id is 12 bytes")
    return bytes(transaction_id)


def _pack_attribute(attr_type: int, value: bytes) -> bytes:
    if not 0 <= attr_type <= 0xFFFF or len(value) > 0xFFFF:
        raise LocalProtocolError("attribute type or value length does not fit 16 bits")
    return _ATTR_HEADER.pack(attr_type, len(value)) + value + bytes(_pad(len(value)))


def _header(message_type: int, body_length: int, transaction_id: bytes) -> bytes:
    if body_length > _MAX_BODY:
        raise LocalProtocolError("STUN message body larger than 65532 bytes")
    return _HEADER.pack(message_type, body_length, MAGIC_COOKIE, transaction_id)


def _fingerprint_of(prefix: bytes) -> bytes:
    return ((binascii.crc32(prefix) ^ FINGERPRINT_XOR) & 0xFFFFFFFF).to_bytes(4, "big")


_TRAILERS = frozenset(
    {StunAttr.MESSAGE_INTEGRITY, StunAttr.MESSAGE_INTEGRITY_SHA256, StunAttr.FINGERPRINT}
)


def encode_message(
    message: StunMessage,
    *,
    key: bytes | None = None,
    integrity: IntegrityAlgorithm = "sha1",
    fingerprint: bool = False,
) -> bytes:
    """The wire form of `message`.

    The attributes are written as they are (a decoded message re-encodes to the same
    bytes, up to padding). With `key`, MESSAGE-INTEGRITY and/or MESSAGE-INTEGRITY-SHA256
    are computed and appended; with `fingerprint`, FINGERPRINT comes last.
    """
    tid = _check_tid(message.transaction_id)
    if not 0 <= message.method <= _MAX_METHOD:
        raise LocalProtocolError("STUN methods above 0xFF are reserved (RFC 7983)")
    if (key is not None or fingerprint) and any(t in _TRAILERS for t in message.attribute_types):
        raise LocalProtocolError(
            "the message already carries integrity or fingerprint attributes; "
            "do not ask for them again"
        )
    message_type = _message_type(message.method, message.message_class)
    body = b"".join(_pack_attribute(t, v) for t, v in message.attributes)
    if key is not None:
        # RFC 8489 sections 14.5-14.6: the length field covers the integrity attribute
        # being computed, but nothing after it.
        if integrity in ("sha1", "both"):
            prefix = _header(message_type, len(body) + 24, tid) + body
            mac = hmac.new(key, prefix, hashlib.sha1).digest()
            body += _pack_attribute(StunAttr.MESSAGE_INTEGRITY, mac)
        if integrity in ("sha256", "both"):
            prefix = _header(message_type, len(body) + 36, tid) + body
            mac = hmac.new(key, prefix, hashlib.sha256).digest()
            body += _pack_attribute(StunAttr.MESSAGE_INTEGRITY_SHA256, mac)
    if fingerprint:
        prefix = _header(message_type, len(body) + 8, tid) + body
        body += _pack_attribute(StunAttr.FINGERPRINT, _fingerprint_of(prefix))
    return _header(message_type, len(body), tid) + body


# ------------------------------------------------------------------ decoding


def is_stun(data: bytes) -> bool:
    """Whether `data` looks like a STUN message, for demultiplexing a shared socket.

    RFC 8489 section 5 and RFC 7983: the first byte is 0-3 (the two top bits are zero, and
    methods above 0xFF are reserved so STUN never reaches the DTLS range 20-63), bytes 4-7
    are the magic cookie, and the length field is a multiple of 4 that accounts for the
    whole datagram.
    """
    return (
        len(data) >= HEADER_SIZE
        and data[0] <= _MAX_FIRST_BYTE
        and data[4:8] == _COOKIE_BYTES
        and (int.from_bytes(data[2:4], "big")) % 4 == 0
        and HEADER_SIZE + int.from_bytes(data[2:4], "big") == len(data)
    )


def _walk(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(type, offset of the attribute header, value length) for each attribute.

    Assumes `is_stun(data)`; raises StunDecodeError on a truncated attribute.
    """
    pos = HEADER_SIZE
    end = len(data)
    while pos < end:
        if end - pos < 4:
            raise StunDecodeError("truncated attribute header")
        attr_type, length = _ATTR_HEADER.unpack_from(data, pos)
        if pos + 4 + length > end:
            raise StunDecodeError("attribute runs past the end of the message")
        yield attr_type, pos, length
        pos += 4 + length + _pad(length)
    if pos != end:  # padding of the last attribute missing
        raise StunDecodeError("attribute padding runs past the end of the message")


def decode_message(data: bytes) -> StunMessage:
    """Parse one STUN message. Raises only `StunDecodeError`."""
    data = bytes(data)
    if not is_stun(data):
        raise StunDecodeError("not a STUN message (header, cookie or length)")
    message_type, _, _, tid = _HEADER.unpack_from(data, 0)
    method, message_class = _split_message_type(message_type)
    attributes: list[Attribute] = []
    # RFC 8489 section 14.5-14.7: after MESSAGE-INTEGRITY only MESSAGE-INTEGRITY-SHA256 and
    # FINGERPRINT count, after MESSAGE-INTEGRITY-SHA256 only FINGERPRINT, and FINGERPRINT
    # is last. Whatever else follows them is ignored.
    allowed_after: frozenset[int] | None = None
    for attr_type, pos, length in _walk(data):
        value = data[pos + 4 : pos + 4 + length]
        if allowed_after is not None and attr_type not in allowed_after:
            continue
        _validate_value(attr_type, value, tid)
        attributes.append((attr_type, value))
        if attr_type == StunAttr.MESSAGE_INTEGRITY:
            allowed_after = frozenset({StunAttr.MESSAGE_INTEGRITY_SHA256, StunAttr.FINGERPRINT})
        elif attr_type == StunAttr.MESSAGE_INTEGRITY_SHA256:
            allowed_after = frozenset({StunAttr.FINGERPRINT})
        elif attr_type == StunAttr.FINGERPRINT:
            allowed_after = frozenset()
    return StunMessage(method, message_class, tid, tuple(attributes))


def _find(data: bytes, wanted: int) -> tuple[int, int] | None:
    """(offset, value length) of the first attribute of type `wanted`, or None."""
    if not is_stun(data):
        return None
    try:
        for attr_type, pos, length in _walk(data):
            if attr_type == wanted:
                return pos, length
    except StunDecodeError:
        return None
    return None


def peek_header(data: bytes) -> tuple[int, StunClass, bytes] | None:
    """(method, class, transaction id) of what `is_stun` accepts, else None; the attributes
    are not looked at, so an error response can be addressed even to a broken request."""
    data = bytes(data)
    if not is_stun(data):
        return None
    method, message_class = _split_message_type(int.from_bytes(data[:2], "big"))
    return method, message_class, data[8:HEADER_SIZE]


def has_attribute(data: bytes, attr_type: int) -> bool:
    """Whether the framed attributes of `data` include `attr_type`. Never raises."""
    return _find(bytes(data), attr_type) is not None


def check_fingerprint(data: bytes) -> bool:
    """True if `data` ends in a FINGERPRINT attribute that matches (RFC 8489 section 14.7)."""
    data = bytes(data)
    found = _find(data, StunAttr.FINGERPRINT)
    if found is None:
        return False
    pos, length = found
    if length != 4 or pos + 8 != len(data):
        return False
    return hmac.compare_digest(_fingerprint_of(data[:pos]), data[pos + 4 : pos + 8])


def check_integrity(data: bytes, key: bytes, sha256: bool = False) -> bool:
    """True if the message's MESSAGE-INTEGRITY (or, with `sha256`, the
    MESSAGE-INTEGRITY-SHA256) is right for `key`. Never raises."""
    data = bytes(data)
    wanted = StunAttr.MESSAGE_INTEGRITY_SHA256 if sha256 else StunAttr.MESSAGE_INTEGRITY
    found = _find(data, wanted)
    if found is None:
        return False
    pos, length = found
    if sha256 and not _valid_sha256_length(length):
        return False
    if not sha256 and length != 20:
        return False
    # RFC 8489 section 14.5: the HMAC covers the message up to the attribute, with the
    # length field rewritten to end just after the integrity attribute itself.
    adjusted = data[:2] + (pos - HEADER_SIZE + 4 + length).to_bytes(2, "big") + data[4:pos]
    digest = hmac.new(key, adjusted, hashlib.sha256 if sha256 else hashlib.sha1).digest()
    return hmac.compare_digest(digest[:length], data[pos + 4 : pos + 4 + length])


# ------------------------------------------------------------------ builders


def build_binding_request(
    transaction_id: bytes,
    *,
    fingerprint: bool = True,
    username: str | None = None,
    key: bytes | None = None,
    integrity: IntegrityAlgorithm = "sha1",
    software: str | None = None,
    change_request: ChangeRequest | None = None,
) -> bytes:
    """A Binding request; with `key`, authenticated by MESSAGE-INTEGRITY (short-term)."""
    attrs: list[Attribute] = []
    if username is not None:
        attrs.append(text_attribute(StunAttr.USERNAME, username))
    if software is not None:
        attrs.append(text_attribute(StunAttr.SOFTWARE, software))
    if change_request is not None:
        attrs.append(change_request_attribute(change_request.change_ip, change_request.change_port))
    msg = StunMessage(StunMethod.BINDING, StunClass.REQUEST, transaction_id, tuple(attrs))
    return encode_message(msg, key=key, integrity=integrity, fingerprint=fingerprint)


def build_binding_response(
    transaction_id: bytes,
    mapped_address: Addr,
    *,
    response_origin: Addr | None = None,
    other_address: Addr | None = None,
    software: str | None = None,
    key: bytes | None = None,
    integrity: IntegrityAlgorithm = "sha1",
    fingerprint: bool = False,
) -> bytes:
    """A Binding success response with XOR-MAPPED-ADDRESS and the RFC 5780 addresses."""
    attrs = [xor_address_attribute(mapped_address, transaction_id)]
    if response_origin is not None:
        attrs.append(address_attribute(StunAttr.RESPONSE_ORIGIN, response_origin))
    if other_address is not None:
        attrs.append(address_attribute(StunAttr.OTHER_ADDRESS, other_address))
    if software is not None:
        attrs.append(text_attribute(StunAttr.SOFTWARE, software))
    msg = StunMessage(StunMethod.BINDING, StunClass.SUCCESS_RESPONSE, transaction_id, tuple(attrs))
    return encode_message(msg, key=key, integrity=integrity, fingerprint=fingerprint)


def build_error_response(
    transaction_id: bytes,
    code: int,
    reason: str | None = None,
    *,
    method: int = StunMethod.BINDING,
    unknown_attributes: Iterable[int] = (),
    software: str | None = None,
    key: bytes | None = None,
    integrity: IntegrityAlgorithm = "sha1",
    fingerprint: bool = False,
) -> bytes:
    """An error response; `reason` defaults to the RFC 8489 section 14.8 phrase."""
    attrs = [error_code_attribute(code, reason)]
    unknown = tuple(unknown_attributes)
    if unknown:
        attrs.append(unknown_attributes_attribute(unknown))
    if software is not None:
        attrs.append(text_attribute(StunAttr.SOFTWARE, software))
    msg = StunMessage(method, StunClass.ERROR_RESPONSE, transaction_id, tuple(attrs))
    return encode_message(msg, key=key, integrity=integrity, fingerprint=fingerprint)
