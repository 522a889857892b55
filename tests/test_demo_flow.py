"""`make demo` (examples/demo_flow.py) runs the issue-5 flow and cleans up after itself."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo_flow.py"


def test_demo_runs_the_flow_and_leaves_nothing_behind() -> None:
    done = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"127\.0\.0\.1:\d+#[0-9a-f]{64}", out)
    assert "pilotctl handshake agent-b --justification 'task routing'" in out
    assert '"data": "run subtask: analyze document X"' in out
    assert out.count("delivered message ") == 4
    assert "demo complete" in out
    root = re.search(r"(/\S+pilot-demo-\w+) removed", out)
    assert root is not None and not Path(root.group(1)).exists()
    # Its daemons and server are gone (a daemon holds its state dir's lock while up).
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", out)]
    assert pids and not [p for p in pids if Path(f"/proc/{p}").exists()
                         and "Z" not in Path(f"/proc/{p}/stat").read_text().split(")")[1][:3]]
