"""`pilotctl rendezvous serve` as a real process, with a client Node on a real UDP socket
(loopback only, port 0, its own PILOT_HOME)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pilot_proto import Identity, Node, NodeConfig
from pilot_proto.rendezvous import (
    ClientEvent,
    LookupResult,
    Registered,
    RegistrationFailed,
    RendezvousClient,
    decode_server_key,
)

PILOTCTL = [sys.executable, "-m", "pilot_daemon"]
READY = re.compile(r"127\.0\.0\.1:(\d+)#([0-9a-f]{64})")


class Server:
    def __init__(self, home: Path, *extra: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PILOT_RENDEZVOUS"}
        env["PILOT_HOME"] = str(home)
        self.proc = subprocess.Popen(
            [*PILOTCTL, *extra, "rendezvous", "serve", "--listen", "127.0.0.1:0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.first_line = self.proc.stdout.readline().strip()

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout=15)
        finally:
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=15)


@pytest.fixture
def home() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="pilot-rv-"))
    yield root / "home"
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def servers() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(home: Path, *extra: str) -> Server:
        server = Server(home, *extra)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


class ClientPump(asyncio.DatagramProtocol):
    """The daemon's part, minimally: a Node on a UDP socket plus its rendezvous client."""

    def __init__(self, identity: Identity, endpoint: tuple[str, int], key: bytes) -> None:
        self.identity = identity
        self.endpoint = endpoint
        self.key = key
        self.node = Node(identity, NodeConfig(), rng=os.urandom, wall_clock=time.time)
        self.client: RendezvousClient | None = None
        self.events: list[ClientEvent] = []
        self.transport: Any = None
        self.timer: asyncio.TimerHandle | None = None

    def start(self, hostname: str | None, local: tuple[str, int]) -> None:
        self.client = RendezvousClient(
            self.node,
            self.identity,
            self.endpoint,
            self.key,
            hostname=hostname,
            public=False,
            candidates=[local],
            rng=os.urandom,
            wall_clock=time.time,
        )
        self.client.start(time.monotonic())
        self.flush()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.node.receive_datagram(data, (addr[0], addr[1]), time.monotonic())
        self.flush()

    def on_timer(self) -> None:
        now = time.monotonic()
        self.node.handle_timer(now)
        assert self.client is not None
        self.client.handle_timer(now)
        self.flush()

    def flush(self) -> None:
        assert self.client is not None
        now = time.monotonic()
        for _ in range(8):
            routed = 0
            while (event := self.node.next_event()) is not None:
                routed += 1
                self.client.handle_event(event, now)
            while (client_event := self.client.next_event()) is not None:
                self.events.append(client_event)
            transmits = self.node.datagrams_to_send(now)
            for transmit in transmits:
                self.transport.sendto(transmit.data, transmit.addr)
            if not transmits and not routed:
                break
        due = [t for t in (self.node.get_timer(), self.client.get_timer()) if t is not None]
        if self.timer is not None:
            self.timer.cancel()
        if due:
            delay = max(min(due) - time.monotonic(), 0.001)
            self.timer = asyncio.get_running_loop().call_later(delay, self.on_timer)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out; events so far: {self.events}"
            await asyncio.sleep(0.01)

    async def ask(self, call: Callable[[RendezvousClient, float], int]) -> ClientEvent:
        assert self.client is not None
        rid = call(self.client, time.monotonic())
        self.flush()
        await self.wait_for(lambda: any(getattr(e, "request_id", None) == rid for e in self.events))
        return next(e for e in self.events if getattr(e, "request_id", None) == rid)


