"""The Node: one identity, one UDP socket's worth of protocol, no I/O of its own.

DESIGN section 2. A binding feeds datagrams in with `receive_datagram`, sends what
`datagrams_to_send` returns, arms one timer at `get_timer()` and hands `next_event()` to
the application. Everything a peer sends us is checked here before anything else sees it:
nothing raises on remote input, every drop is counted in `stats` by reason.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable

from .config import NodeConfig
from .cookie import CookieChecker, CookieJar
from .delivery import Connection, ConnectionClosed, PeerUnresponsive
from .errors import LocalProtocolError, PeerNotTrusted, UnknownPeer
from .events import (
    Event,
    HandshakeCompleted,
    HandshakeFailed,
    PathChanged,
    PeerInfo,
    RendezvousConnected,
    RendezvousFailed,
    SessionClosed,
)
from .handshake import OutgoingHandshake, PeerProof, TransportKeys, read_initiation, write_response
from .handshake_xx import XXInitiator, XXResponder
from .identity import BindingCache, Identity
from .keypair import Keypair
from .nat import NatDiscovery
from .packets import (
    COOKIE_REPLY,
    HANDSHAKE_INITIATION,
    HANDSHAKE_RESPONSE,
    TRANSPORT,
    TRANSPORT_HEADER,
    TRANSPORT_OVERHEAD,
    XX_FINISH,
    XX_INIT,
    XX_RESPONSE,
    decode_cookie_reply,
    decode_initiation,
    decode_response,
    decode_xx_finish,
    decode_xx_init,
    decode_xx_response,
    encode_initiation_body,
    encode_response,
    encode_xx_finish,
    encode_xx_init,
    encode_xx_response,
)
from .paths import PathReport, ProbeOut
from .peer import Peer, PendingRendezvous
from .probe import PATH_PROBE, PING, ProbeKey, pair_id_of
from .records import IdentityRecord
from .relay import RELAY, RELAY_OVERHEAD, decode_relay, encode_relay
from .stun_client import ClassifierConfig
from .timestamp import InitiationClock
from .transmit import Addr, Transmit

#: Initiations go to at most this many candidate endpoints of a peer at once.
MAX_INITIATION_TARGETS = 8
_STUN_FIRST_BYTES = frozenset(range(4))


#: Every datagram `receive_datagram` sees ends in exactly one of these counters or in a
#: `drop_*` counter: `stats["datagrams_received"]` equals their sum (tests check it).
ACCEPTED_OUTCOMES = (
    "accepted_transport",
    "accepted_response",
    "accepted_xx_response",
    "accepted_xx_finish",
    "handshakes_answered",
    "cookie_replies_sent",
    "cookies_received",
    "xx_answered",
    "accepted_probe",
    "accepted_stun",
    "internal_error",
)


class Node:
    """A peer-to-peer node: handshakes, sessions and delivery toward any number of peers."""

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
        #: Newest initiation stamps of strangers forgotten by `_forget_if_stranger`.
        self._stamps_of_forgotten: dict[str, int] = {}
        self._events: deque[Event] = deque()
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

    # ------------------------------------------------------------------ identity and peers

    @property
    def address(self) -> str:
        return self.identity.address

    @property
    def initiation_floor(self) -> int:
        """The last initiation stamp used; persist it and pass it back as the config floor."""
        return self._clock.last

    def add_peer(
        self, record: IdentityRecord, endpoints: Iterable[Addr] = (), *, trusted: bool = True
    ) -> None:
        """Learn a peer from its identity record (verified here) and candidate endpoints."""
        if not record.verify():
            raise LocalProtocolError(f"identity record for {record.address} does not verify")
        if record.address == self.address:
            raise LocalProtocolError("a node cannot add itself as a peer")
        peer = self._peers.get(record.address)
        if peer is None:
            peer = self._new_peer(record.address, record.public_key, record.static_public, trusted)
        else:
            peer.public_key, peer.static_public, peer.trusted = (
                record.public_key,
                record.static_public,
                trusted,
            )
        peer.explicit = True
        peer.cookie_jar = CookieJar(
            record.static_public, self.config.session.cookie_secret_lifetime
        )
        self._derive_probe_key(peer)
        self.set_endpoints(record.address, endpoints)

    def set_endpoints(self, address: str, endpoints: Iterable[Addr]) -> None:
        peer = self._peer(address)
        peer.endpoints = list(dict.fromkeys(endpoints))
        peer.paths.set_candidates(peer.endpoints)

    def set_trust(self, address: str, trusted: bool, now: float) -> None:
        """Trust or untrust a known peer. Untrusting closes its session and drops its queues."""
        peer = self._peer(address)
        peer.trusted = trusted
        if not trusted:
            self._close_session(peer, "untrusted", now, by_peer=False)
            peer.paths.forget()
            self._after_route_change(peer, now)

    def remove_peer(self, address: str, now: float) -> None:
        """Forget a peer entirely: its session (closed quietly), keys and delivery state."""
        peer = self._peers.pop(address, None)
        if peer is None:
            return
        self._unindex_path(peer)
        if peer.probe_key is not None:
            self._peer_by_pair_id.pop(peer.probe_key.pair_id, None)
        for kp in peer.keys.clear():
            self._forget_keypair(kp)
        if peer.handshake is not None:
            self._handshakes_by_index.pop(peer.handshake.sender_index, None)
        self._dirty.discard(peer)
        self._stale.discard(peer)

    def is_trusted(self, address: str) -> bool:
        peer = self._peers.get(address)
        return peer is not None and peer.trusted

    def peers(self) -> list[str]:
        return list(self._peers)

    def peer_path(self, address: str) -> Addr | None:
        """The peer's validated direct address: where authenticated traffic came from
        and, after a move, where a PONG proved it can be reached (DESIGN 7)."""
        return self._peer(address).path

    def peer_at(self, addr: Addr) -> str | None:
        """The peer whose validated direct address `addr` is, if any."""
        peer = self._peer_by_path.get(addr)
        return peer.address if peer is not None else None

    def has_session(self, address: str) -> bool:
        peer = self._peers.get(address)
        return peer is not None and peer.keys.sending is not None

    # ------------------------------------------------------------------ application API

    def connect(self, address: str, now: float) -> None:
        """Start a handshake with the peer unless a usable session exists or one is under way."""
        peer = self._trusted_peer(address)
        if peer.keys.sending is None:
            self._start_handshake(peer, now)

    def send_datagram(self, address: str, data: bytes, now: float) -> None:
        """Unreliable, encrypted: delivered at most once, maybe not at all."""
        self._connection_for_send(address, now).send_datagram(data, now)

    def send_message(
        self,
        address: str,
        data: bytes,
        now: float,
        type: str = "text",
        reply_to: bytes | None = None,
        *,
        message_id: bytes | None = None,
    ) -> bytes:
        """Queue a message for reliable, ordered, exactly-once delivery; returns its id.

        Pass `message_id` to resend a message under the id it already has (an outbox after
        a restart): a receiver that has it answers with a receipt instead of a duplicate.
        """
        return self._connection_for_send(address, now).send_message(
            data, now, type=type, reply_to=reply_to, message_id=message_id
        )

    def confirm_persisted(self, address: str, message_id: bytes, now: float) -> None:
        """The application stored a received message: only now does its receipt go back."""
        self._connection_for_send(address, now).confirm_persisted(message_id, now)

    def listen(self, port: int) -> None:
        self._listening_ports.add(port)

    def open_stream(self, address: str, port: int, now: float) -> int:
        return self._connection_for_send(address, now).open_stream(port, now)

    def send_stream(
        self, address: str, stream_id: int, data: bytes, now: float, end_stream: bool = False
    ) -> None:
        self._connection_for_send(address, now).send_stream(
            stream_id, data, now, end_stream=end_stream
        )

    def reset_stream(self, address: str, stream_id: int, now: float, reason: str = "") -> None:
        self._connection_for_send(address, now).reset_stream(stream_id, now, reason)

    def read_stream(self, address: str, stream_id: int, max_bytes: int = -1) -> bytes:
        """Take received stream data; flow-control credit goes back only as data is read."""
        peer = self._trusted_peer(address)
        data = self._existing_connection(address).read_stream(stream_id, max_bytes)
        # Reading returns flow-control credit and may end the stream: send and tell now.
        self._drain(peer, None)
        self._touch(peer)
        return data

    def stream_send_capacity(self, address: str, stream_id: int) -> int:
        return self._existing_connection(address).stream_send_capacity(stream_id)

    def ping(self, address: str, now: float) -> bytes:
        """Measure the round trip; a `PongReceived` with the rtt follows."""
        return self._connection_for_send(address, now).ping(now)

    def peer_info(self, address: str) -> PeerInfo:
        """What the node knows about a peer's session and path, for status displays."""
        peer = self._peer(address)
        connection = peer.connection
        has_session = peer.keys.sending is not None
        report = peer.paths.report(self._last_now)
        endpoint = report.direct if report.path == "direct" else self._relay_endpoint(peer)
        return PeerInfo(
            address=address,
            trusted=peer.trusted,
            has_session=has_session,
            endpoint=endpoint,
            rtt=connection.smoothed_rtt if connection is not None and has_session else None,
            datagram_size=connection.datagram_size if connection is not None else None,
            handshake_in_progress=peer.handshake is not None,
            path=report.path,
            reason=report.reason,
        )

    # ------------------------------------------------------------------ NAT traversal

    def introduce(
        self,
        address: str,
        candidates: Iterable[Addr],
        now: float,
        *,
        start_delay: float = 0.0,
        probe_limit: int = 32,
        relay: str | None = None,
    ) -> None:
        """Apply a rendezvous introduction (DESIGN 6-7): punch toward `candidates` from
        `now + start_delay` in step with the peer, and use `relay` (the node address of
        the rendezvous that introduced us, a peer with a session) until a direct path is
        proven. Add the peer (`add_peer`) first. Data can be sent at once: it goes
        through the relay until a PONG proves a direct path."""
        peer = self._trusted_peer(address)
        if relay is not None:
            self._peer(relay)  # must be known: the rendezvous session's peer
            self._relays.add(relay)
        peer.paths.set_our_mapping(self.nat_mapping)
        probes = peer.paths.introduce(list(candidates), relay, start_delay, probe_limit, now)
        self._send_probes(peer, probes)
        self._after_route_change(peer, now)
        self._touch(peer)

    def set_local_candidates(self, candidates: Iterable[Addr], now: float) -> None:
        """Our own endpoints (from interface addresses, DESIGN 7). A change means a new
        network: direct paths are retried at once, with the backoff reset."""
        fresh = tuple(dict.fromkeys(candidates))
        if fresh == self._local_candidates:
            return
        self._local_candidates = fresh
        for peer in self._peers.values():
            peer.paths.on_local_change(now)
            self._stale.add(peer)

    @property
    def local_candidates(self) -> tuple[Addr, ...]:
        return self._local_candidates

    def discover_nat(
        self,
        primary: Addr,
        now: float,
        alternate: Addr | None = None,
        config: ClassifierConfig | None = None,
    ) -> None:
        """Classify our NAT against a STUN server from this node's socket (RFC 5780):
        the rendezvous (its second address comes in OTHER-ADDRESS) or any STUN server.
        A `NatDiscovered` event follows; peers are told our mapping in probes.

        Filtering is not tested unless `config` asks: an answer from the alternate
        address arriving first leaves a Linux router an unreplied conntrack entry that
        changes our mapping toward that address (DESIGN 7's trap, seen in the NAT lab),
        so the mapping test would report a symmetric NAT that is not one."""
        if config is None:
            config = ClassifierConfig(test_filtering=False)
        self._nat = NatDiscovery(self._rng, primary, alternate, config)
        self._nat.start(now)
        self._outbox.extend(self._nat.datagrams_to_send(now))

    def _on_stun(self, data: bytes, addr: Addr, now: float) -> None:
        nat = self._nat
        if nat is None or not nat.receive(data, addr, now):
            self.stats["drop_stun_unhandled"] += 1
            return
        self.stats["accepted_stun"] += 1
        self._nat_progress(now)

    def _nat_progress(self, now: float) -> None:
        nat = self._nat
        if nat is None:
            return
        self._outbox.extend(nat.datagrams_to_send(now))
        outcome = nat.outcome(self.address)
        if outcome is not None:
            self._nat = None
            self.nat_mapping = outcome.mapping
            for peer in self._peers.values():
                peer.paths.set_our_mapping(outcome.mapping)
                # Peers reached through a relay learn our mapping from a probe.
                self._send_probes(peer, peer.paths.relay_ping(now))
            self._events.append(outcome)

    def close_peer(self, address: str, now: float, reason: str = "closed") -> None:
        """Close the session gracefully: the peer is told, then the keys are dropped."""
        peer = self._peer(address)
        if peer.keys.sending is not None and peer.trusted:
            self._ensure_connection(peer, now).close(now, reason)
            peer.close_reason = reason
            self._touch(peer)
        else:
            self._close_session(peer, reason, now, by_peer=False)

    def close(self, now: float) -> None:
        for peer in list(self._peers.values()):
            if peer.keys.sending is not None:
                self.close_peer(peer.address, now, "node closing")

    # ------------------------------------------------------------------ sans-IO surface

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """Process one datagram from the network. Never raises: drops are counted."""
        self.stats["datagrams_received"] += 1
        self._last_now = now
        if not data:
            self.stats["drop_empty"] += 1
            return
        kind = data[0]
        try:
            if kind == TRANSPORT:
                self._on_transport(data, addr, now)
            elif kind == HANDSHAKE_INITIATION:
                self._on_initiation(data, addr, now)
            elif kind == HANDSHAKE_RESPONSE:
                self._on_response(data, addr, now)
            elif kind == COOKIE_REPLY:
                self._on_cookie_reply(data, now)
            elif kind == XX_INIT:
                self._on_xx_init(data, addr, now)
            elif kind == XX_RESPONSE:
                self._on_xx_response(data, addr, now)
            elif kind == XX_FINISH:
                self._on_xx_finish(data, addr, now)
            elif kind == PATH_PROBE:
                self._on_probe(data, addr, now, None)
            elif kind == RELAY:
                self._on_relay(data, addr, now)
            elif kind in _STUN_FIRST_BYTES:
                self._on_stun(data, addr, now)
            else:
                self.stats["drop_unknown_type"] += 1
        except Exception:  # a bug must not become a remote kill switch; tests assert zero
            self.stats["internal_error"] += 1

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        dirty, self._dirty = self._dirty, set()
        for peer in dirty:
            try:
                self._flush_peer(peer, now)
            except Exception:  # one peer's bug must not stop every other peer's traffic
                self.stats["internal_error"] += 1
        self._stale.update(dirty)
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        # Bindings ask after every call; only peers touched since then are recomputed.
        if self._stale:
            for peer in self._stale:
                peer.deadline = self._peer_deadline(peer)
            self._stale.clear()
        deadline: float | None = None
        for peer in self._peers.values():
            t = peer.deadline
            if t is not None and (deadline is None or t < deadline):
                deadline = t
        for pending in self._rendezvous.values():
            if deadline is None or pending.retry_at < deadline:
                deadline = pending.retry_at
        if self._nat is not None:
            t = self._nat.get_timer()
            if t is not None and (deadline is None or t < deadline):
                deadline = t
        return deadline

    def _peer_deadline(self, peer: Peer) -> float | None:
        peer.paths.session_up = peer.keys.sending is not None
        deadline = peer.handshake_retry_at
        expiry = peer.keys.next_expiry(self.config.session.reject_after_time)
        if expiry is not None and (deadline is None or expiry < deadline):
            deadline = expiry
        if peer.connection is not None:
            t = peer.connection.get_timer()
            if t is not None and (deadline is None or t < deadline):
                deadline = t
            t = peer.paths.liveness_deadline(peer.connection.silence_start)
            if t is not None and (deadline is None or t < deadline):
                deadline = t
        t = peer.paths.deadline()
        if t is not None and (deadline is None or t < deadline):
            deadline = t
        return deadline

    def _touch(self, peer: Peer) -> None:
        """The peer may have output to send and its timer may have moved."""
        self._dirty.add(peer)
        self._stale.add(peer)

    def handle_timer(self, now: float) -> None:
        self._last_now = now
        self._stale.update(self._peers.values())
        for pending in list(self._rendezvous.values()):
            if now >= pending.retry_at:
                self._retry_rendezvous(pending, now)
        if self._nat is not None:
            timer = self._nat.get_timer()
            if timer is not None and now >= timer:
                self._nat.handle_timer(now)
                self._nat_progress(now)
        for peer in list(self._peers.values()):
            try:
                self._peer_timers(peer, now)
            except Exception:  # as in datagrams_to_send: isolate a bug to its peer
                self.stats["internal_error"] += 1

    def _peer_timers(self, peer: Peer, now: float) -> None:
        session = self.config.session
        for kp in peer.keys.expire(now, session.reject_after_time, session.reject_after_packets):
            self._forget_keypair(kp)
        if self._forget_if_stranger(peer):
            return
        if peer.handshake_retry_at is not None and now >= peer.handshake_retry_at:
            self._retry_handshake(peer, now)
        connection = peer.connection
        if connection is not None:
            timer = connection.get_timer()
            if timer is not None and now >= timer:
                connection.handle_timer(now)
                self._drain(peer, now)
                self._touch(peer)
        self._path_timers(peer, now)

    def _forget_if_stranger(self, peer: Peer) -> bool:
        """A peer we only know because it handshook with us (a public node's client) is
        forgotten once its last key pair expired, or strangers would fill memory. Its
        newest initiation stamp is kept in a bounded table, so old initiations stay
        refused (DESIGN 4)."""
        if peer.explicit or peer.keys.keypairs or peer.handshake is not None:
            return False
        self._stamps_of_forgotten[peer.address] = peer.newest_initiation_ns
        while len(self._stamps_of_forgotten) > self.config.session.max_forgotten_stamps:
            del self._stamps_of_forgotten[next(iter(self._stamps_of_forgotten))]
        self.remove_peer(peer.address, self._last_now)
        self.stats["strangers_forgotten"] += 1
        return True

    def _path_timers(self, peer: Peer, now: float) -> None:
        paths = peer.paths
        paths.session_up = peer.keys.sending is not None
        connection = peer.connection
        if connection is not None and peer.keys.sending is not None:
            paths.rto = connection.rto
        changed = False
        if connection is not None and paths.check_liveness(connection.silence_start, now):
            self.stats["direct_path_failures"] += 1
            changed = True
        deadline = paths.deadline()
        if deadline is not None and now >= deadline:
            moved, probes = paths.handle_timer(now)
            if moved:
                self.stats["direct_path_failures"] += 1
            changed = changed or moved
            self._send_probes(peer, probes)
        if changed:
            self._after_route_change(peer, now)
        elif peer.last_report is not None:
            self._report_path(peer, now)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ receiving

    def _on_transport(
        self, data: bytes, addr: Addr, now: float, relayed_from: str | None = None
    ) -> None:
        if len(data) < TRANSPORT_OVERHEAD:
            self.stats["drop_short_transport"] += 1
            return
        _, index, counter = TRANSPORT_HEADER.unpack_from(data)
        entry = self._keypairs_by_index.get(index)
        if entry is None:
            self.stats["drop_unknown_index"] += 1
            return
        peer, kp = entry
        if relayed_from is not None and relayed_from != peer.address:
            self.stats["drop_relay_mismatch"] += 1
            return
        if not kp.replay.would_accept(counter):
            self.stats["drop_replay"] += 1
            return
        payload = kp.open(data, counter)
        if payload is None:
            self.stats["drop_auth_failed"] += 1
            return
        peer.last_received = now
        if kp.confirmed_at is None:
            peer.keys.confirm(kp, now)
            self._touch(peer)
            self._announce_session(peer, initiator=False)
        # Roaming (DESIGN 7): the newest authenticated packet from a new address draws a
        # challenge there; traffic moves only once the PONG proves the address.
        changed, probes = peer.paths.on_authenticated(
            None if relayed_from is not None else addr,
            len(data),
            counter >= kp.replay.highest,
            now,
        )
        self._send_probes(peer, probes)
        if changed:
            self._after_route_change(peer, now)
        if not payload:
            self.stats["accepted_transport"] += 1
            self.stats["keepalives_received"] += 1
            return
        if not peer.trusted:
            self.stats["drop_untrusted_payload"] += 1
            return
        self.stats["accepted_transport"] += 1
        connection = self._ensure_connection(peer, now)
        connection.receive_payload(payload, now)
        self._drain(peer, now)
        self._touch(peer)

    def _under_load(self, now: float) -> bool:
        recent = self._recent_initiations
        while recent and now - recent[0] > 1.0:
            recent.popleft()
        return len(recent) >= self.config.session.cookie_load_threshold

    def _on_initiation(
        self, data: bytes, addr: Addr, now: float, relayed_from: str | None = None
    ) -> None:
        initiation = decode_initiation(data)
        if initiation is None:
            self.stats["drop_malformed_initiation"] += 1
            return
        if not self._cookies.mac1_valid(data):
            self.stats["drop_bad_mac1"] += 1
            return
        if self._under_load(now) and not self._cookies.mac2_valid(data, addr, now):
            reply = self._cookies.cookie_reply(initiation.sender_index, data, addr, now)
            self._outbox.append(self._reply(reply, addr, relayed_from))
            self.stats["cookie_replies_sent"] += 1
            return
        self._recent_initiations.append(now)
        incoming = read_initiation(
            self.identity, initiation.noise_message, self._bindings, self._rng
        )
        if incoming is None:
            self.stats["drop_bad_initiation"] += 1
            return
        known = self._peers.get(incoming.proof.address)
        newest = (
            known.newest_initiation_ns
            if known is not None
            else self._stamps_of_forgotten.get(incoming.proof.address, -1)
        )
        if incoming.timestamp_ns <= newest:
            # A replayed (or reordered older) initiation: no state, no reply (DESIGN 4).
            self.stats["drop_replayed_initiation"] += 1
            return
        peer = self._accept_peer(incoming.proof)
        if peer is None:
            return
        if relayed_from is not None and relayed_from != peer.address:
            self.stats["drop_relay_mismatch"] += 1
            return
        peer.newest_initiation_ns = incoming.timestamp_ns
        message, keys = write_response(incoming, self.identity, self.instance_id)
        index = self._new_index()
        restarted = self._learn_proof(peer, incoming.proof, now)
        self._install_keypair(peer, index, initiation.sender_index, keys, initiator=False, now=now)
        response = encode_response(index, initiation.sender_index, message)
        self._outbox.append(self._reply(response, addr, relayed_from))
        if peer.paths.on_handshake(None if relayed_from is not None else addr, now, answered=False):
            self._after_route_change(peer, now)
        peer.last_received = now
        self.stats["handshakes_answered"] += 1
        peer.restart_unannounced = peer.restart_unannounced or restarted

    def _on_response(
        self, data: bytes, addr: Addr, now: float, relayed_from: str | None = None
    ) -> None:
        response = decode_response(data)
        if response is None:
            self.stats["drop_malformed_response"] += 1
            return
        pending = self._rendezvous_by_index.get(response.receiver_index)
        if (
            pending is not None
            and isinstance(pending.handshake, OutgoingHandshake)
            and relayed_from is None
        ):
            result = pending.handshake.read_response(response.noise_message, self._bindings)
            if result is None:
                self.stats["drop_bad_response"] += 1
                return
            self.stats["accepted_response"] += 1
            self._rendezvous_established(pending, result[0], result[1], response.sender_index, now)
            return
        peer = self._handshakes_by_index.get(response.receiver_index)
        if peer is None or peer.handshake is None:
            self.stats["drop_unexpected_response"] += 1
            return
        if relayed_from is not None and relayed_from != peer.address:
            self.stats["drop_relay_mismatch"] += 1
            return
        result = peer.handshake.read_response(response.noise_message, self._bindings)
        if result is None:
            self.stats["drop_bad_response"] += 1
            return
        proof, keys = result
        self.stats["accepted_response"] += 1
        del self._handshakes_by_index[response.receiver_index]
        peer.handshake = None
        peer.handshake_retry_at = peer.handshake_deadline = None
        restarted = self._learn_proof(peer, proof, now)
        self._install_keypair(
            peer, response.receiver_index, response.sender_index, keys, initiator=True, now=now
        )
        if peer.paths.on_handshake(None if relayed_from is not None else addr, now, answered=True):
            self._after_route_change(peer, now)
        peer.last_received = now
        # Key confirmation (DESIGN 4): the responder may send only after hearing from us on
        # the new keys, so we always send at least a keepalive.
        peer.keepalive_due = True
        self._touch(peer)
        peer.restart_unannounced = peer.restart_unannounced or restarted
        self._announce_session(peer, initiator=True)

    def _on_cookie_reply(self, data: bytes, now: float) -> None:
        reply = decode_cookie_reply(data)
        peer = self._handshakes_by_index.get(reply.receiver_index) if reply is not None else None
        if reply is None or peer is None or peer.cookie_jar is None:
            self.stats["drop_unexpected_cookie"] += 1
            return
        if not peer.cookie_jar.accept_reply(reply.nonce, reply.sealed_cookie, now):
            self.stats["drop_bad_cookie"] += 1
            return
        self.stats["cookies_received"] += 1
        if not peer.cookie_resent:
            # Answer the cookie at once, once per attempt, instead of waiting for the retry.
            peer.cookie_resent = True
            self._send_initiation(peer, now)

    # ------------------------------------------------------------------ rendezvous sessions

    def connect_rendezvous(
        self, endpoint: Addr, static_key: bytes | None, now: float, give_up: float | None = None
    ) -> None:
        """Open a session with a rendezvous server (DESIGN 6).

        With its static key pinned, Noise IK; without, Noise XX, and the key learned is in
        the `RendezvousConnected` event for the application to pin. Once connected the
        server is an ordinary trusted peer, named by its address. `give_up` (seconds)
        overrides the config's handshake give-up time for this attempt.
        """
        if endpoint in self._rendezvous:
            return
        pending = PendingRendezvous(endpoint, static_key)
        pending.deadline = now + (
            give_up if give_up is not None else self.config.session.handshake_give_up
        )
        if static_key is not None:
            pending.cookie_jar = CookieJar(static_key, self.config.session.cookie_secret_lifetime)
        self._rendezvous[endpoint] = pending
        self._send_rendezvous_initiation(pending, now)

    def _send_rendezvous_initiation(self, pending: PendingRendezvous, now: float) -> None:
        if pending.handshake is not None:
            self._rendezvous_by_index.pop(pending.handshake.sender_index, None)
        index = self._new_index()
        if pending.static_key is None:
            xx = XXInitiator(self.identity, index, self._rng)
            pending.handshake = xx
            packet = encode_xx_init(index, xx.ephemeral)
        else:
            assert pending.cookie_jar is not None
            ik = OutgoingHandshake(
                self.identity,
                remote_static=pending.static_key,
                expected_address=None,
                sender_index=index,
                timestamp_ns=self._clock.next(self._wall_clock()),
                instance_id=self.instance_id,
                rng=self._rng,
            )
            pending.handshake = ik
            body = encode_initiation_body(index, ik.noise_message)
            packet = pending.cookie_jar.add_macs(body, now)
        self._rendezvous_by_index[index] = pending
        self._outbox.append(Transmit(packet, pending.endpoint))
        pending.retry_at = now + self._retry_interval()
        self.stats["rendezvous_initiations_sent"] += 1

    def _retry_rendezvous(self, pending: PendingRendezvous, now: float) -> None:
        if now >= pending.deadline:
            self._drop_rendezvous(pending)
            reason = "the rendezvous did not answer"
            self._events.append(RendezvousFailed("", pending.endpoint, reason))
            return
        self._send_rendezvous_initiation(pending, now)

    def _drop_rendezvous(self, pending: PendingRendezvous) -> None:
        if pending.handshake is not None:
            self._rendezvous_by_index.pop(pending.handshake.sender_index, None)
        self._rendezvous.pop(pending.endpoint, None)

    def _on_xx_response(self, data: bytes, addr: Addr, now: float) -> None:
        response = decode_xx_response(data)
        pending = self._rendezvous_by_index.get(response.receiver_index) if response else None
        if response is None or pending is None or not isinstance(pending.handshake, XXInitiator):
            self.stats["drop_unexpected_xx_response"] += 1
            return
        stamp = self._clock.next(self._wall_clock())
        result = pending.handshake.finish(
            response.noise_message, self._bindings, stamp, self.instance_id
        )
        if result is None:
            self.stats["drop_bad_xx_response"] += 1
            return
        proof, message3, keys = result
        self.stats["accepted_xx_response"] += 1
        self._outbox.append(Transmit(encode_xx_finish(response.sender_index, message3), addr))
        self._rendezvous_established(pending, proof, keys, response.sender_index, now)

    def _rendezvous_established(
        self,
        pending: PendingRendezvous,
        proof: PeerProof,
        keys: TransportKeys,
        remote_index: int,
        now: float,
    ) -> None:
        assert pending.handshake is not None
        local_index = pending.handshake.sender_index
        self._drop_rendezvous(pending)
        peer = self._peers.get(proof.address) or self._new_peer(
            proof.address, proof.public_key, proof.static_public, trusted=True
        )
        peer.trusted = True
        peer.explicit = True
        peer.endpoints = [pending.endpoint]
        lifetime = self.config.session.cookie_secret_lifetime
        peer.cookie_jar = CookieJar(proof.static_public, lifetime)
        restarted = self._learn_proof(peer, proof, now)
        self._install_keypair(peer, local_index, remote_index, keys, initiator=True, now=now)
        peer.paths.set_candidates([pending.endpoint])
        if peer.paths.on_handshake(pending.endpoint, now, answered=True):
            self._after_route_change(peer, now)
        peer.last_received = now
        peer.keepalive_due = True
        peer.restart_unannounced = peer.restart_unannounced or restarted
        peer.announced = True
        self._touch(peer)
        event = RendezvousConnected(peer.address, pending.endpoint, proof.static_public)
        self._events.append(event)

    def _on_xx_init(self, data: bytes, addr: Addr, now: float) -> None:
        init = decode_xx_init(data)
        if init is None:
            self.stats["drop_malformed_xx_init"] += 1
            return
        if not self.config.public:
            # Only a public node (a rendezvous) accepts first contact from unknown keys.
            self.stats["drop_xx_not_public"] += 1
            return
        if self._under_load(now):
            self.stats["drop_xx_under_load"] += 1
            return
        self._recent_initiations.append(now)
        index = self._new_index()
        responder = XXResponder(
            self.identity, local_index=index, remote_index=init.sender_index, now=now, rng=self._rng
        )
        message2 = responder.respond(init.ephemeral, self.identity, self.instance_id)
        if message2 is None:
            self.stats["drop_bad_xx_init"] += 1
            return
        half_open = self._xx_half_open
        while len(half_open) >= self.config.session.max_half_open_handshakes:
            del half_open[next(iter(half_open))]  # the oldest goes first
            self.stats["xx_half_open_evicted"] += 1
        half_open[index] = (responder, addr)
        self._outbox.append(Transmit(encode_xx_response(index, init.sender_index, message2), addr))
        self.stats["xx_answered"] += 1

    def _on_xx_finish(self, data: bytes, addr: Addr, now: float) -> None:
        finish = decode_xx_finish(data)
        entry = self._xx_half_open.get(finish.receiver_index) if finish is not None else None
        if finish is None or entry is None:
            self.stats["drop_unexpected_xx_finish"] += 1
            return
        responder, _ = entry
        if now - responder.created_at > self.config.session.handshake_retry * 2:
            del self._xx_half_open[finish.receiver_index]
            self.stats["drop_stale_xx_finish"] += 1
            return
        result = responder.finish(finish.noise_message, self._bindings)
        if result is None:
            self.stats["drop_bad_xx_finish"] += 1
            return
        del self._xx_half_open[finish.receiver_index]
        proof, keys = result
        peer = self._accept_peer(proof)
        if peer is None:
            return
        self.stats["accepted_xx_finish"] += 1
        restarted = self._learn_proof(peer, proof, now)
        kp = self._install_keypair(
            peer, responder.local_index, responder.remote_index, keys, initiator=False, now=now
        )
        # Message 3 decrypted under the new keys: the client holds them (key confirmation).
        peer.keys.confirm(kp, now)
        if peer.paths.on_handshake(addr, now, answered=False):
            self._after_route_change(peer, now)
        peer.last_received = now
        peer.restart_unannounced = peer.restart_unannounced or restarted
        self._touch(peer)
        self._announce_session(peer, initiator=False)

    def _accept_peer(self, proof: PeerProof) -> Peer | None:
        """The peer an authenticated initiator is, if we answer it at all (DESIGN 8)."""
        if proof.address == self.address:
            self.stats["drop_self_initiation"] += 1
            return None
        peer = self._peers.get(proof.address)
        trusted = peer.trusted if peer is not None else self._policy_trusts(proof.address)
        if not trusted and not self.config.public:
            # Private by default: a stranger gets no answer and learns nothing.
            self.stats["drop_untrusted_initiation"] += 1
            return None
        if peer is None:
            peer = self._new_peer(proof.address, proof.public_key, proof.static_public, trusted)
        return peer

    def _policy_trusts(self, address: str) -> bool:
        return self._trust_policy is not None and self._trust_policy(address)

    def _retry_interval(self) -> float:
        session = self.config.session
        jitter = int.from_bytes(self._rng(2), "big") / 65535 * session.handshake_jitter
        return session.handshake_retry + jitter

    # ------------------------------------------------------------------ handshakes

    def _start_handshake(self, peer: Peer, now: float) -> None:
        if peer.handshake is not None:
            return
        if peer.static_public is None or peer.cookie_jar is None:
            raise UnknownPeer(f"no identity record for {peer.address}; add it with add_peer first")
        if (
            not peer.endpoints
            and peer.path is None
            and not peer.paths.candidates()
            and (peer.paths.relay is None)
        ):
            raise LocalProtocolError(
                f"no endpoint known for {peer.address}; give add_peer its endpoints"
            )
        peer.handshake_deadline = now + self.config.session.handshake_give_up
        self._send_initiation(peer, now)

    def _send_initiation(self, peer: Peer, now: float) -> None:
        assert peer.static_public is not None and peer.cookie_jar is not None
        if peer.handshake is not None:
            self._handshakes_by_index.pop(peer.handshake.sender_index, None)
        index = self._new_index()
        # Each attempt is a fresh initiation with a fresh stamp, so a responder that saw the
        # previous one still accepts it, while a replay of either is refused.
        peer.handshake = OutgoingHandshake(
            self.identity,
            remote_static=peer.static_public,
            expected_address=peer.address,
            sender_index=index,
            timestamp_ns=self._clock.next(self._wall_clock()),
            instance_id=self.instance_id,
            rng=self._rng,
        )
        self._handshakes_by_index[index] = peer
        packet = peer.cookie_jar.add_macs(
            encode_initiation_body(index, peer.handshake.noise_message), now
        )
        for target in peer.paths.handshake_targets(now)[:MAX_INITIATION_TARGETS]:
            if target is None:
                self._send_relayed(peer, packet)
            else:
                self._outbox.append(Transmit(packet, target))
        peer.handshake_retry_at = now + self._retry_interval()
        self._stale.add(peer)
        self.stats["initiations_sent"] += 1

    def _retry_handshake(self, peer: Peer, now: float) -> None:
        if peer.handshake_deadline is not None and now >= peer.handshake_deadline:
            if peer.handshake is not None:
                self._handshakes_by_index.pop(peer.handshake.sender_index, None)
            peer.handshake = None
            peer.handshake_retry_at = peer.handshake_deadline = None
            self.stats["handshakes_failed"] += 1
            self._events.append(HandshakeFailed(peer.address, "no response from the peer"))
            return
        peer.cookie_resent = False
        # A path that stopped answering is forgotten so every known endpoint is tried again.
        peer.paths.on_handshake_retry()
        self._send_initiation(peer, now)

    def _learn_proof(self, peer: Peer, proof: PeerProof, now: float) -> bool:
        """Record what the handshake proved; True when the peer restarted since last time."""
        peer.public_key, peer.static_public = proof.public_key, proof.static_public
        if peer.cookie_jar is None:
            peer.cookie_jar = CookieJar(
                proof.static_public, self.config.session.cookie_secret_lifetime
            )
        restarted = peer.instance_id is not None and peer.instance_id != proof.instance_id
        peer.instance_id = proof.instance_id
        if peer.probe_key is None:
            self._derive_probe_key(peer)
        if restarted:
            # The peer forgot every key pair and all delivery state: start both over,
            # carrying unreceipted messages into the new delivery state.
            for kp in peer.keys.clear():
                self._forget_keypair(kp)
            if peer.connection is not None:
                peer.connection = peer.connection.successor(now)
                self._drain(peer, now)
            self.stats["peer_restarts"] += 1
        return restarted

    def _install_keypair(
        self,
        peer: Peer,
        local_index: int,
        remote_index: int,
        keys: TransportKeys,
        *,
        initiator: bool,
        now: float,
    ) -> Keypair:
        kp = Keypair(
            local_index=local_index,
            remote_index=remote_index,
            send_key=keys.send,
            recv_key=keys.recv,
            initiator=initiator,
            now=now,
            replay_window=8192,
        )
        self._keypairs_by_index[local_index] = (peer, kp)
        self._stale.add(peer)
        if peer.recovering and peer.connection is not None:
            # A fresh session after the peer went silent: resend what is in flight now
            # instead of waiting out the backed-off probe timer.
            peer.recovering = False
            peer.connection.path_changed(now)
            self._touch(peer)
        for old in peer.keys.add(kp):
            self._forget_keypair(old)
        return kp

    def _announce_session(self, peer: Peer, *, initiator: bool) -> None:
        """Tell the application once per session, not on every rekey."""
        if peer.announced and not peer.restart_unannounced:
            return
        self._events.append(HandshakeCompleted(peer.address, initiator, peer.restart_unannounced))
        peer.announced = True
        peer.restart_unannounced = False

    def _forget_keypair(self, kp: Keypair) -> None:
        self._keypairs_by_index.pop(kp.local_index, None)

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

    # ------------------------------------------------------------------ sending

    def _flush_peer(self, peer: Peer, now: float) -> None:
        kp = peer.keys.sending
        path = peer.paths.route()
        relay = self._relay_endpoint(peer) if path is None and peer.paths.via_relay else None
        if kp is None or (path is None and relay is None):
            if (
                peer.connection is not None
                and peer.trusted
                and peer.handshake is None
                and peer.close_reason is None
                and (peer.endpoints or peer.path is not None or peer.paths.relay is not None)
            ):
                # Data is waiting and no session exists (expired or never made): make one.
                self._start_handshake(peer, now)
            return
        self._maybe_rekey(peer, kp, now)
        sent = False
        connection = peer.connection
        if relay is not None:
            # Relayed packets carry our header too: the outer datagram must fit the MTU.
            wrap = encode_relay(peer.address, b"")
            if connection is not None and peer.trusted:
                connection.packet_overhead = TRANSPORT_OVERHEAD + RELAY_OVERHEAD
                for payload in connection.payloads_to_send(now):
                    self._outbox.append(Transmit(wrap + kp.seal(payload), relay))
                    sent = True
                self._drain(peer, now)
            if peer.keepalive_due and not sent:
                self._outbox.append(Transmit(wrap + kp.seal(b""), relay))
                sent = True
        elif path is not None:
            if connection is not None and peer.trusted:
                connection.packet_overhead = TRANSPORT_OVERHEAD
                for payload in connection.payloads_to_send(now):
                    self._outbox.append(Transmit(kp.seal(payload), path))
                    sent = True
                self._drain(peer, now)
            if peer.keepalive_due and not sent:
                self._outbox.append(Transmit(kp.seal(b""), path))
                sent = True
            if sent:
                peer.paths.on_sent(now)
        peer.keepalive_due = False
        if sent:
            peer.last_sent = now
        if peer.close_reason is not None:
            self._close_session(peer, peer.close_reason, now, by_peer=False)

    def _maybe_rekey(self, peer: Peer, kp: Keypair, now: float) -> None:
        """DESIGN 4: rekey after 2^20 packets or 120 s. The initiator of the key pair rekeys
        on time; the other side only after a grace period, so crossing rekeys stay rare."""
        if peer.handshake is not None:
            return
        session = self.config.session
        age = now - kp.created_at
        grace = 0.0 if kp.initiator else 2 * session.handshake_retry
        if (
            kp.send_counter >= session.rekey_after_packets
            or age >= session.rekey_after_time + grace
        ):
            self.stats["rekeys"] += 1
            self._start_handshake(peer, now)

    def _close_session(self, peer: Peer, reason: str, now: float, *, by_peer: bool) -> None:
        had_keys = bool(peer.keys.keypairs)
        for kp in peer.keys.clear():
            self._forget_keypair(kp)
        if peer.handshake is not None:
            self._handshakes_by_index.pop(peer.handshake.sender_index, None)
        peer.handshake = None
        peer.handshake_retry_at = peer.handshake_deadline = None
        peer.close_reason = None
        self._stale.add(peer)
        if peer.connection is not None:
            # Queued traffic is dropped with the session; a later send starts afresh.
            peer.connection = None
        peer.announced = False
        if had_keys:
            self._events.append(SessionClosed(peer.address, reason, by_peer))

    # ------------------------------------------------------------------ paths

    def _on_probe(self, data: bytes, addr: Addr, now: float, relayed_from: str | None) -> None:
        pair_id = pair_id_of(data)
        peer = self._peer_by_pair_id.get(pair_id) if pair_id is not None else None
        if peer is None or peer.probe_key is None:
            self.stats["drop_unknown_probe"] += 1
            return
        if relayed_from is not None and relayed_from != peer.address:
            self.stats["drop_relay_mismatch"] += 1
            return
        probe = peer.probe_key.decode(data)
        if probe is None:
            self.stats["drop_bad_probe"] += 1
            return
        if not peer.trusted:
            self.stats["drop_untrusted_probe"] += 1
            return
        source = None if relayed_from is not None else addr
        if probe.kind == PING:
            answers = peer.paths.on_ping(source, probe.txid, probe.mapping, now)
            if answers is None:
                self.stats["drop_probe_rate_limited"] += 1
                return
            self.stats["accepted_probe"] += 1
            self._send_probes(peer, answers)
            return
        self.stats["accepted_probe"] += 1
        if peer.paths.on_pong(source, probe.txid, probe.mapping, now):
            self._after_route_change(peer, now)
        else:
            self._report_path(peer, now)

    def _on_relay(self, data: bytes, addr: Addr, now: float) -> None:
        decoded = decode_relay(data)
        if decoded is None:
            self.stats["drop_malformed_relay"] += 1
            return
        server = self._peer_by_path.get(addr)
        if server is None or server.address not in self._relays:
            self.stats["drop_relay_unexpected"] += 1
            return
        source, inner = decoded
        kind = inner[0]
        if kind == TRANSPORT:
            self._on_transport(inner, addr, now, source)
        elif kind == HANDSHAKE_INITIATION:
            self._on_initiation(inner, addr, now, source)
        elif kind == HANDSHAKE_RESPONSE:
            self._on_response(inner, addr, now, source)
        elif kind == COOKIE_REPLY:
            self._on_cookie_reply(inner, now)
        elif kind == PATH_PROBE:
            self._on_probe(inner, addr, now, source)
        else:
            self.stats["drop_relay_inner_unknown"] += 1

    def _reply(self, packet: bytes, addr: Addr, relayed_from: str | None) -> Transmit:
        """An answer to what came from `addr`, back the way it came."""
        if relayed_from is None:
            return Transmit(packet, addr)
        return Transmit(encode_relay(relayed_from, packet), addr)

    def _relay_endpoint(self, peer: Peer) -> Addr | None:
        relay = peer.paths.relay
        server = self._peers.get(relay) if relay is not None else None
        return server.path if server is not None else None

    def _send_relayed(self, peer: Peer, packet: bytes) -> None:
        endpoint = self._relay_endpoint(peer)
        if endpoint is None:
            self.stats["relay_unreachable"] += 1
            return
        self._outbox.append(Transmit(encode_relay(peer.address, packet), endpoint))

    def _send_probes(self, peer: Peer, probes: list[ProbeOut]) -> None:
        key = peer.probe_key
        if key is None or not probes:
            return
        for probe in probes:
            packet = key.encode(probe.kind, probe.txid, self.nat_mapping)
            if probe.addr is None:
                self._send_relayed(peer, packet)
            else:
                self._outbox.append(Transmit(packet, probe.addr, probe.ttl))
            self.stats["probes_sent"] += 1

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

    def _unindex_path(self, peer: Peer) -> None:
        old = peer.indexed_path
        if old is not None and self._peer_by_path.get(old) is peer:
            del self._peer_by_path[old]
        peer.indexed_path = None

    def _after_route_change(self, peer: Peer, now: float) -> None:
        """The path manager moved the peer: index it, restart delivery's path state when
        packets now take another way (RFC 9000 section 9.4), tell the application."""
        direct = peer.paths.direct
        if direct != peer.indexed_path:
            self._unindex_path(peer)
            if direct is not None:
                self._peer_by_path[direct] = peer
                peer.indexed_path = direct
        route = (peer.paths.route(), peer.paths.via_relay)
        if route != peer.last_route:
            moved = peer.last_route != (None, False)
            peer.last_route = route
            if moved and peer.connection is not None and peer.keys.sending is not None:
                peer.connection.path_changed(now)
                self.stats["path_switches"] += 1
        self._report_path(peer, now)
        self._touch(peer)

    def _report_path(self, peer: Peer, now: float) -> None:
        report: PathReport = peer.paths.report(now)
        endpoint = report.direct if report.path == "direct" else self._relay_endpoint(peer)
        summary = (report.path, endpoint, report.reason)
        if summary != peer.last_report:
            peer.last_report = summary
            self._events.append(PathChanged(peer.address, report.path, endpoint, report.reason))

    # ------------------------------------------------------------------ helpers

    def _drain(self, peer: Peer, now: float | None) -> None:
        """Move the connection's events to ours. `now` is None only from `read_stream`,
        which cannot make a peer unresponsive or closed."""
        connection = peer.connection
        if connection is None:
            return
        while (event := connection.next_event()) is not None:
            self._events.append(event)
            if isinstance(event, PeerUnresponsive):
                self.stats["peer_unresponsive"] += 1
                peer.recovering = True
                if peer.handshake is None and peer.trusted and now is not None:
                    self._start_handshake(peer, now)
            elif isinstance(event, ConnectionClosed) and event.by_peer and now is not None:
                self._close_session(peer, event.reason, now, by_peer=True)
                return

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

    def _ensure_connection(self, peer: Peer, now: float) -> Connection:
        if peer.connection is None:
            peer.connection = Connection(
                peer.address,
                self.config.delivery,
                rng=self._rng,
                now=now,
                listening_ports=self._listening_ports,
            )
        return peer.connection

    def _existing_connection(self, address: str) -> Connection:
        connection = self._trusted_peer(address).connection
        if connection is None:
            raise LocalProtocolError(f"no delivery state with {address}: nothing was exchanged yet")
        return connection

    def _connection_for_send(self, address: str, now: float) -> Connection:
        peer = self._trusted_peer(address)
        connection = self._ensure_connection(peer, now)
        self._touch(peer)
        if peer.keys.sending is None and peer.handshake is None:
            self._start_handshake(peer, now)
        return connection
