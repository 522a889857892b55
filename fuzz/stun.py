"""Harness: the STUN codec (stun.py), the server side (stun_server.py) and the client's
receive path (stun_client.py).

- `decode_message` raises only `StunDecodeError`; `is_stun`, `peek_header`,
  `has_attribute`, `check_fingerprint` and `check_integrity` never raise; the typed
  accessors of a decoded message never raise (values were validated while decoding);
- a decoded message re-encodes and decodes to the same message;
- the server never answers with more than 3x the request (DESIGN 6), whatever it gets;
- a client with a pending transaction, and the NAT classifier, take any datagram
  without raising.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pilot_proto.stun import (
    StunAttr,
    StunDecodeError,
    check_fingerprint,
    check_integrity,
    decode_message,
    encode_message,
    has_attribute,
    is_stun,
    peek_header,
)
from pilot_proto.stun_client import NatClassifier, StunClient
from pilot_proto.stun_server import answer_binding, answer_binding_pair, answer_binding_request

if TYPE_CHECKING:
    from .traffic import Traffic


_SOURCE = ("192.0.2.9", 5000)
_SERVER = ("198.51.100.1", 7000)
_ALTERNATE = ("198.51.100.2", 7001)
_TID = bytes(range(12))


def _fixed_tid(n: int) -> bytes:
    return _TID[:n]


def _accessors(data: bytes) -> None:
    try:
        message = decode_message(data)
    except StunDecodeError:
        return
    for accessor in (
        "xor_mapped_address", "mapped_address", "response_origin", "other_address",
        "username", "realm", "nonce", "software", "error_code", "unknown_attributes",
        "change_request", "response_port", "fingerprint",
    ):
        getattr(message, accessor)
    # Integrity and fingerprint are computed afresh on encoding: compare without them.
    plain = [(t, v) for t, v in message.attributes if t not in (
        StunAttr.MESSAGE_INTEGRITY, StunAttr.MESSAGE_INTEGRITY_SHA256, StunAttr.FINGERPRINT)]
    stripped = type(message)(message.method, message.message_class, message.transaction_id,
                             tuple(plain))
    assert decode_message(encode_message(stripped, fingerprint=False)) == stripped


def test_one_input(data: bytes) -> None:
    is_stun(data)
    peek_header(data)
    has_attribute(data, StunAttr.FINGERPRINT)
    check_fingerprint(data)
    check_integrity(data, b"key")
    check_integrity(data, b"key", sha256=True)
    _accessors(data)
    for answer in (
        answer_binding(data, _SOURCE, other_address=("198.51.100.2", 7001),
                       response_origin=_SERVER),
        answer_binding(data, ("2001:db8::9", 5000)),
    ):
        if answer is not None:
            assert len(answer.data) <= 3 * len(data), "STUN answer amplifies"
            assert answer.addr[0] in (_SOURCE[0], "2001:db8::9"), "answer to a new host"
    pair = answer_binding_pair(data, _SOURCE, _SERVER, _ALTERNATE)
    if pair is not None:
        assert len(pair[0].data) <= 3 * len(data), "STUN answer amplifies"
        assert pair[0].addr[0] == _SOURCE[0], "answer to a new host"
    reply = answer_binding_request(data, _SOURCE)
    assert reply is None or len(reply) <= 3 * len(data)
    client = StunClient(_fixed_tid)
    client.start_binding(_SERVER, 0.0)
    client.receive_datagram(data, _SERVER, 0.1)
    client.next_result()
    classifier = NatClassifier(_fixed_tid, _SERVER, alternate=_ALTERNATE)
    classifier.start(0.0)
    classifier.datagrams_to_send(0.0)
    for source in (_SERVER, _ALTERNATE):
        classifier.receive_datagram(data, source, 0.1)
        classifier.datagrams_to_send(0.1)
    classifier.result  # noqa: B018 - the property must not raise either


def seeds(traffic: Traffic) -> list[bytes]:
    return [*traffic.datagrams["stun_request"], *traffic.datagrams["stun_response"]]
