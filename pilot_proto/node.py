"""The Node: one identity, one UDP socket's worth of protocol, no I/O of its own.

DESIGN section 2. A binding feeds datagrams in with `receive_datagram`, sends what
`datagrams_to_send` returns, arms one timer at `get_timer()` and hands `next_event()` to
the application. Everything a peer sends us is checked here before anything else sees it:
nothing raises on remote input, every drop is counted in `stats` by reason.

This module holds the public API, dispatch, sending and timers; the Node is composed of
`node_state` (shared state), `node_paths` (NAT, probes, relay), `peer_handshakes` (IK
with peers), `rendezvous_sessions` (XX or pinned IK toward a rendezvous) and `node_trust`
(trust frames, and refusing what untrusted peers send).
"""

from __future__ import annotations

from collections.abc import Iterable
from heapq import heapify, heappop, heappush, heapreplace

from .cookie import CookieJar
from .delivery import Connection
from .errors import LocalProtocolError
from .events import Event, PeerInfo
from .node_trust import NodeTrust
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
)
from .peer import Peer
from .probe import PATH_PROBE
from .records import IdentityRecord
from .relay import RELAY, RELAY_OVERHEAD, decode_relay, encode_relay
from .transmit import Addr, Transmit

_STUN_FIRST_BYTES = frozenset(range(4))
_unpack_transport_header = TRANSPORT_HEADER.unpack_from


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


