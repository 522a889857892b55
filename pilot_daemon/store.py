"""The daemon's SQLite database: trust, trust requests, pins, deliveries, outbox, settings.

One file in the state dir (`pilot.db`), WAL mode and `synchronous=FULL`: every row here is
something the user or a peer was told happened (a trust granted, a message acknowledged),
so a committed transaction must survive a power cut. Writes are rare and small, so FULL
costs nothing noticeable.

Times are Unix seconds (float, UTC) passed in by the caller: the store never reads a
clock, so expiry and cool-down are tested with injected time.

This module is the only place with SQL. Callers get frozen dataclasses back.

Exactly-once delivery across crashes (the outbox issue) rests on two tables:
- `outbox` (sender): a message gets its id when it is enqueued, in the same transaction
  that stores its body, before any datagram leaves. Every (re)send after a crash reuses
  that id. The row becomes `delivered` only when the peer's RECEIPT arrives.
- `deliveries` (both sides): on the receiving side a row `(message_id, 'in')` is the
  de-duplication record. It is written `receiving` before the inbox file and
  `persisted` after it; a duplicate of a `persisted` message gets its RECEIPT again and
  no second inbox file. A `receiving` row found after a crash is settled by looking for
  the inbox file named with that id.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from .limits import PENDING_TTL_SECONDS, REJECT_COOLDOWN_SECONDS

__all__ = [
    "MIGRATIONS",
    "DaemonSettings",
    "DeliveryRecord",
    "Direction",
    "Migration",
    "OutboxEntry",
    "OutboxState",
    "OutgoingRequest",
    "PendingRequest",
    "PinOutcome",
    "PinnedHostname",
    "Rejection",
    "Store",
    "StoreError",
    "TrustedPeer",
]


class StoreError(Exception):
    """The database cannot be used (newer schema, corrupt file, failed migration)."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: `version` is the `user_version` after it ran."""

    version: int
    description: str
    sql: str


# Append only: a released migration is never edited, a change is a new migration.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "trust, trust requests, rejections, pins, deliveries, outbox, settings",
        """
        CREATE TABLE settings (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) WITHOUT ROWID;

        CREATE TABLE trust (
            address    TEXT PRIMARY KEY,
            public_key BLOB NOT NULL,
            hostname   TEXT,
            since      REAL NOT NULL
        ) WITHOUT ROWID;

        -- One pending request per requester: a newer request replaces the older one.
        CREATE TABLE pending_requests (
            request_id    TEXT PRIMARY KEY,
            from_address  TEXT NOT NULL UNIQUE,
            public_key    BLOB NOT NULL,
            hostname      TEXT,
            justification TEXT,
            received_at   REAL NOT NULL,
            expires_at    REAL NOT NULL
        );
        CREATE INDEX pending_requests_expiry ON pending_requests (expires_at);

        CREATE TABLE outgoing_requests (
            request_id TEXT PRIMARY KEY,
            to_address TEXT NOT NULL,
            hostname   TEXT,
            sent_at    REAL NOT NULL
        );
        CREATE INDEX outgoing_requests_peer ON outgoing_requests (to_address);

        -- direction 'by_us': we rejected them (their next request is ignored until
        -- `until`); 'by_peer': they rejected us (we do not ask again until `until`).
        CREATE TABLE rejections (
            address     TEXT NOT NULL,
            direction   TEXT NOT NULL CHECK (direction IN ('by_us', 'by_peer')),
            rejected_at REAL NOT NULL,
            until       REAL NOT NULL,
            PRIMARY KEY (address, direction)
        ) WITHOUT ROWID;

        -- Trust on first use of a hostname (DESIGN 3).
        CREATE TABLE pinned_hostnames (
            hostname   TEXT PRIMARY KEY,
            public_key BLOB NOT NULL,
            address    TEXT NOT NULL,
            first_seen REAL NOT NULL,
            last_seen  REAL NOT NULL
        ) WITHOUT ROWID;

        CREATE TABLE deliveries (
            message_id TEXT NOT NULL,
            direction  TEXT NOT NULL CHECK (direction IN ('in', 'out')),
            peer       TEXT NOT NULL,
            type       TEXT NOT NULL,
            bytes      INTEGER NOT NULL,
            reply_to   TEXT,
            state      TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (message_id, direction)
        ) WITHOUT ROWID;
        CREATE INDEX deliveries_updated ON deliveries (updated_at);

        CREATE TABLE outbox (
            message_id      TEXT PRIMARY KEY,
            peer            TEXT NOT NULL,
            type            TEXT NOT NULL CHECK (type IN ('text', 'json', 'binary', 'file')),
            data            BLOB,
            file_path       TEXT,
            reply_to        TEXT,
            state           TEXT NOT NULL
                CHECK (state IN ('queued', 'sent', 'delivered', 'failed')),
            attempts        INTEGER NOT NULL DEFAULT 0,
            created_at      REAL NOT NULL,
            updated_at      REAL NOT NULL,
            next_attempt_at REAL NOT NULL,
            last_error      TEXT,
            CHECK ((data IS NULL) <> (file_path IS NULL))
        );
        CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
        """,
    ),
)


