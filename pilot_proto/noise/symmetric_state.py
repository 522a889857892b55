"""SymmetricState: the chaining key `ck`, the handshake hash `h` and a CipherState
(Noise section 5.2), with SHA-256 and its HMAC-based HKDF (sections 4.3, 12.5).
"""

from __future__ import annotations

import hashlib
import hmac

from .cipher_state import CipherState
from .suite import HASHLEN


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")


def hkdf2(chaining_key: bytes, input_key_material: bytes) -> tuple[bytes, bytes]:
    """HKDF(ck, ikm, 2) from section 4.3."""
    temp_key = _hmac(chaining_key, input_key_material)
    output1 = _hmac(temp_key, b"\x01")
    output2 = _hmac(temp_key, output1 + b"\x02")
    return output1, output2


def hkdf3(chaining_key: bytes, input_key_material: bytes) -> tuple[bytes, bytes, bytes]:
    """HKDF(ck, ikm, 3) from section 4.3."""
    temp_key = _hmac(chaining_key, input_key_material)
    output1 = _hmac(temp_key, b"\x01")
    output2 = _hmac(temp_key, output1 + b"\x02")
    output3 = _hmac(temp_key, output2 + b"\x03")
    return output1, output2, output3


class SymmetricState:
    """What both parties mix every handshake token into."""

    __slots__ = ("_cipher", "chaining_key", "handshake_hash")

    def __init__(self, protocol_name: bytes) -> None:
        # InitializeSymmetric: a name up to HASHLEN bytes is zero-padded, a longer one hashed.
        if len(protocol_name) <= HASHLEN:
            h = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            h = hashlib.sha256(protocol_name).digest()
        self.handshake_hash = h
        self.chaining_key = h
        self._cipher = CipherState()

    def copy(self) -> SymmetricState:
        """An independent copy, so a failed message can leave the original untouched."""
        twin = SymmetricState.__new__(SymmetricState)
        twin.handshake_hash = self.handshake_hash
        twin.chaining_key = self.chaining_key
        twin._cipher = self._cipher.copy()
        return twin

    @property
    def has_key(self) -> bool:
        return self._cipher.has_key

    def mix_key(self, input_key_material: bytes) -> None:
        self.chaining_key, temp_k = hkdf2(self.chaining_key, input_key_material)
        self._cipher.initialize_key(temp_k)

    def mix_hash(self, data: bytes) -> None:
        self.handshake_hash = hashlib.sha256(self.handshake_hash + data).digest()

    def mix_key_and_hash(self, input_key_material: bytes) -> None:
        # Section 5.2: used for "psk" tokens, so the psk reaches both the keys and h.
        self.chaining_key, temp_h, temp_k = hkdf3(self.chaining_key, input_key_material)
        self.mix_hash(temp_h)
        self._cipher.initialize_key(temp_k)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self._cipher.encrypt_with_ad(self.handshake_hash, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self._cipher.decrypt_with_ad(self.handshake_hash, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """Split(): the initiator-to-responder and responder-to-initiator CipherStates."""
        temp_k1, temp_k2 = hkdf2(self.chaining_key, b"")
        return CipherState(temp_k1), CipherState(temp_k2)
