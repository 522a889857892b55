"""What the rendezvous server persists, behind a small interface (DESIGN 1 and 6).

The core decides everything (signatures, sequence numbers, claims, limits); a store only
keeps what it is given and forgets what has expired. `InMemoryRegistryStore` serves
tests; the daemon's SQLite store (`pilot_daemon/rendezvous_store.py`) serves production,
and a shared PostgreSQL or Redis store would scale it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..records import IdentityRecord, Locator
from .allow_list import AllowList

__all__ = ["HostnameClaim", "Registration", "RegistryStore", "StoredNote"]


@dataclass(frozen=True, slots=True)
class Registration:
    """A node's current identity record and locator, both verified by the server."""

    record: IdentityRecord
    locator: Locator

    @property
    def address(self) -> str:
        return self.record.address


@dataclass(frozen=True, slots=True)
class HostnameClaim:
    """`hostname` belongs to `address` until `expires_at` (Unix seconds), DESIGN 3."""

    hostname: str
    address: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class StoredNote:
    """A sealed mailbox note waiting for `target`. `note_id` is derived from the content,
    so the same note posted twice is stored once."""

    note_id: bytes
    target: str
    sender: str
    sealed: bytes
    expires_at: float


class RegistryStore(Protocol):
    def load_registration(self, address: str) -> Registration | None: ...

    def save_registration(self, registration: Registration, claim: HostnameClaim | None) -> None:
        """Replace the node's record and locator and, atomically with them, its claim:
        `claim` becomes the only hostname the address holds (None releases any)."""
        ...

    def hostname_claim(self, hostname: str) -> HostnameClaim | None: ...

    def load_allow_list(self, address: str) -> AllowList | None: ...

    def save_allow_list(self, allow_list: AllowList) -> None: ...

    def add_note(self, note: StoredNote) -> bool:
        """Store a note; False if one with the same id is already there."""
        ...

    def notes_for(self, target: str) -> list[StoredNote]:
        """The target's waiting notes, oldest first."""
        ...

    def note_count(self, target: str | None = None) -> int:
        """Waiting notes for `target`, or in total."""
        ...

    def delete_note(self, note_id: bytes) -> None: ...

    def expire(self, now_wall: float) -> None:
        """Forget registrations whose record expired, claims and notes past their expiry,
        and allow lists whose owner holds neither a registration nor a claim."""
        ...
