"""Inbox files (DESIGN 9 contract) and the received/ landing of files."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pilot_daemon.errors import ErrorCode, PilotctlError
from pilot_daemon.inbox import Inbox, IncomingMessage, decode_data
from pilot_daemon.received import (
    FileIntegrityError,
    ReceivedFiles,
    numbered_name,
    sanitize_filename,
)

SENDER = "3fa1:09bc:0000:0000:0000:0000:0000:0001"
T0 = 1_750_000_000.25  # 2025-06-15T15:06:40.25Z
ID1 = "0123456789abcdef0123456789abcdef"
ID2 = "fedcba9876543210fedcba9876543210"


def message(id: str = ID1, type: str = "text", data: bytes = b"run subtask: analyze document X",
            reply_to: str | None = None, at: float = T0) -> IncomingMessage:
    return IncomingMessage(id, type, SENDER, "agent-a", data, reply_to, at)


@pytest.fixture
def inbox(tmp_path: Path) -> Inbox:
    directory = tmp_path / "inbox"
    directory.mkdir()
    return Inbox(directory)


# --- the file contract ---


def test_file_name_and_fields_text(inbox: Inbox) -> None:
    path = inbox.write(message())
    assert path.name == f"20250615T150640Z-{ID1}.json"
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{32}\.json", path.name)
    entry = json.loads(path.read_text())
    assert list(entry) == ["id", "type", "from", "from_hostname", "data", "bytes",
                           "received_at", "reply_to"]
    assert entry == {
        "id": ID1,
        "type": "text",
        "from": SENDER,
        "from_hostname": "agent-a",
        "data": "run subtask: analyze document X",
        "bytes": 31,
        "received_at": "2025-06-15T15:06:40.250000Z",
        "reply_to": None,
    }
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_json_data_is_parsed_value(inbox: Inbox) -> None:
    raw = b'{"task": "analyze", "n": [1, 2]}'
    entry = json.loads(inbox.write(message(type="json", data=raw, reply_to=ID2)).read_text())
    assert entry["data"] == {"task": "analyze", "n": [1, 2]}
    assert entry["bytes"] == len(raw)
    assert entry["reply_to"] == ID2
    assert "encoding" not in entry


def test_binary_data_is_base64_with_encoding(inbox: Inbox) -> None:
    raw = bytes(range(256))
    entry = json.loads(inbox.write(message(type="binary", data=raw)).read_text())
    assert entry["encoding"] == "base64"
    assert base64.b64decode(entry["data"]) == raw
    assert entry["bytes"] == 256
    assert decode_data(entry) == raw


@pytest.mark.parametrize(("type_", "raw"), [("text", b"\xff\xfe"), ("json", b"{not json")])
def test_undecodable_bodies_are_kept_as_base64(inbox: Inbox, type_: str, raw: bytes) -> None:
    entry = json.loads(inbox.write(message(type=type_, data=raw)).read_text())
    assert entry["type"] == type_
    assert entry["encoding"] == "base64"
    assert decode_data(entry) == raw


def test_write_is_idempotent_per_message_id(inbox: Inbox) -> None:
    first = inbox.write(message())
    again = inbox.write(message(at=T0 + 60))
    assert first == again
    assert len(list(inbox.directory.iterdir())) == 1


# --- list / show / clear ---


def test_list_oldest_first_without_data(inbox: Inbox) -> None:
    inbox.write(message(ID2, at=T0 + 5))
    inbox.write(message(ID1, at=T0))
    (inbox.directory / "notes.txt").write_text("not a message")
    (inbox.directory / f"20250615T150640Z-{'a' * 32}.json").write_text("{broken")
    listing = inbox.entries()
    assert [e["id"] for e in listing] == [ID1, ID2]
    assert all("data" not in e and "encoding" not in e for e in listing)


def test_show_by_id_prefix_and_file_name(inbox: Inbox) -> None:
    path = inbox.write(message())
    inbox.write(message(ID2))
    assert inbox.show(ID1)["data"] == "run subtask: analyze document X"
    assert inbox.show("0123")["id"] == ID1
    assert inbox.show(path.name)["id"] == ID1


def test_show_errors(inbox: Inbox) -> None:
    inbox.write(message(ID1))
    inbox.write(message("0123" + "f" * 28))
    with pytest.raises(PilotctlError) as missing:
        inbox.show("abcd")
    assert missing.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(PilotctlError) as ambiguous:
        inbox.show("0123")
    assert ambiguous.value.code is ErrorCode.INVALID_ARGUMENT
    with pytest.raises(PilotctlError) as bad:
        inbox.show("../etc")
    assert bad.value.code is ErrorCode.INVALID_ARGUMENT


def test_remove_and_clear(inbox: Inbox) -> None:
    inbox.write(message(ID1))
    inbox.write(message(ID2))
    assert inbox.remove("fedc") == ID2
    assert inbox.clear() == 1
    assert inbox.entries() == []
    assert inbox.clear() == 0


# --- crash safety: a file is complete or absent ---

_CRASH_WRITER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from pilot_daemon.inbox import IncomingMessage, Inbox

    def crash(src, dst):
        os._exit(9)  # power cut between fsync of the temp file and the rename

    os.replace = crash
    Inbox(Path(sys.argv[1])).write(IncomingMessage(
        sys.argv[2], "text", "3fa1:09bc:0000:0000:0000:0000:0000:0001", None,
        b"x" * 100_000, None, 1750000000.0))
    """
)


