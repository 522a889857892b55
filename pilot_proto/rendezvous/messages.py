"""The rendezvous RPC codec (DESIGN 6; byte layouts in docs/PROTOCOL.md section 8).

Client and server exchange these as reliable binary messages over their Noise session
(`Node.send_message(..., type="binary")`), so ordering, retransmission and size are
handled below; every message is self-contained. Each starts with the protocol version
and a type byte:

- requests, client to server, each with a request id the answer echoes: REGISTER,
  ALLOW_LIST, LOOKUP, POST_NOTE, INTRODUCE, PING;
- answers: OK, ERROR, REGISTERED, RECORD (and INTRODUCTION, for INTRODUCE);
- pushes, server to client, unasked: NOTE, INTRODUCTION (request id 0).

`decode_message` raises only `RendezvousDecodeError`, whatever the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..errors import PilotError
from ..identity import is_address
from ..records import IdentityRecord, Locator, is_valid_hostname
from ..transmit import Addr
from .allow_list import AllowList
from .codec import (
    Reader,
    encode_address,
    encode_blob,
    encode_endpoint,
    encode_text,
    encode_varint,
)
from .errors import RendezvousDecodeError

__all__ = [
    "MAX_CANDIDATES",
    "MAX_ERROR_TEXT",
    "MAX_SEALED_NOTE",
    "PROTOCOL_VERSION",
    "ErrorCode",
    "ErrorReply",
    "Introduce",
    "Introduction",
    "Lookup",
    "Message",
    "NotePush",
    "Ok",
    "Ping",
    "PostNote",
    "PublishAllowList",
    "RecordReply",
    "Register",
    "RegisteredReply",
    "Request",
    "decode_message",
    "encode_message",
]

PROTOCOL_VERSION = 1
#: Protocol ceilings; servers configure lower limits of their own.
MAX_RECORD_SIZE = 512
MAX_ALLOW_LIST_SIZE = 2 << 20
MAX_SEALED_NOTE = 0xFFFF
MAX_ERROR_TEXT = 1024
MAX_CANDIDATES = 32

_REGISTER = 0x01
_ALLOW_LIST = 0x02
_LOOKUP = 0x03
_POST_NOTE = 0x04
_INTRODUCE = 0x05
_PING = 0x06
_OK = 0x40
_ERROR = 0x41
_REGISTERED = 0x42
_RECORD = 0x43
_NOTE = 0x80
_INTRODUCTION = 0x81

_QUERY_ADDRESS = 1
_QUERY_HOSTNAME = 2


class ErrorCode(StrEnum):
    """Why a request failed. The names match pilotctl's codes (DESIGN 9) where one exists."""

    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    #: Defined for completeness; the server answers NOT_FOUND instead, so a stranger
    #: cannot tell "exists but refuses you" from "unknown" (DESIGN 8, private by default).
    NOT_TRUSTED = "not_trusted"
    INVALID_ARGUMENT = "invalid_argument"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    #: A record, locator or allow list whose sequence is not newer than the one held;
    #: `detail` carries the newest sequence held, so the client can move past it.
    STALE_SEQUENCE = "stale_sequence"
    INTERNAL = "internal"


_ERROR_CODES = {code: index for index, code in enumerate(ErrorCode, start=1)}
_ERROR_BY_NUMBER = {index: code for code, index in _ERROR_CODES.items()}


# ----------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class Register:
    """Publish an identity record and a locator, both signed by the sender."""

    request_id: int
    record: IdentityRecord
    locator: Locator


@dataclass(frozen=True, slots=True)
class PublishAllowList:
    """Replace the sender's allow list with this one, whole."""

    request_id: int
    allow_list: AllowList


@dataclass(frozen=True, slots=True)
class Lookup:
    """A hostname or an address -> the identity record; never the locator."""

    request_id: int
    query: str


@dataclass(frozen=True, slots=True)
class PostNote:
    """Leave a sealed mailbox note (mailbox.py) for `target`."""

    request_id: int
    target: str
    sealed: bytes


@dataclass(frozen=True, slots=True)
class Introduce:
    """Ask to reach `target`: both sides get each other's candidates if it allows us."""

    request_id: int
    target: str


@dataclass(frozen=True, slots=True)
class Ping:
    """Keeps the session busy enough that a restarted server is noticed."""

    request_id: int


# ------------------------------------------------------------------------------ answers


