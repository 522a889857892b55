"""Where the daemon keeps its state (DESIGN 9): `$PILOT_HOME`, default `~/.pilot`.

Both sides use this module: the daemon to create and bind, pilotctl to find the socket.
It imports nothing heavy, because every pilotctl command goes through it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import ErrorCode, PilotctlError

SOCKET_NAME = "api.sock"
# sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107
# A state dir too deep for sun_path gets its socket here, in a private per-uid directory.
SHORT_SOCKET_ROOT = Path("/tmp")


class StateDir:
    """The files of one node's state directory."""

    # A plain class, not a dataclass: `dataclasses` pulls in `inspect`, which alone would
    # cost pilotctl a quarter of its start-up budget.
    __slots__ = ("root",)

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"StateDir({str(self.root)!r})"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> StateDir:
        """`$PILOT_HOME` if set and non-empty, else `~/.pilot`; always absolute."""
        env = os.environ if environ is None else environ
        home = env.get("PILOT_HOME") or os.path.join(os.path.expanduser("~"), ".pilot")
        return cls(Path(os.path.abspath(home)))

    @property
    def identity(self) -> Path:
        return self.root / "identity.key"

    @property
    def database(self) -> Path:
        return self.root / "pilot.db"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def received(self) -> Path:
        return self.root / "received"

    @property
    def log(self) -> Path:
        return self.root / "daemon.log"

    @property
    def lock(self) -> Path:
        return self.root / "daemon.lock"

    @property
    def socket_link(self) -> Path:
        """The socket's name in the state dir (the socket itself, or a link to it)."""
        return self.root / SOCKET_NAME

    def socket_fits(self) -> bool:
        return len(os.fsencode(self.socket_link)) <= MAX_SOCKET_PATH_BYTES

    def short_socket_path(self) -> Path:
        """Where the socket goes when the state dir path is too long for sun_path."""
        import hashlib  # only for deep state dirs; keeps pilotctl start-up lean

        digest = hashlib.sha256(os.fsencode(self.root)).hexdigest()[:24]
        return SHORT_SOCKET_ROOT / f"pilot-{os.getuid()}" / f"{digest}.sock"

    def bind_path(self) -> Path:
        """The path the daemon binds (creating the private /tmp directory if needed)."""
        if self.socket_fits():
            return self.socket_link
        target = self.short_socket_path()
        ensure_private_dir(target.parent)
        return target

    def connect_path(self) -> Path:
        """The path pilotctl connects to: the socket, or the target of the link to it."""
        if self.socket_fits():
            return self.socket_link
        try:
            return Path(os.readlink(self.socket_link))
        except OSError:
            return self.short_socket_path()

    def ensure(self) -> None:
        """Create the state dir (0700) and its subdirectories if missing."""
        ensure_private_dir(self.root, parents=True)
        for sub in (self.inbox, self.received):
            ensure_private_dir(sub)


def ensure_private_dir(path: Path, *, parents: bool = False) -> None:
    """Create `path` with mode 0700, or check that an existing one is ours and private.

    An existing directory that others can write to, or that belongs to someone else, is
    refused: the daemon's socket and keys would be exposed (e.g. a pre-created /tmp dir).
    """
    try:
        if parents:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise PilotctlError(
            ErrorCode.INVALID_ARGUMENT,
            f"cannot create the directory {path}: {exc.strerror}",
            "set PILOT_HOME to a directory you can write to",
        ) from exc
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise PilotctlError(
            ErrorCode.INVALID_ARGUMENT,
            f"{path} exists and is not a directory",
            "remove it or set PILOT_HOME elsewhere",
        )
    if info.st_uid != os.getuid():
        raise PilotctlError(
            ErrorCode.INVALID_ARGUMENT,
            f"{path} belongs to uid {info.st_uid}, not to you (uid {os.getuid()})",
            "set PILOT_HOME to a directory of your own",
        )
    if info.st_mode & 0o022:
        # Our own directory with loose permissions: tighten rather than refuse.
        os.chmod(path, 0o700)
