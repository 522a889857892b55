"""Atheris harnesses for every decoder and entry point that faces hostile input (issue 7).

Each harness is a module of this package with two functions:

- `test_one_input(data: bytes) -> None`: feed one input; raise (an assertion or any
  unexpected exception) only on a bug;
- `seeds(traffic) -> list[bytes]`: seed inputs made from real traffic of the simulator
  (`fuzz.traffic.record`), written to `fuzz/corpus/<name>/` by `python -m fuzz.make_corpus`.

`python -m fuzz --seconds N [--only NAME]` runs each harness under atheris in its own
process for a bounded time. This module imports nothing from the project, so that the
harness subprocess can import (and so instrument) the code under test itself.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

__all__ = ["CORPUS_DIR", "HARNESSES", "RUN_DIR", "corpus_inputs", "load"]

#: Harness names, cheapest first. Each is a module `fuzz/<name>.py`.
HARNESSES: tuple[str, ...] = (
    "outer_packets",
    "replay_window",
    "frames",
    "records",
    "stun",
    "noise_messages",
    "handshake_payloads",
    "rendezvous_messages",
    "mailbox",
    "connection",
    "node",
    "rendezvous_server",
    "rendezvous_client",
    "rendezvous_relay",
    "local_api",
)

PACKAGE_DIR = Path(__file__).resolve().parent
#: Committed seeds, one directory per harness.
CORPUS_DIR = PACKAGE_DIR / "corpus"
#: Where fuzzing runs keep what they find (git-ignored): inputs and crash artifacts.
RUN_DIR = PACKAGE_DIR / "corpus-run"


def load(name: str) -> ModuleType:
    if name not in HARNESSES:
        raise KeyError(f"no harness named {name!r}; known: {', '.join(HARNESSES)}")
    return importlib.import_module(f"fuzz.{name}")


def corpus_inputs(name: str) -> list[bytes]:
    """The committed seeds of a harness, in a stable order."""
    directory = CORPUS_DIR / name
    if not directory.is_dir():
        return []
    return [path.read_bytes() for path in sorted(directory.iterdir()) if path.is_file()]
