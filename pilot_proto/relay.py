"""Relay framing through the rendezvous (DESIGN 6), and the server's forwarding rules.

A peer that cannot reach another directly wraps its packet (handshake, transport, probe:
already end-to-end encrypted or authenticated) in a RELAY datagram to the rendezvous:

    0x57 | node address (16 bytes) | inner packet

Toward the server the address names the destination; from the server it names the
source. The server learns who sends from the source address of the datagram, which must
be the current path of a client with a session (as TURN binds an allocation to its
5-tuple), forwards only between pairs it introduced, and rate-limits per node and per
source IP (`rendezvous/relay.py`). It sees sizes and timing, never content: it has no
key of the pair.

The relayed inner packet is smaller than the outer datagram by `RELAY_OVERHEAD`, so the
sender counts that overhead and the outer datagram stays within the path MTU (1200 bytes
until the path proves more).
"""

from __future__ import annotations

from typing import Final

from .identity import address_bytes, address_from_bytes, is_address

__all__ = [
    "RELAY",
    "RELAY_OVERHEAD",
    "decode_relay",
    "encode_relay",
]

RELAY: Final = 0x57
ADDRESS_SIZE: Final = 16
RELAY_OVERHEAD: Final = 1 + ADDRESS_SIZE


def encode_relay(address: str, inner: bytes) -> bytes:
    return bytes((RELAY,)) + address_bytes(address) + inner


def decode_relay(data: bytes) -> tuple[str, bytes] | None:
    """(node address, inner packet), or None for anything malformed."""
    if len(data) <= RELAY_OVERHEAD or data[0] != RELAY:
        return None
    try:
        address = address_from_bytes(bytes(data[1:RELAY_OVERHEAD]))
    except Exception:  # a decoder never raises on remote input
        return None
    if not is_address(address):
        return None
    return address, bytes(data[RELAY_OVERHEAD:])
