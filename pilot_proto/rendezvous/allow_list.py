"""The allow list a node registers at the rendezvous (DESIGN 6 and 8).

The set of addresses a node accepts introductions from (its trusted peers), or
`public=True` to accept everyone. Signed by the node and sequence-numbered; the server
keeps only the newest and replaces it whole on every change. Only the server ever sees
it: it decides introductions, and it is never handed to other nodes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import LocalProtocolError
from ..identity import (
    DOMAIN_ALLOW_LIST,
    Identity,
    address_bytes,
    address_from_public_key,
    is_address,
    verify_signature,
)
from .codec import Reader
from .errors import RendezvousDecodeError

__all__ = ["ALLOW_LIST_VERSION", "MAX_ALLOW_LIST_ENTRIES", "AllowList"]

ALLOW_LIST_VERSION = 1
#: What the encoding can carry; a server usually accepts fewer (ServerConfig).
MAX_ALLOW_LIST_ENTRIES = 0xFFFF
_FLAG_PUBLIC = 0x01
# version, ed25519 public, sequence, flags, entry count; then 16 bytes per address and
# the signature.
_HEAD = struct.Struct(">B32sQBH")
_SIGNATURE_SIZE = 64


@dataclass(frozen=True, slots=True)
class AllowList:
    """A signed allow list. `addresses` is sorted and free of repeats (canonical)."""

    public_key: bytes
    sequence: int
    public: bool
    addresses: tuple[str, ...]
    signature: bytes

    @classmethod
    def create(
        cls, identity: Identity, addresses: Iterable[str], *, public: bool, sequence: int
    ) -> AllowList:
        """Sign an allow list; LocalProtocolError on a bad address or too many entries."""
        entries = tuple(sorted(set(addresses)))
        for address in entries:
            if not is_address(address):
                raise LocalProtocolError(f"allow list entry {address!r} is not a node address")
        if len(entries) > MAX_ALLOW_LIST_ENTRIES:
            raise LocalProtocolError(f"an allow list holds at most {MAX_ALLOW_LIST_ENTRIES}")
        if not 0 <= sequence < 1 << 64:
            raise LocalProtocolError("allow list sequence must be in [0, 2**64)")
        unsigned = cls(identity.public_key, sequence, public, entries, bytes(_SIGNATURE_SIZE))
        signature = identity.sign(DOMAIN_ALLOW_LIST, unsigned._signed_bytes())
        return cls(identity.public_key, sequence, public, entries, signature)

    @property
    def address(self) -> str:
        """The owner's address."""
        return address_from_public_key(self.public_key)

    def allows(self, address: str) -> bool:
        return self.public or address in self.addresses

    def _signed_bytes(self) -> bytes:
        head = _HEAD.pack(
            ALLOW_LIST_VERSION,
            self.public_key,
            self.sequence,
            _FLAG_PUBLIC if self.public else 0,
            len(self.addresses),
        )
        return head + b"".join(address_bytes(a) for a in self.addresses)

    def encode(self) -> bytes:
        return self._signed_bytes() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> AllowList:
        """Parse (not verify); RendezvousDecodeError for anything malformed."""
        reader = Reader(data)
        try:
            version, public_key, sequence, flags, count = _HEAD.unpack(reader.take(_HEAD.size))
        except RendezvousDecodeError:
            raise RendezvousDecodeError("allow list is truncated") from None
        if version != ALLOW_LIST_VERSION:
            raise RendezvousDecodeError(f"unsupported allow list version {version}")
        if flags & ~_FLAG_PUBLIC:
            raise RendezvousDecodeError("allow list has unknown flags")
        addresses = tuple(reader.address() for _ in range(count))
        if list(addresses) != sorted(set(addresses)):
            raise RendezvousDecodeError("allow list addresses must be sorted and distinct")
        signature = reader.take(_SIGNATURE_SIZE)
        reader.end()
        return cls(public_key, sequence, bool(flags & _FLAG_PUBLIC), addresses, signature)

    def verify(self) -> bool:
        return verify_signature(
            self.public_key, DOMAIN_ALLOW_LIST, self._signed_bytes(), self.signature
        )