async def run_client(
    endpoint: tuple[str, int],
    key: bytes,
    body: Callable[[ClientPump], Any],
    *,
    identity: Identity | None = None,
    hostname: str | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    pump = ClientPump(identity or Identity.generate(os.urandom), endpoint, key)
    transport, _ = await loop.create_datagram_endpoint(lambda: pump, sock=sock)
    try:
        pump.start(hostname, sock.getsockname())
        await body(pump)
    finally:
        if pump.timer is not None:
            pump.timer.cancel()
        transport.close()


def test_serve_prints_its_address_and_key_registers_and_restarts_with_the_same_key(
    home: Path, servers: Callable[..., Server]
) -> None:
    server = servers(home)
    match = READY.fullmatch(server.first_line)
    assert match, server.first_line
    port, key_hex = int(match.group(1)), match.group(2)
    key = decode_server_key(key_hex)
    identity = Identity.generate(os.urandom)

    async def register_and_look_up(pump: ClientPump) -> None:
        await pump.wait_for(lambda: any(isinstance(e, Registered) for e in pump.events))
        registered = next(e for e in pump.events if isinstance(e, Registered))
        assert registered.static_key == key
        assert registered.observed is not None and registered.observed[0] == "127.0.0.1"
        for query in ("proc-test", identity.address):
            found = await pump.ask(lambda c, now, q=query: c.lookup(q, now))
            assert isinstance(found, LookupResult) and found.record.address == identity.address
            assert found.record.hostname == "proc-test"

    asyncio.run(
        run_client(
            ("127.0.0.1", port), key, register_and_look_up, identity=identity, hostname="proc-test"
        )
    )
    assert server.stop() == 0

    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for name in ("rendezvous.key", "rendezvous.db"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600

    again = servers(home)
    match2 = READY.fullmatch(again.first_line)
    assert match2 and match2.group(2) == key_hex
    port2 = int(match2.group(1))

    async def still_known(pump: ClientPump) -> None:
        # The registry is on disk: a fresh client finds the name registered before.
        await pump.wait_for(lambda: any(isinstance(e, Registered) for e in pump.events))
        found = await pump.ask(lambda c, now: c.lookup("proc-test", now))
        assert isinstance(found, LookupResult) and found.record.address == identity.address

    asyncio.run(run_client(("127.0.0.1", port2), key, still_known))
    # The same name from another key is refused.

    async def taken(pump: ClientPump) -> None:
        await pump.wait_for(lambda: any(isinstance(e, RegistrationFailed) for e in pump.events))
        failed = next(e for e in pump.events if isinstance(e, RegistrationFailed))
        assert failed.code == "already_exists"

    asyncio.run(run_client(("127.0.0.1", port2), key, taken, hostname="proc-test"))
    assert again.stop(signal.SIGINT) == 0


def test_json_output_and_a_second_address(home: Path, servers: Callable[..., Server]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PILOT_RENDEZVOUS"}
    env["PILOT_HOME"] = str(home)
    proc = subprocess.Popen(
        [
            *PILOTCTL,
            "rendezvous",
            "serve",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--listen2",
            "127.0.0.1:0",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        envelope = json.loads(proc.stdout.readline())
        assert envelope["status"] == "ok"
        data = envelope["data"]
        assert re.fullmatch(r"127\.0\.0\.1:\d+", data["listen"])
        assert re.fullmatch(r"[0-9a-f]{64}", data["key"])
        assert data["rendezvous"] == f"{data['listen']}#{data['key']}"
        assert re.fullmatch(r"[0-9a-f]{4}(:[0-9a-f]{4}){7}", data["address"])
        assert re.fullmatch(r"127\.0\.0\.1:\d+", data["listen2"])
        assert data["listen2"] != data["listen"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_a_taken_port_fails_at_once_with_a_code(home: Path, servers: Callable[..., Server]) -> None:
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", 0))
    try:
        port = blocker.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k != "PILOT_RENDEZVOUS"}
        env["PILOT_HOME"] = str(home)
        done = subprocess.run(
            [*PILOTCTL, "--json", "rendezvous", "serve", "--listen", f"127.0.0.1:{port}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        blocker.close()
    assert done.returncode == 1
    envelope = json.loads(done.stdout)
    assert envelope["status"] == "error" and envelope["code"] == "already_exists"
