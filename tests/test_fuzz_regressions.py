"""Inputs the fuzzers found that broke something, kept as tests (issue 7).

Each test names the harness that found the input and replays it through that harness
and, where the bug lies behind a public surface, through that surface directly.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fuzz import connection, local_api
from fuzz import node as node_harness
from fuzz.connection import join_records
from pilot_daemon.httpserver import Request, Response, UnixHttpServer
from pilot_proto.delivery.frames import Message, encode_payload


async def _exchange(path: Path, data: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    await writer.drain()
    writer.write_eof()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


def _ask(tmp_path: Path, data: bytes) -> tuple[int, dict[str, object]]:
    async def echo(request: Request) -> Response:
        return Response.ok({"body": len(request.body)})

    async def run() -> bytes:
        server = UnixHttpServer(echo, header_timeout=2.0, body_timeout=2.0)
        await server.start(tmp_path / "api.sock")
        try:
            return await asyncio.wait_for(_exchange(tmp_path / "api.sock", data), 10.0)
        finally:
            await server.close()

    answer = asyncio.run(run())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head, "the server closed the connection without an answer"
    return int(head.split(b" ")[1]), json.loads(body)


# fuzz/local_api, first minutes: `str.isdigit()` is true for superscript digits, which
# Latin-1 decoding of the head can produce ("\xb3" is "³"), and int("³52") raises: the
# request died with a logged ValueError and the client got no answer at all.
CONTENT_LENGTH_SUPERSCRIPT = (
    b"POST /v1/messages HTTP/1.1\r\nHost: local\r\n"
    b"Content-Length: \xb352\r\n\r\n{\"target\":\"x\"}"
)


def test_content_length_with_superscript_digits_is_a_400(tmp_path: Path) -> None:
    status, body = _ask(tmp_path, CONTENT_LENGTH_SUPERSCRIPT)
    assert status == 400
    assert body["code"] == "invalid_argument"


def test_content_length_with_superscript_digits_through_the_harness() -> None:
    local_api.test_one_input(CONTENT_LENGTH_SUPERSCRIPT)


# fuzz/connection, after a few minutes: a MESSAGE frame (no data) claiming a total length
# near 2**62 is taken as an oversized message to skip, which advances the message credit
# space by that total; the next MAX_MESSAGE_DATA limit is then past the largest varint and
# `payloads_to_send` raises VarintError. Through a Node, one packet from a peer with a
# session (any client of a public rendezvous) makes `datagrams_to_send` raise.
HUGE_TOTAL = encode_payload(0, [Message(0, bytes(16), "text", (1 << 62) - 256, 0, b"", None)])


def test_a_message_claiming_a_huge_total_length_does_not_break_sending() -> None:
    session = node_harness.Session()
    session.node.receive_datagram(session.peer.seal(HUGE_TOTAL), node_harness.PEER_ADDR,
                                  session.now)
    session.node.datagrams_to_send(session.now)  # raised VarintError
    session.advance(1.0)
    session.check()
    session.node.send_message(session.peer.address, b"still working", session.now)
    assert session.node.datagrams_to_send(session.now)


def test_a_message_claiming_a_huge_total_length_through_the_harness() -> None:
    connection.test_one_input(join_records([HUGE_TOTAL]))
