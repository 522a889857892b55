"""Shared test configuration: Hypothesis profiles (DESIGN section 10), and no tests of
compiled modules older than their sources."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# CI: no deadlines (shared 2-core machines), bounded and derandomized so runs repeat.
settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    max_examples=50,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=50)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Python imports a compiled module before its .py: after an edit, a run straight from
    pytest (not `make test`, which rebuilds) would test the old code without a word."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "build_mypyc.py"
    spec = importlib.util.spec_from_file_location("build_mypyc", script)
    if spec is None or spec.loader is None:
        return
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    stale = build.stale_sources()
    if stale:
        pytest.exit(build.stale_advice(stale), returncode=4)
