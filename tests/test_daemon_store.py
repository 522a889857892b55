"""The daemon's SQLite store: migrations, trust, requests, cool-downs, pins, outbox."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilot_daemon.limits import PENDING_TTL_SECONDS, REJECT_COOLDOWN_SECONDS
from pilot_daemon.store import (
    MIGRATIONS,
    Direction,
    Migration,
    OutboxState,
    PinOutcome,
    Store,
    StoreError,
)

A = "aaaa:0000:0000:0000:0000:0000:0000:0001"
B = "bbbb:0000:0000:0000:0000:0000:0000:0002"
KEY_A = b"\x01" * 32
KEY_B = b"\x02" * 32
T0 = 1_750_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "pilot.db")
    yield s
    s.close()


# --- schema and migrations ---


def test_fresh_database_is_at_latest_version_wal_full_and_private(tmp_path: Path) -> None:
    path = tmp_path / "pilot.db"
    with Store(path) as s:
        assert s.schema_version == len(MIGRATIONS)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_synchronous_full(store: Store) -> None:
    # 2 = FULL: a committed trust grant or acknowledged message survives a power cut.
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_upgrade_applies_only_new_migrations_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "pilot.db"
    with Store(path) as s:
        s.add_trust(A, KEY_A, "agent-a", T0)
    extra = Migration(len(MIGRATIONS) + 1, "add a column",
                      "ALTER TABLE trust ADD COLUMN note TEXT")
    with Store(path, migrations=(*MIGRATIONS, extra)) as s:
        assert s.schema_version == len(MIGRATIONS) + 1
        assert s.get_trust(A) is not None
    # Opening again with the same list is a no-op.
    with Store(path, migrations=(*MIGRATIONS, extra)) as s:
        assert s.schema_version == len(MIGRATIONS) + 1


def test_failed_migration_rolls_back_to_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "pilot.db"
    Store(path).close()
    broken = Migration(len(MIGRATIONS) + 1, "broken",
                       "CREATE TABLE half_done (x INTEGER); SELECT * FROM no_such_table")
    with pytest.raises(StoreError):
        Store(path, migrations=(*MIGRATIONS, broken))
    with Store(path) as s:
        assert s.schema_version == len(MIGRATIONS)
        tables = {r[0] for r in s._db.execute("SELECT name FROM sqlite_master")}
        assert "half_done" not in tables


def test_newer_schema_than_known_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pilot.db"
    extra = Migration(len(MIGRATIONS) + 1, "future", "CREATE TABLE future (x)")
    Store(path, migrations=(*MIGRATIONS, extra)).close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)


def test_migrations_must_be_numbered_in_order(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="numbered"):
        Store(tmp_path / "x.db", migrations=(Migration(2, "skip", "SELECT 1"),))


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "pilot.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="unusable"):
        Store(path)


# --- settings ---


def test_settings_round_trip_and_forget(store: Store) -> None:
    assert store.load_settings().rendezvous is None
    store.update_settings(udp_listen="0.0.0.0:4000", rendezvous="127.0.0.1:7000",
                          rendezvous_key="k" * 43, hostname="agent-a")
    s = store.load_settings()
    assert (s.udp_listen, s.rendezvous, s.rendezvous_key, s.hostname) == (
        "0.0.0.0:4000", "127.0.0.1:7000", "k" * 43, "agent-a")
    store.update_settings(hostname=None)
    assert store.load_settings().hostname is None
    with pytest.raises(ValueError):
        store.update_settings(bogus="x")


def test_handshake_floor_never_goes_down(store: Store) -> None:
    assert store.raise_handshake_floor(100) == 100
    assert store.raise_handshake_floor(50) == 100
    assert store.load_settings().handshake_floor_ns == 100
    assert store.raise_handshake_floor(200) == 200


# --- trust ---


def test_trust_add_keeps_since_and_remove(store: Store) -> None:
    store.add_trust(A, KEY_A, "agent-a", T0)
    store.add_trust(A, KEY_A, "renamed", T0 + 50)
    peer = store.get_trust(A)
    assert peer is not None and peer.since == T0 and peer.hostname == "renamed"
    assert store.find_trust_by_hostname("renamed") == peer
    assert [p.address for p in store.list_trust()] == [A]
    assert store.remove_trust(A) is True
    assert store.remove_trust(A) is False
    assert store.get_trust(A) is None


# --- pending requests and expiry (injected time) ---


def test_pending_expires_after_seven_days(store: Store) -> None:
    request = store.add_pending("r1", A, KEY_A, "agent-a", "task routing", T0)
    assert request.expires_at == T0 + PENDING_TTL_SECONDS == T0 + 7 * 24 * 3600
    assert store.get_pending(A, T0 + PENDING_TTL_SECONDS - 1) is not None
    assert [p.request_id for p in store.list_pending(T0 + 1)] == ["r1"]
    assert store.get_pending(A, T0 + PENDING_TTL_SECONDS) is None
    assert store.list_pending(T0 + PENDING_TTL_SECONDS + 1) == []
    assert store.prune_expired(T0 + PENDING_TTL_SECONDS + 1) == 1


def test_newer_request_from_same_peer_replaces_older(store: Store) -> None:
    store.add_pending("r1", A, KEY_A, "agent-a", "first", T0)
    store.add_pending("r2", A, KEY_A, "agent-a", "second", T0 + 10)
    pending = store.list_pending(T0 + 20)
    assert [(p.request_id, p.justification) for p in pending] == [("r2", "second")]
    assert store.remove_pending(A) is True
    assert store.list_pending(T0 + 20) == []


def test_outgoing_requests(store: Store) -> None:
    store.add_outgoing("r1", B, "agent-b", T0)
    assert store.get_outgoing("r1").to_address == B  # type: ignore[union-attr]
    assert [o.request_id for o in store.outgoing_to(B)] == ["r1"]
    assert [o.hostname for o in store.list_outgoing()] == ["agent-b"]
    assert store.remove_outgoing_to(B) == 1
    assert store.get_outgoing("r1") is None


def test_outgoing_requests_expire_like_the_peers_copy(store: Store) -> None:
    store.add_outgoing("r1", B, "agent-b", T0)
    assert store.prune_expired(T0 + PENDING_TTL_SECONDS - 1) == 0
    assert store.prune_expired(T0 + PENDING_TTL_SECONDS) == 1
    assert store.list_outgoing() == []


# --- rejections and cool-down (injected time) ---


def test_rejection_cooldown_default_one_hour(store: Store) -> None:
    rejection = store.record_rejection(A, "by_us", T0)
    assert rejection.until == T0 + REJECT_COOLDOWN_SECONDS == T0 + 3600
    assert store.active_rejection(A, "by_us", T0 + 3599) is not None
    assert store.active_rejection(A, "by_us", T0 + 3600) is None
    # Directions are independent.
    assert store.active_rejection(A, "by_peer", T0 + 1) is None


def test_rejection_custom_cooldown_renew_and_clear(store: Store) -> None:
    store.record_rejection(A, "by_peer", T0, cooldown=10)
    store.record_rejection(A, "by_peer", T0 + 5, cooldown=10)  # renewed
    assert store.active_rejection(A, "by_peer", T0 + 12) is not None
    store.clear_rejections(A)
    assert store.active_rejection(A, "by_peer", T0 + 12) is None
    with pytest.raises(ValueError):
        store.record_rejection(A, "sideways", T0)


def test_prune_drops_finished_cooldowns(store: Store) -> None:
    store.record_rejection(A, "by_us", T0, cooldown=10)
    assert store.prune_expired(T0 + 5) == 0
    assert store.prune_expired(T0 + 11) == 1


# --- pinned hostnames (TOFU) ---


def test_pin_first_use_then_match_then_key_changed(store: Store) -> None:
    assert store.pin_hostname("agent-b", KEY_B, B, T0) is PinOutcome.PINNED
    assert store.pin_hostname("agent-b", KEY_B, B, T0 + 1) is PinOutcome.MATCHED
    assert store.pin_hostname("agent-b", KEY_A, A, T0 + 2) is PinOutcome.KEY_CHANGED
    pin = store.get_pin("agent-b")
    assert pin is not None and pin.public_key == KEY_B and pin.last_seen == T0 + 1
    assert store.check_pin("agent-b", KEY_A) is PinOutcome.KEY_CHANGED
    assert store.check_pin("other", KEY_A) is PinOutcome.PINNED
    store.replace_pin("agent-b", KEY_A, A, T0 + 3)
    assert store.pin_hostname("agent-b", KEY_A, A, T0 + 4) is PinOutcome.MATCHED


# --- deliveries and outbox ---


def test_delivery_record_is_unique_per_id_and_direction(store: Store) -> None:
    assert store.record_delivery("m1", Direction.IN, A, "text", 5, None, "receiving", T0)
    assert not store.record_delivery("m1", Direction.IN, A, "text", 5, None, "receiving", T0)
    assert store.record_delivery("m1", Direction.OUT, A, "text", 5, None, "sending", T0)
    assert store.set_delivery_state("m1", Direction.IN, "persisted", T0 + 1)
    record = store.get_delivery("m1", Direction.IN)
    assert record is not None and record.state == "persisted" and record.updated_at == T0 + 1
    assert [r.direction for r in store.list_deliveries(state="persisted")] == [Direction.IN]
    assert store.prune_deliveries(T0 + 2) == 1  # the persisted one; "sending" stays
    assert store.get_delivery("m1", Direction.OUT) is not None


def test_outbox_lifecycle_keeps_id_through_retries(store: Store) -> None:
    entry = store.enqueue("m1", B, "text", T0, data=b"hello")
    assert entry.state is OutboxState.QUEUED and entry.attempts == 0
    assert [e.message_id for e in store.outbox_due(T0)] == ["m1"]
    store.mark_attempt("m1", T0, next_attempt_at=T0 + 5)
    assert store.outbox_due(T0 + 1) == []
    assert [e.message_id for e in store.outbox_due(T0 + 5)] == ["m1"]  # retry, same id
    store.mark_attempt("m1", T0 + 5, next_attempt_at=T0 + 15)
    assert store.get_outbox("m1").attempts == 2  # type: ignore[union-attr]
    assert store.mark_delivered("m1", T0 + 6) is True
    done = store.get_outbox("m1")
    assert done is not None and done.state is OutboxState.DELIVERED and done.data == b""
    assert store.mark_delivered("m1", T0 + 7) is False  # exactly once
    assert store.outbox_due(T0 + 100) == []


def test_outbox_failure_files_and_constraints(store: Store) -> None:
    store.enqueue("f1", B, "file", T0, file_path="/tmp/report.pdf")
    assert store.mark_failed("f1", T0 + 1, "peer gone") is True
    failed = store.get_outbox("f1")
    assert failed is not None and failed.state is OutboxState.FAILED
    assert failed.last_error == "peer gone"
    assert [e.message_id for e in store.list_outbox(OutboxState.FAILED)] == ["f1"]
    with pytest.raises(ValueError):
        store.enqueue("x", B, "text", T0)
    with pytest.raises(ValueError):
        store.enqueue("x", B, "text", T0, data=b"a", file_path="/a")
    with pytest.raises(sqlite3.IntegrityError):
        store.enqueue("f1", B, "text", T0, data=b"dup")
    assert store.remove_outbox("f1") is True


def test_outbox_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "pilot.db"
    with Store(path) as s:
        s.enqueue("m1", B, "json", T0, data=b"{}", reply_to="m0")
        s.mark_attempt("m1", T0, T0 + 1)
    with Store(path) as s:
        entry = s.get_outbox("m1")
        assert entry is not None and entry.state is OutboxState.SENT
        assert (entry.data, entry.reply_to, entry.attempts) == (b"{}", "m0", 1)
