"""The worker commands for the blocking bindings (pilot_threads, pilot_gevent).

Concurrency is `threading.Thread`: real threads for pilot_threads, greenlets once the
gevent worker has monkey-patched. What differs is passed in: the Node class, how stdin is
read, and how a transfer is cancelled (a thread can only time out; a greenlet is killed).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from common import (
    config,
    identity,
    message_body,
    message_index,
    parse,
    payload,
    peer_record,
    reply,
    started,
)

from pilot_proto.errors import NodeClosed, PilotError, StreamResetError


class BlockingWorker:
    def __init__(self, node_class: Any, cancel_write: Callable[[Any, bytes], str]) -> None:
        self.node_class = node_class
        self.cancel_write = cancel_write
        self.node: Any = None

    def serve(self, lines: Iterable[str]) -> None:
        threads = []
        for line in lines:
            if not line.strip():
                continue
            command_id, op, args = parse(line)
            if op == "exit":
                break
            thread = threading.Thread(target=self.run, args=(command_id, op, args), daemon=True)
            thread.start()
            threads.append(thread)
        if self.node is not None:
            self.node.close()

    def run(self, command_id: int, op: str, args: dict[str, Any]) -> None:
        try:
            result = getattr(self, "op_" + op)(**args)
        except BaseException as error:
            reply(command_id, error=error)
        else:
            reply(command_id, result)

    # ------------------------------------------------------------------ commands

    def op_start(
        self, seed: str, host: str = "127.0.0.1", port: int = 0,
        datagram_size: int | None = None, public: bool = False,
    ) -> Any:
        node = self.node_class(identity(seed), config(datagram_size, public), host=host, port=port)
        self.node = node.start()
        return started(self.node)

    def op_add_peer(self, record: str, endpoint: list[Any]) -> None:
        self.node.add_peer(peer_record(record), [tuple(endpoint)])

    def op_connect(self, address: str, timeout: float = 10.0) -> None:
        self.node.connect(address, timeout=timeout)

    def op_ping(self, address: str, timeout: float = 5.0) -> float:
        rtt: float = self.node.ping(address, timeout=timeout)
        return rtt

    def op_peer_info(self, address: str) -> dict[str, Any]:
        return {"has_session": self.node.peer_info(address).has_session}

    def op_stats(self) -> dict[str, int]:
        stats: dict[str, int] = self.node.stats()
        return stats

    def op_send_messages(
        self, address: str, count: int, size: int = 200, timeout: float = 30.0
    ) -> float:
        start = time.perf_counter()
        for index in range(count):
            self.node.send_message(address, message_body(index, size), timeout=timeout)
        return time.perf_counter() - start

    def op_receive_messages(self, count: int, timeout: float = 30.0) -> list[int]:
        return [message_index(self.node.receive(timeout=timeout).data) for _ in range(count)]

    def op_request(self, address: str, data: str, timeout: float = 10.0) -> dict[str, Any]:
        message_id = self.node.send_message(address, data.encode(), timeout=timeout)
        answer = self.node.receive(timeout=timeout)
        return {"data": answer.data.decode(), "reply_to_matches": answer.reply_to == message_id}

    def op_serve_requests(self, count: int, timeout: float = 30.0) -> None:
        for _ in range(count):
            message = self.node.receive(timeout=timeout)
            self.node.reply(message, b"re:" + message.data)

    def op_listen(self, port: int) -> None:
        self.node.listen(port)

    def op_stream_send(
        self, address: str, port: int, size: int, seed: int, chunk: int = 0
    ) -> dict[str, str]:
        data = payload(seed, size)
        stream = self.node.open_stream(address, port)
        step = chunk or size or 1
        for offset in range(0, size, step):
            stream.write(data[offset : offset + step])
        stream.end()
        answer = b"".join(stream)
        return {"sha": hashlib.sha256(data).hexdigest(), "answer": answer.decode()}

    def op_stream_hold(self, address: str, port: int, size: int) -> None:
        """Open a stream and write to it without ending it: the peer keeps reading."""
        self.node.open_stream(address, port).write(payload(2, size))

    def op_stream_send_many(self, address: str, port: int, count: int, size: int) -> int:
        results: list[bool] = []

        def one(index: int) -> None:
            sent = self.op_stream_send(address, port, size, seed=index, chunk=16384)
            results.append(sent["sha"] == sent["answer"])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        return sum(results)

    def op_stream_serve(self, port: int, count: int, timeout: float = 60.0) -> list[str]:
        results: list[str] = []

        def serve(stream: Any) -> None:
            digest = hashlib.sha256()
            try:
                for chunk in stream:
                    digest.update(chunk)
                stream.write(digest.hexdigest().encode(), end=True)
                results.append(digest.hexdigest())
            except PilotError as error:
                results.append(type(error).__name__)

        threads = []
        for _ in range(count):
            thread = threading.Thread(target=serve, args=(self.node.accept(port, timeout=timeout),))
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(timeout)
        return sorted(results)

    def op_cancel_transfer(self, address: str, port: int, size: int) -> dict[str, Any]:
        stream = self.node.open_stream(address, port)
        stream.write(payload(1, 1 << 20))
        how = self.cancel_write(stream, bytes(size))
        try:
            stream.write(b"more")
            after = "writable"
        except StreamResetError:
            after = "reset"
        return {"cancelled_by": how, "stream_after": after, "rtt": self.node.ping(address)}

    def op_close(self, graceful: bool = True) -> None:
        self.node.close(graceful=graceful)

    def op_after_close(self) -> dict[str, Any]:
        try:
            self.node.send_message(self.node.address, b"x")
            send = "sent"
        except NodeClosed:
            send = "NodeClosed"
        return {"send": send, "messages": list(self.node.messages())}

    def op_receive_error(self, timeout: float = 30.0) -> str:
        """Wait for a message that never comes; report how the wait ended."""
        try:
            self.node.receive(timeout=timeout)
        except PilotError as error:
            return type(error).__name__
        return "received"
