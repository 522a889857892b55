"""Harness: the frame codec (delivery/frames.py) on session plaintexts.

`decode_payload` may raise only `FrameDecodeError`. Whatever decodes must survive a round
trip: encoding the frames and decoding them again gives the same packet number and frames
(reason texts with undecodable bytes are the one exception: they decode to U+FFFD, which
takes more bytes than the original and may be cut on re-encoding).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pilot_proto.delivery.frames import (
    Close,
    FrameDecodeError,
    StreamReset,
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
    assert decode_payload(again) == (packet_number, frames), (data, again)


def seeds(traffic: Traffic) -> list[bytes]:
    return list(traffic.payloads)
