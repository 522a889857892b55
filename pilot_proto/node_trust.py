"""The Node's trust gate (DESIGN 2 and 8): sessions with peers it does not trust.

A public node completes handshakes with strangers, and a node asking a public peer for
trust makes a session with it before either trusts the other. Such a session carries trust
frames (TRUST_REQUEST / ACCEPT / REJECT, reliably) and the session's own housekeeping
(ACKs, PINGs, CLOSE), and nothing else that reaches the application: the peer's messages,
streams and datagrams are refused (its sender fails fast with `not_trusted`), counted in
`stats`, and leave no state beyond small bounds. This is the slow path: payloads from
trusted peers never come here.
"""

from __future__ import annotations

from .delivery.frames import (
    MAX_JUSTIFICATION_BYTES,
    MESSAGE_ID_SIZE,
    TRUST_FRAMES,
    Datagram,
    FrameDecodeError,
    Message,
    Stream,
    TrustAccept,
    TrustReject,
    TrustRequest,
    decode_payload,
)
from .errors import LocalProtocolError
from .peer import Peer
from .rendezvous_sessions import RendezvousSessions

#: node.stats counters of what an untrusted peer's payloads carried, by frame kind.
_UNTRUSTED_COUNTERS = {
    Message: "untrusted_message_frames",
    Stream: "untrusted_stream_frames",
    Datagram: "untrusted_datagram_frames",
}


class NodeTrust(RendezvousSessions):
    """Trust frames in and out, and the refusal of everything else from untrusted peers."""

    # ------------------------------------------------------------------ application API

    def send_trust_request(
        self, address: str, request_id: bytes, justification: str, now: float
    ) -> None:
        """Ask the peer, inside a session, to trust us (TRUST_REQUEST; it answers with a
        `TrustAccepted` or `TrustRejected` event naming `request_id`). The peer need not
        trust us, nor we it: the session is made if needed (the peer must accept it, as a
        public node does)."""
        if len(justification.encode("utf-8")) > MAX_JUSTIFICATION_BYTES:
            raise LocalProtocolError(
                f"a justification is at most {MAX_JUSTIFICATION_BYTES} bytes of UTF-8"
            )
        self._queue_trust_frame(address, TrustRequest(_request_id(request_id), justification), now)

    def answer_trust(self, address: str, request_id: bytes, accept: bool, now: float) -> None:
        """Answer the peer's TRUST_REQUEST `request_id` (TRUST_ACCEPT or TRUST_REJECT).
        Accepting does not trust the peer: call `set_trust` first, so that its first
        message after our accept is delivered, not refused."""
        frame = TrustAccept if accept else TrustReject
        self._queue_trust_frame(address, frame(_request_id(request_id)), now)

    def peer_public_key(self, address: str) -> bytes | None:
        """The peer's Ed25519 key as its handshake proved it (or its record said)."""
        return self._peer(address).public_key

    def _queue_trust_frame(
        self, address: str, frame: TrustRequest | TrustAccept | TrustReject, now: float
    ) -> None:
        peer = self._peer(address)
        if not peer.trusted and peer.connection is None and not self._room_for_untrusted(peer):
            raise LocalProtocolError(
                f"{self.config.max_untrusted_connections} untrusted peers hold sessions "
                "already; try again when some have ended"
            )
        connection = self._ensure_connection(peer, now)
        connection.send_trust_frame(frame)
        self._touch(peer)
        if peer.keys.sending is None and peer.handshake is None:
            self._start_handshake(peer, now)
        self.stats["trust_frames_sent"] += 1

    # ------------------------------------------------------------------ receiving

    def _on_untrusted_payload(self, peer: Peer, payload: bytes, now: float) -> None:
        """An authenticated payload from a peer we do not trust."""
        stats = self.stats
        try:
            number, frames = decode_payload(payload)
        except FrameDecodeError:
            stats["drop_untrusted_garbage"] += 1
            return
        if peer.connection is None and not self._room_for_untrusted(peer):
            stats["drop_untrusted_over_limit"] += 1
            return
        stats["accepted_transport"] += 1
        for frame in frames:
            kind = type(frame)
            counter = _UNTRUSTED_COUNTERS.get(kind)
            if counter is not None:
                stats[counter] += 1
            elif kind in TRUST_FRAMES:
                stats["trust_frames_received"] += 1
        self._ensure_connection(peer, now).receive_untrusted(payload, number, frames, now)
        self._drain(peer, now)
        # A stranger that closed its session is forgotten now: no timer of it is left
        # to do it later, and a public node's memory must not fill with strangers.
        if not self._forget_if_stranger(peer):
            self._touch(peer)

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
        self._forget_peer(peer)
        self.stats["strangers_forgotten"] += 1
        return True

    def _room_for_untrusted(self, peer: Peer) -> bool:
        """Whether `peer` (untrusted, without delivery state) may get some. Peers that
        left, became trusted or lost their state are counted out lazily, when full."""
        held = self._untrusted_connections
        if len(held) >= self.config.max_untrusted_connections:
            peers = self._peers
            held -= {
                p for p in held
                if p.trusted or p.connection is None or peers.get(p.address) is not p
            }
            if len(held) >= self.config.max_untrusted_connections:
                return False
        held.add(peer)
        return True


def _request_id(request_id: bytes) -> bytes:
    if not isinstance(request_id, bytes) or len(request_id) != MESSAGE_ID_SIZE:
        raise LocalProtocolError("a trust request id is 16 bytes")
    return request_id
