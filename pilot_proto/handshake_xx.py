"""Noise XX toward a rendezvous whose static key we do not know yet (DESIGN 4 and 6).

Used once per rendezvous: the client learns the server's static key from message 2 and
pins it (trust on first use); later sessions use IK with the pinned key. Payloads carry
the same Ed25519 binding proofs as the peer handshake.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import NoiseError
from .handshake import (
    PeerProof,
    TransportKeys,
    initiator_payload,
    parse_initiator_payload,
    parse_responder_payload,
    read_message,
    responder_payload,
    transport_keys,
)
from .identity import BindingCache, Identity
from .noise import HandshakeState, parse_protocol_name

XX = parse_protocol_name("Noise_XX_25519_AESGCM_SHA256")
PROLOGUE_XX = b"pilot-proto/1 rendezvous Noise_XX"


class XXInitiator:
    """The client side: message 1 now, message 3 once the server's message 2 verifies."""

    __slots__ = ("_identity", "_state", "ephemeral", "sender_index")

    def __init__(self, identity: Identity, sender_index: int, rng: Callable[[int], bytes]) -> None:
        self._identity = identity
        self._state = HandshakeState(
            XX, initiator=True, prologue=PROLOGUE_XX, s=identity.static_private_key, rng=rng
        )
        self.sender_index = sender_index
        self.ephemeral = self._state.write_message(b"")

    def finish(
        self, noise_message: bytes, bindings: BindingCache, timestamp_ns: int, instance_id: bytes
    ) -> tuple[PeerProof, bytes, TransportKeys] | None:
        """Read message 2; returns the server's proof, our message 3 and the keys."""
        payload = read_message(self._state, noise_message)
        if payload is None:
            return None
        proof = parse_responder_payload(payload, self._state.remote_static, bindings)
        if proof is None:
            return None
        message3 = self._state.write_message(
            initiator_payload(self._identity, timestamp_ns, instance_id)
        )
        return proof, message3, transport_keys(self._state, initiator=True)


class XXResponder:
    """The server side, between message 1 and message 3 (a half-open handshake)."""

    __slots__ = ("_state", "created_at", "local_index", "remote_index")

    def __init__(
        self,
        identity: Identity,
        *,
        local_index: int,
        remote_index: int,
        now: float,
        rng: Callable[[int], bytes],
    ) -> None:
        self._state = HandshakeState(
            XX, initiator=False, prologue=PROLOGUE_XX, s=identity.static_private_key, rng=rng
        )
        self.local_index = local_index
        self.remote_index = remote_index
        self.created_at = now

    def respond(self, ephemeral: bytes, identity: Identity, instance_id: bytes) -> bytes | None:
        """Read message 1 (just `e`) and write message 2; None for a bad key."""
        try:
            self._state.read_message(ephemeral)
            return self._state.write_message(responder_payload(identity, instance_id))
        except NoiseError:
            return None

    def finish(
        self, noise_message: bytes, bindings: BindingCache
    ) -> tuple[PeerProof, TransportKeys] | None:
        payload = read_message(self._state, noise_message)
        if payload is None:
            return None
        parsed = parse_initiator_payload(payload, self._state.remote_static, bindings)
        if parsed is None:
            return None
        return parsed[0], transport_keys(self._state, initiator=False)
