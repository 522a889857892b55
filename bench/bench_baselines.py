"""Network baselines of the binding benchmarks (issue 4), each over loopback, two processes.

- `udp.echo_rtt.<style>.200B`: raw UDP echo round trip in one loop style (asyncio, with
  uvloop when installed and named so; gevent; plain threads with blocking sockets).
- `redis.streams_rtt.200B`: Redis Streams request/reply (XADD + XREAD BLOCK both ways) on
  a redis-server started here on a free port, no persistence.
- `aioquic.echo_rtt.200B`: a 200-byte echo on one QUIC stream.
- `aioquic.stream_throughput.<N>B`: one-stream bulk transfer with N-byte datagrams.
- `udp.oneway_throughput.<N>B`: raw UDP datagrams of N bytes, received bytes per second
  (measured, and reported, by `bench_bindings`, run by run between its transfers).

`bench_bindings` compares our figures with these through the functions below, which
measure each baseline once per run (`ctx.measure_once`). The second processes are the
modules of `bench.workers`.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .framework import Baseline, BenchContext, BenchSkipped, Result
from .workers.parent import Worker, WorkerError, free_tcp_port, two_cpus

__all__ = [
    "ECHO_SIZE",
    "LOOPBACK_MAX_DATAGRAM",
    "MIB",
    "MU",
    "ONEWAY_SIZES",
    "QUIC_SIZES",
    "STYLES",
    "WORKER_SLACK",
    "Plan",
    "measure_udp_oneway",
    "plan",
    "quic_echo_baseline",
    "quic_size_for",
    "quic_throughput_baseline",
    "redis_baseline",
    "result_number",
    "run",
    "udp_echo_baseline",
    "udp_oneway_baseline",
    "udp_oneway_name",
]

MIB = 1024 * 1024
ECHO_SIZE = 200
STYLES = ("asyncio", "gevent", "threads")
#: The largest UDP payload over IPv4 (65535 - 20 - 8); loopback's MTU of 65536 carries it,
#: and it is the size our transport's path MTU search settles on over loopback.
LOOPBACK_MAX_DATAGRAM = 65507
ONEWAY_SIZES = (1200, LOOPBACK_MAX_DATAGRAM)
#: aioquic's default datagram size, and the largest plateau it handles: with 65507-byte
#: datagrams its peer fails with "Failed to parse frame" (aioquic writes 2-byte lengths),
#: so its large-datagram figure uses 9000-byte jumbo frames (8972 bytes of UDP payload).
QUIC_SIZES = (1200, 8972)
MU = "us"  # microseconds, ASCII so every terminal prints it
WORKER_SLACK = 30.0  # seconds a worker may take beyond its measuring time (start-up, handshake)


@dataclass(frozen=True, slots=True)
class Plan:
    """How long and how much each figure measures in this run."""

    seconds: float  # measuring time of a round-trip or one-way figure
    bulk_seconds: float  # time bound of a bulk transfer
    bulk_bytes: int  # size bound of a bulk transfer
    max_round_trips: int
    #: Runs of each goodput figure (with the path MTU, and at a forced size), each run
    #: followed by one of its raw UDP baseline: the figure is their median.
    goodput_runs: int = 5
    forced_runs: int = 3

    @property
    def lifetime(self) -> float:
        """No worker lives longer than this (each also exits when the run ends)."""
        return max(self.seconds, self.bulk_seconds) + 2 * WORKER_SLACK


def plan(ctx: BenchContext) -> Plan:
    if ctx.quick:
        return Plan(
            seconds=max(ctx.seconds, 0.05),
            bulk_seconds=max(ctx.seconds, 0.3),
            bulk_bytes=2 * MIB,
            max_round_trips=200,
            goodput_runs=2,
            forced_runs=2,
        )
    return Plan(
        seconds=max(ctx.seconds, 2.0),
        bulk_seconds=max(2 * ctx.seconds, 4.0),
        bulk_bytes=200 * MIB,
        max_round_trips=1_000_000,
    )


def _style_label(style: str) -> str:
    if style == "asyncio" and importlib.util.find_spec("uvloop") is not None:
        return "asyncio+uvloop"  # the workers install uvloop whenever it is importable
    return style


def result_number(result: dict[str, object], key: str) -> float:
    value = result.get(key)
    if not isinstance(value, (int, float)):
        raise WorkerError(f"worker result has no number {key!r}: {result}")
    return float(value)


# -- raw UDP echo ---------------------------------------------------------------------------


def udp_echo_name(style: str) -> str:
    return f"udp.echo_rtt.{_style_label(style)}.{ECHO_SIZE}B"


def measure_udp_echo(ctx: BenchContext, style: str) -> float:
    """Median round trip in microseconds of a raw UDP echo, both processes in `style`."""
    p = plan(ctx)
    life = ("--lifetime", str(p.lifetime))
    with Worker("udp_echo", "server", "--style", style, *life) as server:
        port = server.ready_port()
        with Worker(
            "udp_echo", "client", "--style", style, "--port", str(port),
            "--size", str(ECHO_SIZE), "--seconds", str(p.seconds),
            "--max-count", str(p.max_round_trips), *life,
        ) as client:  # fmt: skip
            return result_number(client.result(p.seconds + WORKER_SLACK), "median_us")


def udp_echo_baseline(ctx: BenchContext, style: str) -> Baseline:
    name = udp_echo_name(style)
    return Baseline(name, ctx.measure_once(name, lambda: measure_udp_echo(ctx, style)), MU)


# -- Redis Streams --------------------------------------------------------------------------

REDIS_NAME = f"redis.streams_rtt.{ECHO_SIZE}B"


@contextmanager
def redis_server(startup_timeout: float = 10.0) -> Iterator[int]:
    """A private redis-server on a free 127.0.0.1 port, no persistence; yields the port.

    Never the system's Redis: our own process, our own temporary directory, stopped on
    the way out."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchSkipped(
            "redis-server is not installed (Debian package redis-server, "
            "scripts/system-packages.txt; `make bench` installs it as root)"
        )
    import redis

    with tempfile.TemporaryDirectory(prefix="pilot-bench-redis-") as directory:
        for _attempt in range(3):
            port = free_tcp_port()
            proc = subprocess.Popen(
                [
                    binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", directory,
                    "--save", "", "--appendonly", "no", "--daemonize", "no",
                    "--protected-mode", "yes", "--loglevel", "warning", "--logfile", "",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
                deadline = time.monotonic() + startup_timeout
                while proc.poll() is None and time.monotonic() < deadline:
                    try:
                        client.ping()
                        break
                    except redis.ConnectionError:
                        time.sleep(0.05)
                else:
                    if proc.poll() is None:
                        raise RuntimeError(f"redis-server silent for {startup_timeout} s")
                    continue  # it exited: the port was taken meanwhile, try another
                client.close()
                yield port
                return
            finally:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        raise RuntimeError("redis-server would not start on a free port")


def measure_redis(ctx: BenchContext) -> float:
    """Median Redis Streams request/reply round trip in microseconds."""
    p = plan(ctx)
    life = ("--lifetime", str(p.lifetime))
    with redis_server() as port:
        with Worker("redis_streams", "worker", "--port", str(port), *life) as worker:
            worker.ready_port()
            with Worker(
                "redis_streams", "client", "--port", str(port), "--size", str(ECHO_SIZE),
                "--seconds", str(p.seconds), "--max-count", str(p.max_round_trips), *life,
            ) as client:  # fmt: skip
                return result_number(client.result(p.seconds + WORKER_SLACK), "median_us")


def redis_baseline(ctx: BenchContext) -> Baseline:
    """Raises BenchSkipped (every time it is asked) when redis-server is missing."""
    return Baseline(REDIS_NAME, ctx.measure_once(REDIS_NAME, lambda: measure_redis(ctx)), MU)


# -- aioquic --------------------------------------------------------------------------------

QUIC_ECHO_NAME = f"aioquic.echo_rtt.{ECHO_SIZE}B"


def quic_throughput_name(size: int) -> str:
    return f"aioquic.stream_throughput.{size}B"


def quic_size_for(datagram_size: int) -> int:
    """The aioquic datagram size compared with our transport at `datagram_size`."""
    return min(QUIC_SIZES, key=lambda size: abs(size - datagram_size))


@contextmanager
def _certificate() -> Iterator[tuple[str, str]]:
    from .workers.certs import write_self_signed

    with tempfile.TemporaryDirectory(prefix="pilot-bench-quic-") as directory:
        cert, key = write_self_signed(Path(directory))
        yield str(cert), str(key)


def measure_quic_echo(ctx: BenchContext) -> float:
    p = plan(ctx)
    life = ("--lifetime", str(p.lifetime))
    with _certificate() as (cert, key):
        with Worker(
            "quic", "server", "--mode", "echo", "--cert", cert, "--key", key, *life
        ) as server:
            port = server.ready_port()
            with Worker(
                "quic", "echo", "--port", str(port), "--cafile", cert, "--size", str(ECHO_SIZE),
                "--seconds", str(p.seconds), "--max-count", str(p.max_round_trips), *life,
            ) as client:  # fmt: skip
                return result_number(client.result(p.seconds + WORKER_SLACK), "median_us")


def quic_echo_baseline(ctx: BenchContext) -> Baseline:
    value = ctx.measure_once(QUIC_ECHO_NAME, lambda: measure_quic_echo(ctx))
    return Baseline(QUIC_ECHO_NAME, value, MU)


def measure_quic_throughput(ctx: BenchContext, size: int) -> float:
    """MiB/s through one aioquic stream with `size`-byte datagrams."""
    p = plan(ctx)
    life = ("--lifetime", str(p.lifetime))
    receiver_cpu, sender_cpu = two_cpus() or (None, None)
    with _certificate() as (cert, key):
        with Worker(
            "quic", "server", "--mode", "sink", "--cert", cert, "--key", key,
            "--datagram-size", str(size), *life, cpu=receiver_cpu,
        ) as server:  # fmt: skip
            port = server.ready_port()
            with Worker(
                "quic", "bulk", "--port", str(port), "--cafile", cert,
                "--bytes", str(p.bulk_bytes), "--seconds", str(p.bulk_seconds),
                "--datagram-size", str(size), *life, cpu=sender_cpu,
            ) as client:  # fmt: skip
                result = client.result(p.bulk_seconds + WORKER_SLACK)
                return result_number(result, "bytes_per_second") / MIB


def quic_throughput_baseline(ctx: BenchContext, size: int) -> Baseline:
    name = quic_throughput_name(size)
    return Baseline(
        name, ctx.measure_once(name, lambda: measure_quic_throughput(ctx, size)), "MiB/s"
    )


# -- raw UDP one way ------------------------------------------------------------------------


def udp_oneway_name(size: int) -> str:
    return f"udp.oneway_throughput.{size}B"


def measure_udp_oneway(ctx: BenchContext, size: int) -> float:
    """MiB/s of `size`-byte datagrams that reach a counting receiver (the two processes
    on two CPUs when there are two, as the transfers it is compared with)."""
    p = plan(ctx)
    life = ("--lifetime", str(p.lifetime))
    receiver_cpu, sender_cpu = two_cpus() or (None, None)
    with Worker("udp_blast", "receive", *life, cpu=receiver_cpu) as receiver:
        port = receiver.ready_port()
        with Worker(
            "udp_blast", "send", "--port", str(port), "--size", str(size),
            "--seconds", str(p.seconds), *life, cpu=sender_cpu,
        ) as sender:  # fmt: skip
            sender.result(p.seconds + WORKER_SLACK)
        receiver.send_line("STOP")
        return result_number(receiver.result(WORKER_SLACK), "bytes_per_second") / MIB


def udp_oneway_baseline(ctx: BenchContext, size: int) -> Baseline:
    """Measured once here unless `bench_bindings` recorded its runs, interleaved with the
    transfers it compares with it (then: their median, and the runs)."""
    name = udp_oneway_name(size)
    value = ctx.measure_once(name, lambda: measure_udp_oneway(ctx, size))
    return Baseline(name, value, "MiB/s", ctx.samples_of(name))


# -- the module's own figures ---------------------------------------------------------------


def _figure(baseline: Baseline, better: str) -> Result:
    return Result(
        name=baseline.name,
        value=baseline.value,
        unit=baseline.unit,
        better="lower" if better == "lower" else "higher",
        layout="two processes",
    )


def run(ctx: BenchContext) -> list[Result]:
    results = [_figure(udp_echo_baseline(ctx, style), "lower") for style in STYLES]
    try:
        results.append(_figure(redis_baseline(ctx), "lower"))
    except BenchSkipped as skip:
        print(f"[baselines] {REDIS_NAME} skipped: {skip}", file=sys.stderr)
    results.append(_figure(quic_echo_baseline(ctx), "lower"))
    results.extend(_figure(quic_throughput_baseline(ctx, s), "higher") for s in QUIC_SIZES)
    # The raw UDP one-way figures (ONEWAY_SIZES) come with `bench_bindings`: each of their
    # runs is measured between two runs of the transfers compared with them.
    return results
