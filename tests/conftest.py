"""Shared test configuration: Hypothesis profiles (DESIGN section 10)."""

from __future__ import annotations

import os

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
