"""The rendezvous encodings: round trips, canonical form, and hostile bytes (Hypothesis)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pilot_proto.identity import Identity, address_from_bytes
from pilot_proto.records import IdentityRecord, Locator
from pilot_proto.rendezvous import (
    AllowList,
    InvalidServerKey,
    RendezvousDecodeError,
    decode_server_key,
    encode_server_key,
    open_note,
)
from pilot_proto.rendezvous.messages import (
    ErrorCode,
    ErrorReply,
    Introduce,
    Introduction,
    Lookup,
    Message,
    NotePush,
    Ok,
    Ping,
    PostNote,
    PublishAllowList,
    RecordReply,
    Register,
    RegisteredReply,
    decode_message,
    encode_message,
)

# A few fixed identities keep examples fast (key derivation and signing dominate).
IDENTITIES = [Identity.from_private_bytes(bytes([i + 1]) * 32) for i in range(4)]

identities = st.sampled_from(IDENTITIES)
u64 = st.integers(0, 2**64 - 1)
request_ids = st.integers(0, 2**62 - 1)
hostnames = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
addresses = st.binary(min_size=16, max_size=16).map(address_from_bytes)
ipv4 = st.integers(0, 2**32 - 1).map(
    lambda n: ".".join(str((n >> s) & 255) for s in (24, 16, 8, 0))
)
ipv6 = st.binary(min_size=16, max_size=16).filter(lambda b: b[:12] != bytes(10) + b"\xff\xff")
endpoints = st.tuples(
    st.one_of(ipv4, ipv6.map(lambda b: str(__import__("ipaddress").IPv6Address(b)))),
    st.integers(1, 65535),
)


@st.composite
def records(draw: st.DrawFn) -> IdentityRecord:
    return IdentityRecord.create(
        draw(identities),
        hostname=draw(st.none() | hostnames),
        sequence=draw(u64),
        expires_at=draw(u64),
    )


@st.composite
def locators(draw: st.DrawFn) -> Locator:
    eps = draw(st.lists(endpoints, max_size=16, unique=True))
    return Locator.create(draw(identities), endpoints=eps, sequence=draw(u64), expires_at=draw(u64))


@st.composite
def allow_lists(draw: st.DrawFn) -> AllowList:
    return AllowList.create(
        draw(identities),
        draw(st.lists(addresses, max_size=20)),
        public=draw(st.booleans()),
        sequence=draw(u64),
    )


def messages() -> st.SearchStrategy[Message]:
    blobs = st.binary(max_size=300)
    return st.one_of(
        st.builds(Register, request_ids, records(), locators()),
        st.builds(PublishAllowList, request_ids, allow_lists()),
        st.builds(Lookup, request_ids, st.one_of(hostnames, addresses)),
        st.builds(PostNote, request_ids, addresses, blobs),
        st.builds(Introduce, request_ids, addresses),
        st.builds(Ping, request_ids),
        st.builds(Ok, request_ids),
        st.builds(
            ErrorReply,
            request_ids,
            st.sampled_from(list(ErrorCode)),
            st.text(max_size=100),
            st.integers(0, 2**62 - 1),
        ),
        st.builds(RegisteredReply, request_ids, st.none() | endpoints),
        st.builds(RecordReply, request_ids, records()),
        st.builds(NotePush, st.none() | records(), blobs),
        st.builds(
            Introduction,
            request_ids,
            records(),
            st.none() | locators(),
            st.lists(endpoints, max_size=4).map(tuple),
            st.integers(0, 2**32 - 1).map(lambda ms: ms / 1000),
            st.integers(0, 0xFFFF),
        ),
    )


def canonical(message: Message) -> Message:
    """What the codec is expected to give back: endpoints in canonical text form."""
    import ipaddress

    def fix(e: tuple[str, int]) -> tuple[str, int]:
        return (str(ipaddress.ip_address(e[0])), e[1])

    if isinstance(message, RegisteredReply) and message.observed is not None:
        return RegisteredReply(message.request_id, fix(message.observed))
    if isinstance(message, Introduction):
        return Introduction(
            message.request_id,
            message.record,
            message.locator,
            tuple(fix(e) for e in message.reflexive),
            message.start_delay,
            message.probe_limit,
        )
    return message


@given(messages())
def test_every_message_round_trips(message: Message) -> None:
    data = encode_message(message)
    decoded = decode_message(data)
    assert decoded == canonical(message)
    assert encode_message(decoded) == data


@given(st.binary(max_size=600))
def test_any_bytes_decode_or_raise_only_the_decode_error(data: bytes) -> None:
    try:
        message = decode_message(data)
    except RendezvousDecodeError:
        return
    assert encode_message(message) == data  # whatever is accepted is canonical


@given(
    st.sampled_from([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x40, 0x41, 0x42, 0x43, 0x80, 0x81]),
    st.binary(max_size=600),
)
def test_any_body_after_a_known_type_raises_only_the_decode_error(kind: int, body: bytes) -> None:
    try:
        decode_message(bytes((1, kind)) + body)
    except RendezvousDecodeError:
        pass


@given(messages(), st.data())
def test_damaged_messages_raise_only_the_decode_error(
    message: Message, data: st.DataObject
) -> None:
    wire = bytearray(encode_message(message))
    how = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if how == "flip":
        index = data.draw(st.integers(0, len(wire) - 1))
        wire[index] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        del wire[data.draw(st.integers(0, len(wire) - 1)) :]
    else:
        wire += data.draw(st.binary(min_size=1, max_size=8))
    try:
        decoded = decode_message(bytes(wire))
    except RendezvousDecodeError:
        return
    assert encode_message(decoded) == bytes(wire)


@given(allow_lists())
def test_allow_lists_round_trip_and_verify(allow_list: AllowList) -> None:
    data = allow_list.encode()
    decoded = AllowList.decode(data)
    assert decoded == allow_list and decoded.encode() == data
    assert decoded.verify()
    assert decoded.allows(IDENTITIES[0].address) == (
        allow_list.public or IDENTITIES[0].address in allow_list.addresses
    )


@given(allow_lists(), st.integers(0, 10_000))
def test_a_changed_allow_list_byte_never_verifies(allow_list: AllowList, position: int) -> None:
    data = bytearray(allow_list.encode())
    data[position % len(data)] ^= 0x40
    try:
        decoded = AllowList.decode(bytes(data))
    except RendezvousDecodeError:
        return
    assert not decoded.verify()


@given(st.binary(max_size=400))
def test_allow_list_decoder_raises_only_the_decode_error(data: bytes) -> None:
    try:
        AllowList.decode(data)
    except RendezvousDecodeError:
        pass


@given(st.binary(max_size=400))
def test_opening_any_bytes_never_raises(data: bytes) -> None:
    assert open_note(IDENTITIES[0], data, 1_700_000_000.0) is None
    assert open_note(IDENTITIES[0], b"\x01" + data, 1_700_000_000.0) is None


@given(st.binary(min_size=32, max_size=32))
def test_server_keys_in_hex_and_base64(key: bytes) -> None:
    text = encode_server_key(key)
    assert len(text) == 64 and text == text.lower()
    for spelling in (
        text,
        text.upper(),
        base64.b64encode(key).decode(),
        base64.urlsafe_b64encode(key).decode(),
        base64.urlsafe_b64encode(key).decode().rstrip("="),
    ):
        assert decode_server_key(spelling) == key


@given(st.text(max_size=80))
def test_bad_server_keys_raise_one_clear_error(text: str) -> None:
    try:
        key = decode_server_key(text)
    except InvalidServerKey as exc:
        assert "64 hex digits" in str(exc)
    else:
        assert len(key) == 32


def test_examples_of_bad_server_keys() -> None:
    for text in ("", "abc", "g" * 64, "a" * 63, base64.b64encode(b"x" * 31).decode()):
        with pytest.raises(InvalidServerKey):
            decode_server_key(text)


def test_unknown_versions_and_types_are_refused() -> None:
    ping = encode_message(Ping(5))
    assert decode_message(ping) == Ping(5)
    with pytest.raises(RendezvousDecodeError):
        decode_message(b"\x02" + ping[1:])
    with pytest.raises(RendezvousDecodeError):
        decode_message(b"\x01\x7f\x05")
    with pytest.raises(RendezvousDecodeError):
        decode_message(b"")
