"""Harness: the outer packet codecs (packets.py) and the mac1/mac2/cookie checks (cookie.py).

Every decoder returns None for anything malformed; what decodes must encode back to the
same bytes (the layouts are fixed-size, so there is exactly one encoding). The MAC checks
take any bytes a datagram can hold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pilot_proto.cookie import CookieChecker, CookieJar
from pilot_proto.packets import (
    MAC_SIZE,
    TRANSPORT,
    TRANSPORT_HEADER,
    TRANSPORT_HEADER_SIZE,
    XX_INIT_SIZE,
    decode_cookie_reply,
    decode_initiation,
    decode_response,
    decode_xx_finish,
    decode_xx_init,
    decode_xx_response,
    encode_cookie_reply,
    encode_initiation_body,
    encode_response,
    encode_xx_finish,
    encode_xx_init,
    encode_xx_response,
    transport_header,
)
from pilot_proto.probe import PING, PROBE_SIZE, ProbeKey, pair_id_of
from pilot_proto.relay import decode_relay, encode_relay

if TYPE_CHECKING:
    from .traffic import Traffic


_STATIC = bytes(range(32))
_CHECKER = CookieChecker(_STATIC, lambda n: b"\x07" * n, 120.0)
_JAR = CookieJar(_STATIC, 120.0)
_JAR.add_macs(b"\x50" + bytes(20), 0.0)  # so accept_reply has a mac1 to check against
_SOURCE = ("192.0.2.1", 4000)
# Both ends of one pair: a probe one encodes the other must decode, and nothing else.
_PROBE_LOW = ProbeKey(bytes(32), bytes(8), 0)
_PROBE_HIGH = ProbeKey(bytes(32), bytes(8), 1)


def test_one_input(data: bytes) -> None:
    initiation = decode_initiation(data)
    if initiation is not None:
        body = encode_initiation_body(initiation.sender_index, initiation.noise_message)
        assert body + initiation.mac1 + initiation.mac2 == data
    response = decode_response(data)
    if response is not None:
        assert encode_response(response.sender_index, response.receiver_index,
                               response.noise_message) == data
    reply = decode_cookie_reply(data)
    if reply is not None:
        assert encode_cookie_reply(reply.receiver_index, reply.nonce, reply.sealed_cookie) == data
        assert not _JAR.accept_reply(reply.nonce, reply.sealed_cookie, 1.0)
    xx_init = decode_xx_init(data)
    if xx_init is not None:
        again = encode_xx_init(xx_init.sender_index, xx_init.ephemeral)
        assert len(again) == XX_INIT_SIZE and decode_xx_init(again) == xx_init
    xx_response = decode_xx_response(data)
    if xx_response is not None:
        assert encode_xx_response(xx_response.sender_index, xx_response.receiver_index,
                                  xx_response.noise_message) == data
    xx_finish = decode_xx_finish(data)
    if xx_finish is not None:
        assert encode_xx_finish(xx_finish.receiver_index, xx_finish.noise_message) == data
    if len(data) >= TRANSPORT_HEADER_SIZE and data[0] == TRANSPORT:
        _, index, counter = TRANSPORT_HEADER.unpack_from(data)
        assert transport_header(index, counter) == data[:TRANSPORT_HEADER_SIZE]
    relayed = decode_relay(data)
    if relayed is not None:
        assert encode_relay(*relayed) == data
    if pair_id_of(data) is not None:
        assert len(data) == PROBE_SIZE
        for key in (_PROBE_LOW, _PROBE_HIGH):
            probe = key.decode(data)
            if probe is not None:  # only if it really came from the other end of the pair
                other = _PROBE_HIGH if key is _PROBE_LOW else _PROBE_LOW
                assert other.encode(probe.kind, probe.txid, probe.mapping) == data
    # The responder's checks run on whatever arrives with an initiation's first byte.
    if len(data) >= 2 * MAC_SIZE:
        _CHECKER.mac1_valid(data)
        _CHECKER.mac2_valid(data, _SOURCE, 1.0)
        if initiation is not None:
            answer = _CHECKER.cookie_reply(initiation.sender_index, data, _SOURCE, 1.0)
            assert len(answer) <= 3 * len(data)


def seeds(traffic: Traffic) -> list[bytes]:
    probes = [_PROBE_LOW.encode(PING, bytes(range(8))), _PROBE_HIGH.encode(2, bytes(8), "x")]
    return [*traffic.all_datagrams(), *probes]
