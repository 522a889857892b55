"""mac1, mac2 and cookie replies: cheap DoS protection in front of the handshake.

DESIGN section 4. mac1 proves the sender knows our static public key (it is in our
public record, so it only stops blind scans). mac2 proves the sender can receive at its
source address: under load, initiations without a valid mac2 get a cookie reply instead
of a Diffie-Hellman. Both are keyed BLAKE2s from the standard library.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .packets import COOKIE_NONCE_SIZE, COOKIE_SIZE, MAC_SIZE, encode_cookie_reply
from .transmit import Addr

_ZERO_MAC = bytes(MAC_SIZE)


def _blake2s_key(label: bytes, static_public: bytes) -> bytes:
    return hashlib.blake2s(label + static_public).digest()


def keyed_mac(key: bytes, data: bytes) -> bytes:
    """A 16-byte keyed BLAKE2s MAC (key up to 32 bytes)."""
    return hashlib.blake2s(data, key=key, digest_size=MAC_SIZE).digest()


def _encode_addr(addr: Addr) -> bytes:
    return f"{addr[0]}|{addr[1]}".encode()


class CookieChecker:
    """The responder side: checks mac1/mac2 and makes cookie replies."""

    def __init__(self, static_public: bytes, rng: Callable[[int], bytes], lifetime: float) -> None:
        self._mac1_key = _blake2s_key(b"mac1", static_public)
        self._cookie_aead = AESGCM(_blake2s_key(b"cookie", static_public))
        self._rng = rng
        self._lifetime = lifetime
        self._secret = rng(32)
        self._secret_born: float | None = None

    def mac1_valid(self, message: bytes) -> bool:
        """`message` ends with mac1 || mac2; mac1 covers everything before it."""
        body = message[: -2 * MAC_SIZE]
        mac1 = message[-2 * MAC_SIZE : -MAC_SIZE]
        return hmac.compare_digest(keyed_mac(self._mac1_key, body), mac1)

    def _cookie(self, addr: Addr, now: float) -> bytes:
        if self._secret_born is None:
            self._secret_born = now
        elif now - self._secret_born >= self._lifetime:
            self._secret = self._rng(32)
            self._secret_born = now
        return keyed_mac(self._secret, _encode_addr(addr))

    def mac2_valid(self, message: bytes, addr: Addr, now: float) -> bool:
        body = message[:-MAC_SIZE]
        mac2 = message[-MAC_SIZE:]
        if mac2 == _ZERO_MAC:
            return False
        return hmac.compare_digest(keyed_mac(self._cookie(addr, now), body), mac2)

    def cookie_reply(self, sender_index: int, message: bytes, addr: Addr, now: float) -> bytes:
        """Seal the cookie for `addr`, bound to the initiation's mac1 as associated data."""
        mac1 = message[-2 * MAC_SIZE : -MAC_SIZE]
        nonce = self._rng(COOKIE_NONCE_SIZE)
        sealed = self._cookie_aead.encrypt(nonce, self._cookie(addr, now), mac1)
        return encode_cookie_reply(sender_index, nonce, sealed)


class CookieJar:
    """The initiator side toward one responder: adds MACs and keeps its latest cookie."""

    def __init__(self, remote_static_public: bytes, lifetime: float) -> None:
        self._mac1_key = _blake2s_key(b"mac1", remote_static_public)
        self._cookie_aead = AESGCM(_blake2s_key(b"cookie", remote_static_public))
        self._lifetime = lifetime
        self._cookie: bytes | None = None
        self._cookie_at = 0.0
        self._last_mac1: bytes | None = None

    def add_macs(self, body: bytes, now: float) -> bytes:
        mac1 = keyed_mac(self._mac1_key, body)
        self._last_mac1 = mac1
        with_mac1 = body + mac1
        if self._cookie is not None and now - self._cookie_at < self._lifetime:
            return with_mac1 + keyed_mac(self._cookie, with_mac1)
        return with_mac1 + _ZERO_MAC

    def accept_reply(self, nonce: bytes, sealed_cookie: bytes, now: float) -> bool:
        """Store the cookie if it opens against our last mac1; False for anything forged."""
        if self._last_mac1 is None:
            return False
        try:
            cookie = self._cookie_aead.decrypt(nonce, sealed_cookie, self._last_mac1)
        except InvalidTag:
            return False
        if len(cookie) != COOKIE_SIZE:
            return False
        self._cookie = cookie
        self._cookie_at = now
        return True
