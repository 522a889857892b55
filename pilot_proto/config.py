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
    #: A passive keepalive goes out when we received data but sent nothing for this long.
    keepalive_after: float = 10.0


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything a Node can be tuned with; every field has a sensible default."""

    session: SessionConfig = field(default_factory=SessionConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    #: A public node completes handshakes with peers it does not trust (they still get no
    #: application events, only trust frames). Private nodes stay silent to strangers.
    public: bool = False
    #: Stamps below this floor are never used for initiations (the daemon persists
    #: `Node.initiation_floor` so a reboot with a clock set back cannot lock peers out).
    initiation_floor_ns: int = 0
