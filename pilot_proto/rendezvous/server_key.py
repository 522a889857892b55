"""The KEY of `HOST:PORT#KEY`: the rendezvous server's X25519 static public key.

The server prints it as 64 lowercase hex digits; clients also accept base64 and
base64url (with or without padding) of the same 32 bytes.
"""

from __future__ import annotations

import base64
import binascii
import re

from .errors import InvalidServerKey

__all__ = ["KEY_SIZE", "decode_server_key", "encode_server_key"]

KEY_SIZE = 32
_HEX = re.compile(r"[0-9a-fA-F]{64}")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{43}=?")


def encode_server_key(key: bytes) -> str:
    if len(key) != KEY_SIZE:
        raise InvalidServerKey(f"a server key is {KEY_SIZE} bytes, got {len(key)}")
    return key.hex()


def decode_server_key(text: str) -> bytes:
    """32 key bytes from hex, base64 or base64url; InvalidServerKey otherwise."""
    if _HEX.fullmatch(text):
        return bytes.fromhex(text)
    if _BASE64.fullmatch(text):
        try:
            raw = base64.b64decode(text.replace("-", "+").replace("_", "/").rstrip("=") + "=")
        except (binascii.Error, ValueError):
            raw = b""
        # Canonical only: the 43rd character must not carry bits past the 256th.
        if len(raw) == KEY_SIZE and base64.b64encode(raw).rstrip(b"=").decode() == text.replace(
            "-", "+"
        ).replace("_", "/").rstrip("="):
            return raw
    raise InvalidServerKey(
        f"invalid rendezvous key {text!r}: expected the 64 hex digits the server prints "
        "(or base64 of the same 32 bytes)"
    )
