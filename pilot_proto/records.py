"""Signed records a node publishes at the rendezvous (DESIGN section 6, "Records").

- `IdentityRecord`: who a node is. Ed25519 key (hence address), X25519 static key and
  the binding between them, optional hostname, sequence number and expiry. Public.
- `Locator`: where a node is. Candidate endpoints, sequence number and expiry, signed
  separately so the server can hand out identities without ever revealing locations.

Both are compact binary encodings starting with a version byte; docs/PROTOCOL.md
section 2 has the byte layouts. The signature covers the signing domain followed by
every encoded byte before it, so the version byte is signed too. Encodings are
canonical: `decode` accepts exactly what `encode` produces, and
`decode(data).encode() == data`.

The server checks these records and so does every client that receives one, so the
server can withhold records but never forge them.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import InvalidRecord
from .identity import (
    DOMAIN_IDENTITY_RECORD,
    DOMAIN_LOCATOR,
    Identity,
    address_from_public_key,
    verify_signature,
    verify_static_binding,
)

__all__ = [
    "IDENTITY_RECORD_VERSION",
    "LOCATOR_VERSION",
    "MAX_ENDPOINTS",
    "MAX_HOSTNAME_LENGTH",
    "Endpoint",
    "IdentityRecord",
    "Locator",
    "is_valid_hostname",
]

IDENTITY_RECORD_VERSION = 1
LOCATOR_VERSION = 1
MAX_HOSTNAME_LENGTH = 63
MAX_ENDPOINTS = 16
_U64_LIMIT = 1 << 64
_KEY_SIZE = 32
_SIGNATURE_SIZE = 64
_FAMILY_IPV4 = 4
_FAMILY_IPV6 = 6

Endpoint = tuple[str, int]

# DESIGN section 3, RFC 1123 label: lowercase letters, digits and hyphens, 1-63
# characters, no hyphen at either end. [a-z0-9] is ASCII-only, unlike \w.
_HOSTNAME_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")

# version, ed25519 public, x25519 static public, static binding, sequence, expires_at,
# hostname length; then the hostname and the signature.
_IDENTITY_HEAD = struct.Struct(">B32s32s64sQQB")
# version, ed25519 public, sequence, expires_at, endpoint count; then the endpoints
# and the signature.
_LOCATOR_HEAD = struct.Struct(">B32sQQB")
_PORT = struct.Struct(">H")


def is_valid_hostname(name: object) -> bool:
    """True for an RFC 1123 label as DESIGN section 3 restricts it."""
    return isinstance(name, str) and _HOSTNAME_PATTERN.fullmatch(name) is not None


def _check_bytes(value: object, size: int, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise InvalidRecord(f"{what} must be {size} bytes")


def _check_u64(value: object, what: str) -> None:
    # bool is an int subclass; True as a sequence number is a bug, not 1.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _U64_LIMIT:
        raise InvalidRecord(f"{what} must be an integer in [0, 2**64)")


def _is_current(expires_at: int, now_wall: float | None) -> bool:
    return now_wall is None or now_wall < expires_at


@dataclass(frozen=True, slots=True)
class IdentityRecord:
    """A node's signed public identity: keys, binding, optional hostname, freshness."""

    public_key: bytes
    static_public: bytes
    static_binding: bytes
    hostname: str | None
    sequence: int
    expires_at: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_bytes(self.public_key, _KEY_SIZE, "public_key")
        _check_bytes(self.static_public, _KEY_SIZE, "static_public")
        _check_bytes(self.static_binding, _SIGNATURE_SIZE, "static_binding")
        _check_bytes(self.signature, _SIGNATURE_SIZE, "signature")
        if self.hostname is not None and not is_valid_hostname(self.hostname):
            raise InvalidRecord(
                f"invalid hostname {self.hostname!r}: use 1-63 lowercase letters, digits "
                "or hyphens, not starting or ending with a hyphen"
            )
        _check_u64(self.sequence, "sequence")
        _check_u64(self.expires_at, "expires_at")

    @classmethod
    def create(
        cls, identity: Identity, *, hostname: str | None, sequence: int, expires_at: int
    ) -> IdentityRecord:
        """Sign a record for `identity`. InvalidRecord on an invalid hostname or range."""
        unsigned = cls(
            public_key=identity.public_key,
            static_public=identity.static_public,
            static_binding=identity.static_binding,
            hostname=hostname,
            sequence=sequence,
            expires_at=expires_at,
            signature=bytes(_SIGNATURE_SIZE),
        )
        signature = identity.sign(DOMAIN_IDENTITY_RECORD, unsigned._signed_bytes())
        return cls(
            public_key=unsigned.public_key,
            static_public=unsigned.static_public,
            static_binding=unsigned.static_binding,
            hostname=unsigned.hostname,
            sequence=unsigned.sequence,
            expires_at=unsigned.expires_at,
            signature=signature,
        )

    @property
    def address(self) -> str:
        return address_from_public_key(self.public_key)

    def _signed_bytes(self) -> bytes:
        hostname = b"" if self.hostname is None else self.hostname.encode("ascii")
        return (
            _IDENTITY_HEAD.pack(
                IDENTITY_RECORD_VERSION,
                self.public_key,
                self.static_public,
                self.static_binding,
                self.sequence,
                self.expires_at,
                len(hostname),
            )
            + hostname
        )

    def encode(self) -> bytes:
        return self._signed_bytes() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> IdentityRecord:
        """Parse an encoded record. InvalidRecord on anything malformed; no other error.

        Decoding does not verify the signatures: call `verify`.
        """
        data = bytes(data)
        head_size = _IDENTITY_HEAD.size
        if len(data) < head_size:
            raise InvalidRecord("identity record is truncated")
        version, public_key, static_public, binding, sequence, expires_at, name_length = (
            _IDENTITY_HEAD.unpack_from(data)
        )
        if version != IDENTITY_RECORD_VERSION:
            raise InvalidRecord(f"unsupported identity record version {version}")
        if name_length > MAX_HOSTNAME_LENGTH:
            raise InvalidRecord("identity record hostname is longer than 63 bytes")
        if len(data) != head_size + name_length + _SIGNATURE_SIZE:
            raise InvalidRecord("identity record has the wrong length for its hostname")
        hostname: str | None = None
        if name_length:
            try:
                hostname = data[head_size : head_size + name_length].decode("ascii")
            except UnicodeDecodeError:
                raise InvalidRecord("identity record hostname is not ASCII") from None
        return cls(
            public_key=public_key,
            static_public=static_public,
            static_binding=binding,
            hostname=hostname,
            sequence=sequence,
            expires_at=expires_at,
            signature=data[head_size + name_length :],
        )

    def verify(self, now_wall: float | None = None) -> bool:
        """True if signed by `public_key`, the static binding holds, and (when `now_wall`,
        Unix seconds, is given) the record has not expired."""
        return (
            _is_current(self.expires_at, now_wall)
            and verify_static_binding(self.public_key, self.static_public, self.static_binding)
            and verify_signature(
                self.public_key, DOMAIN_IDENTITY_RECORD, self._signed_bytes(), self.signature
            )
        )


