"""Token buckets keyed by node or IP: the server's rate limits (DESIGN 6)."""

from __future__ import annotations

__all__ = ["RateLimiter"]


class RateLimiter:
    """One token bucket per key: `burst` tokens, refilled at `rate` per second.

    Idle buckets are full again after burst / rate seconds and then carry no state, so
    `prune` can drop them and memory stays bounded by the keys active recently."""

    __slots__ = ("_buckets", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, now: float, cost: float = 1.0) -> bool:
        tokens, stamp = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - stamp) * self.rate)
        if tokens < cost:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - cost, now)
        return True

    def prune(self, now: float) -> None:
        refill = self.burst / self.rate if self.rate > 0 else float("inf")
        for key, (_, stamp) in list(self._buckets.items()):
            if now - stamp >= refill:
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
