"""The Binding answerer the rendezvous uses: answers, errors, silence and amplification."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from pilot_proto.stun import (
    MAGIC_COOKIE,
    ChangeRequest,
    ErrorCode,
    StunAttr,
    StunClass,
    StunMessage,
    build_binding_request,
    build_binding_response,
    check_fingerprint,
    decode_message,
    encode_message,
    response_port_attribute,
    short_term_key,
    text_attribute,
)
from pilot_proto.stun_server import AMPLIFICATION_FACTOR, answer_binding, answer_binding_request

TID = bytes(range(1, 13))
SOURCE = ("203.0.113.7", 50123)
OTHER = ("198.51.100.2", 3479)
ORIGIN = ("198.51.100.1", 3478)
SAMPLE_REQUEST = bytes.fromhex(
    json.loads((Path(__file__).parent / "vectors/stun/rfc5769.json").read_text())["vectors"][0][
        "hex"
    ]
)


def _answer(
    request: bytes,
    source: tuple[str, int] = SOURCE,
    *,
    other_address: tuple[str, int] | None = None,
    response_origin: tuple[str, int] | None = None,
) -> StunMessage:
    data = answer_binding_request(
        request, source, other_address=other_address, response_origin=response_origin
    )
    assert data is not None
    assert len(data) <= AMPLIFICATION_FACTOR * len(request)
    msg = decode_message(data)
    assert msg.transaction_id == request[8:20]
    return msg


def _request(*attrs: tuple[int, bytes], message_type: int = 0x0001) -> bytes:
    body = b"".join(struct.pack("!HH", t, len(v)) + v + bytes(-len(v) % 4) for t, v in attrs)
    return struct.pack("!HHI", message_type, len(body), MAGIC_COOKIE) + TID + body


def test_plain_request_gets_its_source_back() -> None:
    msg = _answer(build_binding_request(TID, fingerprint=False))
    assert msg.message_class is StunClass.SUCCESS_RESPONSE
    assert msg.xor_mapped_address == SOURCE
    assert msg.other_address is None and msg.response_origin is None
    assert not msg.has(StunAttr.FINGERPRINT)


def test_fingerprint_is_echoed_and_rfc5780_addresses_added() -> None:
    request = build_binding_request(TID, fingerprint=True)
    data = answer_binding_request(request, SOURCE, other_address=OTHER, response_origin=ORIGIN)
    assert data is not None and check_fingerprint(data)
    msg = decode_message(data)
    assert msg.xor_mapped_address == SOURCE
    assert msg.other_address == OTHER
    assert msg.response_origin == ORIGIN


def test_ipv6_source() -> None:
    source = ("2001:db8::42", 6000)
    assert _answer(build_binding_request(TID), source).xor_mapped_address == source


def test_integrity_in_a_request_is_not_required_nor_refused() -> None:
    request = build_binding_request(TID, username="u", key=short_term_key("p"))
    msg = _answer(request)
    assert msg.message_class is StunClass.SUCCESS_RESPONSE
    assert not msg.has(StunAttr.MESSAGE_INTEGRITY)


def test_unknown_comprehension_required_attribute_gets_420() -> None:
    # The RFC 5769 sample request is an ICE check: PRIORITY (0x0024) is not ours.
    msg = _answer(SAMPLE_REQUEST)
    assert msg.message_class is StunClass.ERROR_RESPONSE
    assert msg.error_code == ErrorCode(420, "Unknown Attribute")
    assert msg.unknown_attributes == (0x0024,)
    assert msg.has(StunAttr.FINGERPRINT)  # the request had one


def test_each_unknown_type_listed_once() -> None:
    msg = _answer(_request((0x0042, b"a"), (0x0043, b""), (0x0042, b"b")))
    assert msg.unknown_attributes == (0x0042, 0x0043)


def test_unknown_comprehension_optional_attribute_is_ignored() -> None:
    msg = _answer(_request((0x8029, bytes(8)), (0xC001, b"x")))
    assert msg.message_class is StunClass.SUCCESS_RESPONSE


def test_change_request_we_cannot_honour_gets_420() -> None:
    msg = _answer(build_binding_request(TID, change_request=ChangeRequest(True, True)))
    assert msg.error_code is not None and msg.error_code.code == 420
    assert msg.unknown_attributes == (StunAttr.CHANGE_REQUEST,)
    plain = _answer(build_binding_request(TID, change_request=ChangeRequest(False, False)))
    assert plain.message_class is StunClass.SUCCESS_RESPONSE


def test_other_method_gets_400_with_its_method() -> None:
    allocate = _request(message_type=0x0003)
    msg = _answer(allocate)
    assert msg.message_class is StunClass.ERROR_RESPONSE
    assert msg.method == 0x003
    assert msg.error_code == ErrorCode(400, "Bad Request")


def test_malformed_attribute_gets_400() -> None:
    msg = _answer(_request((StunAttr.USERNAME, b"\xff\xff\xff")))
    assert msg.error_code is not None and msg.error_code.code == 400


def test_silence_for_what_is_not_a_request() -> None:
    assert answer_binding_request(b"", SOURCE) is None
    assert answer_binding_request(b"\x50" + bytes(40), SOURCE) is None
    indication = encode_message(StunMessage(1, StunClass.INDICATION, TID))
    assert answer_binding_request(indication, SOURCE) is None
    response = build_binding_response(TID, SOURCE)
    assert answer_binding_request(response, SOURCE) is None
    bad_fingerprint = bytearray(build_binding_request(TID))
    bad_fingerprint[-1] ^= 1
    assert answer_binding_request(bytes(bad_fingerprint), SOURCE) is None


def test_amplification_drops_optional_attributes_first() -> None:
    # DESIGN section 6: never more than 3x. A bare 20-byte request from IPv6, with IPv6
    # RFC 5780 addresses, would get 92 bytes; it gets XOR-MAPPED-ADDRESS alone (44).
    source, other, origin = ("2001:db8::1", 1), ("2001:db8::2", 2), ("2001:db8::3", 3)
    bare = build_binding_request(TID, fingerprint=False)
    assert len(bare) == 20
    msg = _answer(bare, source, other_address=other, response_origin=origin)
    assert msg.xor_mapped_address == source
    assert msg.other_address is None and msg.response_origin is None
    # With FINGERPRINT the request is 28 bytes: room for OTHER-ADDRESS, not RESPONSE-ORIGIN.
    msg = _answer(build_binding_request(TID), source, other_address=other, response_origin=origin)
    assert msg.other_address == other and msg.response_origin is None
    # A larger request gets everything.
    padded = build_binding_request(TID, software="x" * 12)
    msg = _answer(padded, source, other_address=other, response_origin=origin)
    assert msg.other_address == other and msg.response_origin == origin


ip_addrs = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
endpoints = st.tuples(ip_addrs, st.integers(0, 65535))
attributes = st.lists(
    st.one_of(
        # Any type but FINGERPRINT: a bogus one makes the request not STUN (no answer at all).
        st.tuples(
            st.integers(0, 0xFFFF).filter(lambda t: t != StunAttr.FINGERPRINT),
            st.binary(max_size=12),
        ),
        st.just((StunAttr.CHANGE_REQUEST, b"\x00\x00\x00\x06")),
        st.builds(lambda t: text_attribute(StunAttr.SOFTWARE, t), st.text(max_size=8)),
    ),
    max_size=6,
)


@given(
    attrs=attributes,
    method=st.integers(0, 0xFF),
    fingerprint=st.booleans(),
    source=endpoints,
    other=st.none() | endpoints,
    origin=st.none() | endpoints,
)
def test_no_request_is_answered_with_more_than_three_times_its_size(
    attrs: list[tuple[int, bytes]],
    method: int,
    fingerprint: bool,
    source: tuple[str, int],
    other: tuple[str, int] | None,
    origin: tuple[str, int] | None,
) -> None:
    request = encode_message(
        StunMessage(method, StunClass.REQUEST, TID, tuple(attrs)), fingerprint=fingerprint
    )
    full = answer_binding(request, source, other_address=other, response_origin=origin)
    assert full is not None  # every well-framed request gets some answer
    assert full.addr[0] == source[0]
    answer = full.data
    assert len(answer) <= AMPLIFICATION_FACTOR * len(request)
    msg = decode_message(answer)
    assert msg.transaction_id == TID
    assert msg.has(StunAttr.FINGERPRINT) == fingerprint
    if msg.message_class is StunClass.SUCCESS_RESPONSE:
        assert msg.xor_mapped_address == source


@given(st.binary(max_size=120), endpoints)
def test_any_bytes_get_silence_or_a_small_answer(data: bytes, source: tuple[str, int]) -> None:
    answer = answer_binding_request(data, source)
    assert answer is None or len(answer) <= AMPLIFICATION_FACTOR * len(data)
    full = answer_binding(data, source, other_address=OTHER, response_origin=ORIGIN)
    assert full is None or len(full.data) <= AMPLIFICATION_FACTOR * len(data)
    assert full is None or full.addr[0] == source[0]


def test_response_port_redirects_the_answer() -> None:
    # RFC 5780 section 7.5, as coturn's turnutils_stunclient uses it: it asks from one
    # socket and waits on the next port up.
    request = encode_message(
        StunMessage(1, StunClass.REQUEST, TID, (response_port_attribute(SOURCE[1] + 1),)),
        fingerprint=True,
    )
    answer = answer_binding(request, SOURCE, other_address=OTHER)
    assert answer is not None
    assert answer.addr == (SOURCE[0], SOURCE[1] + 1)
    msg = decode_message(answer.data)
    assert msg.xor_mapped_address == SOURCE  # still where the request came from
    # An error goes there too, or that client would wait forever.
    refused = encode_message(
        StunMessage(
            1,
            StunClass.REQUEST,
            TID,
            (response_port_attribute(4000), (StunAttr.CHANGE_REQUEST, b"\x00\x00\x00\x06")),
        )
    )
    answer = answer_binding(refused, SOURCE)
    assert answer is not None and answer.addr == (SOURCE[0], 4000)
    assert decode_message(answer.data).unknown_attributes == (StunAttr.CHANGE_REQUEST,)
    # Port 0 is no port.
    zero = encode_message(StunMessage(1, StunClass.REQUEST, TID, (response_port_attribute(0),)))
    answer = answer_binding(zero, SOURCE)
    assert answer is not None and answer.addr == SOURCE
    assert decode_message(answer.data).error_code == ErrorCode(400, "Bad Request")
    # answer_binding_request cannot send elsewhere, so it refuses the attribute.
    only_bytes = answer_binding_request(request, SOURCE)
    assert only_bytes is not None
    assert decode_message(only_bytes).unknown_attributes == (StunAttr.RESPONSE_PORT,)


def test_padding_is_not_supported() -> None:
    msg = _answer(_request((StunAttr.PADDING, bytes(100))))
    assert msg.unknown_attributes == (StunAttr.PADDING,)


def test_plain_answer_goes_back_to_the_source() -> None:
    answer = answer_binding(build_binding_request(TID), SOURCE, response_origin=ORIGIN)
    assert answer is not None and answer.addr == SOURCE
    assert answer.data == answer_binding_request(
        build_binding_request(TID), SOURCE, response_origin=ORIGIN
    )
