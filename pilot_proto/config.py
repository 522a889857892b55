"""Configuration of a Node: every timer and limit in one frozen value.

Defaults follow DESIGN section 4 (rekey after 2^20 packets or 120 s, keys refused after
2^23 packets or 180 s). Tests shorten timers by building their own `NodeConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .delivery import DeliveryConfig


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Session-layer timers and limits (DESIGN section 4)."""

    rekey_after_packets: int = 1 << 20
    reject_after_packets: int = 1 << 23
    rekey_after_time: float = 120.0
    reject_after_time: float = 180.0
    #: Initiation retransmission interval, plus up to `handshake_jitter` of random delay.
    handshake_retry: float = 5.0
    handshake_jitter: float = 0.3
    #: Give up a handshake attempt (and report `HandshakeFailed`) after this long.
    handshake_give_up: float = 90.0
    #: Key pairs kept per peer for receiving, so a rekey or crossing handshakes lose nothing.
    max_keypairs_per_peer: int = 4
    #: Initiations processed per second above which the responder demands cookies (mac2).
    cookie_load_threshold: int = 100
    #: Cookie secrets rotate this often; a cookie is valid for one rotation.
    cookie_secret_lifetime: float = 120.0
    #: IK keeps no responder state between messages; XX (rendezvous first contact) does,
    #: for at most this many clients at once (the oldest is evicted).
    max_half_open_handshakes: int = 1024
    #: Strangers are forgotten when their keys expire; this many of their newest initiation
    #: stamps are remembered so their old initiations stay refused.
    max_forgotten_stamps: int = 65536
    #: A passive keepalive goes out when we received data but sent nothing for this long.
    keepalive_after: float = 10.0


@dataclass(frozen=True, slots=True)
class PathConfig:
    """Paths and NAT traversal (DESIGN 7): every timer here is a config value so tests
    and the NAT lab can shorten them. Seconds unless said otherwise."""

    #: A PING goes out on an idle direct path this often, below NAT mapping timeouts
    #: (RFC 4787 REQ-5: at least 2 minutes, but real routers use 30 s). None: never.
    keepalive_interval: float | None = 20.0
    #: Synchronized punching: the first rounds of probes are this far apart, doubling up
    #: to `punch_interval_max`; both sides run the same schedule from the agreed start.
    punch_interval: float = 0.1
    punch_interval_max: float = 1.0
    #: With a relay, direct punches wait until the peer is heard through it (so its
    #: openers went out first), but no longer than this after the agreed start.
    punch_wait: float = 2.0
    #: `probing` gives way to a final reason this long after the introduction.
    reason_deadline: float = 15.0
    #: TTL of the opener sent to each candidate when an introduction arrives: enough to
    #: leave our own NAT, too little to reach the peer's (DESIGN 7). None: no opener.
    opener_ttl: int | None = 2
    #: A direct path whose data (or keepalive PING) gets no ACK or PONG for this many
    #: RTOs is left for the relay at once.
    liveness_rtos: float = 2.0
    #: ... but never less than this: on a sub-millisecond LAN 2 RTOs is shorter than a
    #: busy host's scheduling delay, and a spurious move costs a round of probes.
    liveness_floor: float = 0.2
    #: Direct retries after a failure: the first after `direct_retry_min`, doubling up
    #: to `direct_retry_max`; a local address change resets the backoff.
    direct_retry_min: float = 1.0
    direct_retry_max: float = 60.0
    #: A challenge to a new address is resent this often, this many times in all.
    challenge_interval: float = 0.5
    challenge_attempts: int = 3
    #: Until a new address answers a challenge we send it at most this many times the
    #: bytes it sent us (DESIGN 6 and RFC 9000 section 8.1: no amplification).
    unvalidated_amplification: int = 3
    #: PONGs (and triggered PINGs) a peer can draw per second, past which probes are dropped.
    probe_answers_per_second: float = 50.0
    #: Never try direct paths: the relay only, reported as `relay-only`.
    relay_only: bool = False
    #: Direct candidates kept per peer.
    max_candidates: int = 16


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything a Node can be tuned with; every field has a sensible default."""

    session: SessionConfig = field(default_factory=SessionConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    paths: PathConfig = field(default_factory=PathConfig)
    #: A public node completes handshakes with peers it does not trust (they still get no
    #: application events, only trust frames). Private nodes stay silent to strangers.
    public: bool = False
    #: Peers we do not trust that may hold delivery state (about 10 KB each) at once, for
    #: trust frames and refusals; what further ones send is dropped (counted) until
    #: some of those sessions end.
    max_untrusted_connections: int = 1024
    #: Stamps below this floor are never used for initiations (the daemon persists
    #: `Node.initiation_floor` so a reboot with a clock set back cannot lock peers out).
    initiation_floor_ns: int = 0
