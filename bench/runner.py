"""`python -m bench`: find the benchmark modules, run them, print the table, write the JSON.

A benchmark module is any `bench/bench_NAME.py` with `def run(ctx: BenchContext) ->
list[Result]`; NAME is what `--only` selects.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

from .framework import BenchContext, BenchSkipped, Result, machine_facts

__all__ = ["DEFAULT_OUTPUT", "discover", "format_table", "main", "write_results"]

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results.json"
_PREFIX = "bench_"

RunFn = Callable[[BenchContext], list[Result]]


def discover() -> dict[str, str]:
    """Benchmark names mapped to their module names, in name order."""
    package_dir = str(Path(__file__).resolve().parent)
    names = sorted(
        info.name[len(_PREFIX) :]
        for info in pkgutil.iter_modules([package_dir])
        if info.name.startswith(_PREFIX)
    )
    return {name: f"{__package__}.{_PREFIX}{name}" for name in names}


def _load(module_name: str) -> RunFn:
    module = importlib.import_module(module_name)
    run = getattr(module, "run", None)
    if not callable(run):
        raise TypeError(f"{module_name} has no run(ctx) function")
    return cast(RunFn, run)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"


def _value(result: Result) -> str:
    """The figure, and with several runs the range they spanned: 558 [401-731 n=5]."""
    if not result.samples:
        return _number(result.value)
    low, high = min(result.samples), max(result.samples)
    return f"{_number(result.value)} [{_number(low)}-{_number(high)} n={len(result.samples)}]"


def format_table(results: Sequence[Result]) -> str:
    """The human-readable table `make bench` prints."""
    header = ("name", "value", "unit", "better", "baseline", "ratio", "layout", "target")
    rows = [header]
    for r in results:
        baseline = "-" if r.baseline is None else f"{r.baseline.name} ({_number(r.baseline.value)})"
        target = "-" if r.target is None else r.target
        if r.target_met is not None:
            target += " [met]" if r.target_met else " [MISSED]"
        rows.append(
            (
                r.name,
                _value(r),
                r.unit,
                r.better,
                baseline,
                _number(r.ratio),
                r.layout,
                target,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def write_results(path: Path, results: Sequence[Result], machine: dict[str, object]) -> None:
    """Write the contract's list of records, atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps([r.to_json(machine) for r in results], indent=2) + "\n")
    os.replace(tmp, path)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: tiny, fast, not meaningful"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only these benchmarks (repeat or comma-separate; see --list)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON file to write")
    parser.add_argument(
        "--seconds", type=float, default=None, help="minimum measuring time per figure"
    )
    parser.add_argument("--list", action="store_true", help="list benchmark names and exit")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    available = discover()
    if args.list:
        print("\n".join(available))
        return 0
    wanted = [name for item in args.only for name in item.split(",") if name]
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available)}",
            file=sys.stderr,
        )
        return 2
    selected = [name for name in available if not wanted or name in wanted]
    seconds = args.seconds if args.seconds is not None else (0.02 if args.quick else 0.5)
    ctx = BenchContext(quick=args.quick, seconds=seconds)

    results: list[Result] = []
    failed: list[str] = []
    for name in selected:
        started = time.perf_counter()
        try:
            produced = _load(available[name])(ctx)
        except BenchSkipped as skip:
            print(f"[{name}] skipped: {skip}", file=sys.stderr)
            continue
        except Exception:
            traceback.print_exc()
            print(f"[{name}] FAILED", file=sys.stderr)
            failed.append(name)
            continue
        results.extend(produced)
        took = time.perf_counter() - started
        print(f"[{name}] {len(produced)} figures in {took:.1f} s", file=sys.stderr)

    print(format_table(results))
    write_results(args.output, results, machine_facts())
    print(f"wrote {len(results)} results to {args.output}", file=sys.stderr)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
