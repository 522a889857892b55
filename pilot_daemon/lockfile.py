"""The daemon lock (`daemon.lock` in the state dir): one daemon per state dir.

The daemon holds an exclusive flock on it for its whole life and writes its pid in it.
The kernel drops the lock when the process dies, however it dies, so "lock free" is
exactly "no daemon": `daemon stop` and `daemon status` rely on that, never on the
pid alone (pids get reused).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import ErrorCode, PilotctlError


def acquire_lock(path: Path) -> int:
    """Take the lock (an fd kept open by the daemon) or raise `already_exists`."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = read_lock_pid(path)
        raise PilotctlError(
            ErrorCode.ALREADY_EXISTS,
            f"a daemon is already running on {path.parent}"
            + (f" (pid {pid})" if pid else ""),
            "stop it first (pilotctl daemon stop), or use another state dir (PILOT_HOME)",
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def read_lock_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdecimal() else None


def lock_is_held(path: Path) -> bool:
    """True while some process (a daemon) holds the lock."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops our probe lock
    return False
