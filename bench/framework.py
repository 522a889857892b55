"""What every benchmark module shares: the result record, the run context, the timing loop,
and the facts about the machine a run happened on (DESIGN section 11)."""

from __future__ import annotations

import math
import os
import platform
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "LAYOUTS",
    "Baseline",
    "BenchContext",
    "BenchSkipped",
    "Better",
    "Layout",
    "Result",
    "machine_facts",
    "spread",
    "timeit_rate",
]

Better = Literal["higher", "lower"]
Layout = Literal["one process", "two processes"]
LAYOUTS: tuple[Layout, ...] = ("one process", "two processes")


class BenchSkipped(Exception):
    """Raised by a benchmark module that cannot run here (a missing server, say)."""


@dataclass(frozen=True, slots=True)
class Baseline:
    """The figure a result is compared against, measured in the same run."""

    name: str
    value: float
    unit: str
    #: Every run of a figure measured several times (`value` is their median).
    samples: tuple[float, ...] = ()


def spread(samples: tuple[float, ...]) -> dict[str, float] | None:
    """The least and greatest of several runs of one figure: how far one run may stray."""
    if not samples:
        return None
    return {"min": min(samples), "max": max(samples)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """One figure of the benchmark table; `to_json` gives the contract's record."""

    name: str
    value: float
    unit: str
    better: Better
    layout: Layout
    baseline: Baseline | None = None
    target: str | None = None
    target_met: bool | None = None
    #: The value of each run when the figure was measured several times (value: median).
    samples: tuple[float, ...] = ()
    #: How the figure was measured (runs, interleaving, CPU pinning), for the reader.
    method: str | None = None

    def __post_init__(self) -> None:
        if self.better not in ("higher", "lower"):
            raise ValueError(f"{self.name}: better must be 'higher' or 'lower'")
        if self.layout not in LAYOUTS:
            raise ValueError(f"{self.name}: layout must be one of {LAYOUTS}")
        if not math.isfinite(self.value):
            raise ValueError(f"{self.name}: value {self.value} is not a finite number")
        if self.baseline is not None and self.baseline.unit != self.unit:
            # A ratio of different units means nothing; compare like with like.
            raise ValueError(
                f"{self.name}: unit {self.unit!r} differs from its baseline's "
                f"{self.baseline.unit!r}"
            )

    @property
    def ratio(self) -> float | None:
        """value / baseline.value, or None without a (non-zero) baseline."""
        if self.baseline is None or self.baseline.value == 0:
            return None
        return self.value / self.baseline.value

    def as_baseline(self) -> Baseline:
        """This figure as the baseline of another one."""
        return Baseline(self.name, self.value, self.unit, self.samples)

    def to_json(self, machine: dict[str, object]) -> dict[str, object]:
        record: dict[str, object] = {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "better": self.better,
            "baseline": None if self.baseline is None else _baseline_json(self.baseline),
            "ratio": self.ratio,
            "layout": self.layout,
        }
        if self.samples:
            record["samples"] = list(self.samples)
            record["spread"] = spread(self.samples)
        if self.method is not None:
            record["method"] = self.method
        if self.target is not None:
            record["target"] = self.target
        if self.target_met is not None:
            record["target_met"] = self.target_met
        record["machine"] = machine
        return record


def _baseline_json(baseline: Baseline) -> dict[str, object]:
    record: dict[str, object] = {
        "name": baseline.name,
        "value": baseline.value,
        "unit": baseline.unit,
    }
    if baseline.samples:
        record["spread"] = spread(baseline.samples)
    return record


@dataclass(slots=True)
class BenchContext:
    """Handed to every module's `run(ctx)`.

    `seconds` is the minimum measuring time of one figure; `quick` asks for a smoke run
    (tiny workloads, numbers not meaningful). `measure_once` shares baselines between
    modules, so a figure and its baseline come from the same run and the baseline is
    measured only once.
    """

    quick: bool = False
    seconds: float = 0.5
    _measured: dict[str, float] = field(default_factory=dict)
    _samples: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def measure_once(self, key: str, measure: Callable[[], float]) -> float:
        if key not in self._measured:
            self._measured[key] = measure()
        return self._measured[key]

    def record_samples(self, key: str, samples: list[float]) -> float:
        """Keep several runs of a figure measured elsewhere (interleaved with the figures
        compared with it); later `measure_once(key)` calls get their median."""
        if not samples:
            raise ValueError(f"{key}: no runs to record")
        self._samples[key] = tuple(samples)
        self._measured[key] = statistics.median(samples)
        return self._measured[key]

    def samples_of(self, key: str) -> tuple[float, ...]:
        """The runs behind a recorded figure; empty when it was measured once."""
        return self._samples.get(key, ())


def timeit_rate(
    fn: Callable[[], object], min_seconds: float, *, warmup: int = 1, max_calls: int | None = None
) -> float:
    """Calls per second of `fn`, measured for at least `min_seconds` (and about that long).

    Batches grow geometrically but never past the time left, so a run ends within one
    call of `min_seconds` once the per-call cost is known.
    """
    for _ in range(warmup):
        fn()
    clock = time.perf_counter
    calls = 0
    batch = 1
    start = clock()
    while True:
        for _ in range(batch):
            fn()
        calls += batch
        elapsed = clock() - start
        if elapsed >= min_seconds or (max_calls is not None and calls >= max_calls):
            return calls / max(elapsed, 1e-9)
        per_call = elapsed / calls
        if per_call > 0:
            batch = max(1, min(batch * 2, int((min_seconds - elapsed) / per_call) + 1))
        else:
            batch *= 2  # below the clock's resolution so far
        if max_calls is not None:
            batch = min(batch, max_calls - calls)


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def core_build() -> str:
    """Which build of the core this process imports: "mypyc" (the compiled modules
    `make install` builds where it can) or "pure". Worker processes a benchmark starts
    import the same tree, so every figure of a run measured this one (bar the pure
    baselines `bench.pure` runs on purpose, which say so in their names)."""
    import pilot_proto.node

    return "mypyc" if (pilot_proto.node.__file__ or "").endswith(".so") else "pure"


def machine_facts() -> dict[str, object]:
    """Core count, Python, platform, UDP socket buffer sizes (as the contract asks) and
    which build of the core was measured."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rcvbuf = probe.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        sndbuf = probe.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    finally:
        probe.close()
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = None
    facts: dict[str, object] = {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "core_build": core_build(),
        "socket_buffers": {
            "udp_so_rcvbuf": rcvbuf,
            "udp_so_sndbuf": sndbuf,
            "rmem_max": _read_int("/proc/sys/net/core/rmem_max"),
            "wmem_max": _read_int("/proc/sys/net/core/wmem_max"),
            "rmem_default": _read_int("/proc/sys/net/core/rmem_default"),
            "wmem_default": _read_int("/proc/sys/net/core/wmem_default"),
        },
    }
    try:
        import cryptography
        from cryptography.hazmat.backends.openssl import backend

        facts["cryptography"] = cryptography.__version__
        facts["openssl"] = backend.openssl_version_text()
    except ImportError:
        pass
    return facts
