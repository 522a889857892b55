"""Benchmark-side helpers: start a worker process, wait for its lines, always stop it."""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = ["ROOT", "Worker", "WorkerError", "free_tcp_port", "pinning", "two_cpus"]

#: The repository root: workers run as `python -m bench.workers.NAME` from here.
ROOT = Path(__file__).resolve().parents[2]


class WorkerError(RuntimeError):
    """A worker failed, exited early or did not answer in time; carries its stderr tail."""


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for servers without port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def two_cpus() -> tuple[int, int] | None:
    """Two different CPUs this process may run on, for the two processes of a figure;
    None on a machine (or cgroup) with one usable core, or without affinity calls."""
    try:
        usable = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None
    return (usable[0], usable[1]) if len(usable) >= 2 else None


def pinning() -> str:
    """How the two processes of a figure are placed, in words for the results."""
    cpus = two_cpus()
    if cpus is None:
        return "not pinned (one usable CPU)"
    return f"receiver pinned to CPU {cpus[0]}, sender to CPU {cpus[1]}"


class Worker:
    """One `python -m bench.workers.MODULE ARGS` process, used as a context manager.

    Leaving the block closes its stdin (which ends every worker), then terminates and at
    last kills it, so no worker survives the benchmark that started it. `cpu` pins the
    process (and the threads it starts) to one CPU: the two sides of a transfer on two
    cores, instead of wherever the scheduler puts them on a shared machine, from run to
    run.
    """

    def __init__(
        self, module: str, *args: str, env: dict[str, str] | None = None, cpu: int | None = None
    ) -> None:
        self.name = f"{module} {' '.join(args)}".strip()
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        self._buffer = b""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"bench.workers.{module}", *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, **(env or {})},
        )
        if cpu is not None:
            # Popen returns once the interpreter is exec'd, before it starts any thread:
            # every thread of the worker inherits the mask.
            try:
                os.sched_setaffinity(self.proc.pid, {cpu})
            except OSError:
                pass  # gone already: its result line says why

    def __enter__(self) -> Worker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stderr_tail(self, limit: int = 2000) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:]

    def _fail(self, what: str) -> WorkerError:
        code = self.proc.poll()
        status = "running" if code is None else f"exit status {code}"
        return WorkerError(f"worker `{self.name}` ({status}): {what}\n{self.stderr_tail()}")

    def read_line(self, prefix: str, timeout: float) -> str:
        """The rest of the next stdout line starting with `prefix` (other lines are skipped)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                while b"\n" in self._buffer:
                    line, self._buffer = self._buffer.split(b"\n", 1)
                    text = line.decode(errors="replace").strip()
                    if text.startswith(prefix + " ") or text == prefix:
                        return text[len(prefix) :].strip()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._fail(f"no {prefix} line within {timeout:.0f} s")
                if selector.select(left):
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        raise self._fail(f"exited before its {prefix} line")
                    self._buffer += chunk

    def ready_port(self, timeout: float = 30.0) -> int:
        return int(self.read_line("READY", timeout))

    def result(self, timeout: float) -> dict[str, object]:
        value = json.loads(self.read_line("RESULT", timeout))
        if not isinstance(value, dict):
            raise self._fail(f"RESULT is not an object: {value!r}")
        return value

    def send_line(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise self._fail(f"gone before it could be told {line!r}") from None

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise self._fail(f"still running after {timeout:.0f} s") from None

    def stop(self) -> None:
        """Close stdin (the worker exits by itself), then SIGTERM, then SIGKILL."""
        proc = self.proc
        try:
            if proc.stdin is not None and not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
            try:
                proc.wait(1.0)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(2.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5.0)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
            self._stderr.close()
