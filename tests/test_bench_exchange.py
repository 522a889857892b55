"""The opt-in mypyc build's tooling (issue 4): the pure baseline of a compiled tree, the
compiled-vs-pure figure, and the stale-build check that keeps old compiled code from
shadowing an edited source."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.bench_exchange import compiled_present

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_the_pure_runner_imports_the_core_from_source() -> None:
    done = _run("-m", "bench.pure", "bench.exchange", "--trips", "20", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["build"] == "pure" and result["us"] > 0
    plain = json.loads(_run("-m", "bench.exchange", "--trips", "20", "--json").stdout)
    assert plain["build"] == ("mypyc" if compiled_present() else "pure")


def test_the_bench_figure_compares_compiled_with_pure_or_says_why_not(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    done = _run("-m", "bench", "--quick", "--only", "exchange", "--output", str(output))
    assert done.returncode == 0, done.stderr
    records = json.loads(output.read_text())
    if not compiled_present():
        assert records == [] and "make fast" in done.stderr
        return
    (record,) = records
    assert record["name"] == "exchange.core_cpu.mypyc" and record["unit"] == "us"
    assert record["baseline"]["name"] == "exchange.core_cpu.pure"


def test_a_compiled_module_older_than_a_source_stops_the_check(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "build_mypyc.py", tmp_path / "scripts")
    package = tmp_path / "pilot_proto" / "delivery"
    package.mkdir(parents=True)
    source = package / "frames.py"
    compiled = package / "frames.cpython-311-x86_64-linux-gnu.so"
    source.write_text("")
    script = "scripts/build_mypyc.py"
    assert _run(script, "--check", cwd=tmp_path).returncode == 0  # nothing compiled
    compiled.write_bytes(b"")
    os.utime(source, (1_000, 1_000))
    os.utime(compiled, (2_000, 2_000))
    assert _run(script, "--check", cwd=tmp_path).returncode == 0  # built after the edit
    os.utime(source, (3_000, 3_000))  # edited since
    stale = _run(script, "--check", cwd=tmp_path)
    assert stale.returncode == 1
    assert "pilot_proto/delivery/frames.py" in stale.stderr and "make fast" in stale.stderr
    assert _run(script, "--clean", cwd=tmp_path).returncode == 0
    assert not compiled.exists() and source.exists()
    assert _run(script, "--check", cwd=tmp_path).returncode == 0
