"""Each binding's example runs as a user would run it, and does what it says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("binding", ["asyncio", "gevent", "threads"])
def test_example_runs(binding: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{binding}_echo.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    assert "bob   got 'hello bob'" in out
    assert "was receipted by bob" in out
    assert "alice got the reply 'hello alice, bob here'" in out
    assert "came back as 'A STREAM, ECHOED IN CAPITALS'" in out
