"""`python -m fuzz.make_corpus`: (re)write the seed corpora `fuzz/corpus/<harness>/` from
real traffic of the simulator (`fuzz.traffic.record`). Deterministic: the same code gives
the same files, named by the SHA-1 of their content."""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from . import CORPUS_DIR, HARNESSES, load
from .traffic import record

#: The committed corpora stay small (issue 7: under 2 MB in all).
MAX_TOTAL_BYTES = 2 * 1024 * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.make_corpus", description=__doc__)
    parser.add_argument("--out", type=Path, default=CORPUS_DIR, help="corpus root directory")
    out = parser.parse_args(argv).out
    traffic = record()
    total = 0
    for name in HARNESSES:
        directory = out / name
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.iterdir():
            old.unlink()
        seeds = dict.fromkeys(load(name).seeds(traffic))
        for seed in seeds:
            (directory / hashlib.sha1(seed).hexdigest()[:16]).write_bytes(seed)
            total += len(seed)
        print(f"{name}: {len(seeds)} seeds")
    print(f"{total} bytes in all")
    if total > MAX_TOTAL_BYTES:
        print(f"the corpora exceed {MAX_TOTAL_BYTES} bytes: trim the seeds", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
