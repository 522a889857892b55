"""What the daemon carries over streams: files, the benchmark, and connect/send/recv/listen.

Daemon services use stream port 0 (pilotctl's ports are 1-65535, so they never meet).
A service stream starts with one JSON line, the header, then the body, then the
sender's end of stream; the receiver answers with one JSON line and ends its side:

    {"op": "file", "name": NAME, "size": BYTES, "sha256": HEX}   body: the file's bytes
    {"op": "bench", "size": BYTES}                               body: BYTES of zeros
    answer: {"ok": true, ...} or {"ok": false, "code": CODE, "message": TEXT}

A file lands through the control plane (`NetworkHost.begin_file`): a hidden temporary
file, size and SHA-256 checked, fsynced, then linked under its sanitized name; the
answer goes back only after that, so `send-file` returns once the file is on disk.

`send`/`connect` open a stream to a peer's port, write the data and end it; the
receiving daemon (`recv`/`listen` on that port) reads to the end and ends its side,
after echoing the data back for `listen`. A stream to a port nobody listens on is
refused by the peer's core (connection_failed).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pilot_asyncio import Node, Stream

from pilot_proto.errors import (
    InvalidPort,
    NodeClosed,
    NotTrustedByPeer,
    PilotError,
    PilotTimeout,
    StreamResetError,
)

from .errors import ErrorCode, PilotctlError
from .network import FileSent, NetworkHost, PeerRecord
from .received import FileIntegrityError

if TYPE_CHECKING:
    from .netservice import PilotNetwork

log = logging.getLogger("pilot_daemon.transfer")

__all__ = ["SERVICE_PORT", "PortTable", "bench", "call", "send_file", "serve"]

SERVICE_PORT = 0
HEADER_LIMIT = 4096
CHUNK = 256 * 1024
#: A service stream that stalls this long is given up (the peer vanished mid-way).
IDLE_TIMEOUT = 60.0
#: recv/listen/connect without --timeout wait this long.
DEFAULT_CALL_TIMEOUT = 30.0
#: Largest stream body recv/listen/connect return (the local API answers in one body).
MAX_CALL_BYTES = 1 << 20


class _Reader:
    """Reads a header line, then the rest of a stream, from one Stream."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.buffer = b""

    async def line(self, timeout: float) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            if len(self.buffer) > HEADER_LIMIT:
                raise ValueError("header line too long")
            chunk = await self.stream.read(timeout=timeout)
            if not chunk:
                raise ValueError("the stream ended before its header line")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        value = json.loads(line)
        if not isinstance(value, dict):
            raise ValueError("the header line is not a JSON object")
        return value

    async def chunks(self, timeout: float) -> AsyncIterator[bytes]:
        if self.buffer:
            data, self.buffer = self.buffer, b""
            yield data
        while chunk := await self.stream.read(timeout=timeout):
            yield chunk


def _line(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value).encode() + b"\n"


