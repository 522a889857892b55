"""The Noise Protocol Framework (revision 34) for 25519 / AESGCM / SHA256.

Any handshake pattern the naming rules describe works: fundamental, one-way, deferred,
and psk modifiers in any combination (`Noise_XXpsk0+psk3_25519_AESGCM_SHA256`).
"""

from __future__ import annotations

from .cipher_state import CipherState
from .handshake_state import HandshakeState
from .patterns import (
    HandshakePattern,
    base_pattern_names,
    check_pattern_validity,
    derive_pattern,
)
from .protocol import NoiseProtocol, parse_protocol_name
from .suite import MAX_MESSAGE_LEN
from .symmetric_state import SymmetricState

__all__ = [
    "MAX_MESSAGE_LEN",
    "CipherState",
    "HandshakePattern",
    "HandshakeState",
    "NoiseProtocol",
    "SymmetricState",
    "base_pattern_names",
    "check_pattern_validity",
    "derive_pattern",
    "parse_protocol_name",
]
