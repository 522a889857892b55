"""Harness: the local API (pilot_daemon httpserver.py + localapi.py) as a client on the
same machine sees it: raw bytes written to the daemon's Unix socket.

A real `UnixHttpServer` serves the real routes (`LocalApi`) of a `ControlPlane` on a
scratch state dir with the network unavailable. Each input is one connection: the bytes
are sent, the write side is shut, and the answer is read. Whatever the bytes, the server
answers with a well-formed status and a JSON envelope (or closes quietly), never with a
500 "internal" and never with a logged exception.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pilot_daemon.control import ControlPlane, DaemonFacts
from pilot_daemon.events import EventBus
from pilot_daemon.httpserver import UnixHttpServer
from pilot_daemon.inbox import Inbox
from pilot_daemon.localapi import LocalApi
from pilot_daemon.names import Endpoint
from pilot_daemon.network import UnavailableNetwork
from pilot_daemon.received import ReceivedFiles
from pilot_daemon.store import Store
from pilot_proto.identity import Identity

if TYPE_CHECKING:
    from .traffic import Traffic


#: A client that gets no complete answer within this long counts as a hang.
ANSWER_TIMEOUT = 10.0


class _Failures(logging.Handler):
    """Collects what the daemon logs at ERROR: an unhandled exception in a request."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class ScratchDaemon:
    """A daemon's control plane and local API server on a scratch state dir, network off."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pf-api-"))
        atexit.register(shutil.rmtree, self.root, True)
        for sub in ("inbox", "received"):
            (self.root / sub).mkdir()
        self.socket = self.root / "api.sock"
        identity = Identity.from_private_bytes(bytes(range(32)))

        def clock() -> float:
            return 1_750_000_000.0

        self.control = ControlPlane(
            identity=identity,
            store=Store(self.root / "pilot.db"),
            inbox=Inbox(self.root / "inbox"),
            received=ReceivedFiles(self.root / "received"),
            bus=EventBus(clock),
            network=UnavailableNetwork(),
            facts=DaemonFacts(os.getpid(), clock(), "fuzz", self.root, self.socket,
                              "127.0.0.1:1", Endpoint("127.0.0.1", 7000), False, False),
            request_shutdown=lambda: None,
            clock=clock,
        )
        self.failures = _Failures()
        logging.getLogger("pilot_daemon").addHandler(self.failures)
        self.loop = asyncio.new_event_loop()
        self.server = UnixHttpServer(LocalApi(self.control).handle, header_timeout=2.0,
                                     body_timeout=2.0)
        self.loop.run_until_complete(self.server.start(self.socket))

    async def exchange(self, data: bytes) -> bytes:
        reader, writer = await asyncio.open_unix_connection(str(self.socket))
        try:
            writer.write(data)
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await reader.read(65536)
                if not chunk:
                    return head
                head += chunk
            if b"transfer-encoding: chunked" in head.lower():
                return head  # an event stream: it lives until we hang up
            return head + await reader.read()
        except ConnectionResetError:
            return b""
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    def answer(self, data: bytes) -> bytes:
        return self.loop.run_until_complete(
            asyncio.wait_for(self.exchange(data), ANSWER_TIMEOUT)
        )


_DAEMON: ScratchDaemon | None = None


def _daemon() -> ScratchDaemon:
    global _DAEMON
    if _DAEMON is None:
        _DAEMON = ScratchDaemon()
    return _DAEMON


def test_one_input(data: bytes) -> None:
    daemon = _daemon()
    answer = daemon.answer(data)
    if daemon.failures.records:
        record = daemon.failures.records[0]
        daemon.failures.records.clear()
        raise AssertionError(f"the daemon logged an error: {record.getMessage()}\n"
                             f"{logging.Formatter().formatException(record.exc_info)}"
                             if record.exc_info else record.getMessage())
    continue_line = b"HTTP/1.1 100 Continue\r\n\r\n"
    while answer.startswith(continue_line):
        answer = answer[len(continue_line) :]
    if not answer:
        return  # the client left before sending a whole request: nothing to answer
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    parts = status_line.split(b" ", 2)
    assert len(parts) >= 2 and parts[0] == b"HTTP/1.1" and parts[1].isdigit(), status_line
    status = int(parts[1])
    assert status != 500, f"internal error for {data[:200]!r}: {body[:500]!r}"
    if b"chunked" not in head.lower():
        envelope = json.loads(body)
        assert envelope["status"] == ("ok" if status == 200 else "error"), envelope


def seeds(traffic: Traffic) -> list[bytes]:
    return list(traffic.http_requests)
