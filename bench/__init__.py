"""pilot-proto benchmarks (DESIGN section 11): `python -m bench`, see bench/README.md.

Benchmark modules are `bench/bench_NAME.py`, each with `run(ctx) -> list[Result]`.
"""

from __future__ import annotations

from .framework import (
    LAYOUTS,
    Baseline,
    BenchContext,
    BenchSkipped,
    Better,
    Layout,
    Result,
    machine_facts,
    timeit_rate,
)

__all__ = [
    "LAYOUTS",
    "Baseline",
    "BenchContext",
    "BenchSkipped",
    "Better",
    "Layout",
    "Result",
    "machine_facts",
    "timeit_rate",
]
