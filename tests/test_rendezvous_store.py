"""RegistryStore contract, run against the in-memory store and the daemon's SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from rendezvous_harness import RvLab

from pilot_daemon.rendezvous_store import SqliteRegistryStore
from pilot_proto.identity import Identity
from pilot_proto.records import IdentityRecord, Locator
from pilot_proto.rendezvous import (
    AllowList,
    HostnameClaim,
    InMemoryRegistryStore,
    LookupResult,
    NoteReceived,
    Registered,
    Registration,
    RegistryStore,
    StoredNote,
)

A, B = (Identity.from_private_bytes(bytes([i]) * 32) for i in (1, 2))


def registration(identity: Identity, hostname: str | None, expires_at: int) -> Registration:
    record = IdentityRecord.create(identity, hostname=hostname, sequence=1, expires_at=expires_at)
    locator = Locator.create(
        identity, endpoints=[("192.0.2.1", 1)], sequence=1, expires_at=expires_at
    )
    return Registration(record, locator)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryStore]:
    if request.param == "memory":
        yield InMemoryRegistryStore()
        return
    sqlite = SqliteRegistryStore(tmp_path / "rendezvous.db")
    yield sqlite
    sqlite.close()


def test_registrations_and_claims(store: RegistryStore) -> None:
    assert store.load_registration(A.address) is None
    reg = registration(A, "agent-a", 1000)
    store.save_registration(reg, HostnameClaim("agent-a", A.address, 5000.0))
    assert store.load_registration(A.address) == reg
    assert store.hostname_claim("agent-a") == HostnameClaim("agent-a", A.address, 5000.0)
    # A new claim replaces the old one: one hostname per address.
    store.save_registration(
        registration(A, "agent-z", 1000), HostnameClaim("agent-z", A.address, 6000.0)
    )
    assert store.hostname_claim("agent-a") is None
    assert store.hostname_claim("agent-z") is not None
    store.save_registration(registration(A, None, 1000), None)
    assert store.hostname_claim("agent-z") is None


def test_allow_lists(store: RegistryStore) -> None:
    assert store.load_allow_list(A.address) is None
    first = AllowList.create(A, [B.address], public=False, sequence=1)
    store.save_allow_list(first)
    assert store.load_allow_list(A.address) == first
    second = AllowList.create(A, [], public=True, sequence=2)
    store.save_allow_list(second)
    assert store.load_allow_list(A.address) == second


def test_notes(store: RegistryStore) -> None:
    notes = [
        StoredNote(bytes([i]) * 16, A.address, B.address, bytes([i]) * 40, 100.0 + i)
        for i in range(3)
    ]
    for note in notes:
        assert store.add_note(note)
    assert not store.add_note(notes[0])  # the same note twice is stored once
    other = StoredNote(b"x" * 16, B.address, A.address, b"s", 500.0)
    store.add_note(other)
    assert store.notes_for(A.address) == notes  # oldest first
    assert store.note_count(A.address) == 3 and store.note_count() == 4
    store.delete_note(notes[1].note_id)
    assert store.notes_for(A.address) == [notes[0], notes[2]]


def test_expiry(store: RegistryStore) -> None:
    store.save_registration(
        registration(A, "agent-a", 100), HostnameClaim("agent-a", A.address, 300.0)
    )
    store.save_registration(registration(B, None, 1000), None)
    for who in (A, B):
        store.save_allow_list(AllowList.create(who, [], public=True, sequence=1))
    store.add_note(StoredNote(b"n" * 16, B.address, A.address, b"s", 150.0))
    store.expire(200.0)
    assert store.load_registration(A.address) is None  # record expired
    assert store.hostname_claim("agent-a") is not None  # the claim outlives it
    assert store.load_allow_list(A.address) is not None  # its owner still holds a claim
    assert store.note_count() == 0
    store.expire(400.0)
    assert store.hostname_claim("agent-a") is None
    assert store.load_allow_list(A.address) is None  # owner gone entirely
    assert store.load_allow_list(B.address) is not None


def test_sqlite_keeps_everything_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "rendezvous.db"
    store = SqliteRegistryStore(path)
    reg = registration(A, "agent-a", 1000)
    store.save_registration(reg, HostnameClaim("agent-a", A.address, 5000.0))
    store.add_note(StoredNote(b"n" * 16, A.address, B.address, b"sealed", 900.0))
    store.close()
    again = SqliteRegistryStore(path)
    assert again.load_registration(A.address) == reg
    assert again.hostname_claim("agent-a") is not None
    assert again.note_count(A.address) == 1
    again.close()
    assert path.stat().st_mode & 0o777 == 0o600


def test_the_whole_flow_on_sqlite_with_a_server_restart(tmp_path: Path) -> None:
    lab = RvLab()
    sqlite = SqliteRegistryStore(tmp_path / "rendezvous.db")
    lab.store = sqlite  # type: ignore[assignment]
    lab.restart_server()
    a = lab.client("a", hostname="agent-a")
    b = lab.client("b", hostname="agent-b")
    assert lab.run_until(lambda: bool(a.of(Registered) and b.of(Registered)))
    found = lab.result(a, lab.call(a, lambda c, now: c.lookup("agent-b", now)))
    assert isinstance(found, LookupResult)
    assert b.client is not None
    b.client.close(lab.now)
    lab.settle(1)
    lab.call(a, lambda c, now: c.post_note(found.record, "trust_request", b"r" * 16, "hi", now))
    lab.settle(1)
    lab.restart_server()
    b2 = lab.restart_client(b)
    assert lab.run_until(lambda: bool(b2.of(NoteReceived)), timeout=60)
    assert lab.run_until(lambda: sqlite.note_count() == 0)
    sqlite.close()
