"""Transport key pairs and the per-peer key ring (DESIGN section 4).

A `Keypair` is what one completed handshake leaves: one AES-256-GCM key per direction,
our index (the peer puts it in every packet to us), the peer's index, a send counter and
a replay window. A `KeyRing` keeps a few of them per peer so that a rekey or two
handshakes crossing in flight lose nothing: the peer may keep sending on an older key
pair for a round trip after we moved on.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .packets import TRANSPORT, TRANSPORT_HEADER, TRANSPORT_HEADER_SIZE
from .replay import ReplayWindow

_pack_header = TRANSPORT_HEADER.pack
# The AEAD nonce: four zero bytes and the packet's 64-bit counter (the header's last 8
# bytes), packed in one call rather than sliced out of the header and concatenated.
_pack_nonce = struct.Struct(">4xQ").pack


class Keypair:
    """One direction pair of transport keys; seals and opens transport packets."""

    __slots__ = (
        "_recv",
        "_send",
        "confirmed_at",
        "created_at",
        "initiator",
        "local_index",
        "received",
        "remote_index",
        "replay",
        "send_counter",
    )

    def __init__(
        self,
        *,
        local_index: int,
        remote_index: int,
        send_key: bytes,
        recv_key: bytes,
        initiator: bool,
        now: float,
        replay_window: int,
    ) -> None:
        self.local_index = local_index
        self.remote_index = remote_index
        self._send = AESGCM(send_key)
        self._recv = AESGCM(recv_key)
        self.initiator = initiator
        self.created_at = now
        # Key confirmation (DESIGN 4): the initiator knows the responder holds the keys once
        # the response authenticates; the responder only once a transport packet arrives.
        self.confirmed_at: float | None = now if initiator else None
        self.send_counter = 0
        self.received = 0
        self.replay = ReplayWindow(replay_window)

    def seal(self, payload: bytes) -> bytes:
        counter = self.send_counter
        self.send_counter = counter + 1
        header = _pack_header(TRANSPORT, self.remote_index, counter)
        return header + self._send.encrypt(_pack_nonce(counter), payload, header)

    def open(self, packet: bytes, counter: int) -> bytes | None:
        """Authenticate and decrypt; the caller already checked the replay window."""
        try:
            payload = self._recv.decrypt(
                _pack_nonce(counter),
                packet[TRANSPORT_HEADER_SIZE:],
                packet[:TRANSPORT_HEADER_SIZE],
            )
        except InvalidTag:
            return None
        self.replay.mark(counter)
        self.received += 1
        return payload


class KeyRing:
    """The key pairs of one peer, newest confirmed one used for sending."""

    __slots__ = ("_max", "keypairs", "oldest_created_at", "sending")

    def __init__(self, max_keypairs: int) -> None:
        self._max = max_keypairs
        self.keypairs: list[Keypair] = []
        self.sending: Keypair | None = None
        #: The earliest `created_at` of `keypairs` (None when empty): the Node reads it for
        #: every timer update, the list changes only on add, expire and clear.
        self.oldest_created_at: float | None = None

    def _keypairs_changed(self) -> None:
        keypairs = self.keypairs
        oldest = keypairs[0].created_at if keypairs else None
        for kp in keypairs:
            if oldest is None or kp.created_at < oldest:
                oldest = kp.created_at
        self.oldest_created_at = oldest

    def add(self, keypair: Keypair) -> list[Keypair]:
        """Add a new key pair; returns the ones evicted (oldest first) so their indexes free."""
        self.keypairs.append(keypair)
        if keypair.confirmed_at is not None:
            self.sending = keypair
        evicted: list[Keypair] = []
        while len(self.keypairs) > self._max:
            old = self.keypairs.pop(0)
            evicted.append(old)
            if self.sending is old:
                self.sending = self._newest_confirmed()
        self._keypairs_changed()
        return evicted

    def confirm(self, keypair: Keypair, now: float) -> None:
        """The peer used a key pair we answered: it is now the freshest confirmed one."""
        keypair.confirmed_at = now
        self.sending = keypair

    def expire(
        self, now: float, reject_after_time: float, reject_after_packets: int
    ) -> list[Keypair]:
        """Drop key pairs too old or too used to be accepted (DESIGN 4); returns them."""
        keep: list[Keypair] = []
        dropped: list[Keypair] = []
        for kp in self.keypairs:
            too_old = now - kp.created_at >= reject_after_time
            too_used = (
                kp.send_counter >= reject_after_packets or kp.replay.highest >= reject_after_packets
            )
            (dropped if too_old or too_used else keep).append(kp)
        if dropped:
            self.keypairs = keep
            if self.sending in dropped:
                self.sending = self._newest_confirmed()
            self._keypairs_changed()
        return dropped

    def clear(self) -> list[Keypair]:
        dropped, self.keypairs, self.sending = self.keypairs, [], None
        self.oldest_created_at = None
        return dropped

    def newest(self) -> Keypair | None:
        return self.keypairs[-1] if self.keypairs else None

    def _newest_confirmed(self) -> Keypair | None:
        confirmed = [kp for kp in self.keypairs if kp.confirmed_at is not None]
        return max(confirmed, key=lambda kp: kp.confirmed_at or 0.0) if confirmed else None