@dataclass(frozen=True, slots=True)
class Ok:
    request_id: int


@dataclass(frozen=True, slots=True)
class ErrorReply:
    request_id: int
    code: ErrorCode
    message: str
    detail: int = 0


@dataclass(frozen=True, slots=True)
class RegisteredReply:
    """REGISTER succeeded; `observed` is the sender's address as the server sees it."""

    request_id: int
    observed: Addr | None


@dataclass(frozen=True, slots=True)
class RecordReply:
    """The answer to LOOKUP."""

    request_id: int
    record: IdentityRecord


# ------------------------------------------------------------------------------- pushes


@dataclass(frozen=True, slots=True)
class NotePush:
    """A mailbox note for the receiver, with the sender's record when the server has one."""

    sender_record: IdentityRecord | None
    sealed: bytes


@dataclass(frozen=True, slots=True)
class Introduction:
    """A peer to connect to: its record, its signed locator (if current), the addresses
    the server observed it at, and when to start (seconds after this arrives).

    `request_id` echoes the INTRODUCE this answers; 0 when pushed to the target.
    `probe_limit` caps the probes the receiver sends for this introduction."""

    request_id: int
    record: IdentityRecord
    locator: Locator | None
    reflexive: tuple[Addr, ...]
    start_delay: float
    probe_limit: int


Request = Register | PublishAllowList | Lookup | PostNote | Introduce | Ping
Message = Request | Ok | ErrorReply | RegisteredReply | RecordReply | NotePush | Introduction


# ----------------------------------------------------------------------------- encoding


def encode_message(message: Message) -> bytes:
    """The wire form of a message. ValueError or LocalProtocolError for invalid fields."""
    body = _encode_body(message)
    return bytes((PROTOCOL_VERSION,)) + body


def _encode_body(m: Message) -> bytes:
    if isinstance(m, Register):
        return (
            bytes((_REGISTER,))
            + encode_varint(m.request_id)
            + encode_blob(m.record.encode())
            + encode_blob(m.locator.encode())
        )
    if isinstance(m, PublishAllowList):
        return (
            bytes((_ALLOW_LIST,)) + encode_varint(m.request_id) + encode_blob(m.allow_list.encode())
        )
    if isinstance(m, Lookup):
        return bytes((_LOOKUP,)) + encode_varint(m.request_id) + _encode_query(m.query)
    if isinstance(m, PostNote):
        return (
            bytes((_POST_NOTE,))
            + encode_varint(m.request_id)
            + encode_address(m.target)
            + encode_blob(m.sealed)
        )
    if isinstance(m, Introduce):
        return bytes((_INTRODUCE,)) + encode_varint(m.request_id) + encode_address(m.target)
    if isinstance(m, Ping):
        return bytes((_PING,)) + encode_varint(m.request_id)
    if isinstance(m, Ok):
        return bytes((_OK,)) + encode_varint(m.request_id)
    if isinstance(m, ErrorReply):
        text = m.message.encode("utf-8")[:MAX_ERROR_TEXT].decode("utf-8", "ignore")
        return (
            bytes((_ERROR,))
            + encode_varint(m.request_id)
            + bytes((_ERROR_CODES[m.code],))
            + encode_text(text)
            + encode_varint(m.detail)
        )
    if isinstance(m, RegisteredReply):
        observed = b"\x00" if m.observed is None else b"\x01" + encode_endpoint(m.observed)
        return bytes((_REGISTERED,)) + encode_varint(m.request_id) + observed
    if isinstance(m, RecordReply):
        return bytes((_RECORD,)) + encode_varint(m.request_id) + encode_blob(m.record.encode())
    if isinstance(m, NotePush):
        record = (
            b"\x00" if m.sender_record is None else b"\x01" + encode_blob(m.sender_record.encode())
        )
        return bytes((_NOTE,)) + record + encode_blob(m.sealed)
    if isinstance(m, Introduction):
        if len(m.reflexive) > MAX_CANDIDATES:
            raise ValueError(f"an introduction carries at most {MAX_CANDIDATES} addresses")
        locator = b"\x00" if m.locator is None else b"\x01" + encode_blob(m.locator.encode())
        delay_ms = min(max(round(m.start_delay * 1000), 0), 0xFFFFFFFF)
        return (
            bytes((_INTRODUCTION,))
            + encode_varint(m.request_id)
            + encode_blob(m.record.encode())
            + locator
            + bytes((len(m.reflexive),))
            + b"".join(encode_endpoint(e) for e in m.reflexive)
            + delay_ms.to_bytes(4, "big")
            + min(max(m.probe_limit, 0), 0xFFFF).to_bytes(2, "big")
        )
    raise TypeError(f"not a rendezvous message: {m!r}")


