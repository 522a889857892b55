"""CipherState: a key and a nonce, with AES-256-GCM as the AEAD (Noise sections 5.1, 12.3)."""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import NoiseError
from .suite import KEYLEN, MAX_MESSAGE_LEN, MAX_NONCE, TAGLEN

_NONCE_PREFIX = b"\x00\x00\x00\x00"
# Section 11.3: Rekey encrypts 32 zero bytes under the reserved nonce 2^64-1.
_REKEY_NONCE = _NONCE_PREFIX + MAX_NONCE.to_bytes(8, "big")
_ZEROS = bytes(KEYLEN)


def _aesgcm_nonce(n: int) -> bytes:
    # Section 12.3: 32 bits of zeros followed by the big-endian 64-bit counter.
    return _NONCE_PREFIX + n.to_bytes(8, "big")


class CipherState:
    """A cipher key `k` (or none) and the counter nonce `n` used with it."""

    __slots__ = ("_aead", "_key", "_nonce")

    def __init__(self, key: bytes | None = None) -> None:
        self._key: bytes | None = None
        self._aead: AESGCM | None = None
        self._nonce = 0
        if key is not None:
            self.initialize_key(key)

    def initialize_key(self, key: bytes) -> None:
        """InitializeKey(key): install a new key and restart the nonce at zero."""
        if len(key) != KEYLEN:
            raise NoiseError(f"cipher key must be {KEYLEN} bytes, got {len(key)}")
        self._key = bytes(key)
        # One AESGCM object per key, built on first use: a handshake often mixes several
        # keys in a row without encrypting under them.
        self._aead = None
        self._nonce = 0

    def _cipher(self) -> AESGCM | None:
        aead = self._aead
        if aead is None and self._key is not None:
            aead = self._aead = AESGCM(self._key)
        return aead

    def copy(self) -> CipherState:
        """An independent CipherState with the same key and nonce."""
        twin = CipherState.__new__(CipherState)
        twin._key = self._key
        twin._aead = self._aead  # immutable, safe to share
        twin._nonce = self._nonce
        return twin

    @property
    def has_key(self) -> bool:
        return self._key is not None

    @property
    def key(self) -> bytes | None:
        return self._key

    @property
    def nonce(self) -> int:
        return self._nonce

    @nonce.setter
    def nonce(self, value: int) -> None:
        # SetNonce(nonce): section 5.1, used by transports that carry explicit counters.
        if not 0 <= value <= MAX_NONCE:
            raise NoiseError(f"nonce {value} is outside 0..2^64-1")
        self._nonce = value

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        """EncryptWithAd: AEAD-encrypt under (k, n) and advance n; plaintext if no key."""
        aead = self._cipher()
        if aead is None:
            return plaintext
        n = self._nonce
        if n >= MAX_NONCE:
            raise NoiseError("nonce exhausted: the cipher key must be replaced")
        if len(plaintext) + TAGLEN > MAX_MESSAGE_LEN:
            raise NoiseError(
                f"plaintext of {len(plaintext)} bytes exceeds the Noise message limit "
                f"of {MAX_MESSAGE_LEN} bytes"
            )
        ciphertext = aead.encrypt(_aesgcm_nonce(n), plaintext, ad)
        self._nonce = n + 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """DecryptWithAd: authenticate and decrypt; on failure n stays where it was."""
        aead = self._cipher()
        if aead is None:
            return ciphertext
        n = self._nonce
        if n >= MAX_NONCE:
            raise NoiseError("nonce exhausted: the cipher key must be replaced")
        if len(ciphertext) > MAX_MESSAGE_LEN:
            raise NoiseError(
                f"ciphertext of {len(ciphertext)} bytes exceeds the Noise message limit "
                f"of {MAX_MESSAGE_LEN} bytes"
            )
        if len(ciphertext) < TAGLEN:
            raise NoiseError(f"ciphertext of {len(ciphertext)} bytes is shorter than the tag")
        try:
            plaintext = aead.decrypt(_aesgcm_nonce(n), ciphertext, ad)
        except (InvalidTag, ValueError) as exc:
            raise NoiseError("authentication failed (bad tag, key or nonce)") from exc
        self._nonce = n + 1
        return plaintext

    def rekey(self) -> None:
        """Rekey(): section 11.3, k = first 32 bytes of ENCRYPT(k, 2^64-1, empty, zeros)."""
        aead = self._cipher()
        if aead is None:
            raise NoiseError("cannot rekey a CipherState that has no key")
        new_key = aead.encrypt(_REKEY_NONCE, _ZEROS, b"")[:KEYLEN]
        self._key = new_key
        self._aead = AESGCM(new_key)
