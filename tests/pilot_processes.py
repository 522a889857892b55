"""Real pilotctl processes for end-to-end tests: a rendezvous server and agents.

Everything runs on loopback with free ports; each agent has its own PILOT_HOME. Use
`stop()` / `stop_quietly()` in teardown: servers get SIGTERM (by pid), daemons
`pilotctl daemon stop`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_SCRIPT = Path(sys.executable).with_name("pilotctl")
#: `pilotctl` as a user types it (the venv's console script), else `python -m`.
PILOTCTL = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "pilot_daemon"]


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PILOT_RENDEZVOUS", "NOTIFY_SOCKET", "PILOT_HOME")}
    env["PILOT_HOME"] = str(home)
    return env


class RendezvousServer:
    """`pilotctl rendezvous serve --listen 127.0.0.1:PORT` in its own state dir."""

    def __init__(self, home: Path, listen: str = "127.0.0.1:0", timeout: float = 15.0) -> None:
        self.home = home
        self.proc = subprocess.Popen(
            [*PILOTCTL, "rendezvous", "serve", "--listen", listen],
            env=clean_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().strip() if ready else ""
        if "#" not in line:
            self.stop()
            raise RuntimeError(f"rendezvous did not start: {line!r} "
                               f"{self.proc.stderr.read() if self.proc.stderr else ''}")
        #: The first line exactly as printed: HOST:PORT#KEY.
        self.line = line
        self.hostport, self.key = line.split("#", 1)
        self.port = int(self.hostport.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> RendezvousServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Agent:
    """One PILOT_HOME and the pilotctl commands run against it."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = clean_env(home)

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*PILOTCTL, *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def ok(self, *args: str, timeout: float = 60) -> Any:
        done = self.run("--json", *args, timeout=timeout)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        body = json.loads(done.stdout)
        assert body["status"] == "ok", body
        return body["data"]

    def error(self, *args: str, exit_code: int = 1, timeout: float = 60) -> dict[str, Any]:
        done = self.run("--json", *args, timeout=timeout)
        assert done.returncode == exit_code, (args, done.returncode, done.stdout, done.stderr)
        body: dict[str, Any] = json.loads(done.stdout)
        assert body["status"] == "error", body
        return body

    def start(self, *args: str) -> dict[str, Any]:
        data: dict[str, Any] = self.ok("daemon", "start", *args)
        return data

    def pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.home / "daemon.lock").read_text().split()[0])
        return None

    def stop_quietly(self) -> None:
        if (self.home / "daemon.lock").exists():
            with contextlib.suppress(Exception):
                self.run("daemon", "stop", timeout=40)


class World:
    """A rendezvous and agents a and b under one temporary root; more on demand."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: list[RendezvousServer] = []
        self.agents: list[Agent] = []
        self.rendezvous = self.server("rendezvous")
        self.a = self.agent("a")
        self.b = self.agent("b")
        self.a_id = ""
        self.b_id = ""

    @classmethod
    @contextlib.contextmanager
    def temporary(cls, prefix: str) -> Iterator[World]:
        """A world in a fresh temporary directory; everything stopped and removed after."""
        root = Path(tempfile.mkdtemp(prefix=prefix))
        world: World | None = None
        try:
            world = cls(root)
            yield world
        finally:
            if world is not None:
                world.close()
            shutil.rmtree(root, ignore_errors=True)

    def server(self, name: str, listen: str = "127.0.0.1:0") -> RendezvousServer:
        server = RendezvousServer(self.root / name, listen)
        self.servers.append(server)
        return server

    def agent(self, name: str) -> Agent:
        agent = Agent(self.root / name)
        self.agents.append(agent)
        return agent

    def close(self) -> None:
        for agent in self.agents:
            agent.stop_quietly()
        for server in self.servers:
            server.stop()


def wait_for(condition: Any, timeout: float = 10.0, interval: float = 0.05,
             what: str = "condition") -> Any:
    """Poll `condition()` until it returns something true; return it (or fail, naming
    `what` was awaited)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout} s")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] not in ("Z", "X")
