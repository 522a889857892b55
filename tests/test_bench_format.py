"""The benchmark framework's output contract (DESIGN section 11) and its timing helpers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# `bench` is a top-level folder run as `python -m bench` from the checkout, not installed.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import Baseline, BenchContext, Result, timeit_rate  # noqa: E402
from bench.bench_crypto import crypto_floor  # noqa: E402
from bench.runner import format_table, write_results  # noqa: E402

CONTRACT_KEYS = {"name", "value", "unit", "better", "baseline", "ratio", "layout"}
CRYPTO_FIGURES = {
    "crypto.aesgcm_seal_open.1200B",
    "crypto.aesgcm_seal_open.64000B",
    "crypto.x25519_keygen",
    "crypto.x25519_exchange",
    "crypto.ed25519_sign",
    "crypto.ed25519_verify",
}


def check_record(record: dict[str, object]) -> None:
    assert CONTRACT_KEYS <= set(record)
    assert set(record) <= CONTRACT_KEYS | {
        "target", "target_met", "machine", "samples", "spread", "method",
    }  # fmt: skip
    assert isinstance(record["name"], str) and isinstance(record["unit"], str)
    value = record["value"]
    assert isinstance(value, (int, float)) and math.isfinite(value)
    assert record["better"] in ("higher", "lower")
    assert record["layout"] in ("one process", "two processes")
    baseline = record["baseline"]
    if baseline is None:
        assert record["ratio"] is None
    else:
        assert isinstance(baseline, dict)
        assert {"name", "value", "unit"} <= set(baseline) <= {"name", "value", "unit", "spread"}
        assert record["ratio"] == pytest.approx(value / baseline["value"])
    if "target_met" in record:
        assert isinstance(record["target_met"], bool)


def test_quick_crypto_run_writes_the_contract(tmp_path: Path) -> None:
    output = tmp_path / "out" / "results.json"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "crypto", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 30
    records = json.loads(output.read_text())
    assert isinstance(records, list)
    assert {r["name"] for r in records} == CRYPTO_FIGURES
    for record in records:
        check_record(record)
        assert record["value"] > 0 and record["better"] == "higher"
        assert record["baseline"] is None and record["layout"] == "one process"
        assert record["name"] in proc.stdout  # and in the printed table
    machine = records[0]["machine"]
    assert all(r["machine"] == machine for r in records)
    assert isinstance(machine["cores"], int) and machine["cores"] >= 1
    assert machine["python"] == ".".join(map(str, sys.version_info[:3]))
    assert machine["core_build"] in ("mypyc", "pure")  # which core the figures measured
    buffers = machine["socket_buffers"]
    assert buffers["udp_so_rcvbuf"] > 0 and buffers["udp_so_sndbuf"] > 0
    assert {"rmem_max", "wmem_max"} <= set(buffers)


def test_unknown_benchmark_name_is_refused(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "no_such_bench", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "crypto" in proc.stderr
    assert not output.exists()


def test_records_carry_ratio_and_target(tmp_path: Path) -> None:
    base = Result(name="raw", value=400.0, unit="MiB/s", better="higher", layout="one process")
    session = Result(
        name="session",
        value=300.0,
        unit="MiB/s",
        better="higher",
        layout="two processes",
        baseline=base.as_baseline(),
        target=">= 50% of raw",
        target_met=True,
    )
    assert session.ratio == 0.75
    path = tmp_path / "results.json"
    write_results(path, [base, session], {"cores": 2})
    records = json.loads(path.read_text())
    for record in records:
        check_record(record)
    assert records[1]["baseline"] == {"name": "raw", "value": 400.0, "unit": "MiB/s"}
    assert records[1]["ratio"] == 0.75 and records[1]["target_met"] is True
    assert "target" not in records[0] and records[0]["machine"] == {"cores": 2}
    table = format_table([base, session])
    assert "0.75" in table and ">= 50% of raw [met]" in table


def test_results_refuse_meaningless_figures() -> None:
    with pytest.raises(ValueError):
        Result(name="x", value=1.0, unit="ops/s", better="faster", layout="one process")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Result(name="x", value=float("nan"), unit="ops/s", better="higher", layout="one process")
    with pytest.raises(ValueError):
        Result(
            name="x",
            value=1.0,
            unit="ops/s",
            better="higher",
            layout="one process",
            baseline=Baseline("y", 1.0, "MiB/s"),
        )
    zero = Baseline("y", 0.0, "ops/s")
    assert (
        Result(
            name="x", value=1.0, unit="ops/s", better="higher", layout="one process", baseline=zero
        ).ratio
        is None
    )


def test_timeit_rate_is_bounded_and_plausible() -> None:
    calls = 0

    def tick() -> None:
        nonlocal calls
        calls += 1
        time.sleep(0.001)

    started = time.perf_counter()
    rate = timeit_rate(tick, 0.1, warmup=0)
    elapsed = time.perf_counter() - started
    assert 0.1 <= elapsed < 0.5
    assert 100 < rate <= 1000  # each call sleeps at least a millisecond
    assert rate == pytest.approx(calls / elapsed, rel=0.2)
    assert timeit_rate(lambda: None, 10.0, max_calls=50) > 0  # max_calls ends it early


def test_crypto_floor_sums_primitive_costs_once_per_run() -> None:
    ctx = BenchContext(quick=True, seconds=0.01)
    measured: list[str] = []

    def fake(name: str, rate: float) -> float:
        measured.append(name)
        return rate

    # Seed the run's shared measurements so the floor's arithmetic can be checked exactly.
    ctx.measure_once("crypto.x25519_keygen", lambda: fake("x25519_keygen", 1000.0))
    ctx.measure_once("crypto.x25519_exchange", lambda: fake("x25519_exchange", 2000.0))
    floor = crypto_floor(ctx, keygen=2, exchange=8)
    # 2 / 1000 + 8 / 2000 = 0.006 s per handshake
    assert floor.value == pytest.approx(1 / 0.006)
    assert floor.unit == "handshakes/s" and "8 x25519_exchange" in floor.name
    crypto_floor(ctx, keygen=1)
    assert measured == ["x25519_keygen", "x25519_exchange"]
    with pytest.raises(ValueError):
        crypto_floor(ctx)


def test_a_figure_of_several_runs_shows_them_and_their_range(tmp_path: Path) -> None:
    base = Result(
        name="raw", value=400.0, unit="MiB/s", better="higher", layout="two processes",
        samples=(380.0, 400.0, 410.0), method="median of 3 runs",
    )  # fmt: skip
    session = Result(
        name="session", value=300.0, unit="MiB/s", better="higher", layout="two processes",
        baseline=base.as_baseline(), samples=(250.0, 300.0, 520.0),
    )  # fmt: skip
    path = tmp_path / "results.json"
    write_results(path, [base, session], {"cores": 2})
    records = json.loads(path.read_text())
    for record in records:
        check_record(record)
    assert records[0]["samples"] == [380.0, 400.0, 410.0]
    assert records[0]["spread"] == {"min": 380.0, "max": 410.0}
    assert records[0]["method"] == "median of 3 runs"
    assert records[1]["baseline"]["spread"] == {"min": 380.0, "max": 410.0}
    assert "method" not in records[1]
    table = format_table([base, session])
    assert "300 [250-520 n=3]" in table and "400 [380-410 n=3]" in table
