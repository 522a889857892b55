"""The inbox: one JSON file per received message (DESIGN 9, inbox file contract).

    inbox/<received_at compact UTC>-<message id>.json     e.g. 20250301T101500Z-3f9a...json

Fields: `id`, `type`, `from` (address), `from_hostname`, `data` (text: the string; json:
the parsed value; binary: base64 with `"encoding":"base64"`), `bytes` (size of the raw
data), `received_at` (ISO-8601 UTC), `reply_to` (or null).

Each file is written to a temporary name, fsynced, renamed and the directory fsynced
(`durable.write_atomic`), so other programs reading the inbox never see a partial file.
Only after that does the daemon let the core send the RECEIPT.

A text or json body that does not decode (invalid UTF-8, invalid JSON) is still kept,
base64-encoded with `"encoding":"base64"`, so nothing a peer acknowledged is lost.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .durable import fsync_dir, remove_temps, write_atomic
from .errors import ErrorCode, PilotctlError

_FILE_NAME = re.compile(r"(\d{8}T\d{6}Z)-([0-9a-f]{32})\.json")
_MIN_PREFIX = 4


def compact_utc(timestamp: float) -> str:
    """`20250301T101500Z`: the sortable stamp in inbox file names."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y%m%dT%H%M%SZ")


def iso_utc(timestamp: float) -> str:
    """`2025-03-01T10:15:00.123456Z`: ISO-8601 UTC, as every time in the API."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_data(type: str, data: bytes) -> dict[str, Any]:
    """The `data` (and, for base64, `encoding`) fields for a body of the given type."""
    if type == "text":
        try:
            return {"data": data.decode("utf-8")}
        except UnicodeDecodeError:
            pass
    elif type == "json":
        try:
            return {"data": json.loads(data.decode("utf-8"))}
        except (UnicodeDecodeError, ValueError):
            pass
    return {"data": base64.b64encode(data).decode("ascii"), "encoding": "base64"}


def decode_data(entry: dict[str, Any]) -> bytes:
    """The raw body of an inbox entry (inverse of `encode_data`)."""
    data = entry.get("data")
    if entry.get("encoding") == "base64":
        return base64.b64decode(str(data))
    if entry.get("type") == "json":
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return str(data).encode("utf-8")


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A message the network delivered, before it is written to the inbox."""

    id: str
    type: str
    sender: str  # address, from the verified session
    sender_hostname: str | None  # from our trust store, never from the sender's claim
    data: bytes
    reply_to: str | None
    received_at: float


def inbox_entry(message: IncomingMessage) -> dict[str, Any]:
    """The JSON object of the inbox file, fields in contract order."""
    entry: dict[str, Any] = {
        "id": message.id,
        "type": message.type,
        "from": message.sender,
        "from_hostname": message.sender_hostname,
    }
    entry.update(encode_data(message.type, message.data))
    entry["bytes"] = len(message.data)
    entry["received_at"] = iso_utc(message.received_at)
    entry["reply_to"] = message.reply_to
    return entry


class Inbox:
    """The `inbox/` directory of a state dir."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def recover(self) -> int:
        """At start-up: delete temporary files of writes a crash interrupted."""
        return remove_temps(self.directory)

    def write(self, message: IncomingMessage) -> Path:
        """Persist a message durably; return its file. Idempotent per message id."""
        existing = self.find(message.id)
        if existing is not None:
            return existing  # a resend after a crash between rename and bookkeeping
        path = self.directory / f"{compact_utc(message.received_at)}-{message.id}.json"
        body = json.dumps(inbox_entry(message), ensure_ascii=False, indent=2) + "\n"
        write_atomic(path, body.encode("utf-8"))
        return path

    def find(self, message_id: str) -> Path | None:
        for path in self._files():
            if _message_id(path) == message_id:
                return path
        return None

    def entries(self) -> list[dict[str, Any]]:
        """Every message, oldest first, without `data` (the `inbox --json` shape)."""
        entries = []
        for path in self._files():
            entry = self._read(path)
            if entry is not None:
                entry.pop("data", None)
                entry.pop("encoding", None)
                entries.append(entry)
        entries.sort(key=lambda e: (str(e.get("received_at")), str(e.get("id"))))
        return entries

    def count(self) -> int:
        """How many messages (by file name only: cheap enough for every `info`)."""
        return len(self._files())

    def show(self, ref: str) -> dict[str, Any]:
        """One whole message, by id, unique id prefix or file name."""
        entry = self._read(self.resolve(ref))
        if entry is None:
            raise PilotctlError(
                ErrorCode.INTERNAL, f"inbox file for {ref!r} is not valid JSON"
            )
        return entry

    def resolve(self, ref: str) -> Path:
        ref = ref.strip().lower()
        if ref.endswith(".json"):
            ref = ref[:-5]
        if "-" in ref:
            ref = ref.rsplit("-", 1)[1]
        if len(ref) < _MIN_PREFIX or not re.fullmatch(r"[0-9a-f]+", ref):
            raise PilotctlError(
                ErrorCode.INVALID_ARGUMENT,
                f"{ref!r} is not a message id",
                f"give the id shown by `pilotctl inbox` (at least {_MIN_PREFIX} hex digits)",
            )
        matches = [p for p in self._files() if _message_id(p).startswith(ref)]
        if not matches:
            raise PilotctlError(
                ErrorCode.NOT_FOUND, f"no message {ref} in the inbox", "list them: pilotctl inbox"
            )
        if len(matches) > 1:
            raise PilotctlError(
                ErrorCode.INVALID_ARGUMENT,
                f"{ref} matches {len(matches)} messages",
                "give more digits of the id",
            )
        return matches[0]

    def remove(self, ref: str) -> str:
        path = self.resolve(ref)
        path.unlink()
        fsync_dir(self.directory)
        return _message_id(path)

    def clear(self) -> int:
        """Delete every message file; return how many."""
        files = self._files()
        for path in files:
            path.unlink(missing_ok=True)
        if files:
            fsync_dir(self.directory)
        return len(files)

    def _files(self) -> list[Path]:
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        return [self.directory / n for n in names if _FILE_NAME.fullmatch(n)]

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            entry = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        return entry if isinstance(entry, dict) else None


def _message_id(path: Path) -> str:
    match = _FILE_NAME.fullmatch(path.name)
    return match.group(2) if match else ""
