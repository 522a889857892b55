"""A small HTTP/1.1 server on a Unix socket, for the local API (DESIGN 9).

Just enough HTTP for `curl --unix-socket` and pilotctl: one request per connection
(`Connection: close`), bodies with Content-Length (no chunked requests), JSON
responses, and chunked newline-delimited JSON for streams. Defences:

- the socket is created mode 0600 (umask while binding, chmod after), inside a 0700
  state dir;
- every connection's peer uid is read with SO_PEERCRED and anyone but the daemon's own
  uid gets a 403 (in case permissions were loosened by hand);
- request head and body sizes are capped, and a client that is slow to send its request
  is cut off (408) instead of holding a task forever;
- the number of simultaneous connections is capped (503 beyond).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import HTTP_STATUS, ErrorCode, PilotctlError, ok_envelope
from .limits import (
    MAX_API_CONNECTIONS,
    MAX_REQUEST_BODY_BYTES,
    MAX_REQUEST_HEADER_BYTES,
    REQUEST_BODY_TIMEOUT_SECONDS,
    REQUEST_HEADER_TIMEOUT_SECONDS,
)

log = logging.getLogger("pilot_daemon.http")

__all__ = ["Request", "Response", "StreamResponse", "UnixHttpServer", "peer_credentials"]


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    peer_uid: int
    peer_pid: int

    def json(self) -> dict[str, Any]:
        """The body as a JSON object; an empty body is `{}`."""
        if not self.body.strip():
            return {}
        try:
            value = json.loads(self.body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise PilotctlError(
                ErrorCode.INVALID_ARGUMENT, f"the request body is not valid JSON: {exc}"
            ) from None
        if not isinstance(value, dict):
            raise PilotctlError(
                ErrorCode.INVALID_ARGUMENT, "the request body must be a JSON object"
            )
        return value


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: dict[str, Any]

    @classmethod
    def ok(cls, data: object) -> Response:
        return cls(200, ok_envelope(data))

    @classmethod
    def error(cls, exc: PilotctlError) -> Response:
        return cls(HTTP_STATUS[exc.code], exc.envelope())


@dataclass(frozen=True, slots=True)
class StreamResponse:
    """A 200 whose body is newline-delimited JSON, one chunk per item."""

    items: AsyncIterator[dict[str, Any]]


Handler = Callable[[Request], Awaitable[Response | StreamResponse]]


class _BadRequest(Exception):
    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = PilotctlError(code, message)


def peer_credentials(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid


@dataclass
class UnixHttpServer:
    handler: Handler
    allowed_uid: int = field(default_factory=os.getuid)
    header_timeout: float = REQUEST_HEADER_TIMEOUT_SECONDS
    body_timeout: float = REQUEST_BODY_TIMEOUT_SECONDS
    max_body: int = MAX_REQUEST_BODY_BYTES
    max_connections: int = MAX_API_CONNECTIONS
    _server: asyncio.AbstractServer | None = field(default=None, init=False)
    _path: Path | None = field(default=None, init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    async def start(self, path: Path) -> None:
        """Bind `path` (mode 0600) and start serving. A stale socket file is replaced:
        the caller holds the daemon lock, so no live daemon owns it."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # no window in which the socket is group/world-usable
        try:
            sock.bind(os.fsencode(path))
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(128)
        sock.setblocking(False)
        self._path = path
        self._server = await asyncio.start_unix_server(
            self._accept, sock=sock, limit=MAX_REQUEST_HEADER_BYTES
        )

    async def close(self, grace: float = 2.0) -> None:
        """Stop accepting, let running requests finish for `grace` s, then cut them off,
        and remove the socket file."""
        if self._server is not None:
            self._server.close()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
            self._path = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to answer
        except Exception:
            log.exception("local API connection failed")
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        pid, uid = peer_credentials(sock)
        if len(self._tasks) > self.max_connections:
            # Read the head first (briefly): closing on unread input makes the kernel
            # reset the connection, and the client would never see this answer.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 1.0)
            await self._write(writer, 503, PilotctlError(
                ErrorCode.INTERNAL, "too many local API connections; try again").envelope())
            return
        try:
            request = await self._read_request(reader, writer, pid, uid)
        except _BadRequest as bad:
            await self._write(writer, bad.status, bad.error.envelope())
            return
        if request is None:
            return
        try:
            result = await self.handler(request)
        except PilotctlError as exc:
            result = Response.error(exc)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            result = Response.error(PilotctlError(
                ErrorCode.INTERNAL, "the daemon failed to handle the request",
                "see daemon.log in the state dir"))
        if isinstance(result, StreamResponse):
            await self._stream(reader, writer, result)
        else:
            await self._write(writer, result.status, result.body)

    async def _read_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pid: int, uid: int
    ) -> Request | None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.header_timeout)
        except TimeoutError:
            raise _BadRequest(408, ErrorCode.TIMEOUT, "request head not received in time") \
                from None
        except asyncio.LimitOverrunError:
            raise _BadRequest(431, ErrorCode.TOO_LARGE,
                              f"request head over {MAX_REQUEST_HEADER_BYTES} bytes") from None
        except asyncio.IncompleteReadError:
            return None  # connected and left (a liveness probe)
        if uid != self.allowed_uid:
            # Checked before reading any body: other users get nothing but this answer.
            log.warning("refused a local API connection from uid %d (pid %d)", uid, pid)
            raise _BadRequest(403, ErrorCode.NOT_TRUSTED, (
                f"this pilot daemon serves only its owner (uid {self.allowed_uid}); "
                f"the connection came from uid {uid}"))
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
            raise _BadRequest(400, ErrorCode.INVALID_ARGUMENT, "malformed HTTP request line")
        method, target, _version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequest(400, ErrorCode.INVALID_ARGUMENT, "malformed HTTP header")
            headers[name.lower()] = value.strip()
        if "transfer-encoding" in headers:
            raise _BadRequest(411, ErrorCode.INVALID_ARGUMENT,
                              "chunked request bodies are not supported; send Content-Length")
        length_text = headers.get("content-length", "0")
        # str.isdigit() accepts "³" and other non-ASCII digits that int() refuses.
        if not (length_text.isascii() and length_text.isdigit()):
            raise _BadRequest(400, ErrorCode.INVALID_ARGUMENT, "invalid Content-Length")
        length = int(length_text)
        if length > self.max_body:
            raise _BadRequest(413, ErrorCode.TOO_LARGE,
                              f"request body of {length} bytes; the limit is {self.max_body}")
        if headers.get("expect", "").lower() == "100-continue" and length:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits for this on big bodies
        try:
            body = await asyncio.wait_for(reader.readexactly(length), self.body_timeout)
        except TimeoutError:
            raise _BadRequest(408, ErrorCode.TIMEOUT, "request body not received in time") \
                from None
        split = urlsplit(target)
        return Request(
            method=method.upper(),
            path=unquote(split.path),
            query=dict(parse_qsl(split.query)),
            headers=headers,
            body=body,
            peer_uid=uid,
            peer_pid=pid,
        )

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, status: int, body: dict[str, Any]) -> None:
        payload = (json.dumps(body, ensure_ascii=False) + "\n").encode("utf-8")
        writer.write(_head(status, {"Content-Type": "application/json",
                                    "Content-Length": str(len(payload))}) + payload)
        await writer.drain()

    @staticmethod
    async def _stream(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, result: StreamResponse
    ) -> None:
        writer.write(_head(200, {"Content-Type": "application/x-ndjson",
                                 "Transfer-Encoding": "chunked",
                                 "Cache-Control": "no-store"}))
        await writer.drain()

        async def pump() -> None:
            async for item in result.items:
                line = (json.dumps(item, ensure_ascii=False) + "\n").encode("utf-8")
                writer.write(b"%x\r\n%s\r\n" % (len(line), line))
                await writer.drain()

        # The client hanging up is seen as EOF on its side of the socket: stop then.
        pumping = asyncio.ensure_future(pump())
        hangup = asyncio.ensure_future(reader.read(1))
        try:
            await asyncio.wait({pumping, hangup}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pumping, hangup):
                task.cancel()
            await asyncio.gather(pumping, hangup, return_exceptions=True)
            aclose = getattr(result.items, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        if pumping.done() and not pumping.cancelled() and pumping.exception() is None:
            writer.write(b"0\r\n\r\n")
            await writer.drain()


def _head(status: int, headers: dict[str, str]) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Status"
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers.items()),
             "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")
