"""pilotctl's side of the local API: plain blocking HTTP/1.1 over the Unix socket.

Deliberately small and import-light (the C `_socket` and json only, no asyncio, no
http.client): pilotctl pays for every import on every command, and `socket.py` alone
(its IntEnum conversions, `selectors`) costs a few ms of the 40 ms start-up budget.
"""

from __future__ import annotations

import _socket as socket  # the C module: what socket.py wraps, without its import cost
import json

from .errors import ErrorCode, PilotctlError
from .paths import StateDir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

_START_HINT = (
    "start it with: pilotctl daemon start --hostname NAME --rendezvous HOST:PORT "
    "(later starts need no flags)"
)


def not_running(state: StateDir) -> PilotctlError:
    return PilotctlError(
        ErrorCode.NOT_RUNNING,
        f"the pilot daemon is not running (state dir {state.root})",
        _START_HINT,
    )


class LocalClient:
    """Requests to the daemon of one state dir."""

    def __init__(self, state: StateDir, timeout: float = 10.0) -> None:
        self.state = state
        self.timeout = timeout

    def _connect(self, timeout: float | None) -> socket.socket:
        path = self.state.connect_path()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            sock.close()
            raise not_running(self.state) from None
        except PermissionError:
            sock.close()
            raise PilotctlError(
                ErrorCode.CONNECTION_FAILED,
                f"permission denied on the daemon socket {path}",
                "the daemon belongs to another user; use your own state dir (PILOT_HOME)",
            ) from None
        except TimeoutError:
            sock.close()
            raise PilotctlError(
                ErrorCode.TIMEOUT, f"the daemon did not accept a connection on {path}"
            ) from None
        except OSError as exc:
            sock.close()
            raise PilotctlError(
                ErrorCode.CONNECTION_FAILED, f"cannot reach the daemon at {path}: {exc}"
            ) from None
        return sock

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send one request; return the `data` of an ok envelope or raise its error."""
        limit = self.timeout if timeout is None else timeout
        sock = self._connect(limit)
        try:
            sock.sendall(_encode_request(method, path, body))
            status, _headers, payload = _read_response(sock, limit)
        finally:
            sock.close()
        try:
            envelope = json.loads(payload)
        except ValueError:
            raise PilotctlError(
                ErrorCode.INTERNAL, f"the daemon sent a non-JSON answer (HTTP {status})"
            ) from None
        if isinstance(envelope, dict) and envelope.get("status") == "ok":
            return envelope.get("data")
        raise PilotctlError.from_envelope(envelope)

    def stream(self, path: str, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """GET a newline-delimited JSON stream; yields one object per line."""
        sock = self._connect(self.timeout)
        try:
            sock.sendall(_encode_request("GET", path, None))
            reader = _Reader(sock, self.timeout)
            _status, headers = _read_head(reader)
            if headers.get("transfer-encoding", "").lower() != "chunked":
                payload = _read_body(reader, headers)
                raise PilotctlError.from_envelope(_loads(payload))
            sock.settimeout(timeout)
            buffer = b""
            for chunk in _chunks(reader):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield _loads(line)
        finally:
            sock.close()


def _encode_request(method: str, path: str, body: dict[str, Any] | None) -> bytes:
    payload = b"" if body is None else json.dumps(body).encode("utf-8")
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: pilot\r\nUser-Agent: pilotctl\r\n"
        f"Accept: application/json\r\nConnection: close\r\n"
    )
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    return (head + "\r\n").encode("latin-1") + payload


class _Reader:
    """Buffered reads from a blocking socket, with timeouts turned into PilotctlError."""

    def __init__(self, sock: socket.socket, timeout: float | None) -> None:
        self.sock = sock
        self.buffer = b""
        self.timeout = timeout

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise PilotctlError(
                ErrorCode.TIMEOUT,
                f"the daemon did not answer within {self.timeout:g} s",
                "see daemon.log in the state dir",
            ) from None
        except ConnectionResetError:
            data = b""
        if not data:
            return False
        self.buffer += data
        return True

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            if not self._fill():
                raise PilotctlError(
                    ErrorCode.INTERNAL, "the daemon closed the connection mid-answer",
                    "see daemon.log in the state dir",
                )
        head, self.buffer = self.buffer.split(marker, 1)
        return head

    def exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not self._fill():
                raise PilotctlError(
                    ErrorCode.INTERNAL, "the daemon closed the connection mid-answer"
                )
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def rest(self) -> bytes:
        while self._fill():
            pass
        data, self.buffer = self.buffer, b""
        return data


def _read_head(reader: _Reader) -> tuple[int, dict[str, str]]:
    while True:
        lines = reader.until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdecimal():
            raise PilotctlError(ErrorCode.INTERNAL, "the daemon sent a malformed answer")
        status = int(parts[1])
        if status != 100:  # skip an interim 100 Continue
            break
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def _read_body(reader: _Reader, headers: dict[str, str]) -> bytes:
    length = headers.get("content-length")
    if length is not None and length.isdecimal():
        return reader.exactly(int(length))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return b"".join(_chunks(reader))
    return reader.rest()


def _read_response(sock: socket.socket, timeout: float | None) -> tuple[int, dict[str, str],
                                                                        bytes]:
    reader = _Reader(sock, timeout)
    status, headers = _read_head(reader)
    return status, headers, _read_body(reader, headers)


def _chunks(reader: _Reader) -> Iterator[bytes]:
    while True:
        size_line = reader.until(b"\r\n").split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise PilotctlError(ErrorCode.INTERNAL, "malformed chunked answer") from None
        if size == 0:
            return
        chunk = reader.exactly(size)
        reader.exactly(2)
        yield chunk


def _loads(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        raise PilotctlError(ErrorCode.INTERNAL, "the daemon sent invalid JSON") from None