class Direction(StrEnum):
    IN = "in"
    OUT = "out"


class PinOutcome(StrEnum):
    """What `pin_hostname` found: a new pin, the same key again, or a different key."""

    PINNED = "pinned"
    MATCHED = "matched"
    KEY_CHANGED = "key_changed"


class OutboxState(StrEnum):
    QUEUED = "queued"  # stored, not sent yet (or due for a retry)
    SENT = "sent"  # on the wire at least once, no RECEIPT yet
    DELIVERED = "delivered"  # RECEIPT received: the peer has it on disk
    FAILED = "failed"  # given up; kept for `pilotctl outbox` to show


@dataclass(frozen=True, slots=True)
class TrustedPeer:
    address: str
    public_key: bytes
    hostname: str | None
    since: float


@dataclass(frozen=True, slots=True)
class PendingRequest:
    request_id: str
    from_address: str
    public_key: bytes
    hostname: str | None
    justification: str | None
    received_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class OutgoingRequest:
    request_id: str
    to_address: str
    hostname: str | None
    sent_at: float


@dataclass(frozen=True, slots=True)
class Rejection:
    address: str
    direction: str
    rejected_at: float
    until: float


@dataclass(frozen=True, slots=True)
class PinnedHostname:
    hostname: str
    public_key: bytes
    address: str
    first_seen: float
    last_seen: float


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    message_id: str
    direction: Direction
    peer: str
    type: str
    bytes: int
    reply_to: str | None
    state: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    message_id: str
    peer: str
    type: str
    data: bytes | None
    file_path: str | None
    reply_to: str | None
    state: OutboxState
    attempts: int
    created_at: float
    updated_at: float
    next_attempt_at: float
    last_error: str | None


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """What the daemon remembers between starts (DESIGN 9)."""

    udp_listen: str | None = None  # HOST:PORT the UDP socket was bound to
    rendezvous: str | None = None  # HOST:PORT of the last rendezvous used
    rendezvous_key: str | None = None  # its pinned key (given with #KEY or learned)
    hostname: str | None = None  # our own hostname, as last registered
    # Handshake timestamps never go below this floor (DESIGN 2: a reboot with the clock
    # set back must not make our initiations look like replays).
    handshake_floor_ns: int = 0


_SETTING_KEYS = ("udp_listen", "rendezvous", "rendezvous_key", "hostname")


