"""Events the Node hands the application (session layer).

Frozen, slotted dataclasses without behaviour. Every event names the peer it concerns by
its address string. Layers above the session (reliable delivery) define their own events
in their own module, subclassing `Event`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .transmit import Addr


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event `Node.next_event()` returns."""

    address: str


@dataclass(frozen=True, slots=True)
class HandshakeCompleted(Event):
    """A session with the peer is ready: keys exist and are confirmed for sending.

    `peer_restarted` is true when the peer's instance changed since the last session: it
    lost its session state, so streams with it were reset and unreceipted messages resent.
    """

    initiator: bool
    peer_restarted: bool


@dataclass(frozen=True, slots=True)
class HandshakeFailed(Event):
    """No handshake with the peer completed in time; queued data stays queued."""

    reason: str


@dataclass(frozen=True, slots=True)
class SessionClosed(Event):
    """The session keys with the peer were dropped (closed locally, by the peer, or untrusted)."""

    reason: str
    by_peer: bool


@dataclass(frozen=True, slots=True)
class TrustRequested(Event):
    """The peer asked, inside a session, to be trusted (a TRUST_REQUEST frame, DESIGN 8).
    Answer with `Node.answer_trust(address, request_id, ...)`; until then the peer's
    messages, streams and datagrams stay refused. Resent frames may repeat the event."""

    request_id: bytes
    justification: str


@dataclass(frozen=True, slots=True)
class TrustAccepted(Event):
    """The peer accepted our trust request `request_id` (TRUST_ACCEPT). The application
    decides whether to trust it back (`Node.set_trust`)."""

    request_id: bytes


@dataclass(frozen=True, slots=True)
class TrustRejected(Event):
    """The peer rejected our trust request `request_id` (TRUST_REJECT)."""

    request_id: bytes


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A snapshot of one peer for status displays (`Node.peer_info`); not an event."""

    address: str
    trusted: bool
    has_session: bool
    endpoint: Addr | None
    rtt: float | None
    datagram_size: int | None
    handshake_in_progress: bool
    #: DESIGN 7 (contract): "direct", "relay" or "none"; `endpoint` is where packets go
    #: (the peer's address on a direct path, the relay's on the relay).
    path: str = "none"
    #: When not direct: one of `paths.REASONS` (symmetric-nat, peer-filtered,
    #: punch-timeout, no-candidates, probing, relay-only); None on a direct path.
    reason: str | None = None
    #: The retransmission timeout (seconds) the path manager's liveness rule last used,
    #: its unit for "no ACK within 2 RTOs" (DESIGN 7): the connection's, taken at each
    #: timer, so right after a move to the relay it is the one that decided the move (the
    #: connection's own restarts on the new path). None without a session.
    rto: float | None = None


@dataclass(frozen=True, slots=True)
class PathChanged(Event):
    """The path toward a peer changed: `path` is "direct", "relay" or "none" (DESIGN 7),
    `endpoint` where packets now go, `reason` why it is not direct (None when it is)."""

    path: str
    endpoint: Addr | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class NatDiscovered(Event):
    """`Node.discover_nat` finished (`address` is our own). `mapping` and `filtering` are
    RFC 4787 behaviours ("endpoint-independent", "address-dependent",
    "address-and-port-dependent" or "unknown"); `reflexive` our addresses as the STUN
    server saw them; `nat_type` the one-word summary `pilotctl info` shows."""

    nat_type: str
    mapping: str
    filtering: str
    reflexive: tuple[Addr, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RendezvousConnected(Event):
    """A session with the rendezvous at `endpoint` is up; `address` is the server's.

    `static_key` is the server's X25519 static key: after a first contact without a pinned
    key (Noise XX), the application pins it so later sessions use IK (DESIGN 6).
    """

    endpoint: Addr
    static_key: bytes


@dataclass(frozen=True, slots=True)
class RendezvousFailed(Event):
    """No session with the rendezvous at `endpoint` could be made (`address` is empty)."""

    endpoint: Addr
    reason: str
