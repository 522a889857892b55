"""Worker-side helpers: the line protocol, the parent watchdog and loop selection."""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable

__all__ = [
    "HOST",
    "RttSamples",
    "announce_ready",
    "install_uvloop",
    "report",
    "watch_parent",
]

#: Every benchmark socket binds and connects here, never anywhere else.
HOST = "127.0.0.1"


def announce_ready(port: int) -> None:
    """Tell the parent this worker listens on `port`."""
    print(f"READY {port}", flush=True)


def report(result: dict[str, object]) -> None:
    """Hand one measurement to the parent."""
    print("RESULT " + json.dumps(result), flush=True)


def watch_parent(lifetime: float, on_line: Callable[[str], None] | None = None) -> None:
    """Exit this process when stdin closes or after `lifetime` seconds, whichever is first.

    A real OS thread reads stdin, so this works whatever loop the worker runs (gevent is not
    monkey-patched in workers). Lines other than end of file go to `on_line`, from that
    thread: it must only set flags.
    """

    def read_stdin() -> None:
        for line in sys.stdin:
            if on_line is not None:
                on_line(line.strip())
        os._exit(0)

    def expire() -> None:
        time.sleep(lifetime)
        print(f"worker: lifetime of {lifetime:.0f} s exceeded, exiting", file=sys.stderr)
        os._exit(3)

    threading.Thread(target=read_stdin, name="bench-parent-watch", daemon=True).start()
    threading.Thread(target=expire, name="bench-lifetime", daemon=True).start()


def install_uvloop() -> str:
    """Use uvloop for asyncio when it is installed; return the loop's name for the record."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    uvloop.install()
    return "uvloop"


class RttSamples:
    """Round-trip times of one measurement, in seconds, with the figure the bench reports."""

    __slots__ = ("samples",)

    def __init__(self) -> None:
        self.samples: list[float] = []

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    def summary(self, **extra: object) -> dict[str, object]:
        """Median and mean in microseconds (the median is the figure: robust to the noise
        of a shared machine), plus the count."""
        if not self.samples:
            raise RuntimeError("no round trip completed")
        result: dict[str, object] = {
            "count": len(self.samples),
            "median_us": statistics.median(self.samples) * 1e6,
            "mean_us": statistics.fmean(self.samples) * 1e6,
        }
        result.update(extra)
        return result
