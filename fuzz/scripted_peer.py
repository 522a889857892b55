"""A peer assembled from the core's public handshake and key pieces, not from a Node.

Fuzzing and flood tests need to put *chosen* plaintext inside packets a Node will
authenticate: random bytes never get past AES-GCM, so without real keys the delivery layer
is out of reach. `ScriptedPeer` runs the IK handshake toward a Node exactly as a Node would
(initiation with mac1, the Node's response, a keepalive for key confirmation) and keeps the
resulting `Keypair`, so `seal(payload)` yields a transport packet the Node accepts.
"""

from __future__ import annotations

from collections.abc import Callable

from pilot_proto.cookie import CookieJar
from pilot_proto.delivery import Connection, DeliveryConfig
from pilot_proto.events import Event
from pilot_proto.handshake import OutgoingHandshake
from pilot_proto.identity import BindingCache, Identity
from pilot_proto.keypair import Keypair
from pilot_proto.node import Node
from pilot_proto.packets import (
    COOKIE_REPLY,
    HANDSHAKE_RESPONSE,
    MAC_SIZE,
    TRANSPORT_HEADER,
    TRANSPORT_OVERHEAD,
    decode_cookie_reply,
    decode_response,
    encode_initiation_body,
)
from pilot_proto.records import IdentityRecord
from pilot_proto.transmit import Addr, Transmit

__all__ = ["HandshakeRefused", "ScriptedPeer"]

#: Stamps start here (nanoseconds, TAI64N-like); each initiation uses a larger one.
_FIRST_STAMP_NS = 1_700_000_000 * 10**9


class HandshakeRefused(Exception):
    """The Node did not answer our initiation with a response that verifies."""


class ScriptedPeer:
    """An IK initiator toward one Node, holding the transport keys it agreed on."""

    def __init__(self, identity: Identity, addr: Addr, rng: Callable[[int], bytes]) -> None:
        self.identity = identity
        self.addr = addr
        self._rng = rng
        self._stamp_ns = _FIRST_STAMP_NS
        self.instance_id = rng(8)
        self.keypair: Keypair | None = None
        self._bindings = BindingCache()
        #: Everything the Node sent us that the handshake did not consume.
        self.inbox: list[bytes] = []
        #: Our side of reliable delivery, once `attach_connection` made one.
        self.connection: Connection | None = None

    @property
    def address(self) -> str:
        return self.identity.address

    def record(self) -> IdentityRecord:
        return IdentityRecord.create(self.identity, hostname=None, sequence=1, expires_at=2**40)

    def initiation(self, node: Node, now: float) -> tuple[bytes, OutgoingHandshake, CookieJar]:
        """A fresh, genuine initiation toward `node` (with mac1, no mac2)."""
        self._stamp_ns += 1_000_000
        index = int.from_bytes(self._rng(4), "big")
        handshake = OutgoingHandshake(
            self.identity,
            remote_static=node.identity.static_public,
            expected_address=node.address,
            sender_index=index,
            timestamp_ns=self._stamp_ns,
            instance_id=self.instance_id,
            rng=self._rng,
        )
        jar = CookieJar(node.identity.static_public, node.config.session.cookie_secret_lifetime)
        body = encode_initiation_body(index, handshake.noise_message)
        return jar.add_macs(body, now), handshake, jar

    def handshake(self, node: Node, now: float) -> Keypair:
        """Complete a handshake with `node` (answering one cookie reply if it is under load)
        and confirm the keys; the new key pair is also kept in `self.keypair`."""
        packet, handshake, jar = self.initiation(node, now)
        for _attempt in range(2):
            node.receive_datagram(packet, self.addr, now)
            answer = self._answer(node.datagrams_to_send(now))
            if answer is None:
                break
            if answer[0] == COOKIE_REPLY:
                reply = decode_cookie_reply(answer)
                if reply is None or not jar.accept_reply(reply.nonce, reply.sealed_cookie, now):
                    break
                packet = jar.add_macs(packet[: -2 * MAC_SIZE], now)
                continue
            response = decode_response(answer)
            if response is None or response.receiver_index != handshake.sender_index:
                break
            result = handshake.read_response(response.noise_message, self._bindings)
            if result is None:
                break
            _proof, keys = result
            keypair = Keypair(
                local_index=handshake.sender_index,
                remote_index=response.sender_index,
                send_key=keys.send,
                recv_key=keys.recv,
                initiator=True,
                now=now,
                replay_window=8192,
            )
            # Key confirmation (DESIGN 4): the responder sends only once it hears from us.
            node.receive_datagram(keypair.seal(b""), self.addr, now)
            self.keypair = keypair
            return keypair
        raise HandshakeRefused(f"{node.address} did not complete a handshake with us")

    def _answer(self, transmits: list[Transmit]) -> bytes | None:
        answer: bytes | None = None
        for transmit in transmits:
            if transmit.addr != self.addr:
                continue
            if answer is None and transmit.data[:1] in (
                bytes((HANDSHAKE_RESPONSE,)),
                bytes((COOKIE_REPLY,)),
            ):
                answer = transmit.data
            else:
                self.inbox.append(transmit.data)
        return answer

    def seal(self, payload: bytes) -> bytes:
        """A transport packet carrying `payload` under the current key pair."""
        if self.keypair is None:
            raise RuntimeError("no key pair yet: call handshake() first")
        return self.keypair.seal(payload)

    def open(self, packet: bytes) -> bytes | None:
        """The plaintext of a transport packet the Node sent us, or None."""
        if self.keypair is None or len(packet) < TRANSPORT_OVERHEAD:
            return None
        _, _, counter = TRANSPORT_HEADER.unpack_from(packet)
        if not self.keypair.replay.would_accept(counter):
            return None
        return self.keypair.open(packet, counter)

    # ------------------------------------------------------------------ reliable delivery

    def attach_connection(self, node: Node, now: float, config: DeliveryConfig | None = None
                          ) -> Connection:
        """Our own delivery state toward `node`, as a Node would keep it: then messages
        and streams work both ways through `exchange`."""
        self.connection = Connection(
            node.address, config or DeliveryConfig(), rng=self._rng, now=now,
            listening_ports=set(),
        )
        return self.connection

    def exchange(
        self,
        node: Node,
        now: float,
        on_node_input: Callable[[float], None] | None = None,
        rounds: int = 16,
    ) -> list[Event]:
        """Carry packets both ways between our Connection and `node` until both are quiet
        (at most `rounds` round trips, all at `now`); returns our Connection's events.
        `on_node_input(now)` runs after each datagram the node receives, for the
        application on top of it (a rendezvous server, say) to take its events."""
        connection = self.connection
        if connection is None:
            raise RuntimeError("no connection: call attach_connection() first")
        events: list[Event] = []
        for _ in range(rounds):
            moved = False
            for payload in connection.payloads_to_send(now):
                node.receive_datagram(self.seal(payload), self.addr, now)
                if on_node_input is not None:
                    on_node_input(now)
                moved = True
            for transmit in node.datagrams_to_send(now):
                if transmit.addr != self.addr:
                    continue
                plaintext = self.open(transmit.data)
                if plaintext:
                    connection.receive_payload(plaintext, now)
                    moved = True
            while (event := connection.next_event()) is not None:
                events.append(event)
            if not moved:
                break
        return events
