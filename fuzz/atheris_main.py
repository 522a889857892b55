"""Run one harness under atheris: `python -m fuzz.atheris_main NAME [libFuzzer flags and
corpus directories]`. `python -m fuzz` starts this once per harness."""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-untyped]

from . import load


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit("usage: python -m fuzz.atheris_main NAME [libFuzzer arguments]")
    name = argv[1]
    # Instrument the code under test (and the harness) for coverage feedback.
    with atheris.instrument_imports(include=["pilot_proto", "pilot_daemon", "fuzz"]):
        harness = load(name)
    atheris.Setup([argv[0], *argv[2:]], harness.test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
