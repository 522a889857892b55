"""The rendezvous server's SQLite registry: `pilot_proto.rendezvous.RegistryStore` on disk.

One file in the state dir (`rendezvous.db`, mode 0600), WAL mode and `synchronous=FULL`:
an acknowledged registration or mailbox note must survive a crash, since the client was
told it is stored. Records, locators and allow lists are kept in their signed wire form
and decoded on the way out, so nothing the server checked can change meaning on disk.
The core makes every decision; this module only stores and forgets.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pilot_proto.errors import PilotError
from pilot_proto.records import IdentityRecord, Locator
from pilot_proto.rendezvous import (
    AllowList,
    HostnameClaim,
    Registration,
    RendezvousDecodeError,
    StoredNote,
)

__all__ = ["SCHEMA_VERSION", "SqliteRegistryStore"]

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE registrations (
    address    TEXT PRIMARY KEY,
    record     BLOB NOT NULL,
    locator    BLOB NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX registrations_by_expiry ON registrations (expires_at);

CREATE TABLE claims (
    hostname   TEXT PRIMARY KEY,
    address    TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX claims_by_address ON claims (address);

CREATE TABLE allow_lists (
    address    TEXT PRIMARY KEY,
    allow_list BLOB NOT NULL
) WITHOUT ROWID;

-- rowid order is arrival order: notes go out oldest first.
CREATE TABLE notes (
    id         INTEGER PRIMARY KEY,
    note_id    BLOB NOT NULL UNIQUE,
    target     TEXT NOT NULL,
    sender     TEXT NOT NULL,
    sealed     BLOB NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX notes_by_target ON notes (target, id);
"""


class SqliteRegistryStore:
    """A RegistryStore in one SQLite file. Single-threaded: the server's loop owns it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # sqlite creates files with the umask's mode; create it private first.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            return
        if version != 0:
            raise RuntimeError(
                f"{self.path} has schema version {version}; this build knows {SCHEMA_VERSION}"
            )
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ------------------------------------------------------------------ registrations

    def load_registration(self, address: str) -> Registration | None:
        row = self._db.execute(
            "SELECT record, locator FROM registrations WHERE address = ?", (address,)
        ).fetchone()
        if row is None:
            return None
        try:
            return Registration(IdentityRecord.decode(row[0]), Locator.decode(row[1]))
        except PilotError:
            return None  # unreadable row: as good as absent; the next REGISTER replaces it

    def save_registration(self, registration: Registration, claim: HostnameClaim | None) -> None:
        address = registration.address
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO registrations (address, record, locator, expires_at) "
                "VALUES (?, ?, ?, ?)",
                (
                    address,
                    registration.record.encode(),
                    registration.locator.encode(),
                    float(registration.record.expires_at),
                ),
            )
            self._db.execute("DELETE FROM claims WHERE address = ?", (address,))
            if claim is not None:
                self._db.execute(
                    "INSERT OR REPLACE INTO claims (hostname, address, expires_at) "
                    "VALUES (?, ?, ?)",
                    (claim.hostname, claim.address, claim.expires_at),
                )

    def hostname_claim(self, hostname: str) -> HostnameClaim | None:
        row = self._db.execute(
            "SELECT address, expires_at FROM claims WHERE hostname = ?", (hostname,)
        ).fetchone()
        return None if row is None else HostnameClaim(hostname, row[0], row[1])

    # ------------------------------------------------------------------ allow lists

    def load_allow_list(self, address: str) -> AllowList | None:
        row = self._db.execute(
            "SELECT allow_list FROM allow_lists WHERE address = ?", (address,)
        ).fetchone()
        if row is None:
            return None
        try:
            return AllowList.decode(row[0])
        except RendezvousDecodeError:
            return None

    def save_allow_list(self, allow_list: AllowList) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO allow_lists (address, allow_list) VALUES (?, ?)",
            (allow_list.address, allow_list.encode()),
        )

    # ------------------------------------------------------------------ mailbox

    def add_note(self, note: StoredNote) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO notes (note_id, target, sender, sealed, expires_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (note.note_id, note.target, note.sender, note.sealed, note.expires_at),
        )
        return cursor.rowcount == 1

    def notes_for(self, target: str) -> list[StoredNote]:
        rows = self._db.execute(
            "SELECT note_id, sender, sealed, expires_at FROM notes WHERE target = ? ORDER BY id",
            (target,),
        ).fetchall()
        return [StoredNote(row[0], target, row[1], row[2], row[3]) for row in rows]

    def note_count(self, target: str | None = None) -> int:
        if target is None:
            row = self._db.execute("SELECT count(*) FROM notes").fetchone()
        else:
            row = self._db.execute(
                "SELECT count(*) FROM notes WHERE target = ?", (target,)
            ).fetchone()
        return int(row[0])

    def delete_note(self, note_id: bytes) -> None:
        self._db.execute("DELETE FROM notes WHERE note_id = ?", (note_id,))

    # ------------------------------------------------------------------ expiry

    def expire(self, now_wall: float) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM registrations WHERE expires_at <= ?", (now_wall,))
            self._db.execute("DELETE FROM claims WHERE expires_at <= ?", (now_wall,))
            self._db.execute("DELETE FROM notes WHERE expires_at <= ?", (now_wall,))
            self._db.execute(
                "DELETE FROM allow_lists WHERE address NOT IN (SELECT address FROM registrations)"
                " AND address NOT IN (SELECT address FROM claims)"
            )
