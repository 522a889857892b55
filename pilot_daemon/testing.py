"""Test support: an in-memory stand-in for the network service, and a way to run
daemons inside a test process.

`LoopbackNetwork` implements `NetworkService` by calling the other daemon's
`NetworkHost` directly (a `Switchboard` plays rendezvous, mailbox and sessions). It has
no crypto and no packets: it exists to test the control plane, the local API and
pilotctl end to end before (and independently of) the real network service, and to
show the network side what the host expects of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .daemon import Daemon, DaemonOptions
from .errors import ErrorCode, PilotctlError
from .inbox import IncomingMessage
from .network import (
    FileSent,
    NetworkConfig,
    NetworkHost,
    NetworkStatus,
    PeerPath,
    PeerRecord,
    TrustAnswerNote,
    TrustRequestNote,
)
from .paths import StateDir

__all__ = ["DaemonThread", "LoopbackNetwork", "Switchboard"]


class Switchboard:
    """The shared "internet" of a set of LoopbackNetworks: names, mailboxes, sessions."""

    def __init__(self) -> None:
        self.nodes: dict[str, LoopbackNetwork] = {}
        self.names: dict[str, str] = {}  # hostname -> address (first claim wins)
        self.keys: dict[str, bytes] = {}  # address -> public key
        self.online = True  # False: every operation fails with connection_failed

    def network(self) -> LoopbackNetwork:
        return LoopbackNetwork(self)


class LoopbackNetwork:
    """A NetworkService whose wire is a function call into the peer daemon."""

    def __init__(self, board: Switchboard) -> None:
        self.board = board
        self.host: NetworkHost | None = None
        self.address = ""
        self.public_key = b""
        self.hostname: str | None = None
        self.allow_list: list[str] = []
        self.forgotten: list[str] = []
        self.node_trusts: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle ---

    async def start(self, config: NetworkConfig, host: NetworkHost) -> None:
        self._check_online()
        self.host = host
        self.address = config.identity.address
        self.public_key = config.identity.public_key
        self.board.keys[self.address] = self.public_key
        if config.hostname:
            await self.register_hostname(config.hostname)
        self.board.nodes[self.address] = self
        self.allow_list = sorted(host.trusted_keys())

    async def stop(self) -> None:
        self.board.nodes.pop(self.address, None)
        for task in list(self._tasks):
            task.cancel()

    def status(self) -> NetworkStatus:
        return NetworkStatus(available=True, registered=self.address in self.board.nodes,
                             nat_type="loopback", candidates=("loopback",))

    # --- names ---

    async def lookup(self, target: str) -> PeerRecord:
        self._check_online()
        address = self.board.names.get(target, target)
        key = self.board.keys.get(address)
        if key is None:
            raise PilotctlError(ErrorCode.NOT_FOUND, f"no node named {target}",
                                "check the spelling, or ask its operator for its address")
        hostname = next((n for n, a in self.board.names.items() if a == address), None)
        return PeerRecord(address, key, hostname)

    async def register_hostname(self, hostname: str | None) -> None:
        self._check_online()
        if hostname is None:
            if self.hostname is not None:
                self.board.names.pop(self.hostname, None)
            self.hostname = None
            return
        owner = self.board.names.get(hostname)
        if owner is not None and owner != self.address:
            raise PilotctlError(ErrorCode.ALREADY_EXISTS,
                                f"the hostname {hostname} belongs to another node")
        if self.hostname and self.hostname != hostname:
            self.board.names.pop(self.hostname, None)
        self.board.names[hostname] = self.address
        self.hostname = hostname

    async def publish_allow_list(self, addresses: Sequence[str]) -> None:
        self._check_online()
        self.allow_list = list(addresses)

    def peer_trusted(self, address: str) -> None:
        self.node_trusts.append(address)  # the real service sets the core's trust here

    # --- trust notes: delivered later, like the mailbox does ---

    async def send_trust_request(
        self, peer: PeerRecord, request_id: str, justification: str | None
    ) -> str:
        target = self._peer(peer.address)
        note = TrustRequestNote(request_id, self._record(), justification, time.time())
        self._later(target._host().on_trust_request(note))
        return "mailbox"

    async def send_trust_answer(self, peer: PeerRecord, request_id: str, accept: bool) -> None:
        target = self._peer(peer.address)
        self._later(target._host().on_trust_answer(
            TrustAnswerNote(request_id, self._record(), accept)))

    async def forget_peer(self, address: str) -> None:
        self._check_online()
        self.forgotten.append(address)

    # --- sessions ---

    async def send_message(
        self, peer: PeerRecord, message_id: str, type: str, data: bytes,
        reply_to: str | None, timeout: float,
    ) -> None:
        target = self._peer(peer.address)
        if self.address not in target._host().trusted_keys():
            raise PilotctlError(ErrorCode.NOT_TRUSTED,
                                f"{peer.address} does not trust this node")
        message = IncomingMessage(message_id, type, self.address, self.hostname, data,
                                  reply_to, time.time())
        await asyncio.wait_for(target._host().on_message(message), timeout)

    async def send_file(
        self, peer: PeerRecord, path: Path, timeout: float, name: str | None = None
    ) -> FileSent:
        target = self._peer(peer.address)
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        incoming = target._host().begin_file(self.address, name or path.name, len(data),
                                             digest)
        incoming.write(data)
        final = incoming.commit()
        await target._host().on_file(self.address, final, digest)
        return FileSent(final.name, len(data), digest)

    async def peers(self) -> list[PeerPath]:
        self._check_online()
        return [PeerPath(address, None, "direct", "loopback", 0.1, None)
                for address in sorted(self._host().trusted_keys())]

    async def ping(self, peer: PeerRecord, count: int, timeout: float) -> list[float | None]:
        self._peer(peer.address)
        return [0.1] * count

    async def bench(self, peer: PeerRecord, size: int, timeout: float) -> dict[str, Any]:
        self._peer(peer.address)
        return {"bytes": size, "seconds": 0.001, "mbit_per_s": size * 8 / 1000.0}

    async def call(self, operation: str, params: Mapping[str, Any]) -> Any:
        raise PilotctlError(ErrorCode.CONNECTION_FAILED,
                            f"{operation}: not implemented by the loopback network")

    # --- helpers ---

    def _check_online(self) -> None:
        if not self.board.online:
            raise PilotctlError(ErrorCode.CONNECTION_FAILED, "the loopback network is down")

    def _peer(self, address: str) -> LoopbackNetwork:
        self._check_online()
        target = self.board.nodes.get(address)
        if target is None:
            raise PilotctlError(ErrorCode.CONNECTION_FAILED, f"{address} is not reachable")
        return target

    def _host(self) -> NetworkHost:
        assert self.host is not None, "network service not started"
        return self.host

    def _record(self) -> PeerRecord:
        return PeerRecord(self.address, self.public_key, self.hostname)

    def _later(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class DaemonThread:
    """Run daemons (each with its own state dir) in one event loop on a thread, so that
    real pilotctl processes and sockets can talk to them while the test drives them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.daemons: list[Daemon] = []
        self._futures: list[Any] = []
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def start(self, home: Path, options: DaemonOptions, network: Any,
              timeout: float = 10.0) -> Daemon:
        daemon = Daemon(StateDir(home), options, network_factory=lambda: network,
                        environ={})
        future = asyncio.run_coroutine_threadsafe(daemon.serve(), self.loop)
        deadline = time.monotonic() + timeout
        while not daemon.ready.wait(0.01):
            if future.done():
                future.result()  # raises the start-up error
            if time.monotonic() > deadline:
                raise TimeoutError("daemon did not become ready")
        self.daemons.append(daemon)
        self._futures.append(future)
        return daemon

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine on the daemons' loop (to poke the control plane)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, daemon: Daemon, timeout: float = 10.0) -> None:
        index = self.daemons.index(daemon)
        daemon.request_stop()
        self._futures[index].result(timeout)
        del self.daemons[index], self._futures[index]

    def close(self) -> None:
        for daemon in list(self.daemons):
            self.stop(daemon)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
