"""The local API over its Unix socket: routes, HTTP limits, the event stream, SO_PEERCRED,
the /tmp socket for deep state dirs. Daemons run in this process (`DaemonThread`) on the
loopback network, so the API is exercised with real sockets and real clients."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pilot_daemon.client import LocalClient
from pilot_daemon.daemon import Daemon, DaemonOptions
from pilot_daemon.errors import ErrorCode, PilotctlError
from pilot_daemon.httpserver import Request, Response, StreamResponse, UnixHttpServer
from pilot_daemon.paths import StateDir
from pilot_daemon.testing import DaemonThread, Switchboard

OPTIONS = DaemonOptions(rendezvous="127.0.0.1:9", listen="127.0.0.1:0")


@pytest.fixture
def runner() -> Iterator[DaemonThread]:
    thread = DaemonThread()
    yield thread
    thread.close()


@pytest.fixture
def home() -> Iterator[Path]:
    # Under /tmp with traversable parents, so a second uid can reach the socket when a
    # test loosens its permissions on purpose.
    root = Path(tempfile.mkdtemp(prefix="pilot-api-"))
    os.chmod(root, 0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def raw_request(path: Path, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_and_body(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def test_routes_answer_envelopes(runner: DaemonThread, home: Path) -> None:
    daemon = runner.start(home / "a", OPTIONS, Switchboard().network())
    client = LocalClient(StateDir(home / "a"))
    info = client.request("GET", "/v1/info")
    for key in ("node_id", "hostname", "listen", "rendezvous", "nat_type", "candidates"):
        assert key in info
    assert info["listen"].startswith("127.0.0.1:") and info["rendezvous"] == "127.0.0.1:9"
    health = client.request("GET", "/v1/health")
    assert health["pid"] == os.getpid() and health["node_id"] == info["node_id"]
    assert client.request("GET", "/v1/pending") == []
    assert client.request("GET", "/v1/trust") == []
    assert client.request("GET", "/v1/inbox") == []
    assert client.request("DELETE", "/v1/inbox") == {"removed": 0}
    assert client.request("GET", "/v1/received") == []
    assert client.request("GET", "/v1/outbox") == []
    for method, path, code in [("GET", "/v1/nope", "not_found"),
                               ("POST", "/v1/info", "invalid_argument"),
                               ("GET", "/v1/inbox/abcd", "not_found"),
                               ("POST", "/v1/approve", "invalid_argument")]:
        with pytest.raises(PilotctlError) as failed:
            client.request(method, path, {} if method == "POST" else None)
        assert failed.value.code.value == code
    socket_path = daemon.state.socket_link
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600


def test_http_errors_map_to_codes(runner: DaemonThread, home: Path) -> None:
    runner.start(home / "a", OPTIONS, Switchboard().network())
    sock = home / "a" / "api.sock"
    status, body = status_and_body(raw_request(
        sock, b"POST /v1/approve HTTP/1.1\r\nContent-Length: 5\r\n\r\n{nope"))
    assert (status, body["code"]) == (400, "invalid_argument")
    status, body = status_and_body(raw_request(
        sock, b"POST /v1/approve HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n"))
    assert (status, body["code"]) == (413, "too_large")
    status, body = status_and_body(raw_request(
        sock, b"POST /v1/approve HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))
    assert (status, body["code"]) == (411, "invalid_argument")
    status, body = status_and_body(raw_request(sock, b"GARBAGE\r\n\r\n"))
    assert (status, body["code"]) == (400, "invalid_argument")
    status, body = status_and_body(raw_request(
        sock, b"GET /v1/info HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"))
    assert (status, body["code"]) == (431, "too_large")
    status, body = status_and_body(raw_request(
        sock, b"GET /v1/nowhere HTTP/1.1\r\n\r\n"))
    assert (status, body["status"], body["code"]) == (404, "error", "not_found")
    assert body["hint"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_works(runner: DaemonThread, home: Path) -> None:
    runner.start(home / "a", OPTIONS, Switchboard().network())
    sock = str(home / "a" / "api.sock")
    done = subprocess.run(["curl", "-sS", "--unix-socket", sock, "http://localhost/v1/info"],
                          capture_output=True, text=True, timeout=10)
    assert json.loads(done.stdout)["status"] == "ok"
    # A large body makes curl send `Expect: 100-continue`; the server must answer it.
    big = json.dumps({"to": "agent-b", "type": "text", "data": "x" * 200_000})
    done = subprocess.run(
        ["curl", "-sS", "--unix-socket", sock, "-H", "Content-Type: application/json",
         "--data-binary", "@-", "http://localhost/v1/messages"],
        input=big, capture_output=True, text=True, timeout=10)
    assert json.loads(done.stdout)["code"] == "not_trusted"


def test_messages_and_event_stream_between_two_daemons(runner: DaemonThread,
                                                       home: Path) -> None:
    board = Switchboard()
    a = runner.start(home / "a", DaemonOptions(hostname="agent-a", **_opts()), board.network())
    b = runner.start(home / "b", DaemonOptions(hostname="agent-b", **_opts()), board.network())
    ca, cb = LocalClient(StateDir(home / "a")), LocalClient(StateDir(home / "b"))
    events: list[dict[str, Any]] = []
    opened = threading.Event()

    def follow() -> None:
        for event in cb.stream("/v1/events?kinds=message,trust.request", timeout=10):
            events.append(event)
            if event["kind"] == "stream.open":
                opened.set()
            if event["kind"] == "message":
                return

    follower = threading.Thread(target=follow)
    follower.start()
    assert opened.wait(5)
    ca.request("POST", "/v1/handshake", {"target": "agent-b", "justification": "tests"})
    _wait(lambda: cb.request("GET", "/v1/pending") != [])
    cb.request("POST", "/v1/approve", {"node_id": a.control.identity.address})
    _wait(lambda: ca.request("GET", "/v1/trust") != [])
    sent = ca.request("POST", "/v1/messages",
                      {"to": "agent-b", "type": "json", "data": {"task": "analyze"}})
    follower.join(10)
    kinds = [e["kind"] for e in events]
    assert kinds == ["stream.open", "trust.request", "message"]
    assert events[2]["data"]["id"] == sent["id"] and "data" not in events[2]["data"]
    shown = cb.request("GET", f"/v1/inbox/{sent['id'][:6]}")
    assert shown["data"] == {"task": "analyze"} and shown["from_hostname"] == "agent-a"
    # The stream's subscription goes away with the client.
    _wait(lambda: b.control.bus.subscriber_count == 0)
    with pytest.raises(PilotctlError) as bad:
        list(cb.stream("/v1/events?kinds=bogus"))
    assert bad.value.code is ErrorCode.INVALID_ARGUMENT


def _opts() -> dict[str, Any]:
    return {"rendezvous": "127.0.0.1:9", "listen": "127.0.0.1:0"}


def _wait(check: Any, timeout: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_stop_request_ends_streams_and_removes_socket(runner: DaemonThread,
                                                      home: Path) -> None:
    daemon = runner.start(home / "a", OPTIONS, Switchboard().network())
    client = LocalClient(StateDir(home / "a"))
    seen: list[str] = []
    follower = threading.Thread(
        target=lambda: seen.extend(e["kind"] for e in client.stream("/v1/events", timeout=10)))
    follower.start()
    _wait(lambda: daemon.control is not None and daemon.control.bus.subscriber_count == 1)
    runner.stop(daemon)
    follower.join(5)
    assert seen == ["stream.open", "daemon.stopping"]
    assert not (home / "a" / "api.sock").exists()
    with pytest.raises(PilotctlError) as gone:
        client.request("GET", "/v1/info")
    assert gone.value.code is ErrorCode.NOT_RUNNING


def test_deep_state_dir_gets_its_socket_under_tmp(runner: DaemonThread, home: Path) -> None:
    deep = home / ("d" * 60) / ("e" * 60)
    state = StateDir(deep)
    assert not state.socket_fits()
    daemon = runner.start(deep, OPTIONS, Switchboard().network())
    link = deep / "api.sock"
    assert link.is_symlink()
    target = Path(os.readlink(link))
    assert target.parent == Path("/tmp") / f"pilot-{os.getuid()}"
    assert stat.S_IMODE(os.stat(target.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert LocalClient(state).request("GET", "/v1/health")["pid"] == os.getpid()
    runner.stop(daemon)
    assert not link.exists() and not link.is_symlink() and not target.exists()


_OTHER_UID_CLIENT = textwrap.dedent(
    """
    import os, socket, sys
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(sys.argv[1])
    except PermissionError:
        print("EACCES")
        sys.exit(0)
    s.sendall(b"GET /v1/info HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    sys.stdout.buffer.write(data)
    """
)


def _as_nobody(socket_path: Path) -> bytes:
    done = subprocess.run([sys.executable, "-S", "-c", _OTHER_UID_CLIENT, str(socket_path)],
                          capture_output=True, timeout=20)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as uid 65534")
def test_other_uid_is_refused(runner: DaemonThread, home: Path) -> None:
    runner.start(home / "a", OPTIONS, Switchboard().network())
    sock = home / "a" / "api.sock"
    # Default permissions: the socket (0600) in a 0700 state dir is out of reach.
    assert _as_nobody(sock).strip() == b"EACCES"
    # Loosened by hand: SO_PEERCRED still refuses the other uid, with a clear message.
    os.chmod(home / "a", 0o711)
    os.chmod(sock, 0o666)
    answer = _as_nobody(sock)
    status, body = status_and_body(answer)
    assert status == 403 and body["status"] == "error" and body["code"] == "not_trusted"
    assert "uid 65534" in body["message"] and f"uid {os.getuid()}" in body["message"]
    # The owner is still served.
    assert LocalClient(StateDir(home / "a")).request("GET", "/v1/health")


# --- the HTTP server's own limits, with short timeouts ---


def _serve(path: Path, **limits: Any) -> tuple[asyncio.AbstractEventLoop, UnixHttpServer,
                                               threading.Thread]:
    async def handler(request: Request) -> Response | StreamResponse:
        return Response.ok({"path": request.path, "query": request.query,
                            "body": request.json()})

    loop = asyncio.new_event_loop()
    server = UnixHttpServer(handler, **limits)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(path), loop).result(5)
    return loop, server, thread


def _shutdown(loop: asyncio.AbstractEventLoop, server: UnixHttpServer,
              thread: threading.Thread) -> None:
    asyncio.run_coroutine_threadsafe(server.close(grace=0.1), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_slow_clients_are_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    loop, server, thread = _serve(path, header_timeout=0.2, body_timeout=0.2)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            sock.sendall(b"GET /x HTTP/1.1\r\n")  # ... and never finishes the head
            status, body = status_and_body(sock.recv(65536))
        assert (status, body["code"]) == (408, "timeout")
        raw = raw_request(path, b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}")
        assert status_and_body(raw)[0] == 408
        ok = raw_request(path, b"POST /x?a=1 HTTP/1.1\r\nContent-Length: 8\r\n\r\n{\"k\": 1}")
        assert status_and_body(ok) == (200, {"status": "ok", "data": {
            "path": "/x", "query": {"a": "1"}, "body": {"k": 1}}})
    finally:
        _shutdown(loop, server, thread)
    assert not path.exists()


def test_connection_limit(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    loop, server, thread = _serve(path, max_connections=2, header_timeout=2)
    held = []
    try:
        for _ in range(2):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(path))
            held.append(sock)
        _wait(lambda: len(server._tasks) == 2)
        status, body = status_and_body(raw_request(path, b"GET /x HTTP/1.1\r\n\r\n"))
        assert status == 503 and body["status"] == "error"
    finally:
        for sock in held:
            sock.close()
        _shutdown(loop, server, thread)


def test_stale_socket_file_is_replaced(runner: DaemonThread, home: Path) -> None:
    (home / "a").mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(home / "a" / "api.sock"))  # left by a killed daemon
    stale.close()
    runner.start(home / "a", OPTIONS, Switchboard().network())
    assert LocalClient(StateDir(home / "a")).request("GET", "/v1/health")


def test_second_daemon_in_process_is_refused(runner: DaemonThread, home: Path) -> None:
    runner.start(home / "a", OPTIONS, Switchboard().network())
    second = Daemon(StateDir(home / "a"), OPTIONS, environ={})
    with pytest.raises(PilotctlError) as refused:
        asyncio.run(second.serve())
    assert refused.value.code is ErrorCode.ALREADY_EXISTS
    assert str(os.getpid()) in refused.value.message