def _canonical_endpoint(endpoint: object) -> Endpoint:
    """(host, port) with the host in ipaddress' canonical form; IPv4-mapped IPv6 as IPv4."""
    if not isinstance(endpoint, tuple) or len(endpoint) != 2:
        raise InvalidRecord(f"an endpoint is a (host, port) tuple, got {endpoint!r}")
    host, port = endpoint
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 0xFFFF:
        raise InvalidRecord(f"endpoint port must be in 1..65535, got {port!r}")
    if not isinstance(host, str):
        raise InvalidRecord(f"endpoint host must be an IP address string, got {host!r}")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise InvalidRecord(f"endpoint host {host!r} is not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            # A scope id names an interface on this host; it means nothing elsewhere.
            raise InvalidRecord(f"endpoint host {host!r} has a scope id")
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
    return (str(ip), port)


def _encode_endpoint(endpoint: Endpoint) -> bytes:
    ip = ipaddress.ip_address(endpoint[0])
    family = _FAMILY_IPV4 if ip.version == 4 else _FAMILY_IPV6
    return bytes((family,)) + ip.packed + _PORT.pack(endpoint[1])


@dataclass(frozen=True, slots=True)
class Locator:
    """A node's signed candidate endpoints. Given only to peers the node accepts."""

    public_key: bytes
    endpoints: tuple[Endpoint, ...]
    sequence: int
    expires_at: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_bytes(self.public_key, _KEY_SIZE, "public_key")
        _check_bytes(self.signature, _SIGNATURE_SIZE, "signature")
        _check_u64(self.sequence, "sequence")
        _check_u64(self.expires_at, "expires_at")
        if not isinstance(self.endpoints, tuple):
            raise InvalidRecord("endpoints must be a tuple of (host, port)")
        if len(self.endpoints) > MAX_ENDPOINTS:
            raise InvalidRecord(f"a locator holds at most {MAX_ENDPOINTS} endpoints")
        canonical = tuple(_canonical_endpoint(endpoint) for endpoint in self.endpoints)
        if canonical != self.endpoints:
            # One spelling per address keeps `decode(encode(x)) == x` and equality honest.
            raise InvalidRecord(
                f"endpoints must be in canonical form {canonical!r}; Locator.create does this"
            )
        if len(set(canonical)) != len(canonical):
            raise InvalidRecord("locator endpoints must not repeat")

    @classmethod
    def create(
        cls,
        identity: Identity,
        *,
        endpoints: Iterable[Endpoint],
        sequence: int,
        expires_at: int,
    ) -> Locator:
        """Sign a locator. Hosts are canonicalised (IPv4-mapped IPv6 becomes IPv4);
        InvalidRecord on a bad host or port, a repeat, or more than 16 endpoints."""
        canonical = tuple(_canonical_endpoint(endpoint) for endpoint in endpoints)
        unsigned = cls(
            public_key=identity.public_key,
            endpoints=canonical,
            sequence=sequence,
            expires_at=expires_at,
            signature=bytes(_SIGNATURE_SIZE),
        )
        signature = identity.sign(DOMAIN_LOCATOR, unsigned._signed_bytes())
        return cls(
            public_key=unsigned.public_key,
            endpoints=canonical,
            sequence=unsigned.sequence,
            expires_at=unsigned.expires_at,
            signature=signature,
        )

    @property
    def address(self) -> str:
        return address_from_public_key(self.public_key)

    def _signed_bytes(self) -> bytes:
        head = _LOCATOR_HEAD.pack(
            LOCATOR_VERSION,
            self.public_key,
            self.sequence,
            self.expires_at,
            len(self.endpoints),
        )
        return head + b"".join(_encode_endpoint(endpoint) for endpoint in self.endpoints)

    def encode(self) -> bytes:
        return self._signed_bytes() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> Locator:
        """Parse an encoded locator. InvalidRecord on anything malformed; no other error.

        Decoding does not verify the signature: call `verify`.
        """
        data = bytes(data)
        head_size = _LOCATOR_HEAD.size
        if len(data) < head_size:
            raise InvalidRecord("locator is truncated")
        version, public_key, sequence, expires_at, count = _LOCATOR_HEAD.unpack_from(data)
        if version != LOCATOR_VERSION:
            raise InvalidRecord(f"unsupported locator version {version}")
        if count > MAX_ENDPOINTS:
            raise InvalidRecord(f"locator claims {count} endpoints, at most {MAX_ENDPOINTS}")
        offset = head_size
        endpoints: list[Endpoint] = []
        for _ in range(count):
            if offset >= len(data):
                raise InvalidRecord("locator is truncated inside its endpoints")
            family = data[offset]
            if family == _FAMILY_IPV4:
                ip_size = 4
            elif family == _FAMILY_IPV6:
                ip_size = 16
            else:
                raise InvalidRecord(f"unknown endpoint address family {family}")
            end = offset + 1 + ip_size + _PORT.size
            if end > len(data):
                raise InvalidRecord("locator is truncated inside its endpoints")
            ip = ipaddress.ip_address(data[offset + 1 : offset + 1 + ip_size])
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                raise InvalidRecord("IPv4-mapped IPv6 endpoint; IPv4 must be sent as IPv4")
            (port,) = _PORT.unpack_from(data, end - _PORT.size)
            endpoints.append((str(ip), port))
            offset = end
        if len(data) != offset + _SIGNATURE_SIZE:
            raise InvalidRecord("locator has the wrong length for its endpoints")
        return cls(
            public_key=public_key,
            endpoints=tuple(endpoints),
            sequence=sequence,
            expires_at=expires_at,
            signature=data[offset:],
        )

    def verify(self, now_wall: float | None = None) -> bool:
        """True if signed by `public_key` and (when `now_wall`, Unix seconds, is given)
        not expired."""
        return _is_current(self.expires_at, now_wall) and verify_signature(
            self.public_key, DOMAIN_LOCATOR, self._signed_bytes(), self.signature
        )
