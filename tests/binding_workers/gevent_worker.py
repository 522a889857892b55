"""A pilot_gevent node in a monkey-patched process of its own (see common.py)."""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402  (after patching, as gevent requires)
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from blocking_worker import BlockingWorker  # noqa: E402
from gevent.fileobject import FileObjectPosix  # noqa: E402
from pilot_gevent import Node  # noqa: E402


def cancel_write(stream: Any, data: bytes) -> str:
    """Kill the greenlet blocked in the middle of a large write."""
    writer = gevent.spawn(stream.write, data)
    gevent.sleep(0.05)
    if writer.dead:
        return "finished"
    writer.kill()
    return "killed"


def lines() -> Any:
    stdin = FileObjectPosix(sys.stdin.fileno(), "r", close=False)
    yield from stdin


if __name__ == "__main__":
    BlockingWorker(Node, cancel_write).serve(lines())
