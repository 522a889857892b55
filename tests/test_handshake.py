"""The IK peer handshake with the Ed25519 binding, below the Node."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from pilot_proto.handshake import OutgoingHandshake, read_initiation, write_response
from pilot_proto.identity import BindingCache, Identity
from pilot_proto.packets import (
    INITIATION_NOISE_SIZE,
    INITIATION_SIZE,
    RESPONSE_NOISE_SIZE,
    RESPONSE_SIZE,
    decode_initiation,
    decode_response,
    encode_initiation_body,
    encode_response,
)


def handshake(a: Identity, b: Identity, stamp: int = 1) -> OutgoingHandshake:
    return OutgoingHandshake(
        a,
        remote_static=b.static_public,
        expected_address=b.address,
        sender_index=7,
        timestamp_ns=stamp,
        instance_id=b"A" * 8,
        rng=os.urandom,
    )


def test_ik_round_trip_gives_matching_directional_keys_and_proofs() -> None:
    a, b = Identity.generate(os.urandom), Identity.generate(os.urandom)
    out = handshake(a, b, stamp=123456789)
    assert len(out.noise_message) == INITIATION_NOISE_SIZE
    incoming = read_initiation(b, out.noise_message, BindingCache(), os.urandom)
    assert incoming is not None
    assert incoming.proof.address == a.address
    assert incoming.proof.instance_id == b"A" * 8
    assert incoming.timestamp_ns == 123456789
    message, responder_keys = write_response(incoming, b, b"B" * 8)
    assert len(message) == RESPONSE_NOISE_SIZE
    result = out.read_response(message, BindingCache())
    assert result is not None
    proof, initiator_keys = result
    assert proof.address == b.address and proof.instance_id == b"B" * 8
    assert initiator_keys.send == responder_keys.recv
    assert initiator_keys.recv == responder_keys.send
    assert initiator_keys.send != initiator_keys.recv


def test_initiation_for_another_responder_does_not_open() -> None:
    a, b, c = (Identity.generate(os.urandom) for _ in range(3))
    out = handshake(a, b)
    assert read_initiation(c, out.noise_message, BindingCache(), os.urandom) is None


def test_response_from_a_different_responder_key_is_refused() -> None:
    a, b = Identity.generate(os.urandom), Identity.generate(os.urandom)
    out = handshake(a, b)
    # Same handshake answered twice by b: the second response is for a finished state.
    incoming = read_initiation(b, out.noise_message, BindingCache(), os.urandom)
    assert incoming is not None
    message, _ = write_response(incoming, b, b"B" * 8)
    tampered = bytearray(message)
    tampered[40] ^= 1
    assert out.read_response(bytes(tampered), BindingCache()) is None


def test_packet_sizes_do_not_amplify() -> None:
    assert INITIATION_SIZE == 250
    assert RESPONSE_SIZE == 162
    assert RESPONSE_SIZE < INITIATION_SIZE


@given(st.binary(max_size=300))
def test_garbage_never_decodes_into_a_handshake(data: bytes) -> None:
    b = Identity.from_private_bytes(bytes(range(32)))
    assert read_initiation(b, data, BindingCache(), os.urandom) is None
    init = decode_initiation(data)
    assert init is None or len(data) == INITIATION_SIZE
    resp = decode_response(data)
    assert resp is None or len(data) == RESPONSE_SIZE


def test_codecs_round_trip() -> None:
    body = encode_initiation_body(0xDEADBEEF, bytes(INITIATION_NOISE_SIZE))
    packet = body + b"m" * 16 + b"n" * 16
    decoded = decode_initiation(packet)
    assert decoded is not None
    assert (
        decoded.sender_index == 0xDEADBEEF
        and decoded.mac1 == b"m" * 16
        and decoded.mac2 == b"n" * 16
    )
    resp = decode_response(encode_response(1, 2, bytes(RESPONSE_NOISE_SIZE)))
    assert resp is not None and (resp.sender_index, resp.receiver_index) == (1, 2)
