"""The many-idle-peers figure: what it promises (a figure, its same-run baseline, a target)."""

from __future__ import annotations

from bench.bench_peers import TARGET_RATIO, Hub, run
from bench.framework import BenchContext


def test_quick_run_gives_the_figure_with_its_no_idle_baseline() -> None:
    (result,) = run(BenchContext(quick=True, seconds=0.01))
    assert result.name == "peers.exchange.100_idle"
    assert result.baseline is not None and result.baseline.name == "peers.exchange.0_idle"
    assert result.unit == result.baseline.unit == "µs"
    assert result.value > 0 and result.baseline.value > 0
    assert result.target == f"ratio <= {TARGET_RATIO:g}"
    assert result.ratio is not None
    assert result.target_met == (result.ratio <= TARGET_RATIO)


def test_the_hub_keeps_every_idle_session_while_exchanging() -> None:
    hub = Hub(20)
    hub.exchanges(20)
    peers = hub.hub.peers()
    assert len(peers) == 21
    assert all(hub.hub.has_session(address) for address in peers)
