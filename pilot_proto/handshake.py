"""The peer handshake: Noise IK with the Ed25519 binding (DESIGN section 4).

The initiator knows the responder's static X25519 key from its identity record. Each
side's encrypted handshake payload carries its Ed25519 public key and the signature
binding its X25519 static key to it, so the address (a hash of the Ed25519 key) is
authenticated by the handshake itself. The initiator also sends a strictly increasing
wall-clock stamp, so a replayed initiation is recognised and ignored, and both sides send
an instance id that changes when a node restarts.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from .errors import NoiseError
from .identity import BindingCache, Identity, address_from_public_key
from .noise import CipherState, HandshakeState, parse_protocol_name
from .packets import INITIATION_PAYLOAD_SIZE, RESPONSE_PAYLOAD_SIZE
from .timestamp import decode_tai64n, encode_tai64n

PAYLOAD_VERSION = 1
#: Names protocol and version: a downgrade or a cross-protocol replay breaks the handshake.
PROLOGUE = b"pilot-proto/1 peer-session Noise_IK"
IK = parse_protocol_name("Noise_IK_25519_AESGCM_SHA256")

_INITIATOR_PAYLOAD = struct.Struct(">B12s32s64s8s")
_RESPONDER_PAYLOAD = struct.Struct(">B32s64s8s")
assert _INITIATOR_PAYLOAD.size == INITIATION_PAYLOAD_SIZE
assert _RESPONDER_PAYLOAD.size == RESPONSE_PAYLOAD_SIZE


@dataclass(frozen=True, slots=True)
class TransportKeys:
    send: bytes
    recv: bytes


@dataclass(frozen=True, slots=True)
class PeerProof:
    """What a handshake proved about the other side."""

    address: str
    public_key: bytes
    static_public: bytes
    instance_id: bytes


def _keys(state: HandshakeState, initiator: bool) -> TransportKeys:
    to_responder, to_initiator = state.split()
    return TransportKeys(
        send=_raw_key(to_responder if initiator else to_initiator),
        recv=_raw_key(to_initiator if initiator else to_responder),
    )


def _raw_key(cipher: CipherState) -> bytes:
    key = cipher.key
    if key is None:  # Split() always yields keys; a None here is a bug in the Noise layer.
        raise NoiseError("handshake split produced no transport key")
    return key


def initiator_payload(identity: Identity, timestamp_ns: int, instance_id: bytes) -> bytes:
    """The initiator's proof: stamp, Ed25519 key, static binding, instance id."""
    return _INITIATOR_PAYLOAD.pack(
        PAYLOAD_VERSION,
        encode_tai64n(timestamp_ns),
        identity.public_key,
        identity.static_binding,
        instance_id,
    )


def responder_payload(identity: Identity, instance_id: bytes) -> bytes:
    return _RESPONDER_PAYLOAD.pack(
        PAYLOAD_VERSION, identity.public_key, identity.static_binding, instance_id
    )


def parse_initiator_payload(
    payload: bytes, remote_static: bytes | None, bindings: BindingCache
) -> tuple[PeerProof, int] | None:
    """The proof and stamp, or None unless the binding verifies (DESIGN 4)."""
    if len(payload) != _INITIATOR_PAYLOAD.size or remote_static is None:
        return None
    version, stamp, public_key, binding, instance_id = _INITIATOR_PAYLOAD.unpack(payload)
    if version != PAYLOAD_VERSION:
        return None
    try:
        timestamp_ns = decode_tai64n(stamp)
    except ValueError:
        return None
    # The address is derived only from the key the binding proves.
    if not bindings.check(public_key, remote_static, binding):
        return None
    proof = PeerProof(address_from_public_key(public_key), public_key, remote_static, instance_id)
    return proof, timestamp_ns


def parse_responder_payload(
    payload: bytes, remote_static: bytes | None, bindings: BindingCache
) -> PeerProof | None:
    if len(payload) != _RESPONDER_PAYLOAD.size or remote_static is None:
        return None
    version, public_key, binding, instance_id = _RESPONDER_PAYLOAD.unpack(payload)
    if version != PAYLOAD_VERSION or not bindings.check(public_key, remote_static, binding):
        return None
    return PeerProof(address_from_public_key(public_key), public_key, remote_static, instance_id)


def read_message(state: HandshakeState, message: bytes) -> bytes | None:
    """The decrypted payload, or None for anything that is not a genuine next message."""
    try:
        return state.read_message(message)
    except NoiseError:
        return None


def transport_keys(state: HandshakeState, initiator: bool) -> TransportKeys:
    """The two Split() keys, one per direction, seen from our side."""
    return _keys(state, initiator)


class OutgoingHandshake:
    """Our initiation toward one peer, waiting for the response."""

    __slots__ = ("_expected_address", "_state", "noise_message", "sender_index", "timestamp_ns")

    def __init__(
        self,
        identity: Identity,
        *,
        remote_static: bytes,
        expected_address: str | None,
        sender_index: int,
        timestamp_ns: int,
        instance_id: bytes,
        rng: Callable[[int], bytes],
    ) -> None:
        self._state = HandshakeState(
            IK,
            initiator=True,
            prologue=PROLOGUE,
            s=identity.static_private_key,
            rs=remote_static,
            rng=rng,
        )
        self._expected_address = expected_address
        self.sender_index = sender_index
        self.timestamp_ns = timestamp_ns
        self.noise_message = self._state.write_message(
            initiator_payload(identity, timestamp_ns, instance_id)
        )

    def read_response(
        self, noise_message: bytes, bindings: BindingCache
    ) -> tuple[PeerProof, TransportKeys] | None:
        """Keys and the responder's proof, or None if the response is not genuine."""
        payload = read_message(self._state, noise_message)
        if payload is None:
            return None
        proof = parse_responder_payload(payload, self._state.remote_static, bindings)
        if proof is None:
            return None
        # The responder must be the node we dialled: its key hashes to that address. (A
        # rendezvous dialled by its pinned static key has no address to check: IK itself
        # proves the responder holds that key.)
        if self._expected_address is not None and proof.address != self._expected_address:
            return None
        return proof, _keys(self._state, initiator=True)


@dataclass(frozen=True, slots=True)
class IncomingInitiation:
    """A decrypted, binding-verified initiation, not yet answered."""

    state: HandshakeState
    proof: PeerProof
    timestamp_ns: int


def read_initiation(
    identity: Identity, noise_message: bytes, bindings: BindingCache, rng: Callable[[int], bytes]
) -> IncomingInitiation | None:
    state = HandshakeState(
        IK, initiator=False, prologue=PROLOGUE, s=identity.static_private_key, rng=rng
    )
    payload = read_message(state, noise_message)
    if payload is None:
        return None
    parsed = parse_initiator_payload(payload, state.remote_static, bindings)
    if parsed is None:
        return None
    proof, timestamp_ns = parsed
    return IncomingInitiation(state, proof, timestamp_ns)


def write_response(
    incoming: IncomingInitiation, identity: Identity, instance_id: bytes
) -> tuple[bytes, TransportKeys]:
    message = incoming.state.write_message(responder_payload(identity, instance_id))
    return message, _keys(incoming.state, initiator=False)
