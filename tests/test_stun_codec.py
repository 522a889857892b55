"""STUN codec: published vectors, round trips of every attribute, hostile bytes."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pilot_proto.errors import LocalProtocolError
from pilot_proto.stun import (
    MAGIC_COOKIE,
    ChangeRequest,
    ErrorCode,
    StunAttr,
    StunClass,
    StunDecodeError,
    StunMessage,
    StunMethod,
    address_attribute,
    build_binding_request,
    build_binding_response,
    build_error_response,
    change_request_attribute,
    check_fingerprint,
    check_integrity,
    decode_message,
    encode_message,
    error_code_attribute,
    is_stun,
    long_term_key,
    response_port_attribute,
    short_term_key,
    text_attribute,
    unknown_attributes_attribute,
    xor_address_attribute,
)

VECTORS = Path(__file__).parent / "vectors" / "stun"


def _load(name: str) -> dict[str, dict[str, Any]]:
    data = json.loads((VECTORS / name).read_text())
    return {v["name"]: v for v in data["vectors"]}


RFC5769 = _load("rfc5769.json")
LONG_TERM = _load("rfc5769_long_term.json")["sample_request_long_term"]
SHA256_VECTOR = _load("rfc8489_b1.json")["sample_request_long_term_sha256"]


# ---------------------------------------------------------------------- RFC 5769


@pytest.mark.parametrize("name", sorted(RFC5769))
def test_rfc5769_vector_decodes_and_authenticates(name: str) -> None:
    vector = RFC5769[name]
    data = bytes.fromhex(vector["hex"])
    msg = decode_message(data)
    assert msg.method == StunMethod.BINDING
    assert msg.transaction_id.hex() == vector["transaction_id"]
    assert msg.software == vector["software"]
    if "xor_mapped_address" in vector:
        assert msg.message_class is StunClass.SUCCESS_RESPONSE
        host, port = vector["xor_mapped_address"]
        assert msg.xor_mapped_address == (host, port)
    else:
        assert msg.message_class is StunClass.REQUEST
        assert msg.username == vector["username"]
        # PRIORITY and ICE-CONTROLLED are not ours to interpret, but they survive decoding.
        assert msg.get(0x0024) == struct.pack("!I", vector["priority"])
        assert msg.get(0x8029) == bytes.fromhex(vector["ice_controlled_tiebreaker"])
    assert msg.attribute_types[-2:] == (StunAttr.MESSAGE_INTEGRITY, StunAttr.FINGERPRINT)
    assert is_stun(data)
    assert check_fingerprint(data)
    key = short_term_key(vector["password"])
    assert check_integrity(data, key)
    assert not check_integrity(data, key + b"x")
    assert not check_integrity(data, key, sha256=True)  # it has no SHA-256 integrity


@pytest.mark.parametrize("name", sorted(RFC5769))
def test_rfc5769_vector_tampering_is_detected(name: str) -> None:
    data = bytearray.fromhex(RFC5769[name]["hex"])
    data[25] ^= 0x01  # inside the first attribute's value
    assert not check_fingerprint(bytes(data))
    assert not check_integrity(bytes(data), short_term_key(RFC5769[name]["password"]))


@pytest.mark.parametrize(
    ("name", "space_padding"),
    [("sample_request", 3), ("sample_ipv4_response", 1), ("sample_ipv6_response", 1)],
)
def test_rfc5769_vector_reencodes_up_to_padding(name: str, space_padding: int) -> None:
    # These vectors pad with spaces (RFC 5769 shows padding may hold anything); we write
    # zeros, so the re-encoding differs exactly there and nowhere else.
    data = bytes.fromhex(RFC5769[name]["hex"])
    again = encode_message(decode_message(data))
    assert len(again) == len(data)
    diff = [i for i in range(len(data)) if data[i] != again[i]]
    assert len(diff) == space_padding
    assert all(data[i] == 0x20 and again[i] == 0 for i in diff)
    assert decode_message(again) == decode_message(data)


def test_rfc5769_long_term_vector_is_rebuilt_byte_for_byte() -> None:
    data = bytes.fromhex(LONG_TERM["hex"])
    msg = decode_message(data)
    assert msg.username == LONG_TERM["username"]
    assert msg.realm == LONG_TERM["realm"]
    assert msg.nonce == LONG_TERM["nonce"]
    key = long_term_key(LONG_TERM["username"], LONG_TERM["realm"], LONG_TERM["password"])
    assert (
        key
        == hashlib.md5(
            f"{LONG_TERM['username']}:{LONG_TERM['realm']}:{LONG_TERM['password']}".encode()
        ).digest()
    )
    assert check_integrity(data, key)
    assert not check_fingerprint(data)  # this vector carries none
    assert encode_message(msg) == data
    # Built from its parts, our MESSAGE-INTEGRITY reproduces the published one.
    parts = StunMessage(
        StunMethod.BINDING,
        StunClass.REQUEST,
        bytes.fromhex(LONG_TERM["transaction_id"]),
        (
            text_attribute(StunAttr.USERNAME, LONG_TERM["username"]),
            text_attribute(StunAttr.NONCE, LONG_TERM["nonce"]),
            text_attribute(StunAttr.REALM, LONG_TERM["realm"]),
        ),
    )
    assert encode_message(parts, key=key) == data


def test_rfc8489_sha256_vector_authenticates_and_rebuilds() -> None:
    data = bytes.fromhex(SHA256_VECTOR["hex"])
    msg = decode_message(data)
    assert msg.nonce == SHA256_VECTOR["nonce"]
    userhash = hashlib.sha256(f"{SHA256_VECTOR['username']}:{SHA256_VECTOR['realm']}".encode())
    assert msg.get(0x001E) == userhash.digest()  # USERHASH, kept raw
    key = long_term_key(
        SHA256_VECTOR["username"],
        SHA256_VECTOR["realm"],
        SHA256_VECTOR["password"],
        algorithm="sha256",
    )
    assert check_integrity(data, key, sha256=True)
    assert not check_integrity(data, key)  # no SHA-1 integrity in it
    without_mac = StunMessage(
        msg.method, msg.message_class, msg.transaction_id, msg.attributes[:-1]
    )
    assert encode_message(without_mac, key=key, integrity="sha256") == data


# ---------------------------------------------------------------------- header and builders


def test_message_type_bits_for_every_class() -> None:
    tid = bytes(range(12))
    for cls, first_two in [
        (StunClass.REQUEST, 0x0001),
        (StunClass.INDICATION, 0x0011),
        (StunClass.SUCCESS_RESPONSE, 0x0101),
        (StunClass.ERROR_RESPONSE, 0x0111),
    ]:
        data = encode_message(StunMessage(StunMethod.BINDING, cls, tid))
        assert int.from_bytes(data[:2], "big") == first_two
        assert decode_message(data).message_class is cls


@given(method=st.integers(0, 0xFF), cls=st.sampled_from(list(StunClass)))
def test_any_method_and_class_round_trip(method: int, cls: StunClass) -> None:
    msg = StunMessage(method, cls, b"\x01" * 12)
    data = encode_message(msg)
    assert data[0] <= 3  # RFC 7983: STUN keeps to first bytes 0-3
    assert decode_message(data) == msg


def test_binding_request_builder() -> None:
    tid = b"\xaa" * 12
    data = build_binding_request(tid)
    assert len(data) == 28  # header + FINGERPRINT
    assert check_fingerprint(data)
    msg = decode_message(data)
    assert (msg.method, msg.message_class, msg.transaction_id) == (1, StunClass.REQUEST, tid)
    key = short_term_key("secret")
    signed = build_binding_request(tid, username="alice", key=key, fingerprint=False)
    assert check_integrity(signed, key)
    assert decode_message(signed).username == "alice"
    assert not check_fingerprint(signed)
    both = build_binding_request(tid, key=key, integrity="both")
    assert check_integrity(both, key) and check_integrity(both, key, sha256=True)
    assert check_fingerprint(both)
    assert decode_message(both).attribute_types == (
        StunAttr.MESSAGE_INTEGRITY,
        StunAttr.MESSAGE_INTEGRITY_SHA256,
        StunAttr.FINGERPRINT,
    )
    change = build_binding_request(tid, change_request=ChangeRequest(True, False))
    assert decode_message(change).change_request == ChangeRequest(True, False)


def test_binding_response_builder() -> None:
    tid = b"\x07" * 12
    data = build_binding_response(
        tid,
        ("203.0.113.5", 40000),
        response_origin=("198.51.100.1", 3478),
        other_address=("198.51.100.2", 3479),
        software="pilot",
        fingerprint=True,
    )
    msg = decode_message(data)
    assert msg.message_class is StunClass.SUCCESS_RESPONSE
    assert msg.xor_mapped_address == ("203.0.113.5", 40000)
    assert msg.response_origin == ("198.51.100.1", 3478)
    assert msg.other_address == ("198.51.100.2", 3479)
    assert msg.software == "pilot"
    assert msg.mapped_address is None
    assert check_fingerprint(data)


def test_error_response_builder_default_reasons() -> None:
    data = build_error_response(b"\x01" * 12, 420, unknown_attributes=[0x0024, 0x7777])
    msg = decode_message(data)
    assert msg.message_class is StunClass.ERROR_RESPONSE
    assert msg.error_code == ErrorCode(420, "Unknown Attribute")
    assert msg.unknown_attributes == (0x0024, 0x7777)
    assert decode_message(build_error_response(b"\x01" * 12, 400)).error_code == ErrorCode(
        400, "Bad Request"
    )


def test_xor_mapped_address_is_really_xored() -> None:
    # RFC 8489 section 14.2: the port is XORed with 0x2112 and an IPv4 address with the cookie.
    attr_type, value = xor_address_attribute(("192.0.2.1", 32853), b"\x00" * 12)
    assert attr_type == StunAttr.XOR_MAPPED_ADDRESS
    assert value[2:4] == (32853 ^ 0x2112).to_bytes(2, "big")
    assert value[4:] == (0xC0000201 ^ MAGIC_COOKIE).to_bytes(4, "big")


def test_local_misuse_raises_local_protocol_error() -> None:
    tid = b"\x00" * 12
    with pytest.raises(LocalProtocolError):
        build_binding_request(b"short")
    with pytest.raises(LocalProtocolError):
        error_code_attribute(200)
    with pytest.raises(LocalProtocolError):
        error_code_attribute(400, "x" * 128)
    with pytest.raises(LocalProtocolError):
        address_attribute(StunAttr.USERNAME, ("192.0.2.1", 1))
    with pytest.raises(LocalProtocolError):
        address_attribute(StunAttr.MAPPED_ADDRESS, ("example.org", 1))
    with pytest.raises(LocalProtocolError):
        address_attribute(StunAttr.MAPPED_ADDRESS, ("192.0.2.1", 70000))
    with pytest.raises(LocalProtocolError):
        text_attribute(StunAttr.USERNAME, "u" * 514)
    with pytest.raises(LocalProtocolError):
        text_attribute(StunAttr.ERROR_CODE, "x")
    with pytest.raises(LocalProtocolError):
        encode_message(StunMessage(0x100, StunClass.REQUEST, tid))
    with pytest.raises(LocalProtocolError):
        encode_message(StunMessage(1, StunClass.REQUEST, tid, ((1, b"x" * 0x10000),)))
    signed = decode_message(build_binding_request(tid, key=b"k"))
    with pytest.raises(LocalProtocolError):
        encode_message(signed, fingerprint=True)


# ---------------------------------------------------------------------- decoding rules


def _raw(tid: bytes, *attrs: tuple[int, bytes], message_type: int = 0x0001) -> bytes:
    body = b""
    for t, v in attrs:
        body += struct.pack("!HH", t, len(v)) + v + bytes(-len(v) % 4)
    return struct.pack("!HHI", message_type, len(body), MAGIC_COOKIE) + tid + body


def test_attributes_after_integrity_are_ignored() -> None:
    # RFC 8489 section 14.5: only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT may follow.
    tid = b"\x02" * 12
    signed = build_binding_request(tid, key=b"k", fingerprint=False)
    forged = xor_address_attribute(("192.0.2.66", 1), tid)
    body = signed[20:] + struct.pack("!HH", forged[0], len(forged[1])) + forged[1]
    data = signed[:2] + len(body).to_bytes(2, "big") + signed[4:20] + body
    msg = decode_message(data)
    assert msg.xor_mapped_address is None
    assert msg.attribute_types == (StunAttr.MESSAGE_INTEGRITY,)
    assert check_integrity(data, b"k")


def test_first_occurrence_wins() -> None:
    tid = b"\x03" * 12
    data = _raw(tid, (StunAttr.SOFTWARE, b"one"), (StunAttr.SOFTWARE, b"two"))
    msg = decode_message(data)
    assert msg.software == "one"
    assert msg.get_all(StunAttr.SOFTWARE) == (b"one", b"two")


def test_fingerprint_must_be_last() -> None:
    tid = b"\x04" * 12
    data = build_binding_request(tid)
    extra = struct.pack("!HH", StunAttr.SOFTWARE, 4) + b"late"
    body = data[20:] + extra
    moved = data[:2] + len(body).to_bytes(2, "big") + data[4:20] + body
    assert not check_fingerprint(moved)
    assert decode_message(moved).software is None  # ignored: it came after FINGERPRINT


@pytest.mark.parametrize(
    "attrs",
    [
        [(StunAttr.XOR_MAPPED_ADDRESS, b"\x00\x01\x00\x00\x01\x02\x03")],  # 7 bytes
        [(StunAttr.MAPPED_ADDRESS, b"\x00\x03" + bytes(6))],  # family 3
        [(StunAttr.MAPPED_ADDRESS, b"\x00\x02" + bytes(6))],  # IPv6 family, IPv4 length
        [(StunAttr.USERNAME, b"\xff\xfe")],  # not UTF-8
        [(StunAttr.REALM, b"r" * 764)],
        [(StunAttr.ERROR_CODE, b"\x00\x00\x02\x00")],  # class 2
        [(StunAttr.ERROR_CODE, b"\x00\x00\x04\x64")],  # number 100
        [(StunAttr.ERROR_CODE, b"\x00\x00")],
        [(StunAttr.UNKNOWN_ATTRIBUTES, b"\x00\x01\x00")],
        [(StunAttr.CHANGE_REQUEST, b"\x00\x00\x06")],
        [(StunAttr.FINGERPRINT, b"\x00\x00")],
        [(StunAttr.RESPONSE_PORT, b"\x00\x00")],
        [(StunAttr.MESSAGE_INTEGRITY, bytes(19))],
        [(StunAttr.MESSAGE_INTEGRITY_SHA256, bytes(18))],
        [(StunAttr.MESSAGE_INTEGRITY_SHA256, bytes(36))],
    ],
)
def test_malformed_known_attributes_are_rejected(attrs: list[tuple[int, bytes]]) -> None:
    with pytest.raises(StunDecodeError):
        decode_message(_raw(b"\x05" * 12, *attrs))


def test_malformed_informational_text_is_tolerated() -> None:
    data = _raw(
        b"\x05" * 12,
        (StunAttr.SOFTWARE, b"\xffbad"),
        (StunAttr.ERROR_CODE, b"\x00\x00\x04\x00\xff"),
        message_type=0x0111,
    )
    msg = decode_message(data)
    assert msg.error_code == ErrorCode(400, "\ufffd")
    assert msg.software == "\ufffdbad"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 19,
        b"\x80" + bytes.fromhex(RFC5769["sample_request"]["hex"])[1:],  # top bits set
        bytes.fromhex(RFC5769["sample_request"]["hex"])[:-4],  # length mismatch
        bytes.fromhex(RFC5769["sample_request"]["hex"]) + b"\x00\x00\x00\x00",
        struct.pack("!HHI", 1, 0, 0x2112A443) + bytes(12),  # wrong cookie
        struct.pack("!HHI", 1, 2, MAGIC_COOKIE) + bytes(14),  # length not a multiple of 4
        struct.pack("!HHI", 1, 4, MAGIC_COOKIE) + bytes(12) + b"\x80\x22\x00\x08",  # overrun
    ],
)
def test_not_stun(data: bytes) -> None:
    with pytest.raises(StunDecodeError):
        decode_message(data)
    assert not check_fingerprint(data)
    assert not check_integrity(data, b"key")


def test_is_stun_demultiplexes_our_other_packets() -> None:
    assert is_stun(build_binding_request(b"\x00" * 12))
    # Our packet types, DTLS (20-63) and TURN ChannelData (64-79), even with the cookie.
    for first in (0x50, 0x51, 0x52, 0x53, 0x04, 0x16, 0x3F, 0x40, 0x4F):
        fake = bytearray(build_binding_request(b"\x00" * 12))
        fake[0] = first
        assert not is_stun(bytes(fake))


# ---------------------------------------------------------------------- round trips

tids = st.binary(min_size=12, max_size=12)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
addrs = st.tuples(st.one_of(ipv4, ipv6), st.integers(0, 65535))
texts = st.text(max_size=120)


def _round_trip(msg: StunMessage) -> StunMessage:
    data = encode_message(msg)
    assert len(data) % 4 == 0 and is_stun(data)
    decoded = decode_message(data)
    assert decoded == msg
    return decoded


@given(tid=tids, addr=addrs)
def test_round_trip_xor_mapped_address(tid: bytes, addr: tuple[str, int]) -> None:
    msg = StunMessage(1, StunClass.SUCCESS_RESPONSE, tid, (xor_address_attribute(addr, tid),))
    assert _round_trip(msg).xor_mapped_address == addr


@given(
    tid=tids,
    addr=addrs,
    attr=st.sampled_from(
        [StunAttr.MAPPED_ADDRESS, StunAttr.RESPONSE_ORIGIN, StunAttr.OTHER_ADDRESS]
    ),
)
def test_round_trip_plain_addresses(tid: bytes, addr: tuple[str, int], attr: StunAttr) -> None:
    decoded = _round_trip(
        StunMessage(1, StunClass.SUCCESS_RESPONSE, tid, (address_attribute(attr, addr),))
    )
    accessor = {
        StunAttr.MAPPED_ADDRESS: "mapped_address",
        StunAttr.RESPONSE_ORIGIN: "response_origin",
        StunAttr.OTHER_ADDRESS: "other_address",
    }[attr]
    assert getattr(decoded, accessor) == addr


@given(
    tid=tids,
    text=texts,
    attr=st.sampled_from([StunAttr.USERNAME, StunAttr.REALM, StunAttr.NONCE, StunAttr.SOFTWARE]),
)
def test_round_trip_text(tid: bytes, text: str, attr: StunAttr) -> None:
    decoded = _round_trip(StunMessage(1, StunClass.REQUEST, tid, (text_attribute(attr, text),)))
    assert getattr(decoded, attr.name.lower()) == text


@given(tid=tids, code=st.integers(300, 699), reason=st.text(max_size=127))
def test_round_trip_error_code(tid: bytes, code: int, reason: str) -> None:
    msg = StunMessage(1, StunClass.ERROR_RESPONSE, tid, (error_code_attribute(code, reason),))
    assert _round_trip(msg).error_code == ErrorCode(code, reason)


@given(tid=tids, types=st.lists(st.integers(0, 0xFFFF), max_size=20))
def test_round_trip_unknown_attributes(tid: bytes, types: list[int]) -> None:
    msg = StunMessage(1, StunClass.ERROR_RESPONSE, tid, (unknown_attributes_attribute(types),))
    assert _round_trip(msg).unknown_attributes == tuple(types)


@given(tid=tids, change_ip=st.booleans(), change_port=st.booleans())
def test_round_trip_change_request(tid: bytes, change_ip: bool, change_port: bool) -> None:
    msg = StunMessage(
        1, StunClass.REQUEST, tid, (change_request_attribute(change_ip, change_port),)
    )
    assert _round_trip(msg).change_request == ChangeRequest(change_ip, change_port)


@given(tid=tids, port=st.integers(0, 65535))
def test_round_trip_response_port(tid: bytes, port: int) -> None:
    msg = StunMessage(1, StunClass.REQUEST, tid, (response_port_attribute(port),))
    assert _round_trip(msg).response_port == port


@given(tid=tids, value=st.binary(max_size=64), attr_type=st.integers(0x8030, 0xFFFF))
def test_round_trip_unknown_attribute_kept_raw(tid: bytes, value: bytes, attr_type: int) -> None:
    assert (
        _round_trip(StunMessage(1, StunClass.REQUEST, tid, ((attr_type, value),))).get(attr_type)
        == value
    )


@given(
    tid=tids,
    key=st.binary(min_size=1, max_size=64),
    integrity=st.sampled_from(["sha1", "sha256", "both"]),
    fingerprint=st.booleans(),
    software=texts,
)
def test_round_trip_integrity_and_fingerprint(
    tid: bytes, key: bytes, integrity: Any, fingerprint: bool, software: str
) -> None:
    msg = StunMessage(1, StunClass.REQUEST, tid, (text_attribute(StunAttr.SOFTWARE, software),))
    data = encode_message(msg, key=key, integrity=integrity, fingerprint=fingerprint)
    decoded = decode_message(data)
    assert decoded.software == software
    assert check_integrity(data, key) == (integrity in ("sha1", "both"))
    assert check_integrity(data, key, sha256=True) == (integrity in ("sha256", "both"))
    assert check_fingerprint(data) == fingerprint
    assert not check_integrity(data, bytes(b ^ 1 for b in key))
    # The decoded message, integrity attributes and all, re-encodes to the same bytes.
    assert encode_message(decoded) == data


# ---------------------------------------------------------------------- hostile bytes


@given(st.binary(max_size=200))
def test_any_bytes_decode_raises_only_stun_decode_error(data: bytes) -> None:
    try:
        decode_message(data)
    except StunDecodeError:
        pass
    assert isinstance(check_fingerprint(data), bool)
    assert isinstance(check_integrity(data, b"k"), bool)
    assert isinstance(check_integrity(data, b"k", sha256=True), bool)


@given(message_type=st.integers(0, 0x03FF), tid=tids, body=st.binary(max_size=120))
def test_any_body_behind_a_valid_header(message_type: int, tid: bytes, body: bytes) -> None:
    body += bytes(-len(body) % 4)
    data = struct.pack("!HHI", message_type, len(body), MAGIC_COOKIE) + tid + body
    assert is_stun(data)
    try:
        msg = decode_message(data)
    except StunDecodeError:
        return
    # Whatever decoded reads back through every accessor without an exception escaping,
    # other than the documented one for informational text.
    for name in (
        "software",
        "xor_mapped_address",
        "mapped_address",
        "response_origin",
        "other_address",
        "username",
        "realm",
        "nonce",
        "error_code",
        "unknown_attributes",
        "change_request",
        "response_port",
        "fingerprint",
    ):
        getattr(msg, name)
    assert decode_message(encode_message(msg)) == msg


@given(
    which=st.sampled_from(sorted(RFC5769)),
    flips=st.lists(st.tuples(st.integers(0, 200), st.integers(1, 255)), min_size=1, max_size=4),
)
def test_mutated_vectors_never_raise_anything_else(
    which: str, flips: list[tuple[int, int]]
) -> None:
    data = bytearray.fromhex(RFC5769[which]["hex"])
    for pos, mask in flips:
        data[pos % len(data)] ^= mask
    assume(data.hex() != RFC5769[which]["hex"])  # flips that cancel out change nothing
    try:
        decode_message(bytes(data))
    except StunDecodeError:
        pass
    key = short_term_key(RFC5769[which]["password"])
    # Any change is caught by CRC-32 or by the HMAC, which both cover the whole message.
    assert not (check_fingerprint(bytes(data)) and check_integrity(bytes(data), key))


def test_header_level_garbage_is_not_stun() -> None:
    good = bytes.fromhex(RFC5769["sample_request"]["hex"])
    assert is_stun(good)
    assert not is_stun(b"\x80" + good[1:])
    assert not is_stun(good[:-4])
    assert not is_stun(good + bytes(4))
    assert not is_stun(good[:4] + b"\x21\x12\xa4\x43" + good[8:])
    assert not is_stun(good[:19])
