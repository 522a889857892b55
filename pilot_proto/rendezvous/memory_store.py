"""A RegistryStore in plain dicts: for tests and throwaway servers."""

from __future__ import annotations

from .allow_list import AllowList
from .store import HostnameClaim, Registration, StoredNote

__all__ = ["InMemoryRegistryStore"]


class InMemoryRegistryStore:
    """Keeps everything in memory; a server restarted with the same object keeps it."""

    def __init__(self) -> None:
        self.registrations: dict[str, Registration] = {}
        self.claims: dict[str, HostnameClaim] = {}
        self.allow_lists: dict[str, AllowList] = {}
        self.notes: dict[bytes, StoredNote] = {}

    def load_registration(self, address: str) -> Registration | None:
        return self.registrations.get(address)

    def save_registration(self, registration: Registration, claim: HostnameClaim | None) -> None:
        address = registration.address
        self.registrations[address] = registration
        for name in [n for n, c in self.claims.items() if c.address == address]:
            del self.claims[name]
        if claim is not None:
            self.claims[claim.hostname] = claim

    def hostname_claim(self, hostname: str) -> HostnameClaim | None:
        return self.claims.get(hostname)

    def load_allow_list(self, address: str) -> AllowList | None:
        return self.allow_lists.get(address)

    def save_allow_list(self, allow_list: AllowList) -> None:
        self.allow_lists[allow_list.address] = allow_list

    def add_note(self, note: StoredNote) -> bool:
        if note.note_id in self.notes:
            return False
        self.notes[note.note_id] = note  # dicts keep insertion order: oldest first
        return True

    def notes_for(self, target: str) -> list[StoredNote]:
        return [n for n in self.notes.values() if n.target == target]

    def note_count(self, target: str | None = None) -> int:
        if target is None:
            return len(self.notes)
        return sum(1 for n in self.notes.values() if n.target == target)

    def delete_note(self, note_id: bytes) -> None:
        self.notes.pop(note_id, None)

    def expire(self, now_wall: float) -> None:
        for address, reg in list(self.registrations.items()):
            if reg.record.expires_at <= now_wall:
                del self.registrations[address]
        for name, claim in list(self.claims.items()):
            if claim.expires_at <= now_wall:
                del self.claims[name]
        for note_id, note in list(self.notes.items()):
            if note.expires_at <= now_wall:
                del self.notes[note_id]
        claimed = {c.address for c in self.claims.values()}
        for address in list(self.allow_lists):
            if address not in self.registrations and address not in claimed:
                del self.allow_lists[address]
