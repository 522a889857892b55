"""The Node's sessions with rendezvous servers (DESIGN 6): Noise XX toward an unknown
key or IK toward a pinned one, and the server side of XX for a public node."""

from __future__ import annotations

from .cookie import CookieJar
from .events import RendezvousConnected, RendezvousFailed
from .handshake import OutgoingHandshake, PeerProof, TransportKeys
from .handshake_xx import XXInitiator, XXResponder
from .packets import (
    decode_response,
    decode_xx_finish,
    decode_xx_init,
    decode_xx_response,
    encode_initiation_body,
    encode_xx_finish,
    encode_xx_init,
    encode_xx_response,
)
from .peer import PendingRendezvous
from .peer_handshakes import PeerHandshakes
from .transmit import Addr, Transmit


class RendezvousSessions(PeerHandshakes):
    """Connecting to a rendezvous (either pattern) and answering XX as one."""

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

    def _on_response(
        self, data: bytes, addr: Addr, now: float, relayed_from: str | None = None
    ) -> None:
        """An IK response: from a rendezvous pinned by its key (never relayed), or from
        a peer (peer_handshakes)."""
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
        self._on_peer_response(response, addr, now, relayed_from)

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
