"""Noise protocol names: `Noise_<pattern>_<dh>_<cipher>_<hash>` (Noise section 8)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ..errors import NoiseError
from .patterns import HandshakePattern, derive_pattern
from .suite import CIPHER_NAME, DH_NAME, HASH_NAME

# Section 8: a protocol name is at most 255 bytes.
MAX_PROTOCOL_NAME_LEN = 255


@dataclass(frozen=True, slots=True)
class NoiseProtocol:
    """A parsed protocol name: the pattern to run and the (fixed) crypto suite."""

    name: str
    pattern: HandshakePattern
    dh: str = DH_NAME
    cipher: str = CIPHER_NAME
    hash: str = HASH_NAME


@functools.lru_cache(maxsize=64)
def parse_protocol_name(name: str) -> NoiseProtocol:
    """The NoiseProtocol for `name`; NoiseError for anything not supported.

    Cached: deriving a pattern is cheap but not free, and handshakes repeat names.
    """
    if not isinstance(name, str) or not name.isascii():
        raise NoiseError(f"protocol name {name!r} is not an ASCII string")
    if len(name) > MAX_PROTOCOL_NAME_LEN:
        raise NoiseError(f"protocol name longer than {MAX_PROTOCOL_NAME_LEN} bytes")
    parts = name.split("_")
    if len(parts) != 5 or parts[0] != "Noise":
        raise NoiseError(f"{name!r} is not of the form Noise_PATTERN_DH_CIPHER_HASH")
    _, pattern_name, dh, cipher, hash_name = parts
    for got, supported, what in (
        (dh, DH_NAME, "DH"),
        (cipher, CIPHER_NAME, "cipher"),
        (hash_name, HASH_NAME, "hash"),
    ):
        if got != supported:
            raise NoiseError(f"{what} {got!r} in {name!r} is not supported; use {supported}")
    return NoiseProtocol(name, derive_pattern(pattern_name))
