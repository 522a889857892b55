"""The rendezvous server's relay rules (DESIGN 6): introduced pairs only, rate limits
per node and per source IP. The framing is in `pilot_proto.relay`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..transmit import Addr
from .rate_limit import RateLimiter

__all__ = ["RelayConfig", "RelayPairs"]


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """The server's relay limits. Bytes per second are of relayed datagrams; each datagram
    also costs `packet_cost` bytes, so floods of tiny datagrams are bounded too."""

    #: An introduced pair may relay for this long after its last introduction.
    pair_lifetime: float = 3600.0
    node_bytes_per_second: float = 32 * 1024 * 1024
    node_burst_bytes: int = 8 * 1024 * 1024
    ip_bytes_per_second: float = 64 * 1024 * 1024
    ip_burst_bytes: int = 16 * 1024 * 1024
    packet_cost: int = 64
    #: Largest relayed datagram accepted (the largest UDP payload over IPv4).
    max_datagram: int = 65507
    #: Pairs remembered at once; the oldest are forgotten first.
    max_pairs: int = 100_000


class RelayPairs:
    """Which pairs may relay (introduced recently), and the rate limits, sans-IO."""

    def __init__(self, config: RelayConfig | None = None) -> None:
        self.config = config or RelayConfig()
        cfg = self.config
        self._pairs: dict[frozenset[str], float] = {}
        self._per_node = RateLimiter(cfg.node_bytes_per_second, cfg.node_burst_bytes)
        self._per_ip = RateLimiter(cfg.ip_bytes_per_second, cfg.ip_burst_bytes)
        self.stats: Counter[str] = Counter()

    def allow_pair(self, a: str, b: str, now: float) -> None:
        key = frozenset((a, b))
        self._pairs.pop(key, None)
        while len(self._pairs) >= self.config.max_pairs:
            del self._pairs[next(iter(self._pairs))]
        self._pairs[key] = now + self.config.pair_lifetime

    def forget_node(self, address: str) -> None:
        for key in [k for k in self._pairs if address in k]:
            del self._pairs[key]

    def check(self, sender: str, target: str, source: Addr, size: int, now: float) -> str | None:
        """None if the datagram may go; else the name of the counter that drops it."""
        if size > self.config.max_datagram:
            return "relay_drop_too_large"
        expiry = self._pairs.get(frozenset((sender, target)))
        if expiry is None or sender == target:
            return "relay_drop_not_introduced"
        if now >= expiry:
            del self._pairs[frozenset((sender, target))]
            return "relay_drop_not_introduced"
        cost = size + self.config.packet_cost
        if not self._per_ip.allow(source[0], now, cost):
            return "relay_drop_ip_rate"
        if not self._per_node.allow(sender, now, cost):
            return "relay_drop_node_rate"
        return None

    def sweep(self, now: float) -> None:
        for key in [k for k, expiry in self._pairs.items() if expiry <= now]:
            del self._pairs[key]
        self._per_node.prune(now)
        self._per_ip.prune(now)
