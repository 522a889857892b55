"""The test's side of the binding workers: spawn one, send commands, wait for answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: Bindings the conformance suite runs; "asyncio-uvloop" is the asyncio worker on uvloop.
BINDINGS = ("asyncio", "gevent", "threads")


class RemoteError(Exception):
    """A command failed in the worker; `kind` is the exception class, `kinds` its bases."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(f"{answer['error']}: {answer['message']}\n{answer.get('trace', '')}")
        self.kind: str = answer["error"]
        self.kinds: list[str] = answer["kinds"]


class Worker:
    """One worker process holding one node of `binding`."""

    def __init__(self, binding: str) -> None:
        name, _, loop = binding.partition("-")
        command = [sys.executable, str(HERE / f"{name}_worker.py")]
        if loop:
            command.append(f"--{loop}")
        self.binding = binding
        self._stderr = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._next_id = 0
        self._calls: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.address = ""
        self.record = ""
        self.endpoint: list[Any] = []

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            answer = json.loads(line)
            with self._lock:
                future = self._calls.pop(answer["id"])
            if answer["ok"]:
                future.set_result(answer["result"])
            else:
                future.set_exception(RemoteError(answer))
        with self._lock:
            calls, self._calls = self._calls, {}
        for future in calls.values():
            future.set_exception(RuntimeError(f"{self.binding} worker exited:\n{self.stderr()}"))

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-4000:]

    def start(self, op: str, **args: Any) -> Future[Any]:
        """Send a command; the future completes with its answer."""
        future: Future[Any] = Future()
        with self._lock:
            self._next_id += 1
            command_id = self._next_id
            self._calls[command_id] = future
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"id": command_id, "op": op, **args}) + "\n")
        self._process.stdin.flush()
        return future

    def call(self, op: str, *, wait: float = 60.0, **args: Any) -> Any:
        """Send a command and return its answer (RemoteError if it failed)."""
        future = self.start(op, **args)
        try:
            return future.result(wait)
        except TimeoutError:
            message = f"{self.binding} {op} took over {wait} s:\n{self.stderr()}"
            raise TimeoutError(message) from None

    def node(self, seed: bytes, **args: Any) -> Worker:
        """Start the worker's node with the identity `seed`."""
        info = self.call("start", seed=seed.hex(), **args)
        self.address, self.record, self.endpoint = info["address"], info["record"], info["endpoint"]
        return self

    def knows(self, other: Worker) -> None:
        self.call("add_peer", record=other.record, endpoint=other.endpoint)

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                assert self._process.stdin is not None
                self._process.stdin.write(json.dumps({"id": 0, "op": "exit"}) + "\n")
                self._process.stdin.close()
                self._process.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        self._stderr.close()