class Node(NodeTrust):
    """A peer-to-peer node: handshakes, sessions and delivery toward any number of peers."""

    # ------------------------------------------------------------------ identity and peers

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
        self._stale.add(peer)

    def set_trust(self, address: str, trusted: bool, now: float) -> None:
        """Trust or untrust a known peer. Untrusting closes its session and drops its queues."""
        peer = self._peer(address)
        peer.trusted = trusted
        self._stale.add(peer)
        if not trusted:
            self._close_session(peer, "untrusted", now, by_peer=False)
            peer.paths.forget()
            self._after_route_change(peer, now)

    def remove_peer(self, address: str, now: float) -> None:
        """Forget a peer entirely: its session (closed quietly), keys and delivery state."""
        peer = self._peers.get(address)
        if peer is not None:
            self._forget_peer(peer)

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
        """Start a handshake with the peer unless a usable session exists or one is under way.
        An untrusted peer may be connected to (for trust frames); nothing else is sent to it."""
        peer = self._peer(address)
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
        connection = self._existing_connection(address)
        data = connection.read_stream(stream_id, max_bytes)
        # Reading returns flow-control credit and may end the stream: send and tell now.
        # A read moves no timer, so the peer's deadline stays valid.
        peer = self._peers[address]
        if connection.events:
            self._drain(peer, None)
        if connection.has_output:
            self._dirty.add(peer)
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
            rto=peer.paths.rto if has_session else None,
        )

    # ------------------------------------------------------------------ closing

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
        dirty = self._dirty
        if dirty:
            self._dirty = set()
            for peer in dirty:
                try:
                    self._flush_peer(peer, now)
                except Exception:  # one peer's bug must not stop every other peer's traffic
                    self.stats["internal_error"] += 1
            self._stale.update(dirty)
        elif not self._outbox:
            return []  # the common case in a busy binding loop: nothing to do
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        # Bindings ask after every call; only peers touched since then are recomputed, and
        # a heap keeps every peer's deadline, so the cost per packet does not grow with
        # the number of idle peers.
        stale = self._stale
        heap = self._deadlines
        if stale:
            reject_after = self.config.session.reject_after_time
            for peer in stale:
                # The peer's earliest deadline, inline (the binding asks after every poll).
                paths = peer.paths
                keys = peer.keys
                paths.session_up = keys.sending is not None
                deadline = peer.handshake_retry_at
                if keys.oldest_created_at is not None:
                    expiry = keys.oldest_created_at + reject_after
                    if deadline is None or expiry < deadline:
                        deadline = expiry
                elif not peer.explicit and peer.handshake is None:
                    # A stranger without keys is forgotten by the next timer: make it due.
                    deadline = self._last_now
                connection = peer.connection
                if connection is not None:
                    t = connection.get_timer()
                    if t is not None and (deadline is None or t < deadline):
                        deadline = t
                    if paths.relay is not None:  # no liveness deadline without a relay
                        if keys.sending is not None:
                            # As _path_timers does: the deadline is in RTOs of the
                            # session, which only a visit used to refresh.
                            paths.rto = connection.rto
                        t = paths.liveness_deadline(connection.silence_start)
                        if t is not None and (deadline is None or t < deadline):
                            deadline = t
                t = paths.deadline()
                if t is not None and (deadline is None or t < deadline):
                    deadline = t
                if deadline != peer.deadline:
                    peer.deadline = deadline
                    if deadline is None:
                        peer.deadline_seq = -1
                    else:
                        seq = peer.deadline_seq = next(self._deadline_seqs)
                        if heap and heap[0][2] is peer:
                            # The busy peer is usually the earliest: replace its entry
                            # in place, so superseded ones do not pile up and deepen
                            # the heap.
                            heapreplace(heap, (deadline, seq, peer))
                        else:
                            heappush(heap, (deadline, seq, peer))
                            if len(heap) > 2 * len(self._peers) + 64:
                                # Superseded entries that never reached the top: drop
                                # them all at once (amortised O(1) per push).
                                heap = self._deadlines = [
                                    e for e in heap if e[1] == e[2].deadline_seq
                                ]
                                heapify(heap)
            stale.clear()
        deadline = None
        while heap:
            entry = heap[0]
            if entry[1] == entry[2].deadline_seq:
                deadline = entry[0]
                break
            heappop(heap)
        if self._rendezvous:
            for pending in self._rendezvous.values():
                if deadline is None or pending.retry_at < deadline:
                    deadline = pending.retry_at
        if self._nat is not None:
            t = self._nat.get_timer()
            if t is not None and (deadline is None or t < deadline):
                deadline = t
        return deadline

    def handle_timer(self, now: float) -> None:
        self._last_now = now
        for pending in list(self._rendezvous.values()):
            if now >= pending.retry_at:
                self._retry_rendezvous(pending, now)
        if self._nat is not None:
            timer = self._nat.get_timer()
            if timer is not None and now >= timer:
                self._nat.handle_timer(now)
                self._nat_progress(now)
        # Only peers with a deadline due are visited; the others' timers are later.
        heap = self._deadlines
        due: list[Peer] = []
        while heap and heap[0][0] <= now:
            _, seq, peer = heappop(heap)
            if seq == peer.deadline_seq and self._peers.get(peer.address) is peer:
                peer.deadline, peer.deadline_seq = None, -1
                due.append(peer)
        stale = self._stale
        for peer in due:
            stale.add(peer)  # its deadline is recomputed by the next get_timer
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

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ receiving

    def _on_transport(
        self, data: bytes, addr: Addr, now: float, relayed_from: str | None = None
    ) -> None:
        size = len(data)
        if size < TRANSPORT_OVERHEAD:
            self.stats["drop_short_transport"] += 1
            return
        _, index, counter = _unpack_transport_header(data)
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
        self._stale.add(peer)  # path state below may move the peer's deadline
        if kp.confirmed_at is None:
            peer.keys.confirm(kp, now)
            self._touch(peer)
            self._announce_session(peer, initiator=False)
        # Roaming (DESIGN 7): the newest authenticated packet from a new address draws a
        # challenge there; traffic moves only once the PONG proves the address.
        changed, probes = peer.paths.on_authenticated(
            None if relayed_from is not None else addr,
            size,
            counter >= kp.replay.highest,
            now,
        )
        if probes:
            self._send_probes(peer, probes)
        if changed:
            self._after_route_change(peer, now)
        if not payload:
            self.stats["accepted_transport"] += 1
            self.stats["keepalives_received"] += 1
            return
        if not peer.trusted:
            self._on_untrusted_payload(peer, payload, now)  # node_trust: the slow path
            return
        self.stats["accepted_transport"] += 1
        connection = peer.connection
        if connection is None:
            connection = self._ensure_connection(peer, now)
        connection.receive_payload(payload, now)
        if connection.events:
            self._drain(peer, now)
        self._dirty.add(peer)  # the stale half of _touch is above

    # ------------------------------------------------------------------ sending

    def _flush_peer(self, peer: Peer, now: float) -> None:
        kp = peer.keys.sending
        paths = peer.paths
        path = paths.route()
        relay = None
        if path is None and paths.via_relay:
            relay = self._relay_endpoint(peer)
        if kp is None or (path is None and relay is None):
            if (
                peer.connection is not None
                and (peer.trusted or peer.explicit)
                and peer.handshake is None
                and peer.close_reason is None
                and (peer.endpoints or peer.path is not None or paths.relay is not None)
            ):
                # Data is waiting and no session exists (expired or never made): make one.
                self._start_handshake(peer, now)
            return
        if peer.handshake is None:  # during a handshake _maybe_rekey has nothing to do
            self._maybe_rekey(peer, kp, now)
        sent = False
        connection = peer.connection
        if relay is not None:
            # Relayed packets carry our header too: the outer datagram must fit the MTU.
            wrap = encode_relay(peer.address, b"")
            if connection is not None:
                connection.packet_overhead = TRANSPORT_OVERHEAD + RELAY_OVERHEAD
                for payload in connection.payloads_to_send(now):
                    self._outbox.append(Transmit(wrap + kp.seal(payload), relay))
                    sent = True
                self._drain(peer, now)
            if peer.keepalive_due and not sent:
                self._outbox.append(Transmit(wrap + kp.seal(b""), relay))
                sent = True
        elif path is not None:
            if connection is not None:
                connection.packet_overhead = TRANSPORT_OVERHEAD
                payloads = connection.payloads_to_send(now)
                if payloads:
                    append, seal = self._outbox.append, kp.seal
                    for payload in payloads:
                        append(Transmit(seal(payload), path))
                    sent = True
                if connection.events:
                    self._drain(peer, now)
            if peer.keepalive_due and not sent:
                self._outbox.append(Transmit(kp.seal(b""), path))
                sent = True
            if sent:
                paths.on_sent(now)
        peer.keepalive_due = False
        if sent:
            peer.last_sent = now
        if peer.close_reason is not None:
            self._close_session(peer, peer.close_reason, now, by_peer=False)

    # ------------------------------------------------------------------ relayed datagrams

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

    # ------------------------------------------------------------------ helpers

    def _existing_connection(self, address: str) -> Connection:
        peer = self._peers.get(address)
        if peer is not None and peer.trusted and peer.connection is not None:
            return peer.connection  # the common case, in one lookup
        connection = self._trusted_peer(address).connection  # raises what is wrong
        if connection is None:
            raise LocalProtocolError(f"no delivery state with {address}: nothing was exchanged yet")
        return connection

    def _connection_for_send(self, address: str, now: float) -> Connection:
        # Every message, receipt and reply comes through here: the common case (a trusted
        # peer with delivery state) in plain lookups, without a call per step.
        peer = self._peers.get(address)
        if peer is None or not peer.trusted:
            peer = self._trusted_peer(address)  # raises what is wrong
        connection = peer.connection
        if connection is None:
            connection = self._ensure_connection(peer, now)
        self._dirty.add(peer)  # _touch, inlined
        self._stale.add(peer)
        if peer.keys.sending is None and peer.handshake is None:
            self._start_handshake(peer, now)
        return connection
