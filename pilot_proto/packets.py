"""Outer packet codecs: what a UDP datagram of ours looks like before decryption.

The first byte names the packet type. Our types start at 0x50 so one socket can also carry
STUN (0-3), and never collide with DTLS (20-63) or TURN ChannelData (64-79); RFC 7983/9443.
Every decoder here returns None for anything malformed; callers count and drop.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

HANDSHAKE_INITIATION: Final = 0x50
HANDSHAKE_RESPONSE: Final = 0x51
COOKIE_REPLY: Final = 0x52
TRANSPORT: Final = 0x53
#: Noise XX toward a rendezvous whose key is learned on first use (DESIGN 4 and 6).
XX_INIT: Final = 0x54
XX_RESPONSE: Final = 0x55
XX_FINISH: Final = 0x56

MAC_SIZE: Final = 16
TAG_SIZE: Final = 16
KEY_SIZE: Final = 32

#: IK message 1: e (32) + encrypted s (32 + 16) + encrypted payload (payload + 16).
INITIATION_PAYLOAD_SIZE: Final = 1 + 12 + 32 + 64 + 8
INITIATION_NOISE_SIZE: Final = KEY_SIZE + KEY_SIZE + TAG_SIZE + INITIATION_PAYLOAD_SIZE + TAG_SIZE
INITIATION_SIZE: Final = 1 + 4 + INITIATION_NOISE_SIZE + 2 * MAC_SIZE
#: IK message 2: e (32) + encrypted payload.
RESPONSE_PAYLOAD_SIZE: Final = 1 + 32 + 64 + 8
RESPONSE_NOISE_SIZE: Final = KEY_SIZE + RESPONSE_PAYLOAD_SIZE + TAG_SIZE
RESPONSE_SIZE: Final = 1 + 4 + 4 + RESPONSE_NOISE_SIZE
COOKIE_NONCE_SIZE: Final = 12
COOKIE_SIZE: Final = 16
COOKIE_REPLY_SIZE: Final = 1 + 4 + COOKIE_NONCE_SIZE + COOKIE_SIZE + TAG_SIZE
#: Transport header: type, receiver index, 64-bit counter. It is the AEAD's associated data.
TRANSPORT_HEADER_SIZE: Final = 1 + 4 + 8
TRANSPORT_OVERHEAD: Final = TRANSPORT_HEADER_SIZE + TAG_SIZE

#: XX message 2: e (32) + encrypted s (32 + 16) + encrypted responder payload.
XX_RESPONSE_NOISE_SIZE: Final = KEY_SIZE + KEY_SIZE + TAG_SIZE + RESPONSE_PAYLOAD_SIZE + TAG_SIZE
XX_RESPONSE_SIZE: Final = 1 + 4 + 4 + XX_RESPONSE_NOISE_SIZE
#: XX message 1 is only `e`, padded with zeros to the size of message 2 so that an
#: unauthenticated request can never draw a larger answer (DESIGN 4: no amplification).
XX_INIT_SIZE: Final = XX_RESPONSE_SIZE
#: XX message 3: encrypted s (32 + 16) + encrypted initiator payload.
XX_FINISH_NOISE_SIZE: Final = KEY_SIZE + TAG_SIZE + INITIATION_PAYLOAD_SIZE + TAG_SIZE
XX_FINISH_SIZE: Final = 1 + 4 + XX_FINISH_NOISE_SIZE

_INDEX = struct.Struct(">I")
_TWO_INDEXES = struct.Struct(">II")
TRANSPORT_HEADER: Final = struct.Struct(">BIQ")


@dataclass(frozen=True, slots=True)
class HandshakeInitiation:
    sender_index: int
    noise_message: bytes
    mac1: bytes
    mac2: bytes


@dataclass(frozen=True, slots=True)
class HandshakeResponse:
    sender_index: int
    receiver_index: int
    noise_message: bytes


@dataclass(frozen=True, slots=True)
class CookieReply:
    receiver_index: int
    nonce: bytes
    sealed_cookie: bytes


def encode_initiation_body(sender_index: int, noise_message: bytes) -> bytes:
    """The initiation up to (not including) mac1; `cookie.py` appends the two MACs."""
    return bytes((HANDSHAKE_INITIATION,)) + _INDEX.pack(sender_index) + noise_message


def decode_initiation(data: bytes) -> HandshakeInitiation | None:
    if len(data) != INITIATION_SIZE or data[0] != HANDSHAKE_INITIATION:
        return None
    end = INITIATION_SIZE - 2 * MAC_SIZE
    return HandshakeInitiation(
        sender_index=_INDEX.unpack_from(data, 1)[0],
        noise_message=data[5:end],
        mac1=data[end : end + MAC_SIZE],
        mac2=data[end + MAC_SIZE :],
    )


def encode_response(sender_index: int, receiver_index: int, noise_message: bytes) -> bytes:
    return (
        bytes((HANDSHAKE_RESPONSE,))
        + _TWO_INDEXES.pack(sender_index, receiver_index)
        + noise_message
    )


def decode_response(data: bytes) -> HandshakeResponse | None:
    if len(data) != RESPONSE_SIZE or data[0] != HANDSHAKE_RESPONSE:
        return None
    sender, receiver = _TWO_INDEXES.unpack_from(data, 1)
    return HandshakeResponse(sender, receiver, data[9:])


def encode_cookie_reply(receiver_index: int, nonce: bytes, sealed_cookie: bytes) -> bytes:
    return bytes((COOKIE_REPLY,)) + _INDEX.pack(receiver_index) + nonce + sealed_cookie


def decode_cookie_reply(data: bytes) -> CookieReply | None:
    if len(data) != COOKIE_REPLY_SIZE or data[0] != COOKIE_REPLY:
        return None
    nonce_end = 5 + COOKIE_NONCE_SIZE
    return CookieReply(_INDEX.unpack_from(data, 1)[0], data[5:nonce_end], data[nonce_end:])


def transport_header(receiver_index: int, counter: int) -> bytes:
    return TRANSPORT_HEADER.pack(TRANSPORT, receiver_index, counter)


@dataclass(frozen=True, slots=True)
class XXInit:
    sender_index: int
    ephemeral: bytes


@dataclass(frozen=True, slots=True)
class XXFinish:
    receiver_index: int
    noise_message: bytes


def encode_xx_init(sender_index: int, ephemeral: bytes) -> bytes:
    body = bytes((XX_INIT,)) + _INDEX.pack(sender_index) + ephemeral
    return body + bytes(XX_INIT_SIZE - len(body))


def decode_xx_init(data: bytes) -> XXInit | None:
    if len(data) != XX_INIT_SIZE or data[0] != XX_INIT:
        return None
    return XXInit(_INDEX.unpack_from(data, 1)[0], data[5 : 5 + KEY_SIZE])


def encode_xx_response(sender_index: int, receiver_index: int, noise_message: bytes) -> bytes:
    return bytes((XX_RESPONSE,)) + _TWO_INDEXES.pack(sender_index, receiver_index) + noise_message


def decode_xx_response(data: bytes) -> HandshakeResponse | None:
    if len(data) != XX_RESPONSE_SIZE or data[0] != XX_RESPONSE:
        return None
    sender, receiver = _TWO_INDEXES.unpack_from(data, 1)
    return HandshakeResponse(sender, receiver, data[9:])


def encode_xx_finish(receiver_index: int, noise_message: bytes) -> bytes:
    return bytes((XX_FINISH,)) + _INDEX.pack(receiver_index) + noise_message


def decode_xx_finish(data: bytes) -> XXFinish | None:
    if len(data) != XX_FINISH_SIZE or data[0] != XX_FINISH:
        return None
    return XXFinish(_INDEX.unpack_from(data, 1)[0], data[5:])
