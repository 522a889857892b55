"""Cost of the simulator's pump: datagrams per second between two trivial endpoints.

Protocol benchmarks run inside this pump, so its overhead bounds what they can show.
"""

from __future__ import annotations

from pilot_proto.simulator import LinkConditions, Network
from pilot_proto.transmit import Addr, Transmit

from .framework import BenchContext, Result, timeit_rate

__all__ = ["pump_rate", "run"]

_LEFT: Addr = ("198.51.100.1", 1)
_RIGHT: Addr = ("198.51.100.2", 1)


class _Bouncer:
    """Sends each datagram back to its sender while `budget` lasts (forever if None)."""

    def __init__(self, budget: int | None) -> None:
        self.budget = budget
        self.outbox: list[Transmit] = []

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        if self.budget is None:
            self.outbox.append(Transmit(data, addr))
        elif self.budget > 0:
            self.budget -= 1
            self.outbox.append(Transmit(data, addr))

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        out, self.outbox = self.outbox, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


def pump_rate(
    seconds: float,
    conditions: LinkConditions | None = None,
    *,
    window: int = 32,
    round_trips: int = 1000,
    size: int = 1200,
) -> float:
    """Datagrams delivered per wall-clock second, `window` of them in flight at a time."""
    net = Network(capture_limit=0)
    if conditions is not None:
        net.set_default_link(conditions)
    initiator = _Bouncer(budget=0)
    net.add_host(initiator, _LEFT)
    net.add_host(_Bouncer(budget=None), _RIGHT)
    payload = bytes(size)
    delivered_per_batch: list[int] = []

    def batch() -> None:
        before = net.stats.delivered
        initiator.budget = round_trips - window
        initiator.outbox = [Transmit(payload, _RIGHT)] * window
        net.run_idle(3600.0)
        delivered_per_batch.append(net.stats.delivered - before)

    calls_per_second = timeit_rate(batch, seconds)
    # Lossy links deliver fewer than 2 * round_trips per batch; count what really arrived.
    return calls_per_second * sum(delivered_per_batch) / len(delivered_per_batch)


def run(ctx: BenchContext) -> list[Result]:
    round_trips = 100 if ctx.quick else 1000
    clean = pump_rate(ctx.seconds, round_trips=round_trips)
    impaired = pump_rate(
        ctx.seconds,
        LinkConditions(loss=0.01, delay=0.02, jitter=0.005),
        round_trips=round_trips,
    )
    return [
        Result(
            name="sim.pump.clean_link",
            value=clean,
            unit="datagrams/s",
            better="higher",
            layout="one process",
        ),
        Result(
            name="sim.pump.impaired_link",
            value=impaired,
            unit="datagrams/s",
            better="higher",
            layout="one process",
        ),
    ]
