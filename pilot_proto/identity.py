"""Node identity: the Ed25519 key, the address derived from it, and signing domains.

A node's identity is one 32-byte Ed25519 seed. Everything else follows from it:

- the address (DESIGN section 3): the first 16 bytes of
  SHA-256(b"pilot-address-v1" || ed25519_public), written as eight colon-separated
  groups of four lowercase hex digits, never compressed;
- the X25519 static key used by Noise, derived from the seed with HKDF-SHA256, so the
  key file holds a single secret;
- the static binding: an Ed25519 signature tying the X25519 key to the Ed25519 key
  (DESIGN section 4).

Every signature covers `domain || message`. The domains below are distinct and none is
a prefix of another, so a signature made for one purpose never verifies for another.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import re
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import InvalidIdentity, KeyFilePermissionError

__all__ = [
    "ADDRESS_LABEL",
    "DOMAIN_ALLOW_LIST",
    "DOMAIN_IDENTITY_RECORD",
    "DOMAIN_LOCATOR",
    "DOMAIN_MAILBOX",
    "DOMAIN_STATIC_BINDING",
    "KEY_FILE_HEADER",
    "SIGNING_DOMAINS",
    "STATIC_KEY_INFO",
    "BindingCache",
    "Identity",
    "address_bytes",
    "address_from_bytes",
    "address_from_public_key",
    "is_address",
    "is_usable_public_key",
    "verify_signature",
    "verify_static_binding",
]

ADDRESS_LABEL = b"pilot-address-v1"
ADDRESS_SIZE = 16
PUBLIC_KEY_SIZE = 32
SEED_SIZE = 32
SIGNATURE_SIZE = 64

DOMAIN_STATIC_BINDING = b"pilot-noise-static-v1"
DOMAIN_IDENTITY_RECORD = b"pilot-identity-record-v1"
DOMAIN_LOCATOR = b"pilot-locator-v1"
DOMAIN_ALLOW_LIST = b"pilot-allow-list-v1"
DOMAIN_MAILBOX = b"pilot-mailbox-v1"
SIGNING_DOMAINS = (
    DOMAIN_STATIC_BINDING,
    DOMAIN_IDENTITY_RECORD,
    DOMAIN_LOCATOR,
    DOMAIN_ALLOW_LIST,
    DOMAIN_MAILBOX,
)

# HKDF info for the X25519 static key; changing it changes every node's Noise key.
STATIC_KEY_INFO = b"pilot-x25519-static-v1"

# Key file, version 1: three ASCII lines. The address line is redundant on purpose:
# it lets `load` tell a damaged seed from a good one.
KEY_FILE_HEADER = "pilot-identity v1"
_KEY_FILE_MAX_BYTES = 4096

_ADDRESS_PATTERN = re.compile(r"[0-9a-f]{4}(?::[0-9a-f]{4}){7}")


# --- addresses ---------------------------------------------------------------------


def address_from_public_key(ed25519_public: bytes) -> str:
    """The self-certifying address of an Ed25519 public key (DESIGN section 3)."""
    if len(ed25519_public) != PUBLIC_KEY_SIZE:
        raise InvalidIdentity(
            f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes, got {len(ed25519_public)}"
        )
    digest = hashlib.sha256(ADDRESS_LABEL + bytes(ed25519_public)).digest()
    return address_from_bytes(digest[:ADDRESS_SIZE])


def address_from_bytes(raw: bytes) -> str:
    """Format 16 address bytes as eight groups of four lowercase hex digits."""
    if len(raw) != ADDRESS_SIZE:
        raise InvalidIdentity(f"an address is {ADDRESS_SIZE} bytes, got {len(raw)}")
    text = raw.hex()
    return ":".join(text[i : i + 4] for i in range(0, 32, 4))


def is_address(text: str) -> bool:
    """True for the canonical text form only: lowercase, uncompressed, no extra bytes."""
    return isinstance(text, str) and _ADDRESS_PATTERN.fullmatch(text) is not None


def address_bytes(address: str) -> bytes:
    """The 16 bytes of an address in canonical text form; InvalidIdentity otherwise."""
    if not is_address(address):
        raise InvalidIdentity(
            f"not a pilot address: {address!r} "
            "(expected eight colon-separated groups of four lowercase hex digits)"
        )
    return bytes.fromhex(address.replace(":", ""))


# --- signatures --------------------------------------------------------------------


# Ed25519 public keys nobody can own. OpenSSL verifies without checking the key's order,
# and for a point of small order (the 8 points of the torsion subgroup) trivial
# signatures verify for a good share of all messages, so anyone could sign "for" such a
# key. Its address would have no single owner; refuse those keys outright. A key is
# refused if its y coordinate (the encoding without the x sign bit) is not reduced mod p
# (RFC 8032 section 5.1.3 rejects those) or is the y of a small-order point:
# 1 (order 1), p - 1 (order 2), 0 (order 4), and +-Y8 (order 8), where Y8**2 is the root
# of d*y**4 + 2*y**2 - 1 = 0 that is a square (tests/test_identity.py re-derives it).
_FIELD_PRIME = 2**255 - 19
_ORDER_8_Y = 2707385501144840649318225287225658788936804267575313519463743609750303402022
_SMALL_ORDER_Y = frozenset({0, 1, _FIELD_PRIME - 1, _ORDER_8_Y, _FIELD_PRIME - _ORDER_8_Y})
_Y_MASK = (1 << 255) - 1


def is_usable_public_key(ed25519_public: bytes) -> bool:
    """False for keys signatures cannot bind: wrong size, non-canonical or small order.

    Never raises. Such keys can still be hashed into an address, but nothing signed by
    them ever verifies here.
    """
    if len(ed25519_public) != PUBLIC_KEY_SIZE:
        return False
    y = int.from_bytes(ed25519_public, "little") & _Y_MASK
    return y < _FIELD_PRIME and y not in _SMALL_ORDER_Y


@lru_cache(maxsize=1024)
def _public_key_object(public_key: bytes) -> Ed25519PublicKey:
    # Parsing and checking the key is a measurable share of a verification, and peers'
    # keys recur. Raises ValueError for an unusable key (exceptions are not cached).
    if not is_usable_public_key(public_key):
        raise ValueError("unusable Ed25519 public key")
    return Ed25519PublicKey.from_public_bytes(public_key)


def verify_signature(public_key: bytes, domain: bytes, message: bytes, signature: bytes) -> bool:
    """True if `signature` is `public_key`'s signature over `domain || message`.

    Never raises on malformed keys or signatures: anything unusable is simply False.
    """
    try:
        if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
            return False
        key = _public_key_object(bytes(public_key))
        key.verify(bytes(signature), domain + message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def verify_static_binding(
    ed25519_public: bytes, x25519_static_public: bytes, signature: bytes
) -> bool:
    """True if `signature` binds the X25519 static key to the Ed25519 key (DESIGN 4)."""
    if len(x25519_static_public) != PUBLIC_KEY_SIZE:
        return False
    return verify_signature(
        ed25519_public,
        DOMAIN_STATIC_BINDING,
        bytes(x25519_static_public) + bytes(ed25519_public),
        signature,
    )


class BindingCache:
    """Remembers static bindings that verified, so repeated handshakes skip Ed25519.

    Only successes are cached: a forged binding costs a verification every time and can
    never evict a good entry by merely being presented. Bounded, least recently used
    entries go first.
    """

    __slots__ = ("_entries", "_max_entries")

    def __init__(self, max_entries: int = 4096) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self._max_entries = max_entries
        self._entries: OrderedDict[tuple[bytes, bytes, bytes], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def max_entries(self) -> int:
        return self._max_entries

    def check(self, ed25519_public: bytes, x25519_public: bytes, signature: bytes) -> bool:
        """True if the binding is valid; verified once, then answered from the cache."""
        entry = (bytes(ed25519_public), bytes(x25519_public), bytes(signature))
        entries = self._entries
        if entry in entries:
            entries.move_to_end(entry)
            return True
        if not verify_static_binding(*entry):
            return False
        entries[entry] = None
        if len(entries) > self._max_entries:
            entries.popitem(last=False)
        return True


# --- the identity ------------------------------------------------------------------


def _derive_static_private(seed: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=STATIC_KEY_INFO)
    return hkdf.derive(seed)


class Identity:
    """A node's long-term keys. Create with `generate`, `from_private_bytes` or `load`."""

    __slots__ = (
        "_address",
        "_public_key",
        "_seed",
        "_signing_key",
        "_static_binding",
        "_static_key",
        "_static_private",
        "_static_public",
    )

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_SIZE:
            raise InvalidIdentity(f"an Ed25519 private key seed is {SEED_SIZE} bytes")
        self._seed = bytes(seed)
        self._signing_key = Ed25519PrivateKey.from_private_bytes(self._seed)
        self._public_key = self._signing_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._address = address_from_public_key(self._public_key)
        self._static_private = _derive_static_private(self._seed)
        # Kept as an object: rebuilding it costs ~40 us on every handshake.
        self._static_key = X25519PrivateKey.from_private_bytes(self._static_private)
        self._static_public = self._static_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._static_binding = self.sign(
            DOMAIN_STATIC_BINDING, self._static_public + self._public_key
        )

    @classmethod
    def generate(cls, rng: Callable[[int], bytes]) -> Identity:
        """A new identity from `SEED_SIZE` bytes of `rng` (os.urandom in production)."""
        seed = rng(SEED_SIZE)
        if len(seed) != SEED_SIZE:
            raise InvalidIdentity(f"rng returned {len(seed)} bytes, asked for {SEED_SIZE}")
        return cls(seed)

    @classmethod
    def from_private_bytes(cls, seed: bytes) -> Identity:
        """The identity whose Ed25519 private key seed is `seed` (32 bytes)."""
        return cls(seed)

    def private_bytes(self) -> bytes:
        """The 32-byte Ed25519 seed: the one secret everything else derives from."""
        return self._seed

    @property
    def public_key(self) -> bytes:
        """Ed25519 public key, 32 bytes."""
        return self._public_key

    @property
    def address(self) -> str:
        return self._address

    @property
    def static_private(self) -> bytes:
        """X25519 static private key for Noise, derived from the seed."""
        return self._static_private

    @property
    def static_private_key(self) -> X25519PrivateKey:
        """The same X25519 static private key as an object, for the Noise layer."""
        return self._static_key

    @property
    def static_public(self) -> bytes:
        """X25519 static public key for Noise, 32 bytes."""
        return self._static_public

    @property
    def static_binding(self) -> bytes:
        """Signature over DOMAIN_STATIC_BINDING || static_public || public_key."""
        return self._static_binding

    def sign(self, domain: bytes, message: bytes) -> bytes:
        """Ed25519 signature over `domain || message`."""
        if not domain:
            raise InvalidIdentity("a signature needs a non-empty domain")
        return self._signing_key.sign(bytes(domain) + bytes(message))

    def __repr__(self) -> str:
        return f"Identity(address={self._address!r})"

    # --- key file ---

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key file atomically with mode 0600.

        Temp file in the same directory, fsync, rename over `path`, fsync the directory:
        a crash leaves either the old file or the new one, never a torn key.
        """
        target = Path(path)
        directory = target.parent
        contents = (
            f"{KEY_FILE_HEADER}\ned25519-seed {self._seed.hex()}\naddress {self._address}\n"
        ).encode("ascii")
        temp_path, fd = _create_temp_file(directory, target.name)
        try:
            try:
                os.fchmod(fd, 0o600)  # O_CREAT's mode is filtered by umask; be explicit
                view = memoryview(contents)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp_path, target)
        except BaseException:
            try:
                os.unlink(temp_path)
            except FileNotFoundError:
                pass
            raise
        _fsync_directory(directory)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Identity:
        """Read a key file written by `save`.

        Raises KeyFilePermissionError if group or others may read or write it, and
        InvalidIdentity if it is missing, damaged or not a key file.
        """
        target = Path(path)
        try:
            fd = os.open(target, os.O_RDONLY)
        except FileNotFoundError as exc:
            raise InvalidIdentity(f"no identity key file at {target}") from exc
        except OSError as exc:
            raise InvalidIdentity(f"cannot open identity key file {target}: {exc}") from exc
        try:
            # fstat on the open descriptor: the file checked is the file read.
            mode = os.fstat(fd).st_mode & 0o777
            if mode & 0o077:
                raise KeyFilePermissionError(
                    f"identity key file {target} has mode {mode:04o}: group or others can "
                    f"access it; it must be 0600. Fix with: chmod 600 {target}"
                )
            raw = os.read(fd, _KEY_FILE_MAX_BYTES + 1)
        finally:
            os.close(fd)
        seed, recorded_address = _parse_key_file(raw, target)
        identity = cls(seed)
        if identity.address != recorded_address:
            raise InvalidIdentity(
                f"identity key file {target} is damaged: "
                "the seed does not match the recorded address"
            )
        return identity


def _parse_key_file(raw: bytes, path: Path) -> tuple[bytes, str]:
    """The seed and the recorded address of a version 1 key file."""

    def corrupt(why: str) -> InvalidIdentity:
        return InvalidIdentity(f"identity key file {path} is damaged: {why}")

    if len(raw) > _KEY_FILE_MAX_BYTES:
        raise corrupt("too large to be a key file")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise corrupt("not ASCII text") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or lines[0] != KEY_FILE_HEADER:
        raise corrupt(f"first line is not {KEY_FILE_HEADER!r}")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(" ")
        if not value or name in fields:
            raise corrupt(f"malformed line {line[:40]!r}")
        fields[name] = value
    if set(fields) != {"ed25519-seed", "address"}:
        raise corrupt("expected exactly the lines 'ed25519-seed' and 'address'")
    seed_hex = fields["ed25519-seed"]
    if len(seed_hex) != 2 * SEED_SIZE:
        raise corrupt(f"the seed is not {2 * SEED_SIZE} hex digits")
    try:
        seed = binascii.unhexlify(seed_hex)
    except (binascii.Error, ValueError):
        raise corrupt("the seed is not hex") from None
    return seed, fields["address"]


def _create_temp_file(directory: Path, name: str) -> tuple[Path, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for attempt in range(100):
        candidate = directory / f".{name}.tmp-{os.getpid()}-{attempt}"
        try:
            return candidate, os.open(candidate, flags, 0o600)
        except FileExistsError:
            continue  # left over by a crashed writer, or another writer at work
    raise InvalidIdentity(f"cannot create a temporary file next to {directory / name}")


def _fsync_directory(directory: Path) -> None:
    # Makes the rename durable; some platforms cannot open directories, and then
    # there is nothing more we can do.
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
