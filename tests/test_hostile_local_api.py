"""The local API against hostile input from a local client: path traversal through
inbox ids, and malformed requests, answered with an error envelope, never a crash.

Runs the real routes on a scratch state dir (the daemon the `fuzz/local_api.py` harness
drives), over its Unix socket.
"""

from __future__ import annotations

import json

import pytest

from fuzz.local_api import ScratchDaemon


@pytest.fixture(scope="module")
def daemon() -> ScratchDaemon:
    return ScratchDaemon()


def status_and_envelope(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


@pytest.mark.parametrize("ref", [
    "..%2F..%2Fpilot.db",
    "..%2Fvictim",
    "%2Fetc%2Fpasswd",
    "..",
    "victim.json",
    "*",
])
def test_inbox_ids_cannot_reach_outside_the_inbox(daemon: ScratchDaemon, ref: str) -> None:
    victim = daemon.root / "victim.json"
    victim.write_text('{"id": "victim"}')
    outside = daemon.root / "inbox" / ".." / "pilot.db"
    for method in ("GET", "DELETE"):
        answer = daemon.answer(f"{method} /v1/inbox/{ref} HTTP/1.1\r\n\r\n".encode())
        status, envelope = status_and_envelope(answer)
        assert status in (400, 404), (method, ref, status, envelope)
        assert envelope["status"] == "error"
    assert victim.exists() and outside.exists()


@pytest.mark.parametrize("request_bytes", [
    b"GET /v1/info HTTP/2\r\n\r\n",
    b"GET  /v1/info HTTP/1.1\r\n\r\n",
    b"GET /v1/info HTTP/1.1\r\nno colon here\r\n\r\n",
    b"GET /v1/info HTTP/1.1\r\n bad: space\r\n\r\n",
    b"POST /v1/messages HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"POST /v1/messages HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /v1/messages HTTP/1.1\r\nContent-Length: 4\r\n\r\n[1,]",
    b"POST /v1/messages HTTP/1.1\r\nContent-Length: 2\r\n\r\n[]",
    b'POST /v1/messages HTTP/1.1\r\nContent-Length: 25\r\n\r\n{"target": 5, "data": []}',
    b'POST /v1/ping HTTP/1.1\r\nContent-Length: 39\r\n\r\n{"target":"x","count":1e400,"timeout":1}',
    b"GET /v1/events?kinds=nope HTTP/1.1\r\n\r\n",
    b"BREW /v1/info HTTP/1.1\r\n\r\n",
])
def test_malformed_requests_get_an_error_envelope(
    daemon: ScratchDaemon, request_bytes: bytes
) -> None:
    status, envelope = status_and_envelope(daemon.answer(request_bytes))
    assert 400 <= status < 500, (status, envelope)
    assert envelope["status"] == "error" and envelope["code"] != "internal"
    assert not daemon.failures.records, daemon.failures.records[0].getMessage()
