"""`python -m fuzz --seconds N [--only NAME ...] [--jobs J]`: run every harness (or the
named ones) under atheris, each in its own process for N seconds, and report.

New inputs a run discovers go to `fuzz/corpus-run/<name>/` (git-ignored), crash inputs to
`fuzz/corpus-run/crashes/`. The exit status is 1 if any harness crashed. `--replay` runs
each harness over its committed seeds in this process instead, without atheris.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import CORPUS_DIR, HARNESSES, PACKAGE_DIR, RUN_DIR, corpus_inputs, load

_DONE = re.compile(rb"Done (\d+) runs in (\d+) second")
_CRASH = re.compile(rb"Test unit written to (\S+)")


@dataclass(frozen=True, slots=True)
class Outcome:
    name: str
    ok: bool
    runs: int
    seconds: float
    artifact: str | None
    output: str


def fuzz_one(
    name: str, seconds: int, runs: int | None = None, work_dir: Path = RUN_DIR
) -> Outcome:
    """Run one harness under atheris in a subprocess; the libFuzzer output is kept."""
    work = work_dir / name
    work.mkdir(parents=True, exist_ok=True)
    crashes = work_dir / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "fuzz.atheris_main", name,
        f"-max_total_time={seconds}",
        "-timeout=30",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={crashes}/{name}-",
        "-print_final_stats=1",
    ]
    if runs is not None:
        command.append(f"-runs={runs}")
    command += [str(work), str(CORPUS_DIR / name)]
    started = time.monotonic()
    root = PACKAGE_DIR.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)}
    process = subprocess.run(
        command, cwd=root, env=env, capture_output=True, timeout=seconds * 3 + 120
    )
    output = process.stdout + process.stderr
    done = _DONE.search(output)
    crash = _CRASH.search(output)
    return Outcome(
        name=name,
        ok=process.returncode == 0 and crash is None,
        runs=int(done.group(1)) if done else 0,
        seconds=time.monotonic() - started,
        artifact=crash.group(1).decode() if crash else None,
        output=output.decode("utf-8", "replace"),
    )


def replay(names: list[str]) -> int:
    failures = 0
    for name in names:
        harness = load(name)
        inputs = corpus_inputs(name)
        for data in inputs:
            try:
                harness.test_one_input(data)
            except Exception as exc:  # report every failing seed, then fail
                failures += 1
                print(f"{name}: seed of {len(data)} bytes failed: {exc!r}")
        print(f"{name}: {len(inputs)} seeds replayed")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__)
    parser.add_argument("--seconds", type=int, default=60, help="time per harness")
    parser.add_argument("--runs", type=int, default=None, help="stop each after this many")
    parser.add_argument("--only", action="append", choices=HARNESSES, metavar="NAME",
                        help="run only this harness (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="harnesses run at once")
    parser.add_argument("--replay", action="store_true",
                        help="run the committed seeds in-process, without atheris")
    parser.add_argument("--verbose", action="store_true", help="print libFuzzer's output")
    parser.add_argument("--work-dir", type=Path, default=RUN_DIR,
                        help=f"where new inputs and crashes go (default {RUN_DIR})")
    args = parser.parse_args(argv)
    names = args.only or list(HARNESSES)
    if args.replay:
        return replay(names)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        outcomes = list(
            pool.map(lambda n: fuzz_one(n, args.seconds, args.runs, args.work_dir), names)
        )
    width = max(len(n) for n in names)
    for outcome in outcomes:
        status = "ok" if outcome.ok else "CRASH"
        print(f"{outcome.name:<{width}}  {status:<5}  {outcome.runs:>9} runs  "
              f"{outcome.seconds:6.1f} s" + (f"  {outcome.artifact}" if outcome.artifact else ""))
        if args.verbose or not outcome.ok:
            print(outcome.output[-6000:])
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