def _left(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise PilotTimeout("out of time")
    return remaining


def _refusal(code: ErrorCode, message: str) -> dict[str, Any]:
    return {"ok": False, "code": code.value, "message": message}


def _answer_error(reply: Mapping[str, Any], what: str) -> PilotctlError:
    code = str(reply.get("code"))
    if code not in ErrorCode._value2member_map_:
        code = ErrorCode.INTERNAL.value
    return PilotctlError(code, f"{what}: {reply.get('message', 'refused by the peer')}")


# ---------------------------------------------------------------------- receiving side


async def serve(stream: Stream, host: NetworkHost,
                hostname_of: Callable[[str], str | None]) -> None:
    """Answer one service stream a peer opened to port 0."""
    reader = _Reader(stream)
    try:
        header = await reader.line(IDLE_TIMEOUT)
        op = header.get("op")
        if op == "file":
            answer = await _receive_file(stream.address, header, reader, host)
        elif op == "bench":
            count = 0
            async for chunk in reader.chunks(IDLE_TIMEOUT):
                count += len(chunk)
            answer = {"ok": True, "bytes": count}
        else:
            answer = _refusal(ErrorCode.INVALID_ARGUMENT, f"unknown operation {op!r}")
        await stream.write(_line(answer), end=True, timeout=IDLE_TIMEOUT)
    except (ValueError, PilotError) as exc:
        log.info("service stream from %s ended: %s", stream.address, exc)
        if not isinstance(exc, StreamResetError | NodeClosed):
            stream.reset("bad request")


async def _receive_file(sender: str, header: Mapping[str, Any], reader: _Reader,
                        host: NetworkHost) -> dict[str, Any]:
    name, size, digest = header.get("name"), header.get("size"), header.get("sha256")
    if not (isinstance(name, str) and isinstance(size, int) and size >= 0
            and isinstance(digest, str) and len(digest) == 64):
        return _refusal(ErrorCode.INVALID_ARGUMENT, "the file header is malformed")
    try:
        incoming = host.begin_file(sender, name, size, digest)
    except PilotctlError as exc:
        return _refusal(exc.code, exc.message)
    try:
        async for chunk in reader.chunks(IDLE_TIMEOUT):
            incoming.write(chunk)
        final = incoming.commit()
    except FileIntegrityError as exc:
        log.warning("file from %s refused: %s", sender, exc)
        return _refusal(ErrorCode.INVALID_ARGUMENT, str(exc))
    except BaseException:
        incoming.abort()
        raise
    log.info("received %s (%d bytes) from %s", final.name, size, sender)
    await host.on_file(sender, final, digest)
    return {"ok": True, "name": final.name, "bytes": size, "sha256": digest}


# ---------------------------------------------------------------------- sending side


def _sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


#: `file.progress` events go out at most this often per transfer (and once at the end).
PROGRESS_INTERVAL = 0.2


async def send_file(node: Node, peer: PeerRecord, path: Path, name: str, deadline: float,
                    progress: Callable[[int, int], None] | None = None) -> FileSent:
    """Stream `path` to the peer's file service; `progress(sent, size)` as it goes."""
    try:
        size, digest = await asyncio.to_thread(_sha256, path)
    except OSError as exc:
        raise PilotctlError(ErrorCode.INVALID_ARGUMENT,
                            f"cannot read {path}: {exc.strerror}") from None
    stream = node.open_stream(peer.address, SERVICE_PORT)
    header = {"op": "file", "name": name, "size": size, "sha256": digest}
    await stream.write(_line(header), timeout=_left(deadline))
    sent = 0
    reported = time.monotonic()
    with path.open("rb") as handle:
        while sent < size and (chunk := handle.read(min(CHUNK, size - sent))):
            await stream.write(chunk, timeout=_left(deadline))
            sent += len(chunk)
            if progress is not None and time.monotonic() - reported >= PROGRESS_INTERVAL:
                reported = time.monotonic()
                progress(sent, size)
    if sent != size:
        stream.reset("the file shrank while it was sent")
        raise PilotctlError(ErrorCode.INVALID_ARGUMENT, f"{path} changed while it was sent")
    stream.end()
    reply = await _Reader(stream).line(_left(deadline))
    if not reply.get("ok"):
        raise _answer_error(reply, f"{peer.hostname or peer.address} refused {name}")
    if progress is not None:
        progress(size, size)
    return FileSent(str(reply.get("name", name)), size, digest)


async def bench(node: Node, peer: PeerRecord, size: int, deadline: float) -> dict[str, Any]:
    stream = node.open_stream(peer.address, SERVICE_PORT)
    zeros = bytes(CHUNK)
    started = time.monotonic()
    await stream.write(_line({"op": "bench", "size": size}), timeout=_left(deadline))
    left = size
    while left > 0:
        take = min(left, CHUNK)
        await stream.write(zeros if take == CHUNK else zeros[:take], timeout=_left(deadline))
        left -= take
    stream.end()
    reply = await _Reader(stream).line(_left(deadline))
    seconds = time.monotonic() - started
    if not reply.get("ok"):
        raise _answer_error(reply, "the peer refused the benchmark")
    return {
        "bytes": size,
        "received": reply.get("bytes"),
        "seconds": round(seconds, 6),
        "mbit_per_s": round(size * 8 / seconds / 1e6, 3) if seconds > 0 else None,
    }


# ---------------------------------------------------------------------- connect/send/recv


class PortTable:
    """Ports the node listens on for recv/listen (the core refuses the others)."""

    def __init__(self) -> None:
        self.ports: set[int] = set()

    def listen(self, node: Node, port: int) -> None:
        if port not in self.ports:
            node.listen(port)
            self.ports.add(port)

    def close(self) -> None:
        self.ports.clear()


def _payload(data: bytes) -> dict[str, Any]:
    try:
        return {"data": data.decode("utf-8"), "bytes": len(data)}
    except UnicodeDecodeError:
        return {"data": base64.b64encode(data).decode("ascii"), "encoding": "base64",
                "bytes": len(data)}


def _port(params: Mapping[str, Any]) -> int:
    port = params.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise PilotctlError(ErrorCode.INVALID_ARGUMENT, "port must be a number 1-65535")
    return port


def _seconds(params: Mapping[str, Any]) -> float:
    value = params.get("timeout")
    if value is None:
        return DEFAULT_CALL_TIMEOUT
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise PilotctlError(ErrorCode.INVALID_ARGUMENT, "timeout must be a positive number")
    return float(value)


async def _read_all(stream: Stream, deadline: float) -> bytes:
    data = bytearray()
    while chunk := await stream.read(timeout=_left(deadline)):
        data += chunk
        if len(data) > MAX_CALL_BYTES:
            stream.reset("too much data")
            raise PilotctlError(ErrorCode.TOO_LARGE,
                                f"more than {MAX_CALL_BYTES} bytes on one stream")
    return bytes(data)


async def call(service: PilotNetwork, node: Node, host: NetworkHost, operation: str,
               params: Mapping[str, Any]) -> Any:
    if operation in ("publish", "subscribe"):
        raise PilotctlError(
            ErrorCode.INVALID_ARGUMENT,
            f"`{operation}` is not available yet: publish/subscribe come with a later issue",
            "send messages meanwhile: pilotctl send-message NAME --data ...",
        )
    if operation not in ("connect", "send", "recv", "listen"):
        raise PilotctlError(ErrorCode.INVALID_ARGUMENT, f"unknown operation {operation!r}")
    timeout = _seconds(params)
    deadline = time.monotonic() + timeout
    port = _port(params)
    try:
        if operation in ("connect", "send"):
            return await _open(service, node, operation, params, port, deadline)
        return await _accept(service, node, operation, params, port, deadline)
    except PilotTimeout:
        raise PilotctlError(ErrorCode.TIMEOUT,
                            f"{operation} on port {port}: nothing within {timeout:g} s") from None
    except NotTrustedByPeer:
        target = params.get("hostname") or params.get("target")
        raise PilotctlError(
            ErrorCode.NOT_TRUSTED, f"{operation}: {target} does not trust this node",
            f"ask for trust first: pilotctl handshake {target}") from None
    except StreamResetError as exc:
        raise PilotctlError(
            ErrorCode.CONNECTION_FAILED,
            f"{operation}: the stream was refused or reset ({exc.reason})",
            f"is the peer listening? on that node: pilotctl recv {port}",
        ) from None
    except (InvalidPort, PilotError) as exc:
        raise PilotctlError(ErrorCode.CONNECTION_FAILED, f"{operation}: {exc}") from None


async def _open(service: PilotNetwork, node: Node, operation: str,
                params: Mapping[str, Any], port: int, deadline: float) -> dict[str, Any]:
    target, key = params.get("target"), params.get("public_key")
    hostname = params.get("hostname")
    text = params.get("message") if operation == "connect" else params.get("data")
    if not (isinstance(target, str) and isinstance(key, str) and isinstance(text, str)):
        raise PilotctlError(ErrorCode.INVALID_ARGUMENT,
                            "target, public_key and data must be strings")
    data = text.encode("utf-8", "surrogateescape")
    if len(data) > MAX_CALL_BYTES:
        raise PilotctlError(ErrorCode.TOO_LARGE, f"at most {MAX_CALL_BYTES} bytes per stream")
    peer = PeerRecord(target, bytes.fromhex(key), hostname if isinstance(hostname, str)
                      else None)
    await service.ensure_session(peer, deadline)
    stream = node.open_stream(peer.address, port)
    await stream.write(data, end=True, timeout=_left(deadline))
    answer = await _read_all(stream, deadline)  # the peer ends its side once it has read all
    result: dict[str, Any] = {"to": peer.address, "hostname": peer.hostname, "port": port,
                              "bytes": len(data)}
    if operation == "connect":
        result["reply"] = _payload(answer)
    return result


async def _accept(service: PilotNetwork, node: Node, operation: str,
                  params: Mapping[str, Any], port: int, deadline: float) -> list[dict[str, Any]]:
    count = params.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                              or count < 1):
        raise PilotctlError(ErrorCode.INVALID_ARGUMENT, "count must be a whole number >= 1")
    wanted = count if count is not None else (1 if operation == "recv" else None)
    service.ports.listen(node, port)
    received: list[dict[str, Any]] = []
    while wanted is None or len(received) < wanted:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            stream = await node.accept(port, timeout=remaining)
        except PilotTimeout:
            break
        try:
            data = await _read_all(stream, deadline)
            await stream.write(data if operation == "listen" else b"", end=True,
                               timeout=_left(deadline))
        except (PilotError, PilotctlError) as exc:
            log.info("%s on port %d: stream from %s failed: %s", operation, port,
                     stream.address, exc)
            continue
        received.append({"from": stream.address,
                         "from_hostname": service._hostname_of(stream.address),
                         "port": port, **_payload(data)})
    if not received:
        raise PilotTimeout("nothing arrived")
    return received
