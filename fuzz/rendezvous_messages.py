"""Harness: the rendezvous RPC codec (rendezvous/messages.py) and signed allow lists
(rendezvous/allow_list.py), as both ends decode them.

`decode_message` and `AllowList.decode` raise only `RendezvousDecodeError`; what decodes
encodes again and decodes to the same value, and `verify` never raises.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pilot_proto.rendezvous import AllowList, RendezvousDecodeError
from pilot_proto.rendezvous.messages import decode_message, encode_message

if TYPE_CHECKING:
    from .traffic import Traffic



def test_one_input(data: bytes) -> None:
    try:
        message = decode_message(data)
    except RendezvousDecodeError:
        pass
    else:
        assert decode_message(encode_message(message)) == message
    try:
        allow_list = AllowList.decode(data)
    except RendezvousDecodeError:
        return
    allow_list.verify()
    allow_list.allows("0000:0000:0000:0000:0000:0000:0000:0000")
    assert AllowList.decode(allow_list.encode()) == allow_list


def seeds(traffic: Traffic) -> list[bytes]:
    return [*traffic.rendezvous_requests, *traffic.rendezvous_replies, *traffic.allow_lists]
