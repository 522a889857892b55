"""What every part of the Node shares: its identity, peers, indexes, queues and counters.

The Node is composed of one class per concern (`node_paths`, `peer_handshakes`,
`rendezvous_sessions`, `node_trust`, `node`), each building on this state and the ones
before it. A class calls only what it or the classes before it define (no forward
declarations): that is what lets mypyc compile the chain into native classes.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from itertools import count

from .config import NodeConfig
from .cookie import CookieChecker
from .delivery import Connection
from .errors import PeerNotTrusted, UnknownPeer
from .events import Event
from .handshake_xx import XXResponder
from .identity import BindingCache, Identity
from .keypair import Keypair
from .nat import NatDiscovery
from .peer import Peer, PendingRendezvous
from .probe import ProbeKey
from .timestamp import InitiationClock
from .transmit import Addr, Transmit


class NodeState:
    """The Node's shared state and peer registry; see `Node` for the public API."""

    def __init__(
        self,
        identity: Identity,
        config: NodeConfig | None = None,
        *,
        rng: Callable[[int], bytes],
        wall_clock: Callable[[], float],
        trust_policy: Callable[[str], bool] | None = None,
    ) -> None:
        """`trust_policy(address)` decides for peers not explicitly trusted or untrusted
        (a rendezvous server trusts every client); without it, only `add_peer` trusts."""
        self.identity = identity
        self.config = config or NodeConfig()
        self._rng = rng
        self._wall_clock = wall_clock
        self.instance_id = rng(8)
        self.stats: Counter[str] = Counter()
        self._peers: dict[str, Peer] = {}
        self._keypairs_by_index: dict[int, tuple[Peer, Keypair]] = {}
        self._handshakes_by_index: dict[int, Peer] = {}
        self._outbox: list[Transmit] = []
        self._dirty: set[Peer] = set()
        #: Peers whose timer deadline must be recomputed; the others keep `peer.deadline`.
        self._stale: set[Peer] = set()
        #: A heap of (deadline, sequence, peer): every peer's `deadline`, so the earliest
        #: is found without walking idle peers (a public node holds a thousand). Entries
        #: are superseded, not removed: one is current while its sequence is the peer's
        #: `deadline_seq`; `Node.get_timer` drops the others as they reach the top.
        self._deadlines: list[tuple[float, int, Peer]] = []
        self._deadline_seqs = count()
        #: Untrusted peers that may hold delivery state (node_trust bounds them).
        self._untrusted_connections: set[Peer] = set()
        #: Newest initiation stamps of strangers forgotten by `_forget_if_stranger`.
        self._stamps_of_forgotten: dict[str, int] = {}
        self._events: deque[Event] = deque()
        #: The same queue `next_event` pops, for an owner that drains it in a loop (the
        #: driver): one test per wake-up instead of a call per event. Only pop from it.
        self.events = self._events
        self._listening_ports: set[int] = set()
        self._bindings = BindingCache()
        self._clock = InitiationClock(self.config.initiation_floor_ns)
        session = self.config.session
        self._cookies = CookieChecker(identity.static_public, rng, session.cookie_secret_lifetime)
        self._recent_initiations: deque[float] = deque()
        self._trust_policy = trust_policy
        self._rendezvous: dict[Addr, PendingRendezvous] = {}
        self._rendezvous_by_index: dict[int, PendingRendezvous] = {}
        #: Half-open XX handshakes we answered (server side), oldest first.
        self._xx_half_open: dict[int, tuple[XXResponder, Addr]] = {}
        #: Peers by the direct address they are reached at (a relay finds senders here).
        self._peer_by_path: dict[Addr, Peer] = {}
        #: Peers by the pair id of their probe key (probes name the pair, not the node).
        self._peer_by_pair_id: dict[bytes, Peer] = {}
        #: Rendezvous servers that relay for us (node addresses), from introductions.
        self._relays: set[str] = set()
        self._local_candidates: tuple[Addr, ...] = ()
        self._nat: NatDiscovery | None = None
        #: Our NAT's mapping behaviour as last discovered (DESIGN 7), told to peers.
        self.nat_mapping = "unknown"
        #: The latest `now` seen, for status reports that take no `now`.
        self._last_now = 0.0

    @property
    def address(self) -> str:
        return self.identity.address

    def _touch(self, peer: Peer) -> None:
        """The peer may have output to send and its timer may have moved."""
        self._dirty.add(peer)
        self._stale.add(peer)

    def _under_load(self, now: float) -> bool:
        recent = self._recent_initiations
        while recent and now - recent[0] > 1.0:
            recent.popleft()
        return len(recent) >= self.config.session.cookie_load_threshold

    def _policy_trusts(self, address: str) -> bool:
        return self._trust_policy is not None and self._trust_policy(address)

    def _retry_interval(self) -> float:
        session = self.config.session
        jitter = int.from_bytes(self._rng(2), "big") / 65535 * session.handshake_jitter
        return session.handshake_retry + jitter

    def _new_index(self) -> int:
        while True:
            index = int.from_bytes(self._rng(4), "big")
            if (
                index not in self._keypairs_by_index
                and index not in self._handshakes_by_index
                and index not in self._rendezvous_by_index
                and index not in self._xx_half_open
            ):
                return index

    def _forget_keypair(self, kp: Keypair) -> None:
        self._keypairs_by_index.pop(kp.local_index, None)

    def _ensure_connection(self, peer: Peer, now: float) -> Connection:
        """The peer's delivery state, made on first use."""
        if peer.connection is None:
            peer.connection = Connection(
                peer.address,
                self.config.delivery,
                rng=self._rng,
                now=now,
                listening_ports=self._listening_ports,
            )
        return peer.connection

    def _new_peer(
        self, address: str, public_key: bytes | None, static_public: bytes | None, trusted: bool
    ) -> Peer:
        peer = Peer(
            address,
            public_key=public_key,
            static_public=static_public,
            trusted=trusted,
            max_keypairs=self.config.session.max_keypairs_per_peer,
            path_config=self.config.paths,
            rng=self._rng,
        )
        peer.paths.set_our_mapping(self.nat_mapping)
        peer.newest_initiation_ns = self._stamps_of_forgotten.pop(address, -1)
        self._peers[address] = peer
        self._derive_probe_key(peer)
        return peer

    def _forget_peer(self, peer: Peer) -> None:
        """Drop a registered peer from every index: its session (closed quietly), keys
        and delivery state go with it."""
        self._peers.pop(peer.address, None)
        self._unindex_path(peer)
        if peer.probe_key is not None:
            self._peer_by_pair_id.pop(peer.probe_key.pair_id, None)
        for kp in peer.keys.clear():
            self._forget_keypair(kp)
        if peer.handshake is not None:
            self._handshakes_by_index.pop(peer.handshake.sender_index, None)
        self._dirty.discard(peer)
        self._stale.discard(peer)
        peer.deadline_seq = -1  # its heap entry is dropped when it reaches the top

    def _unindex_path(self, peer: Peer) -> None:
        old = peer.indexed_path
        if old is not None and self._peer_by_path.get(old) is peer:
            del self._peer_by_path[old]
        peer.indexed_path = None

    def _derive_probe_key(self, peer: Peer) -> None:
        if peer.static_public is None:
            return
        if peer.probe_key is not None:
            self._peer_by_pair_id.pop(peer.probe_key.pair_id, None)
        peer.probe_key = ProbeKey.derive(
            self.identity.static_private_key, peer.static_public, self.address, peer.address
        )
        if peer.probe_key is not None:
            self._peer_by_pair_id[peer.probe_key.pair_id] = peer

    def _peer(self, address: str) -> Peer:
        peer = self._peers.get(address)
        if peer is None:
            raise UnknownPeer(
                f"unknown peer {address}; add its identity record with add_peer first"
            )
        return peer

    def _trusted_peer(self, address: str) -> Peer:
        peer = self._peer(address)
        if not peer.trusted:
            raise PeerNotTrusted(f"peer {address} is not trusted; nothing is sent to it")
        return peer
