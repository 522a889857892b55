"""X25519 key handling and the DH() function (Noise section 12.1).

`cryptography` raises ValueError when a DH yields the all-zero output of a
low-order point; here every such failure becomes a NoiseError, because the
public key always comes from the remote side.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ..errors import NoiseError
from .suite import DHLEN


def private_key(key: bytes | X25519PrivateKey, what: str) -> X25519PrivateKey:
    """A local private key from 32 raw bytes (or an already-built key object, reused as is)."""
    if isinstance(key, X25519PrivateKey):
        return key
    if not isinstance(key, bytes | bytearray) or len(key) != DHLEN:
        raise NoiseError(f"{what} must be a {DHLEN}-byte X25519 private key")
    return X25519PrivateKey.from_private_bytes(bytes(key))


def public_key(key: bytes, what: str) -> X25519PublicKey:
    """A remote public key from 32 raw bytes."""
    if not isinstance(key, bytes | bytearray) or len(key) != DHLEN:
        raise NoiseError(f"{what} must be a {DHLEN}-byte X25519 public key")
    try:
        return X25519PublicKey.from_public_bytes(bytes(key))
    except ValueError as exc:  # pragma: no cover - OpenSSL accepts any 32 bytes today
        raise NoiseError(f"{what} is not a valid X25519 public key") from exc


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key of a local private key."""
    return key.public_key().public_bytes_raw()


def dh(local: X25519PrivateKey, remote: X25519PublicKey) -> bytes:
    """DH(key_pair, public_key): the 32-byte X25519 shared secret."""
    try:
        return local.exchange(remote)
    except ValueError as exc:
        # Section 12.1 allows rejecting low-order points; an all-zero output means one.
        raise NoiseError("DH with a low-order X25519 public key") from exc
