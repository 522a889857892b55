"""The binding benchmarks and their baselines (issue 4): a quick run gives every promised
figure, each binding figure with its same-run baseline, and leaves no process behind."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_baselines import ONEWAY_SIZES, QUIC_SIZES  # noqa: E402
from bench.bench_bindings import BINDINGS, figure_names  # noqa: E402

HAVE_REDIS = shutil.which("redis-server") is not None


def _leftovers(marker: str) -> list[int]:
    """Processes whose environment carries `marker` (workers, redis-server)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in environ:
            found.append(int(entry.name))
    return found


def test_quick_run_gives_every_binding_figure_with_its_baselines(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    marker = f"PILOT_BENCH_TEST={uuid.uuid4().hex}"
    key, value = marker.split("=")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "baselines,bindings",
         "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, key: value},
    )  # fmt: skip
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert took < 60, f"quick run took {took:.0f} s"

    records = {r["name"]: r for r in json.loads(output.read_text())}
    baselines = [
        "udp.echo_rtt.gevent.200B",
        "udp.echo_rtt.threads.200B",
        "aioquic.echo_rtt.200B",
        *(f"aioquic.stream_throughput.{size}B" for size in QUIC_SIZES),
        *(f"udp.oneway_throughput.{size}B" for size in ONEWAY_SIZES),
    ]
    if HAVE_REDIS:
        baselines.append("redis.streams_rtt.200B")
    asyncio_echo = [n for n in records if n.startswith("udp.echo_rtt.asyncio")]
    assert asyncio_echo in (["udp.echo_rtt.asyncio+uvloop.200B"], ["udp.echo_rtt.asyncio.200B"])
    for name in [*baselines, *asyncio_echo]:
        record = records[name]
        assert record["baseline"] is None and record["layout"] == "two processes"
        assert record["value"] > 0 and math.isfinite(record["value"])
        assert record["unit"] == ("us" if "rtt" in name else "MiB/s")

    for binding in BINDINGS:
        promised = figure_names(binding, redis=HAVE_REDIS)
        for name in promised:
            record = records[name]
            assert record["layout"] == "two processes" and record["value"] > 0
            baseline = record["baseline"]
            assert baseline is not None, name
            # the baseline was measured in this very run, and is a figure of the table
            assert records[baseline["name"]]["value"] == baseline["value"]
            assert record["ratio"] == pytest.approx(record["value"] / baseline["value"])
            assert record["name"] in proc.stdout
        rtt = f"bindings.{binding}.message_rtt.200B"
        assert records[rtt]["baseline"]["name"].startswith(f"udp.echo_rtt.{binding}")
        assert records[rtt]["better"] == "lower" and records[rtt]["unit"] == "us"
        assert records[f"{rtt}.vs_aioquic"]["baseline"]["name"] == "aioquic.echo_rtt.200B"
        off = records[f"{rtt}.busy_poll_off"]  # what busy polling is worth, no target
        assert off["baseline"] == records[rtt]["baseline"] and "target" not in off
        if HAVE_REDIS:
            assert records[f"{rtt}.vs_redis"]["baseline"]["name"] == "redis.streams_rtt.200B"
        forced = records[f"bindings.{binding}.stream_goodput.1200B"]
        assert forced["baseline"]["name"] == "udp.oneway_throughput.1200B"
        assert forced["better"] == "higher" and forced["unit"] == "MiB/s"
        forced_quic = records[f"bindings.{binding}.stream_goodput.1200B.vs_aioquic"]
        assert forced_quic["baseline"]["name"] == "aioquic.stream_throughput.1200B"
        pmtu = records[f"bindings.{binding}.stream_goodput.pmtu"]
        assert pmtu["baseline"]["name"].startswith("udp.oneway_throughput.")
        for name in promised:  # every stated target says whether it was met
            if "target" in records[name]:
                assert isinstance(records[name]["target_met"], bool)
        assert "target" in records[rtt] and "target" in forced and "target" in forced_quic
        # Like with like: an exchange is one datagram each way, as in the raw echo (a
        # RECEIPT or ACK of its own would cost both sides a wake-up). pilot_threads may
        # send one alone when a loaded machine keeps the replying thread off the CPU.
        match = re.search(
            rf"\[bindings\] {binding} message round trip: .* datagrams per exchange "
            r"sent ([0-9.]+) / received ([0-9.]+)",
            proc.stderr,
        )
        assert match is not None, proc.stderr[-2000:]
        most = 2.0 if binding == "threads" else 1.2
        assert 0.9 <= float(match[1]) <= most and 0.9 <= float(match[2]) <= most, match[0]

    # Goodput and its raw UDP baseline: several runs taken in turns, the figure their
    # median, the runs and their range in the record, and how it was measured.
    pmtu_oneway = records[f"bindings.{BINDINGS[0]}.stream_goodput.pmtu"]["baseline"]["name"]
    for name in ["udp.oneway_throughput.1200B", pmtu_oneway]:
        oneway = records[name]
        assert len(oneway["samples"]) == 2, name  # --quick: two runs
    for binding in BINDINGS:
        for name in figure_names(binding, redis=HAVE_REDIS):
            if "stream_goodput" not in name:
                continue
            record = records[name]
            samples = record["samples"]
            assert len(samples) == 2 and all(v > 0 for v in samples), name
            assert record["value"] == pytest.approx(statistics.median(samples))
            assert record["spread"] == {"min": min(samples), "max": max(samples)}
            assert record["method"].startswith("median of 2 runs"), record["method"]
            baseline = record["baseline"]
            if baseline["name"].startswith("udp.oneway"):
                runs = records[baseline["name"]]["samples"]
                assert baseline["spread"] == {"min": min(runs), "max": max(runs)}

    assert _leftovers(marker) == [], "a worker or redis-server outlived the run"
