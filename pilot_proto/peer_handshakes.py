"""The Node's IK handshakes with peers (DESIGN 4): initiation, response, cookies under
load, retries, rekeying, and installing or closing the session they produce."""

from __future__ import annotations

from .cookie import CookieJar
from .delivery import ConnectionClosed, PeerUnresponsive
from .errors import LocalProtocolError, UnknownPeer
from .events import HandshakeCompleted, HandshakeFailed, SessionClosed
from .handshake import OutgoingHandshake, PeerProof, TransportKeys, read_initiation, write_response
from .keypair import Keypair
from .node_paths import NodePaths
from .packets import (
    HandshakeResponse,
    decode_cookie_reply,
    decode_initiation,
    encode_initiation_body,
    encode_response,
)
from .peer import Peer
from .transmit import Addr, Transmit

#: Initiations go to at most this many candidate endpoints of a peer at once.
MAX_INITIATION_TARGETS = 8


class PeerHandshakes(NodePaths):
    """Handshakes toward peers and the sessions they install."""

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

    def _on_peer_response(
        self, response: HandshakeResponse, addr: Addr, now: float, relayed_from: str | None
    ) -> None:
        """A well-formed IK response that answers no rendezvous (rendezvous_sessions
        decodes it and looks there first)."""
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

    def _drain(self, peer: Peer, now: float | None) -> None:
        """Move the connection's events to ours. `now` is None only from `read_stream`,
        which cannot make a peer unresponsive or closed."""
        connection = peer.connection
        if connection is None:
            return
        events = connection.events
        while events:
            event = events.popleft()
            self._events.append(event)
            if isinstance(event, PeerUnresponsive):
                self.stats["peer_unresponsive"] += 1
                peer.recovering = True
                if peer.handshake is None and peer.trusted and now is not None:
                    self._start_handshake(peer, now)
            elif isinstance(event, ConnectionClosed) and event.by_peer and now is not None:
                self._close_session(peer, event.reason, now, by_peer=True)
                return