def _encode_query(query: str) -> bytes:
    if is_address(query):
        return bytes((_QUERY_ADDRESS,)) + encode_address(query)
    if is_valid_hostname(query):
        return bytes((_QUERY_HOSTNAME,)) + encode_text(query)
    raise ValueError(f"{query!r} is neither a hostname nor a node address")


# ----------------------------------------------------------------------------- decoding


def decode_message(data: bytes) -> Message:
    """Parse one message. RendezvousDecodeError for anything malformed, and nothing else.

    Records are parsed, not verified: receivers verify what they use.
    """
    try:
        reader = Reader(data)
        version = reader.u8()
        if version != PROTOCOL_VERSION:
            raise RendezvousDecodeError(f"unsupported rendezvous protocol version {version}")
        message = _decode_body(reader.u8(), reader)
        reader.end()
        return message
    except RendezvousDecodeError:
        raise
    except (PilotError, ValueError, TypeError, IndexError, OverflowError) as exc:
        # InvalidRecord and InvalidIdentity from the record decoders, ipaddress' errors.
        raise RendezvousDecodeError(f"malformed rendezvous message: {exc}") from None


def _decode_body(kind: int, r: Reader) -> Message:
    if kind == _REGISTER:
        return Register(r.varint(), _record(r), Locator.decode(r.blob(MAX_RECORD_SIZE)))
    if kind == _ALLOW_LIST:
        return PublishAllowList(r.varint(), AllowList.decode(r.blob(MAX_ALLOW_LIST_SIZE)))
    if kind == _LOOKUP:
        return Lookup(r.varint(), _query(r))
    if kind == _POST_NOTE:
        return PostNote(r.varint(), r.address(), r.blob(MAX_SEALED_NOTE))
    if kind == _INTRODUCE:
        return Introduce(r.varint(), r.address())
    if kind == _PING:
        return Ping(r.varint())
    if kind == _OK:
        return Ok(r.varint())
    if kind == _ERROR:
        request_id = r.varint()
        code = _ERROR_BY_NUMBER.get(r.u8())
        if code is None:
            raise RendezvousDecodeError("unknown error code")
        return ErrorReply(request_id, code, r.text(MAX_ERROR_TEXT), r.varint())
    if kind == _REGISTERED:
        request_id = r.varint()
        return RegisteredReply(request_id, r.endpoint() if _flag(r) else None)
    if kind == _RECORD:
        return RecordReply(r.varint(), _record(r))
    if kind == _NOTE:
        record = _record(r) if _flag(r) else None
        return NotePush(record, r.blob(MAX_SEALED_NOTE))
    if kind == _INTRODUCTION:
        request_id = r.varint()
        record = _record(r)
        locator = Locator.decode(r.blob(MAX_RECORD_SIZE)) if _flag(r) else None
        count = r.u8()
        if count > MAX_CANDIDATES:
            raise RendezvousDecodeError(f"more than {MAX_CANDIDATES} reflexive addresses")
        reflexive = tuple(r.endpoint() for _ in range(count))
        delay = r.u32() / 1000
        return Introduction(request_id, record, locator, reflexive, delay, r.u16())
    raise RendezvousDecodeError(f"unknown rendezvous message type 0x{kind:02x}")


def _flag(r: Reader) -> bool:
    value = r.u8()
    if value > 1:
        raise RendezvousDecodeError("presence flag must be 0 or 1")
    return value == 1


def _record(r: Reader) -> IdentityRecord:
    return IdentityRecord.decode(r.blob(MAX_RECORD_SIZE))


def _query(r: Reader) -> str:
    kind = r.u8()
    if kind == _QUERY_ADDRESS:
        return r.address()
    if kind == _QUERY_HOSTNAME:
        name = r.text(63)
        if not is_valid_hostname(name):
            raise RendezvousDecodeError("lookup hostname is not a valid hostname")
        return name
    raise RendezvousDecodeError(f"unknown lookup kind {kind}")
