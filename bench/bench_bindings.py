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
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass

from .bench_baselines import (
    ECHO_SIZE,
    LOOPBACK_MAX_DATAGRAM,
    MIB,
    MU,
    STYLES,
    WORKER_SLACK,
    measure_udp_oneway,
    plan,
    quic_echo_baseline,
    quic_size_for,
    quic_throughput_baseline,
    redis_baseline,
    result_number,
    udp_echo_baseline,
    udp_oneway_baseline,
    udp_oneway_name,
)
from .framework import Baseline, BenchContext, BenchSkipped, Result
from .workers.parent import Worker, pinning, two_cpus

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
    names = [
        rtt, f"{rtt}.vs_aioquic", f"{rtt}.busy_poll_off",
        pmtu, f"{pmtu}.vs_aioquic", forced, f"{forced}.vs_aioquic",
    ]  # fmt: skip
    if redis:
        names.insert(1, f"{rtt}.vs_redis")
    return names


def _seeds() -> tuple[str, str]:
    return os.urandom(32).hex(), os.urandom(32).hex()


def measure_rtt(ctx: BenchContext, binding: str, busy_poll_us: float | None = None) -> float:
    """Median request/reply exchange in microseconds between two nodes of `binding`
    (with the bindings' default busy polling, or both nodes given `busy_poll_us`)."""
    p = plan(ctx)
    responder_seed, requester_seed = _seeds()
    common: tuple[str, ...] = ("--binding", binding, "--lifetime", str(p.lifetime))
    if busy_poll_us is not None:
        common += ("--busy-poll-us", str(busy_poll_us))
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
        f"[bindings] {binding} message round trip"
        f"{'' if busy_poll_us is None else f' (busy_poll {busy_poll_us:g} us)'}: requester CPU "
        f"{result.get('cpu_us', 0.0):.0f} us, datagrams per exchange sent "
        f"{result.get('datagrams_sent_per_trip', 0.0):.2f} / received "
        f"{result.get('datagrams_received_per_trip', 0.0):.2f}",
        file=sys.stderr,
    )
    return result_number(result, "median_us")


def measure_goodput(ctx: BenchContext, binding: str, forced: int | None) -> tuple[float, int]:
    """MiB/s of one stream transfer, and the datagram size the session used; receiver
    and sender on two different CPUs when the machine has two."""
    p = plan(ctx)
    responder_seed, sender_seed = _seeds()
    common = ["--binding", binding, "--lifetime", str(p.lifetime)]
    if forced is not None:
        common += ["--datagram-size", str(forced)]
    receiver_cpu, sender_cpu = two_cpus() or (None, None)
    with Worker(
        "pilot_peer", "responder", *common, "--seed", responder_seed,
        "--peer-seed", sender_seed, "--mode", "sink", cpu=receiver_cpu,
    ) as responder:  # fmt: skip
        port = responder.ready_port()
        with Worker(
            "pilot_peer", "bulk", *common, "--seed", sender_seed, "--peer-seed", responder_seed,
            "--port", str(port), "--bytes", str(p.bulk_bytes), "--seconds", str(p.bulk_seconds),
            cpu=sender_cpu,
        ) as sender:  # fmt: skip
            result = sender.result(p.bulk_seconds + WORKER_SLACK)
    print(
        f"[bindings] {binding} goodput run ({forced or 'path MTU'}): sender CPU "
        f"{result.get('cpu_seconds', 0.0):.3f} s for {result.get('bytes', 0)} bytes "
        f"in {result.get('seconds', 0.0):.3f} s, lost packets {result.get('lost_packets', 0)}",
        file=sys.stderr,
    )
    size = result.get("datagram_size")
    used = int(size) if isinstance(size, int) else (forced or LOOPBACK_MAX_DATAGRAM)
    return result_number(result, "bytes_per_second") / MIB, used


@dataclass(frozen=True, slots=True)
class GoodputRuns:
    """Every run of one goodput figure for the three bindings, and of its raw UDP baseline,
    measured turn by turn so that a machine busier for a while weighs on all alike."""

    runs: dict[str, tuple[float, ...]]  # MiB/s per binding, run by run
    sizes: dict[str, int]  # the datagram size each binding's session used (its first run)
    baseline: Baseline  # raw UDP one way at the size the transfers used
    method: str  # how it was measured, for results.json


