"""The CLI benchmarks of issue 5: a quick run gives every figure with its target."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_cli_bench_gives_every_figure(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "cli", "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    records = {r["name"]: r for r in json.loads(output.read_text())}
    assert set(records) == {
        "cli.startup_overhead", "cli.startup_overhead_cpu", "cli.info_process",
        "cli.send_message", "cli.approve_to_deliverable", "cli.daemon_idle_rss"}
    overhead = records["cli.startup_overhead"]
    assert overhead["baseline"]["name"] == "cli.python_c_pass" and overhead["unit"] == "ms"
    for name in ("cli.startup_overhead", "cli.approve_to_deliverable", "cli.daemon_idle_rss"):
        assert isinstance(records[name]["target_met"], bool), name
    assert 5 < records["cli.daemon_idle_rss"]["value"] < 500
