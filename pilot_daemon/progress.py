"""`send-file`'s progress bar on a terminal: the daemon's `file.progress` events, drawn on
stderr while the request runs (never under --json, never when stderr is not a TTY)."""

from __future__ import annotations

import contextlib
import sys
import threading
import time

from .client import LocalClient
from .errors import PilotctlError
from .paths import StateDir

_WIDTH = 30


class ProgressBar:
    """Follows the event stream in a thread; draws `name [####....] 42% 3.1 MiB/s`."""

    def __init__(self, state: StateDir, path: str, name: str) -> None:
        self.state = state
        self.path = path
        self.name = name
        self.started = time.monotonic()
        self.drawn = False
        self._complete = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self) -> ProgressBar:
        self._thread.start()
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is None:
            self._complete.wait(0.5)  # the last event may trail the answer a little
        with self._lock:
            if self.drawn:
                sys.stderr.write("\n")
                sys.stderr.flush()
            self.drawn = False
            self._complete.set()  # draw nothing more

    def _follow(self) -> None:
        with contextlib.suppress(PilotctlError, OSError):
            stream = LocalClient(self.state).stream("/v1/events?kinds=file.progress")
            for event in stream:
                data = event.get("data") or {}
                if data.get("path") == self.path:
                    self._draw(int(data.get("sent", 0)), int(data.get("bytes", 0)))

    def _draw(self, sent: int, size: int) -> None:
        with self._lock:
            if self._complete.is_set():
                return
            self._draw_locked(sent, size)
            if sent >= size:
                self._complete.set()

    def _draw_locked(self, sent: int, size: int) -> None:
        share = sent / size if size else 1.0
        filled = int(share * _WIDTH)
        rate = sent / max(time.monotonic() - self.started, 1e-6) / (1 << 20)
        sys.stderr.write(f"\r{self.name} [{'#' * filled}{'.' * (_WIDTH - filled)}] "
                         f"{share:4.0%} {rate:.1f} MiB/s")
        sys.stderr.flush()
        self.drawn = True