def measure_goodput_runs(ctx: BenchContext, forced: int | None) -> GoodputRuns:
    """Run after run: each binding's transfer (in an order that rotates, so none always
    goes first), then one run of raw UDP one way at the datagram size they used."""
    p = plan(ctx)
    count = p.goodput_runs if forced is None else p.forced_runs
    runs: dict[str, list[float]] = {binding: [] for binding in BINDINGS}
    sizes: dict[str, int] = {}
    oneway: list[float] = []
    size = forced
    for turn in range(count):
        for binding in BINDINGS[turn % len(BINDINGS) :] + BINDINGS[: turn % len(BINDINGS)]:
            value, used = measure_goodput(ctx, binding, forced)
            runs[binding].append(value)
            sizes.setdefault(binding, used)
            size = size or used
        assert size is not None
        oneway.append(measure_udp_oneway(ctx, size))
    assert size is not None
    ctx.record_samples(udp_oneway_name(size), oneway)
    method = (
        f"median of {count} runs, each binding's transfer and the raw UDP baseline "
        f"taking turns run by run; {pinning()}"
    )
    return GoodputRuns(
        {b: tuple(v) for b, v in runs.items()}, sizes, udp_oneway_baseline(ctx, size), method
    )


def _compare(
    name: str,
    value: float,
    unit: str,
    better: str,
    baseline: Baseline,
    target: str | None = None,
    met: Callable[[float, float], bool] | None = None,
    *,
    samples: tuple[float, ...] = (),
    method: str | None = None,
) -> Result:
    """A figure against one baseline; `met(value, baseline_value)` decides the target.
    With `samples` (several runs), the figure is their median."""
    if samples:
        value = statistics.median(samples)
    return Result(
        name=name,
        value=value,
        unit=unit,
        better="lower" if better == "lower" else "higher",
        layout="two processes",
        baseline=baseline,
        target=target,
        target_met=None if met is None else bool(met(value, baseline.value)),
        samples=samples,
        method=method,
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
    # For the reader: the same exchange with busy polling off (both nodes sleep as soon
    # as they have sent, as the raw echo does), what the default's spinning is worth.
    results.append(
        _compare(f"{name}.busy_poll_off", measure_rtt(ctx, binding, 0.0), MU, "lower", echo)
    )
    return results


def _oneway_result(baseline: Baseline, method: str) -> Result:
    """The raw UDP baseline as a figure of its own (its runs were taken with ours)."""
    return Result(
        name=baseline.name, value=baseline.value, unit=baseline.unit, better="higher",
        layout="two processes", samples=baseline.samples, method=method,
    )  # fmt: skip


def _goodput_results(
    ctx: BenchContext, binding: str, pmtu_runs: GoodputRuns, forced_runs: GoodputRuns
) -> list[Result]:
    _, _, _, pmtu, pmtu_quic, forced, forced_quic = figure_names(binding, redis=False)
    size = pmtu_runs.sizes[binding]
    baseline = pmtu_runs.baseline
    if baseline.name != udp_oneway_name(size):  # this binding's session found another size
        baseline = udp_oneway_baseline(ctx, size)
    ours, ours_forced = pmtu_runs.runs[binding], forced_runs.runs[binding]
    once = "; the aioquic baseline: one run"
    return [
        _compare(
            pmtu, 0.0, "MiB/s", "higher", baseline,
            f">= {GOODPUT_AT_PMTU:g} MiB/s (path MTU found: {size} B)",
            lambda v, b: v >= GOODPUT_AT_PMTU, samples=ours, method=pmtu_runs.method,
        ),
        _compare(
            pmtu_quic, 0.0, "MiB/s", "higher",
            quic_throughput_baseline(ctx, quic_size_for(size)),
            samples=ours, method=pmtu_runs.method + once,
        ),
        _compare(
            forced, 0.0, "MiB/s", "higher", forced_runs.baseline,
            f">= {GOODPUT_AT_1200:g} MiB/s", lambda v, b: v >= GOODPUT_AT_1200,
            samples=ours_forced, method=forced_runs.method,
        ),
        _compare(
            forced_quic, 0.0, "MiB/s", "higher",
            quic_throughput_baseline(ctx, FORCED_SIZE),
            ">= 2x aioquic", lambda v, b: v >= 2 * b,
            samples=ours_forced, method=forced_runs.method + once,
        ),
    ]  # fmt: skip


def run(ctx: BenchContext) -> list[Result]:
    missing = [b for b in BINDINGS if importlib.util.find_spec(_PACKAGES[b]) is None]
    if missing:
        raise BenchSkipped(f"bindings not importable: {', '.join(missing)}")
    results: list[Result] = []
    for binding in BINDINGS:
        results.extend(_rtt_results(ctx, binding))
    pmtu_runs = measure_goodput_runs(ctx, None)
    forced_runs = measure_goodput_runs(ctx, FORCED_SIZE)
    for runs in (forced_runs, pmtu_runs):
        results.append(_oneway_result(runs.baseline, runs.method))
    for binding in BINDINGS:
        results.extend(_goodput_results(ctx, binding, pmtu_runs, forced_runs))
    return results
