"""Crash-safe file writes: a file is either complete or absent, never torn.

The recipe (DESIGN 9, inbox file contract): write to a temporary name in the same
directory, fsync the file, rename it to its final name, fsync the directory so the
rename itself survives a power cut.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

# Temporary names start with a dot so listings (which skip dotfiles) never show them.
TEMP_PREFIX = ".tmp-"
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_temp(directory: Path, tag: str) -> tuple[Path, int]:
    """A new, empty, private (0600) file with a temporary name; its path and open fd."""
    for _ in range(100):
        path = directory / f"{TEMP_PREFIX}{tag}-{secrets.token_hex(6)}"
        try:
            return path, os.open(path, _CREATE_FLAGS, 0o600)
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file in {directory}")


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves the whole file or nothing."""
    temp, fd = create_temp(path.parent, path.name)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_temps(directory: Path) -> int:
    """Delete temporary files a crashed writer left behind; return how many."""
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)
            removed += 1
    return removed
