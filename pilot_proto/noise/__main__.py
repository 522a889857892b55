"""`python -m pilot_proto.noise FILE...`: run Noise test vector files.

Prints one line per failed or skipped vector, then `N passed, M failed, K skipped`.
Exit status 0 only if every vector passed.
"""

from __future__ import annotations

import argparse
import sys

from .vectors import run_vector_file, summary_line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pilot_proto.noise", description="Run Noise test vector files."
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="JSON vector file")
    args = parser.parse_args(argv)
    results = []
    for path in args.files:
        results.extend(run_vector_file(path))
    for result in results:
        if result.outcome != "passed":
            print(result.describe())
    print(summary_line(results))
    return 0 if all(result.outcome == "passed" for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
