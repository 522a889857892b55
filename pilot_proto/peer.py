"""What a Node knows about one peer: identity, paths, keys, handshake and delivery state."""

from __future__ import annotations

from collections.abc import Callable

from .config import PathConfig
from .cookie import CookieJar
from .delivery import Connection
from .handshake import OutgoingHandshake
from .handshake_xx import XXInitiator
from .keypair import KeyRing
from .paths import PathManager
from .probe import ProbeKey
from .transmit import Addr


class Peer:
    """Plain state; the Node drives it. One per peer address."""

    __slots__ = (
        "address",
        "announced",
        "close_reason",
        "connection",
        "cookie_jar",
        "cookie_resent",
        "deadline",
        "deadline_seq",
        "endpoints",
        "explicit",
        "handshake",
        "handshake_deadline",
        "handshake_retry_at",
        "indexed_path",
        "instance_id",
        "keepalive_due",
        "keys",
        "last_received",
        "last_report",
        "last_route",
        "last_sent",
        "newest_initiation_ns",
        "paths",
        "probe_key",
        "public_key",
        "recovering",
        "restart_unannounced",
        "static_public",
        "trusted",
    )

    def __init__(
        self,
        address: str,
        *,
        public_key: bytes | None,
        static_public: bytes | None,
        trusted: bool,
        max_keypairs: int,
        path_config: PathConfig,
        rng: Callable[[int], bytes],
    ) -> None:
        self.address = address
        self.public_key = public_key
        self.static_public = static_public
        self.trusted = trusted
        self.endpoints: list[Addr] = []
        #: Direct and relayed paths, probing, keepalive and liveness (DESIGN 7).
        self.paths = PathManager(path_config, rng)
        #: Authenticates path probes; derived from both static keys once the peer's is known.
        self.probe_key: ProbeKey | None = None
        #: The direct address the Node indexed the peer under, the route packets last
        #: took (direct address, through the relay) and the path report last announced.
        self.indexed_path: Addr | None = None
        self.last_route: tuple[Addr | None, bool] = (None, False)
        self.last_report: tuple[str, Addr | None, str | None] | None = None
        self.keys = KeyRing(max_keypairs)
        self.handshake: OutgoingHandshake | None = None
        self.handshake_retry_at: float | None = None
        #: When the current handshake attempt gives up (set by the first initiation).
        self.handshake_deadline: float | None = None
        self.cookie_jar: CookieJar | None = None
        self.cookie_resent = False
        #: Replay protection (DESIGN 4): the newest initiation stamp accepted from the peer.
        self.newest_initiation_ns = -1
        #: The peer's instance id from the last handshake; a new one means it restarted.
        self.instance_id: bytes | None = None
        self.connection: Connection | None = None
        self.keepalive_due = False
        #: Added by the application (add_peer, a rendezvous) rather than met as a stranger.
        self.explicit = False
        #: The delivery layer reported the peer unresponsive; the next session restarts it.
        self.recovering = False
        #: The earliest timer of this peer, as of the last `Node.get_timer`.
        self.deadline: float | None = None
        #: The sequence number of the Node's deadline heap entry that holds `deadline`;
        #: -1 when none does (no deadline, or the peer was removed).
        self.deadline_seq = -1
        #: Whether the application was told about the current session (HandshakeCompleted).
        self.announced = False
        self.restart_unannounced = False
        self.close_reason: str | None = None
        self.last_received = float("-inf")
        self.last_sent = float("-inf")

    @property
    def path(self) -> Addr | None:
        """The peer's validated direct address (where direct traffic goes), if any."""
        return self.paths.direct


class PendingRendezvous:
    """A session with a rendezvous under way: IK to a pinned key, or XX to learn it."""

    __slots__ = ("cookie_jar", "deadline", "endpoint", "handshake", "retry_at", "static_key")

    def __init__(self, endpoint: Addr, static_key: bytes | None) -> None:
        self.endpoint = endpoint
        self.static_key = static_key
        self.handshake: OutgoingHandshake | XXInitiator | None = None
        self.cookie_jar: CookieJar | None = None
        self.retry_at = 0.0
        self.deadline = 0.0