class Store:
    """The typed API over `pilot.db`. One instance per process, used from one thread."""

    def __init__(self, path: Path | str, *, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        self._path = str(path)
        if self._path != ":memory:" and not os.path.exists(self._path):
            # Created 0600 before SQLite sees it; SQLite gives -wal and -shm the same mode.
            os.close(os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        try:
            self._db = sqlite3.connect(self._path, isolation_level=None, timeout=5.0)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {self._path}: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate(migrations)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"the database {self._path} is unusable: {exc}") from exc
        except BaseException:
            self._db.close()
            raise

    # --- lifecycle ---

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        versions = [m.version for m in migrations]
        if versions != list(range(1, len(migrations) + 1)):
            raise StoreError(f"migrations must be numbered 1..n in order, got {versions}")
        current = self.schema_version
        if current > len(migrations):
            raise StoreError(
                f"the database {self._path} has schema version {current}, newer than this "
                f"pilot-proto knows ({len(migrations)}); run a newer pilot-proto"
            )
        for migration in migrations[current:]:
            # DDL is transactional in SQLite: a failed step leaves the previous version.
            with self._transaction():
                for statement in _split_sql(migration.sql):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {int(migration.version)}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- settings ---

    def load_settings(self) -> DaemonSettings:
        rows = dict(self._db.execute("SELECT key, value FROM settings").fetchall())
        return DaemonSettings(
            udp_listen=rows.get("udp_listen"),
            rendezvous=rows.get("rendezvous"),
            rendezvous_key=rows.get("rendezvous_key"),
            hostname=rows.get("hostname"),
            handshake_floor_ns=int(rows.get("handshake_floor_ns", 0)),
        )

    def update_settings(self, **values: str | None) -> None:
        """Set (or, with None, forget) any of udp_listen, rendezvous, rendezvous_key,
        hostname."""
        unknown = set(values) - set(_SETTING_KEYS)
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        with self._transaction() as db:
            for key, value in values.items():
                if value is None:
                    db.execute("DELETE FROM settings WHERE key = ?", (key,))
                else:
                    db.execute(
                        "INSERT INTO settings (key, value) VALUES (?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (key, value),
                    )

    def raise_handshake_floor(self, floor_ns: int) -> int:
        """Move the handshake timestamp floor up (never down); return the stored floor."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT value FROM settings WHERE key = 'handshake_floor_ns'"
            ).fetchone()
            stored = max(int(row[0]) if row else 0, int(floor_ns))
            db.execute(
                "INSERT INTO settings (key, value) VALUES ('handshake_floor_ns', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(stored),),
            )
        return stored

    # --- trust ---

    def add_trust(
        self, address: str, public_key: bytes, hostname: str | None, now: float
    ) -> TrustedPeer:
        """Trust a peer. Trusting again updates key and hostname but keeps `since`."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO trust (address, public_key, hostname, since) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (address) DO UPDATE SET public_key = excluded.public_key, "
                "hostname = excluded.hostname",
                (address, bytes(public_key), hostname, now),
            )
        peer = self.get_trust(address)
        assert peer is not None
        return peer

    def remove_trust(self, address: str) -> bool:
        with self._transaction() as db:
            return db.execute("DELETE FROM trust WHERE address = ?", (address,)).rowcount > 0

    def get_trust(self, address: str) -> TrustedPeer | None:
        row = self._db.execute(
            "SELECT address, public_key, hostname, since FROM trust WHERE address = ?",
            (address,),
        ).fetchone()
        return TrustedPeer(*row) if row else None

    def find_trust_by_hostname(self, hostname: str) -> TrustedPeer | None:
        row = self._db.execute(
            "SELECT address, public_key, hostname, since FROM trust WHERE hostname = ? "
            "ORDER BY since DESC LIMIT 1",
            (hostname,),
        ).fetchone()
        return TrustedPeer(*row) if row else None

    def list_trust(self) -> list[TrustedPeer]:
        rows = self._db.execute(
            "SELECT address, public_key, hostname, since FROM trust ORDER BY since, address"
        ).fetchall()
        return [TrustedPeer(*row) for row in rows]

    # --- pending (incoming) trust requests ---

    def add_pending(
        self,
        request_id: str,
        from_address: str,
        public_key: bytes,
        hostname: str | None,
        justification: str | None,
        now: float,
        ttl: float = PENDING_TTL_SECONDS,
    ) -> PendingRequest:
        """Record a request; a newer one from the same requester replaces the older."""
        with self._transaction() as db:
            db.execute("DELETE FROM pending_requests WHERE from_address = ?", (from_address,))
            db.execute(
                "INSERT OR REPLACE INTO pending_requests (request_id, from_address, "
                "public_key, hostname, justification, received_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (request_id, from_address, bytes(public_key), hostname, justification,
                 now, now + ttl),
            )
        return PendingRequest(
            request_id, from_address, bytes(public_key), hostname, justification, now, now + ttl
        )

    def get_pending(self, from_address: str, now: float) -> PendingRequest | None:
        """The unexpired request from `from_address`, if any."""
        row = self._db.execute(
            f"SELECT {_PENDING_COLUMNS} FROM pending_requests "
            "WHERE from_address = ? AND expires_at > ?",
            (from_address, now),
        ).fetchone()
        return PendingRequest(*row) if row else None

    def list_pending(self, now: float) -> list[PendingRequest]:
        rows = self._db.execute(
            f"SELECT {_PENDING_COLUMNS} FROM pending_requests WHERE expires_at > ? "
            "ORDER BY received_at, request_id",
            (now,),
        ).fetchall()
        return [PendingRequest(*row) for row in rows]

    def count_pending(self, now: float) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM pending_requests WHERE expires_at > ?", (now,)
        ).fetchone()
        return int(row[0])

    def remove_pending(self, from_address: str) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM pending_requests WHERE from_address = ?", (from_address,)
            )
            return cursor.rowcount > 0

    def prune_expired(self, now: float, ttl: float = PENDING_TTL_SECONDS) -> int:
        """Drop expired pending requests, our own requests old enough to have expired on
        the other side, and finished cool-downs; return rows removed."""
        with self._transaction() as db:
            removed = db.execute(
                "DELETE FROM pending_requests WHERE expires_at <= ?", (now,)
            ).rowcount
            removed += db.execute(
                "DELETE FROM outgoing_requests WHERE sent_at <= ?", (now - ttl,)
            ).rowcount
            removed += db.execute("DELETE FROM rejections WHERE until <= ?", (now,)).rowcount
        return removed

    # --- outgoing trust requests ---

    def add_outgoing(
        self, request_id: str, to_address: str, hostname: str | None, now: float
    ) -> OutgoingRequest:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO outgoing_requests (request_id, to_address, hostname, sent_at) "
                "VALUES (?, ?, ?, ?)",
                (request_id, to_address, hostname, now),
            )
        return OutgoingRequest(request_id, to_address, hostname, now)

    def get_outgoing(self, request_id: str) -> OutgoingRequest | None:
        row = self._db.execute(
            "SELECT request_id, to_address, hostname, sent_at FROM outgoing_requests "
            "WHERE request_id = ?",
            (request_id,),
        ).fetchone()
        return OutgoingRequest(*row) if row else None

    def outgoing_to(self, to_address: str) -> list[OutgoingRequest]:
        rows = self._db.execute(
            "SELECT request_id, to_address, hostname, sent_at FROM outgoing_requests "
            "WHERE to_address = ? ORDER BY sent_at",
            (to_address,),
        ).fetchall()
        return [OutgoingRequest(*row) for row in rows]

    def list_outgoing(self) -> list[OutgoingRequest]:
        rows = self._db.execute(
            "SELECT request_id, to_address, hostname, sent_at FROM outgoing_requests "
            "ORDER BY sent_at"
        ).fetchall()
        return [OutgoingRequest(*row) for row in rows]

    def remove_outgoing_to(self, to_address: str) -> int:
        """Forget every request we sent to a peer (answered, or the peer untrusted)."""
        with self._transaction() as db:
            return db.execute(
                "DELETE FROM outgoing_requests WHERE to_address = ?", (to_address,)
            ).rowcount

    # --- rejections and their cool-down ---

    def record_rejection(
        self, address: str, direction: str, now: float,
        cooldown: float = REJECT_COOLDOWN_SECONDS,
    ) -> Rejection:
        if direction not in ("by_us", "by_peer"):
            raise ValueError(f"direction must be 'by_us' or 'by_peer', not {direction!r}")
        with self._transaction() as db:
            db.execute(
                "INSERT INTO rejections (address, direction, rejected_at, until) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (address, direction) DO UPDATE SET "
                "rejected_at = excluded.rejected_at, until = excluded.until",
                (address, direction, now, now + cooldown),
            )
        return Rejection(address, direction, now, now + cooldown)

    def active_rejection(self, address: str, direction: str, now: float) -> Rejection | None:
        """The rejection still in its cool-down at `now`, if any."""
        row = self._db.execute(
            "SELECT address, direction, rejected_at, until FROM rejections "
            "WHERE address = ? AND direction = ? AND until > ?",
            (address, direction, now),
        ).fetchone()
        return Rejection(*row) if row else None

    def clear_rejections(self, address: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM rejections WHERE address = ?", (address,))

    # --- pinned hostnames (TOFU) ---

    def pin_hostname(
        self, hostname: str, public_key: bytes, address: str, now: float
    ) -> PinOutcome:
        """Pin `hostname` to `public_key` on first sight; report a changed key.

        A changed key is never written: the caller refuses the name (`key_changed`) and
        only an explicit `replace_pin` moves the pin.
        """
        with self._transaction() as db:
            row = db.execute(
                "SELECT public_key FROM pinned_hostnames WHERE hostname = ?", (hostname,)
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO pinned_hostnames (hostname, public_key, address, first_seen, "
                    "last_seen) VALUES (?, ?, ?, ?, ?)",
                    (hostname, bytes(public_key), address, now, now),
                )
                return PinOutcome.PINNED
            if bytes(row[0]) != bytes(public_key):
                return PinOutcome.KEY_CHANGED
            db.execute(
                "UPDATE pinned_hostnames SET last_seen = ? WHERE hostname = ?", (now, hostname)
            )
            return PinOutcome.MATCHED

    def check_pin(self, hostname: str, public_key: bytes) -> PinOutcome:
        """Like `pin_hostname` but read-only: PINNED here means "no pin yet"."""
        pin = self.get_pin(hostname)
        if pin is None:
            return PinOutcome.PINNED
        return PinOutcome.MATCHED if pin.public_key == bytes(public_key) else PinOutcome.KEY_CHANGED

    def get_pin(self, hostname: str) -> PinnedHostname | None:
        row = self._db.execute(
            "SELECT hostname, public_key, address, first_seen, last_seen "
            "FROM pinned_hostnames WHERE hostname = ?",
            (hostname,),
        ).fetchone()
        return PinnedHostname(row[0], bytes(row[1]), *row[2:]) if row else None

    def replace_pin(self, hostname: str, public_key: bytes, address: str, now: float) -> None:
        """Move a pin to a new key: only on an explicit user decision."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO pinned_hostnames (hostname, public_key, address, first_seen, "
                "last_seen) VALUES (?, ?, ?, ?, ?) ON CONFLICT (hostname) DO UPDATE SET "
                "public_key = excluded.public_key, address = excluded.address, "
                "first_seen = excluded.first_seen, last_seen = excluded.last_seen",
                (hostname, bytes(public_key), address, now, now),
            )

    # --- delivery records ---

    def record_delivery(
        self,
        message_id: str,
        direction: Direction,
        peer: str,
        type: str,
        size: int,
        reply_to: str | None,
        state: str,
        now: float,
    ) -> bool:
        """Insert a record; False (and nothing changed) if this id and direction exist."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO deliveries (message_id, direction, peer, type, bytes, "
                "reply_to, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (message_id, str(direction), peer, type, size, reply_to, state, now, now),
            )
            return cursor.rowcount > 0

    def set_delivery_state(
        self, message_id: str, direction: Direction, state: str, now: float
    ) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE deliveries SET state = ?, updated_at = ? "
                "WHERE message_id = ? AND direction = ?",
                (state, now, message_id, str(direction)),
            )
            return cursor.rowcount > 0

    def get_delivery(self, message_id: str, direction: Direction) -> DeliveryRecord | None:
        row = self._db.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE message_id = ? AND direction = ?",
            (message_id, str(direction)),
        ).fetchone()
        return _delivery(row) if row else None

    def list_deliveries(
        self, *, direction: Direction | None = None, state: str | None = None
    ) -> list[DeliveryRecord]:
        query = f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE 1 = 1"
        params: list[object] = []
        if direction is not None:
            query += " AND direction = ?"
            params.append(str(direction))
        if state is not None:
            query += " AND state = ?"
            params.append(state)
        rows = self._db.execute(query + " ORDER BY created_at, message_id", params).fetchall()
        return [_delivery(row) for row in rows]

    def prune_deliveries(self, before: float) -> int:
        """Forget finished records last touched before `before` (de-duplication horizon)."""
        with self._transaction() as db:
            return db.execute(
                "DELETE FROM deliveries WHERE updated_at < ? AND state IN "
                "('persisted', 'delivered', 'failed')",
                (before,),
            ).rowcount

    # --- outbox ---

    def enqueue(
        self,
        message_id: str,
        peer: str,
        type: str,
        now: float,
        *,
        data: bytes | None = None,
        file_path: str | None = None,
        reply_to: str | None = None,
    ) -> OutboxEntry:
        """Store a message to send; its id is fixed from here on (see module doc)."""
        if (data is None) == (file_path is None):
            raise ValueError("an outbox entry has either data or a file path")
        with self._transaction() as db:
            db.execute(
                "INSERT INTO outbox (message_id, peer, type, data, file_path, reply_to, state, "
                "attempts, created_at, updated_at, next_attempt_at) "
                "VALUES (?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?)",
                (message_id, peer, type, None if data is None else bytes(data), file_path,
                 reply_to, now, now, now),
            )
        entry = self.get_outbox(message_id)
        assert entry is not None
        return entry

    def get_outbox(self, message_id: str) -> OutboxEntry | None:
        row = self._db.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE message_id = ?", (message_id,)
        ).fetchone()
        return _outbox(row) if row else None

    def list_outbox(self, state: OutboxState | None = None) -> list[OutboxEntry]:
        if state is None:
            rows = self._db.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox ORDER BY created_at, message_id"
            ).fetchall()
        else:
            rows = self._db.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE state = ? "
                "ORDER BY created_at, message_id",
                (str(state),),
            ).fetchall()
        return [_outbox(row) for row in rows]

    def outbox_due(self, now: float, limit: int = 100) -> list[OutboxEntry]:
        """Entries to (re)send now: queued ones, and sent ones whose retry time came."""
        rows = self._db.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE state IN ('queued', 'sent') "
            "AND next_attempt_at <= ? ORDER BY created_at, message_id LIMIT ?",
            (now, limit),
        ).fetchall()
        return [_outbox(row) for row in rows]

    def mark_attempt(self, message_id: str, now: float, next_attempt_at: float) -> None:
        """Record a send attempt before the datagrams go out (crash: resend same id)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET state = 'sent', attempts = attempts + 1, updated_at = ?, "
                "next_attempt_at = ? WHERE message_id = ? AND state IN ('queued', 'sent')",
                (now, next_attempt_at, message_id),
            )

    def mark_delivered(self, message_id: str, now: float) -> bool:
        """The RECEIPT arrived. Drops the body: it will never be sent again."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE outbox SET state = 'delivered', updated_at = ?, "
                "data = CASE WHEN data IS NULL THEN NULL ELSE x'' END "
                "WHERE message_id = ? AND state IN ('queued', 'sent')",
                (now, message_id),
            )
            return cursor.rowcount > 0

    def mark_failed(self, message_id: str, now: float, error: str) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE outbox SET state = 'failed', updated_at = ?, last_error = ? "
                "WHERE message_id = ? AND state IN ('queued', 'sent')",
                (now, error, message_id),
            )
            return cursor.rowcount > 0

    def remove_outbox(self, message_id: str) -> bool:
        with self._transaction() as db:
            return db.execute(
                "DELETE FROM outbox WHERE message_id = ?", (message_id,)
            ).rowcount > 0


_PENDING_COLUMNS = (
    "request_id, from_address, public_key, hostname, justification, received_at, expires_at"
)
_DELIVERY_COLUMNS = (
    "message_id, direction, peer, type, bytes, reply_to, state, created_at, updated_at"
)
_OUTBOX_COLUMNS = (
    "message_id, peer, type, data, file_path, reply_to, state, attempts, created_at, "
    "updated_at, next_attempt_at, last_error"
)


def _delivery(row: Sequence[Any]) -> DeliveryRecord:
    return DeliveryRecord(row[0], Direction(row[1]), row[2], row[3], row[4], row[5], row[6],
                          row[7], row[8])


def _outbox(row: Sequence[Any]) -> OutboxEntry:
    return OutboxEntry(row[0], row[1], row[2], None if row[3] is None else bytes(row[3]),
                       row[4], row[5], OutboxState(row[6]), row[7], row[8], row[9], row[10],
                       row[11])


def _split_sql(script: str) -> list[str]:
    """Statements of a migration script (ours: no semicolons inside literals)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]