def test_crash_between_write_and_rename_leaves_no_inbox_file(inbox: Inbox) -> None:
    done = subprocess.run([sys.executable, "-c", _CRASH_WRITER, str(inbox.directory), ID1],
                          capture_output=True, timeout=30)
    assert done.returncode == 9, done.stderr
    names = os.listdir(inbox.directory)
    assert not [n for n in names if n.endswith(".json")]  # absent, not torn
    assert [n for n in names if n.startswith(".tmp-")]  # the orphan temp file
    assert inbox.entries() == []
    with pytest.raises(PilotctlError):
        inbox.show(ID1)
    assert inbox.recover() == 1
    assert os.listdir(inbox.directory) == []
    # The sender retries (no receipt was sent): this time the write completes.
    inbox.write(message(ID1))
    assert [e["id"] for e in inbox.entries()] == [ID1]


# --- received/: names ---


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("/etc/shadow", "shadow"),
        ("..\\..\\windows\\system.ini", "system.ini"),
        ("..", "file"),
        ("", "file"),
        (".bashrc", "bashrc"),
        ("a\x00b\nc\x1b.txt", "abc.txt"),
        ("  spaced  name.txt ", "spaced  name.txt"),
        ("dir/", "file"),
    ],
)
def test_sanitize_filename(given: str, expected: str) -> None:
    assert sanitize_filename(given) == expected


def test_sanitize_long_names_keep_extension() -> None:
    name = sanitize_filename("é" * 300 + ".tar")
    assert name.endswith(".tar")
    assert len(name.encode()) <= 200


def test_numbered_names() -> None:
    assert numbered_name("report.pdf", 0) == "report.pdf"
    assert numbered_name("report.pdf", 2) == "report (2).pdf"
    assert numbered_name("README", 1) == "README (1)"


# --- received/: landing ---


def land(files: ReceivedFiles, name: str, data: bytes) -> Path:
    incoming = files.begin(name, len(data), hashlib.sha256(data).hexdigest())
    for i in range(0, len(data), 7):
        incoming.write(data[i:i + 7])
    return incoming.commit()


def test_traversal_name_lands_inside_received(tmp_path: Path) -> None:
    directory = tmp_path / "received"
    directory.mkdir()
    path = land(ReceivedFiles(directory), "../../etc/passwd", b"root:x:0:0")
    assert path == directory / "passwd"
    assert path.read_bytes() == b"root:x:0:0"
    assert not (tmp_path / "etc").exists()


def test_never_overwrites(tmp_path: Path) -> None:
    directory = tmp_path / "received"
    directory.mkdir()
    files = ReceivedFiles(directory)
    first = land(files, "report.pdf", b"one")
    second = land(files, "report.pdf", b"two")
    third = land(files, "sub/report.pdf", b"three")
    assert [p.name for p in (first, second, third)] == [
        "report.pdf", "report (1).pdf", "report (2).pdf"]
    assert first.read_bytes() == b"one" and second.read_bytes() == b"two"
    listing = files.entries()
    assert sorted(f["name"] for f in listing) == ["report (1).pdf", "report (2).pdf",
                                                   "report.pdf"]


def test_partial_files_are_hidden_and_hash_checked(tmp_path: Path) -> None:
    directory = tmp_path / "received"
    directory.mkdir()
    files = ReceivedFiles(directory)
    data = b"0123456789"
    incoming = files.begin("data.bin", len(data), hashlib.sha256(data).hexdigest())
    incoming.write(data[:5])
    assert files.entries() == []  # partial: under a hidden temporary name
    assert incoming.temp_path.name.startswith(".")
    incoming.write(b"XXXXX")  # corrupted in transit
    with pytest.raises(FileIntegrityError):
        incoming.commit()
    assert os.listdir(directory) == []


def test_oversized_transfer_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "received"
    directory.mkdir()
    incoming = ReceivedFiles(directory).begin("a", 3, hashlib.sha256(b"abc").hexdigest())
    with pytest.raises(FileIntegrityError):
        incoming.write(b"abcd")
    assert os.listdir(directory) == []


def test_recover_removes_abandoned_partials(tmp_path: Path) -> None:
    directory = tmp_path / "received"
    directory.mkdir()
    files = ReceivedFiles(directory)
    files.begin("big.iso", 10, "0" * 64).write(b"12345")  # never committed (crash)
    (directory / "kept.txt").write_text("complete")
    assert files.recover() == 1
    assert os.listdir(directory) == ["kept.txt"]
