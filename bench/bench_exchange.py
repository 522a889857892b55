"""The exchange's core CPU cost, mypyc-compiled against pure Python (issue 4, `make fast`).

Only when the opt-in compiled modules are in the tree: `bench/exchange.py` (two Drivers,
one process, no sockets; see bench/README.md) runs in child processes alternately as it
is (compiled) and under `bench.pure` (the same sources, imported as Python), and the
median CPU µs per exchange of each is reported, the pure one as the baseline.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys

from .framework import Baseline, BenchContext, BenchSkipped, Result

ROUNDS = 3


def compiled_present() -> bool:
    """Whether `make fast` left compiled delivery modules that this Python would import."""
    spec = importlib.util.find_spec("pilot_proto.delivery.connection")
    return spec is not None and spec.origin is not None and spec.origin.endswith(".so")


def _exchange_us(pure: bool, trips: int) -> float:
    runner = ["bench.pure", "bench.exchange"] if pure else ["bench.exchange"]
    done = subprocess.run(
        [sys.executable, "-m", *runner, "--trips", str(trips), "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.exchange ({'pure' if pure else 'compiled'}) failed: "
                           f"{done.stderr.strip()[-500:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["build"] != ("pure" if pure else "mypyc"):
        raise RuntimeError(f"bench.exchange ran the {result['build']} build, not the one asked")
    return float(result["us"])


def run(ctx: BenchContext) -> list[Result]:
    if not compiled_present():
        raise BenchSkipped("no compiled modules in the tree (`make fast` builds them)")
    trips = 300 if ctx.quick else 3000
    pure: list[float] = []
    compiled: list[float] = []
    for _ in range(1 if ctx.quick else ROUNDS):  # alternated: load drifts hit both alike
        pure.append(_exchange_us(True, trips))
        compiled.append(_exchange_us(False, trips))
    return [
        Result(
            name="exchange.core_cpu.mypyc",
            value=statistics.median(compiled),
            unit="us",
            better="lower",
            layout="one process",
            baseline=Baseline("exchange.core_cpu.pure", statistics.median(pure), "us"),
            samples=tuple(compiled),
            method=f"bench/exchange.py, {trips} exchanges per run, {len(compiled)} runs "
                   "of each build alternated, median; CPU µs per exchange, both sides",
        )
    ]
