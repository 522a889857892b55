"""A pilot_threads node in a process of its own (see common.py for the protocol)."""

from __future__ import annotations

import sys
from typing import Any

from blocking_worker import BlockingWorker
from pilot_threads import Node

from pilot_proto.errors import PilotTimeout


def cancel_write(stream: Any, data: bytes) -> str:
    """A thread cannot be interrupted: the write's own timeout gives up part-way."""
    try:
        stream.write(data, timeout=0.05)
    except PilotTimeout:
        return "timeout"
    return "finished"


if __name__ == "__main__":
    BlockingWorker(Node, cancel_write).serve(sys.stdin)
