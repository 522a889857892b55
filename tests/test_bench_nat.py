"""The NAT benchmark of issue 6: a quick run in the NAT lab gives every figure (root)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from natlab import missing_reason  # noqa: E402

REASON = missing_reason()


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_quick_nat_bench_gives_every_figure(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "nat", "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr
    records = {r["name"]: r for r in json.loads(output.read_text())}
    assert set(records) == {"nat.first_message_to_direct", "nat.introduction_to_direct",
                            "nat.direct_throughput", "nat.relay_throughput"}
    relay = records["nat.relay_throughput"]
    assert relay["baseline"]["name"] == "nat.direct_throughput" and relay["unit"] == "Mbit/s"
    assert relay["value"] > 0 and records["nat.direct_throughput"]["value"] > 0
