"""Harness: the frame codec (delivery/frames.py) on session plaintexts.

`decode_payload` may raise only `FrameDecodeError`. Whatever decodes must survive a round
trip: encoding the frames and decoding them again gives the same packet number and frames
(reason and justification texts with undecodable bytes are the one exception: they decode
to U+FFFD, which takes more bytes than the original and may be cut on re-encoding).
Seeds include every trust frame (TRUST_REQUEST/ACCEPT/REJECT, REFUSED).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pilot_proto.delivery.frames import (
    Close,
    FrameDecodeError,
    Refused,
    StreamReset,
    TrustAccept,
    TrustReject,
    TrustRequest,
    decode_payload,
    encode_payload,
)

if TYPE_CHECKING:
    from .traffic import Traffic



def test_one_input(data: bytes) -> None:
    try:
        packet_number, frames = decode_payload(data)
    except FrameDecodeError:
        return
    again = encode_payload(packet_number, frames)
    if any(isinstance(f, Close | StreamReset) and "\ufffd" in f.reason for f in frames):
        return
    if any(isinstance(f, TrustRequest) and "\ufffd" in f.justification for f in frames):
        return
    assert decode_payload(again) == (packet_number, frames), (data, again)


def seeds(traffic: Traffic) -> list[bytes]:
    request_id = bytes(range(16))
    trust = [
        encode_payload(3, [TrustRequest(request_id, "task routing")]),
        encode_payload(4, [TrustAccept(request_id), TrustReject(request_id)]),
        encode_payload(5, [Refused((request_id, bytes(16)))]),
    ]
    return list(traffic.payloads) + trust
