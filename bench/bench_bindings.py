"""Our three bindings over loopback, two processes, against the baselines of the same run.

Per binding (asyncio on uvloop when installed, gevent, threads):

- `bindings.<b>.message_rtt.200B`: a 200-byte request message and its reply, measured at
  the requester (`send_message` until the RECEIPT, then `receive` of the reply), median.
  Against the raw UDP echo of the same loop style (target: at most 2x, 2.5x for threads),
  and as `.vs_redis` / `.vs_aioquic` against Redis Streams request/reply and the aioquic
  one-stream echo (target: below each).
- `bindings.<b>.stream_goodput.pmtu`: a 200 MiB stream transfer (bounded by time) with
  the datagram size the transport's path MTU search finds on loopback; against raw UDP
  one-way throughput at that datagram size (target: at least 500 MiB/s) and, as
  `.vs_aioquic`, aioquic's one-stream throughput with its largest workable datagrams.
- `bindings.<b>.stream_goodput.1200B`: the same with `forced_datagram_size=1200`; against
  raw UDP one way at 1200 bytes (target: at least 30 MiB/s) and, as `.vs_aioquic`,
  aioquic's one-stream throughput at 1200 bytes (target: at least twice it).

The workers are `bench.workers.pilot_peer`; see `bench_baselines` for the baselines.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable

from .bench_baselines import (
    ECHO_SIZE,
    LOOPBACK_MAX_DATAGRAM,
    MIB,
    MU,
    STYLES,
    WORKER_SLACK,
    plan,
    quic_echo_baseline,
    quic_size_for,
    quic_throughput_baseline,
    redis_baseline,
    result_number,
    udp_echo_baseline,
    udp_oneway_baseline,
)
from .framework import Baseline, BenchContext, BenchSkipped, Result
from .workers.parent import Worker

__all__ = ["BINDINGS", "RTT_FACTOR", "figure_names", "run"]

BINDINGS = STYLES
#: Issue 4: the message round trip may cost at most this many raw UDP echoes.
RTT_FACTOR = {"asyncio": 2.0, "gevent": 2.0, "threads": 2.5}
GOODPUT_AT_PMTU = 500.0  # MiB/s
GOODPUT_AT_1200 = 30.0  # MiB/s
FORCED_SIZE = 1200
_PACKAGES = {"asyncio": "pilot_asyncio", "gevent": "pilot_gevent", "threads": "pilot_threads"}


def figure_names(binding: str, *, redis: bool = True) -> list[str]:
    """Every figure this module promises for one binding (the Redis one needs redis-server)."""
    rtt = f"bindings.{binding}.message_rtt.{ECHO_SIZE}B"
    pmtu = f"bindings.{binding}.stream_goodput.pmtu"
    forced = f"bindings.{binding}.stream_goodput.{FORCED_SIZE}B"
    names = [rtt, f"{rtt}.vs_aioquic", pmtu, f"{pmtu}.vs_aioquic", forced, f"{forced}.vs_aioquic"]
    if redis:
        names.insert(1, f"{rtt}.vs_redis")
    return names


def _seeds() -> tuple[str, str]:
    return os.urandom(32).hex(), os.urandom(32).hex()


def measure_rtt(ctx: BenchContext, binding: str) -> float:
    """Median request/reply exchange in microseconds between two nodes of `binding`."""
    p = plan(ctx)
    responder_seed, requester_seed = _seeds()
    common = ("--binding", binding, "--lifetime", str(p.lifetime))
    with Worker(
        "pilot_peer", "responder", *common, "--seed", responder_seed,
        "--peer-seed", requester_seed, "--mode", "echo",
    ) as responder:  # fmt: skip
        port = responder.ready_port()
        with Worker(
            "pilot_peer", "rtt", *common, "--seed", requester_seed,
            "--peer-seed", responder_seed, "--port", str(port), "--size", str(ECHO_SIZE),
            "--seconds", str(p.seconds), "--max-count", str(p.max_round_trips),
        ) as requester:  # fmt: skip
            result = requester.result(p.seconds + WORKER_SLACK)
    # Where the time goes, for the reader of the run: the requester's CPU per exchange and
    # its datagrams each way (the raw echo it is compared with sends one each way).
    print(
        f"[bindings] {binding} message round trip: requester CPU "
        f"{result.get('cpu_us', 0.0):.0f} us, datagrams per exchange sent "
        f"{result.get('datagrams_sent_per_trip', 0.0):.2f} / received "
        f"{result.get('datagrams_received_per_trip', 0.0):.2f}",
        file=sys.stderr,
    )
    return result_number(result, "median_us")


def measure_goodput(ctx: BenchContext, binding: str, forced: int | None) -> tuple[float, int]:
    """MiB/s of one stream transfer, and the datagram size the session used."""
    p = plan(ctx)
    responder_seed, sender_seed = _seeds()
    common = ["--binding", binding, "--lifetime", str(p.lifetime)]
    if forced is not None:
        common += ["--datagram-size", str(forced)]
    with Worker(
        "pilot_peer", "responder", *common, "--seed", responder_seed,
        "--peer-seed", sender_seed, "--mode", "sink",
    ) as responder:  # fmt: skip
        port = responder.ready_port()
        with Worker(
            "pilot_peer", "bulk", *common, "--seed", sender_seed, "--peer-seed", responder_seed,
            "--port", str(port), "--bytes", str(p.bulk_bytes), "--seconds", str(p.bulk_seconds),
        ) as sender:  # fmt: skip
            result = sender.result(p.bulk_seconds + WORKER_SLACK)
    size = result.get("datagram_size")
    used = int(size) if isinstance(size, int) else (forced or LOOPBACK_MAX_DATAGRAM)
    return result_number(result, "bytes_per_second") / MIB, used


def _compare(
    name: str,
    value: float,
    unit: str,
    better: str,
    baseline: Baseline,
    target: str | None = None,
    met: Callable[[float, float], bool] | None = None,
) -> Result:
    """A figure against one baseline; `met(value, baseline_value)` decides the target."""
    return Result(
        name=name,
        value=value,
        unit=unit,
        better="lower" if better == "lower" else "higher",
        layout="two processes",
        baseline=baseline,
        target=target,
        target_met=None if met is None else bool(met(value, baseline.value)),
    )


def _rtt_results(ctx: BenchContext, binding: str) -> list[Result]:
    name = figure_names(binding)[0]
    value = measure_rtt(ctx, binding)
    factor = RTT_FACTOR[binding]
    echo = udp_echo_baseline(ctx, binding)
    results = [
        _compare(
            name, value, MU, "lower", echo,
            f"<= {factor:g}x raw UDP echo ({echo.name})", lambda v, b: v <= factor * b,
        ),
    ]  # fmt: skip
    try:
        redis = redis_baseline(ctx)
    except BenchSkipped as skip:
        print(f"[bindings] {name}.vs_redis skipped: {skip}", file=sys.stderr)
    else:
        results.append(
            _compare(
                f"{name}.vs_redis", value, MU, "lower", redis,
                "below Redis Streams request/reply", lambda v, b: v < b,
            )
        )  # fmt: skip
    results.append(
        _compare(
            f"{name}.vs_aioquic", value, MU, "lower", quic_echo_baseline(ctx),
            "below the aioquic one-stream echo", lambda v, b: v < b,
        )
    )  # fmt: skip
    return results


def _goodput_results(ctx: BenchContext, binding: str) -> list[Result]:
    _, _, pmtu, pmtu_quic, forced, forced_quic = figure_names(binding, redis=False)
    value, size = measure_goodput(ctx, binding, None)
    forced_value, _ = measure_goodput(ctx, binding, FORCED_SIZE)
    return [
        _compare(
            pmtu, value, "MiB/s", "higher", udp_oneway_baseline(ctx, size),
            f">= {GOODPUT_AT_PMTU:g} MiB/s (path MTU found: {size} B)",
            lambda v, b: v >= GOODPUT_AT_PMTU,
        ),
        _compare(
            pmtu_quic, value, "MiB/s", "higher",
            quic_throughput_baseline(ctx, quic_size_for(size)),
        ),
        _compare(
            forced, forced_value, "MiB/s", "higher", udp_oneway_baseline(ctx, FORCED_SIZE),
            f">= {GOODPUT_AT_1200:g} MiB/s", lambda v, b: v >= GOODPUT_AT_1200,
        ),
        _compare(
            forced_quic, forced_value, "MiB/s", "higher",
            quic_throughput_baseline(ctx, FORCED_SIZE),
            ">= 2x aioquic", lambda v, b: v >= 2 * b,
        ),
    ]  # fmt: skip


def run(ctx: BenchContext) -> list[Result]:
    missing = [b for b in BINDINGS if importlib.util.find_spec(_PACKAGES[b]) is None]
    if missing:
        raise BenchSkipped(f"bindings not importable: {', '.join(missing)}")
    results: list[Result] = []
    for binding in BINDINGS:
        results.extend(_rtt_results(ctx, binding))
    for binding in BINDINGS:
        results.extend(_goodput_results(ctx, binding))
    return results
