"""Harness: the handshake layer above Noise (handshake.py, handshake_xx.py), with a fixed
responder identity.

The first byte picks the entry point:

0. `read_initiation`: the Noise message of an IK initiation, as the responder reads it;
1. the initiator payload decrypted from a *genuine* IK message 1 that carries the input as
   its payload, so the parsing behind the AEAD is reached;
2. the same for the responder payload in a genuine IK message 2 (`read_response`);
3. `OutgoingHandshake.read_response` on raw input;
4. Noise XX at the server: message 1 (the ephemeral), then the input as message 3;
5. Noise XX at the client: the input as message 2.

Every entry returns a result or None; none may raise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pilot_proto.handshake import (
    IK,
    PROLOGUE,
    OutgoingHandshake,
    read_initiation,
)
from pilot_proto.handshake_xx import XXInitiator, XXResponder
from pilot_proto.identity import BindingCache, Identity
from pilot_proto.noise import HandshakeState
from pilot_proto.packets import INITIATION_SIZE, MAC_SIZE

if TYPE_CHECKING:
    from .traffic import Traffic



def _counter_rng() -> Callable[[int], bytes]:
    """Distinct, reproducible ephemeral keys (a fixed one would make every run the same)."""
    state = [0]

    def rng(n: int) -> bytes:
        state[0] += 1
        return (state[0].to_bytes(8, "big") * (n // 8 + 1))[:n]

    return rng


_RNG = _counter_rng()
RESPONDER = Identity.from_private_bytes(bytes(range(32)))
INITIATOR = Identity.from_private_bytes(bytes(range(1, 33)))
_BINDINGS = BindingCache()
_INSTANCE = b"\x01" * 8


def _outgoing() -> OutgoingHandshake:
    return OutgoingHandshake(
        INITIATOR,
        remote_static=RESPONDER.static_public,
        expected_address=RESPONDER.address,
        sender_index=1,
        timestamp_ns=1_700_000_000 * 10**9,
        instance_id=_INSTANCE,
        rng=_RNG,
    )


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % 6, data[1:]
    if mode == 0:
        read_initiation(RESPONDER, body, _BINDINGS, _RNG)
    elif mode == 1:
        state = HandshakeState(IK, initiator=True, prologue=PROLOGUE,
                               s=INITIATOR.static_private_key, rs=RESPONDER.static_public,
                               rng=_RNG)
        message = state.write_message(body[:1024])
        read_initiation(RESPONDER, message, _BINDINGS, _RNG)
    elif mode == 2:
        outgoing = _outgoing()
        responder = HandshakeState(IK, initiator=False, prologue=PROLOGUE,
                                   s=RESPONDER.static_private_key, rng=_RNG)
        responder.read_message(outgoing.noise_message)
        outgoing.read_response(responder.write_message(body[:1024]), _BINDINGS)
    elif mode == 3:
        _outgoing().read_response(body, _BINDINGS)
    elif mode == 4:
        client = XXInitiator(INITIATOR, 1, _RNG)
        server = XXResponder(RESPONDER, local_index=2, remote_index=1, now=0.0,
                             rng=_RNG)
        if server.respond(client.ephemeral, RESPONDER, _INSTANCE) is not None:
            server.finish(body, _BINDINGS)
        fresh = XXResponder(RESPONDER, local_index=3, remote_index=1, now=0.0,
                            rng=_RNG)
        fresh.respond(body[:32], RESPONDER, _INSTANCE)
    else:
        client = XXInitiator(INITIATOR, 1, _RNG)
        client.finish(body, _BINDINGS, 1_700_000_000 * 10**9, _INSTANCE)


def seeds(traffic: Traffic) -> list[bytes]:
    out: list[bytes] = []
    for packet in traffic.datagrams["initiation"]:
        if len(packet) == INITIATION_SIZE:
            out.append(b"\x00" + packet[5 : -2 * MAC_SIZE])
    for packet in traffic.datagrams["response"]:
        out.append(b"\x03" + packet[9:])
    for packet in traffic.datagrams["xx_finish"]:
        out.append(b"\x04" + packet[5:])
    for packet in traffic.datagrams["xx_response"]:
        out.append(b"\x05" + packet[9:])
    # Payload layouts, as genuine handshakes would carry them (version 1, then fields).
    out.append(b"\x01\x01" + bytes(12 + 32 + 64 + 8))
    out.append(b"\x02\x01" + bytes(32 + 64 + 8))
    return out
