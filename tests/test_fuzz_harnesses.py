"""Every fuzz harness runs: its committed seeds replay cleanly, fresh seeds come out of
the simulator, and a short atheris run of each (in its own process, as `make fuzz` runs
them) finds no crash. The seconds here are a smoke test; `make fuzz` runs for minutes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz import CORPUS_DIR, HARNESSES, corpus_inputs, load
from fuzz.make_corpus import MAX_TOTAL_BYTES
from fuzz.make_corpus import main as make_corpus

ROOT = Path(__file__).resolve().parent.parent
#: Per harness, under atheris. Two jobs at once: the CI machine has two cores.
ATHERIS_SECONDS = int(os.environ.get("FUZZ_SMOKE_SECONDS", "2"))


@pytest.mark.parametrize("name", HARNESSES)
def test_committed_seeds_replay_cleanly(name: str) -> None:
    seeds = corpus_inputs(name)
    assert seeds, f"fuzz/corpus/{name}/ is empty: run python -m fuzz.make_corpus"
    harness = load(name)
    for data in seeds:
        harness.test_one_input(data)


def test_committed_corpora_stay_small() -> None:
    total = sum(p.stat().st_size for p in CORPUS_DIR.rglob("*") if p.is_file())
    assert total < MAX_TOTAL_BYTES


def test_make_corpus_writes_seeds_from_simulator_traffic(tmp_path: Path) -> None:
    assert make_corpus(["--out", str(tmp_path)]) == 0
    for name in HARNESSES:
        files = list((tmp_path / name).iterdir())
        assert files, f"no seeds for {name}"
        harness = load(name)
        for path in files[:20]:
            harness.test_one_input(path.read_bytes())


def test_every_harness_runs_under_atheris_without_a_crash(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "fuzz", "--seconds", str(ATHERIS_SECONDS), "--jobs", "2",
               "--work-dir", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    report = result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.split()[:1] and
             line.split()[0] in HARNESSES]
    assert len(lines) == len(HARNESSES), report
    assert result.returncode == 0, report
    for line in lines:
        assert " ok " in line and int(line.split()[2]) > 0, report
