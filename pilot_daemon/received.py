"""Landing of received files in `received/` (DESIGN 9).

- The name a sender suggests is only a suggestion: `sanitize_filename` keeps its last
  path component, drops control characters and leading dots, so `../../etc/passwd`
  lands as `received/passwd`.
- Nothing is ever overwritten: a taken name becomes `name (1).ext`, `name (2).ext`...
  The final name is claimed with `link()`, which fails instead of replacing.
- While the bytes arrive they live under a hidden temporary name; only once the size
  and SHA-256 match what the sender announced is the file fsynced and given its name.
"""

from __future__ import annotations

import errno
import hashlib
import os
import unicodedata
from pathlib import Path
from typing import Any

from .durable import create_temp, fsync_dir, remove_temps, write_all
from .inbox import iso_utc

_MAX_NAME_BYTES = 200  # leaves room for " (NNNN)" under the 255-byte limit of most filesystems
_MAX_SUFFIX_CHARS = 16
_MAX_COPIES = 10_000


class FileIntegrityError(Exception):
    """The received bytes do not match the announced size or SHA-256."""


def sanitize_filename(name: str) -> str:
    """A safe, non-empty, single-component file name derived from `name`."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/")
    name = name.rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())
    name = name.strip().lstrip(".").strip()
    if not name:
        name = "file"
    stem, suffix = _split_suffix(name)
    while len((stem + suffix).encode("utf-8")) > _MAX_NAME_BYTES and stem:
        stem = stem[:-1]
    return (stem.rstrip() or "file") + suffix


def _split_suffix(name: str) -> tuple[str, str]:
    stem, suffix = os.path.splitext(name)
    if len(suffix) > _MAX_SUFFIX_CHARS or not stem:
        return name, ""
    return stem, suffix


def numbered_name(name: str, n: int) -> str:
    """`report.pdf`, n=2 -> `report (2).pdf`."""
    if n == 0:
        return name
    stem, suffix = _split_suffix(name)
    return f"{stem} ({n}){suffix}"


class IncomingFile:
    """A file being received: bytes go to a temporary file until `commit`."""

    def __init__(self, directory: Path, name: str, size: int, sha256: str) -> None:
        self.directory = directory
        self.name = sanitize_filename(name)
        self.size = size
        self.sha256 = sha256.lower()
        self.temp_path, self._fd = create_temp(directory, "partial")
        self._hash = hashlib.sha256()
        self.received = 0

    def write(self, chunk: bytes) -> None:
        if self.received + len(chunk) > self.size:
            self.abort()
            raise FileIntegrityError(
                f"{self.name}: more bytes than the announced {self.size}"
            )
        write_all(self._fd, chunk)
        self._hash.update(chunk)
        self.received += len(chunk)

    def commit(self) -> Path:
        """Check size and hash, make the file durable and give it its final name."""
        if self.received != self.size or self._hash.hexdigest() != self.sha256:
            self.abort()
            raise FileIntegrityError(
                f"{self.name}: received {self.received} bytes with SHA-256 "
                f"{self._hash.hexdigest()}, expected {self.size} bytes with {self.sha256}"
            )
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        try:
            final = _claim_name(self.directory, self.name, self.temp_path)
        finally:
            self.temp_path.unlink(missing_ok=True)
        fsync_dir(self.directory)
        return final

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.temp_path.unlink(missing_ok=True)


def _claim_name(directory: Path, name: str, source: Path) -> Path:
    """Hard-link `source` under the first free name; never replaces an existing file."""
    for n in range(_MAX_COPIES):
        target = directory / numbered_name(name, n)
        try:
            os.link(source, target)
            return target
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
                raise
            # No hard links on this filesystem: reserve the name exclusively, then rename.
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                continue
            os.close(fd)
            os.replace(source, target)
            return target
    raise FileExistsError(f"too many files named like {name!r} in {directory}")


class ReceivedFiles:
    """The `received/` directory of a state dir."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def recover(self) -> int:
        """At start-up: delete partial files of transfers a crash interrupted."""
        return remove_temps(self.directory)

    def begin(self, name: str, size: int, sha256: str) -> IncomingFile:
        return IncomingFile(self.directory, name, size, sha256)

    def entries(self) -> list[dict[str, Any]]:
        """Complete files, oldest first: name, bytes, received_at (mtime), path."""
        entries = []
        try:
            scan = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []
        for entry in scan:
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            info = entry.stat(follow_symlinks=False)
            entries.append(
                {
                    "name": entry.name,
                    "bytes": info.st_size,
                    "received_at": iso_utc(info.st_mtime),
                    "path": entry.path,
                }
            )
        entries.sort(key=lambda e: (e["received_at"], e["name"]))
        return entries
