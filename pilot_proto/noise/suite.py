"""The one Noise cipher suite this package implements: 25519 / AESGCM / SHA256.

Sizes and names come from the Noise specification, revision 34.
"""

from __future__ import annotations

DH_NAME = "25519"
CIPHER_NAME = "AESGCM"
HASH_NAME = "SHA256"

# Section 12.1: X25519 public keys and DH outputs are 32 bytes.
DHLEN = 32
# Section 12.5: SHA-256 output.
HASHLEN = 32
# Section 5.1: every AEAD ciphertext carries a 16-byte authentication tag.
TAGLEN = 16
# Section 5.1: cipher keys are 32 bytes.
KEYLEN = 32
# Section 9.1: a pre-shared symmetric key is 32 bytes.
PSKLEN = 32
# Section 3: every Noise message, handshake or transport, is at most 65535 bytes.
MAX_MESSAGE_LEN = 65535
# Section 5.1: nonce 2^64-1 is reserved (Rekey uses it), so 2^64-2 is the last usable one.
MAX_NONCE = 2**64 - 1
