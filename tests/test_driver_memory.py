"""Freed datagram buffers stay in the process once a node has a socket (driver/memory.py):
a sender recycling 64 KB buffers stops page-faulting, and a user's own malloc settings win.
Each case runs in a fresh interpreter: the tuning is once per process."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the tuning applies to glibc's malloc only"
)

# Rounds of what a wake-up of a fast sender does: build 40 datagram-sized buffers, then
# free them all; page faults counted before and after the node opens its socket.
_PROBE = """
import json, resource, socket
from pilot_proto import Identity
from pilot_proto.driver import UdpPort
from pilot_proto.driver.memory import keep_freed_memory
import logging

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def churn():
    start = faults()
    for n in range(200):
        batch = [bytes([n % 256]) * 65000 for _ in range(40)]
        del batch
    return faults() - start

churn()
before = churn()
port = UdpPort.open(socket, "127.0.0.1", 0, None, lambda *a: None, {}, logging.getLogger())
port.close()
churn()
after = churn()
print(json.dumps({"before": before, "after": after, "done": keep_freed_memory()}))
"""


def _probe(**env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60,
        env={**clean, **env, "PILOT_MALLOC_TUNING": env.get("PILOT_MALLOC_TUNING", "")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_opening_a_socket_stops_the_page_faults_of_recycled_datagram_buffers() -> None:
    result = _probe()
    before, after = result["before"], result["after"]
    assert isinstance(before, int) and isinstance(after, int)
    # 200 rounds of 40 x 65000 bytes: glibc trims and faults in ~16 pages per buffer anew
    # on every round; with the freed heap kept, the pages are reused.
    assert before > 10_000, result
    assert after < before / 20, result
    assert str(result["done"]).startswith("glibc keeps 32 MiB"), result


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"MALLOC_TRIM_THRESHOLD_": "131072"}, "MALLOC_TRIM_THRESHOLD_ set by the user"),
        ({"PILOT_MALLOC_TUNING": "0"}, "PILOT_MALLOC_TUNING=0"),
    ],
)
def test_the_users_choice_of_malloc_settings_wins(env: dict[str, str], reason: str) -> None:
    result = _probe(**env)
    assert result["done"] == f"left alone: {reason}", result
    before, after = result["before"], result["after"]
    assert isinstance(before, int) and isinstance(after, int)
    assert after > before / 2, result  # still trimming and faulting, as the user asked
