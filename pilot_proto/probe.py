"""Path probes: PATH PING and PONG between two peers, with or without a session.

DESIGN 7: candidate pairs are probed with PING and a PONG proves a path; a new address
is challenged before traffic moves there. Probes must work before any session exists
(synchronized punching starts at the agreed moment, whatever the handshake is doing),
so they are authenticated with a key both peers derive from their static keys alone:
X25519(our static, their static) is the same number on both sides (docs/PROTOCOL.md,
"Path probes").

Layout (35 bytes, type 0x58, outside STUN/DTLS/TURN ranges like every type of ours):

    type(1) | kind(1) | pair id(8) | transaction id(8) | info(1) | tag(16)

- kind: 1 PING, 2 PONG; a PONG echoes the PING's transaction id.
- pair id: names the pair without naming either node (a pseudonym both derive), so the
  receiver finds the key without a table of every address on the wire.
- info: bit 7 is the sender's role (0 for the lower of the two node addresses), so a
  probe reflected back at its sender is refused; bits 0-1 the sender's NAT mapping
  behaviour (0 unknown, 1 endpoint-independent, 2 address-dependent, 3
  address-and-port-dependent), which the peers need to name why a punch failed.
- tag: keyed BLAKE2s-128 over everything before it.

Replay: a replayed PING draws a PONG to wherever it came from (rate-limited by the caller,
never larger than the PING); a replayed PONG proves nothing, since transaction ids are
used once. Decoders return None for anything malformed.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

__all__ = [
    "MAPPING_CODES",
    "PATH_PROBE",
    "PING",
    "PONG",
    "PROBE_SIZE",
    "Probe",
    "ProbeKey",
    "mapping_from_code",
]

PATH_PROBE: Final = 0x58
PING: Final = 1
PONG: Final = 2
PAIR_ID_SIZE: Final = 8
TXID_SIZE: Final = 8
TAG_SIZE: Final = 16
PROBE_SIZE: Final = 1 + 1 + PAIR_ID_SIZE + TXID_SIZE + 1 + TAG_SIZE
_SIGNED = PROBE_SIZE - TAG_SIZE
_ROLE_BIT = 0x80

#: Mapping behaviour names (stun_client.NatBehaviour values) and their code in `info`.
MAPPING_CODES: Final = {
    "unknown": 0,
    "endpoint-independent": 1,
    "address-dependent": 2,
    "address-and-port-dependent": 3,
}
_MAPPING_NAMES = {code: name for name, code in MAPPING_CODES.items()}


def mapping_from_code(code: int) -> str:
    return _MAPPING_NAMES.get(code & 0x03, "unknown")


@dataclass(frozen=True, slots=True)
class Probe:
    """A decoded, authenticated probe."""

    kind: int
    txid: bytes
    mapping: str


class ProbeKey:
    """The probe key and pair id of one pair of nodes, from their static keys."""

    __slots__ = ("_key", "_peer_role", "_role", "pair_id")

    def __init__(self, key: bytes, pair_id: bytes, our_role: int) -> None:
        self._key = key
        self.pair_id = pair_id
        self._role = our_role
        self._peer_role = our_role ^ 1

    @classmethod
    def derive(
        cls,
        static_private: X25519PrivateKey,
        peer_static_public: bytes,
        our_address: str,
        peer_address: str,
    ) -> ProbeKey | None:
        """None when the peer's key is unusable (a low-order point gives no secret)."""
        try:
            shared = static_private.exchange(X25519PublicKey.from_public_bytes(peer_static_public))
        except ValueError:
            return None
        key = hashlib.blake2s(shared, key=b"pilot-path-probe-key-v1").digest()
        pair_id = hashlib.blake2s(shared, key=b"pilot-path-pair-id-v1").digest()[:PAIR_ID_SIZE]
        return cls(key, pair_id, 0 if our_address < peer_address else 1)

    def _tag(self, signed: bytes) -> bytes:
        return hashlib.blake2s(signed, key=self._key, digest_size=TAG_SIZE).digest()

    def encode(self, kind: int, txid: bytes, mapping: str = "unknown") -> bytes:
        info = (self._role << 7) | MAPPING_CODES.get(mapping, 0)
        signed = bytes((PATH_PROBE, kind)) + self.pair_id + txid + bytes((info,))
        return signed + self._tag(signed)

    def decode(self, data: bytes) -> Probe | None:
        """The probe if it is well formed, from the peer, and its tag verifies."""
        if len(data) != PROBE_SIZE or data[0] != PATH_PROBE or data[1] not in (PING, PONG):
            return None
        info = data[_SIGNED - 1]
        if info >> 7 != self._peer_role or info & 0x7C:
            return None
        if not hmac.compare_digest(self._tag(data[:_SIGNED]), data[_SIGNED:]):
            return None
        txid = data[2 + PAIR_ID_SIZE : 2 + PAIR_ID_SIZE + TXID_SIZE]
        return Probe(data[1], txid, mapping_from_code(info))


def pair_id_of(data: bytes) -> bytes | None:
    """The pair id of what looks like a probe, to find its key; None if it cannot be one."""
    if len(data) != PROBE_SIZE or data[0] != PATH_PROBE:
        return None
    return data[2 : 2 + PAIR_ID_SIZE]
