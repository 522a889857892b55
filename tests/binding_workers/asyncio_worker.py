"""A pilot_asyncio node in a process of its own (see common.py for the protocol).

`--uvloop` runs it on uvloop, chosen here as an application would; the binding never
installs it.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import threading
import time
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
from pilot_asyncio import Node, Stream

from pilot_proto.errors import NodeClosed, PilotError, StreamResetError


class AsyncioWorker:
    def __init__(self) -> None:
        self.node: Any = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str] = asyncio.Queue()

        def read_stdin() -> None:  # a pipe cannot be read without blocking: a thread does it
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line)
            loop.call_soon_threadsafe(lines.put_nowait, "")

        threading.Thread(target=read_stdin, daemon=True).start()
        while line := await lines.get():
            if not line.strip():
                continue
            command_id, op, args = parse(line)
            if op == "exit":
                break
            task = asyncio.create_task(self.run(command_id, op, args))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        if self.node is not None:
            await self.node.close()

    async def run(self, command_id: int, op: str, args: dict[str, Any]) -> None:
        try:
            result = await getattr(self, "op_" + op)(**args)
        except BaseException as error:
            reply(command_id, error=error)
        else:
            reply(command_id, result)

    # ------------------------------------------------------------------ commands

    async def op_start(
        self, seed: str, host: str = "127.0.0.1", port: int = 0,
        datagram_size: int | None = None, public: bool = False,
    ) -> Any:
        node = Node(identity(seed), config(datagram_size, public), host=host, port=port)
        self.node = await node.start()
        return started(self.node)

    async def op_add_peer(self, record: str, endpoint: list[Any]) -> None:
        self.node.add_peer(peer_record(record), [tuple(endpoint)])

    async def op_connect(self, address: str, timeout: float = 10.0) -> None:
        await self.node.connect(address, timeout=timeout)

    async def op_ping(self, address: str, timeout: float = 5.0) -> float:
        rtt: float = await self.node.ping(address, timeout=timeout)
        return rtt

    async def op_peer_info(self, address: str) -> dict[str, Any]:
        return {"has_session": self.node.peer_info(address).has_session}

    async def op_stats(self) -> dict[str, int]:
        stats: dict[str, int] = self.node.stats()
        return stats

    async def op_send_messages(
        self, address: str, count: int, size: int = 200, timeout: float = 30.0
    ) -> float:
        start = time.perf_counter()
        for index in range(count):
            await self.node.send_message(address, message_body(index, size), timeout=timeout)
        return time.perf_counter() - start

    async def op_receive_messages(self, count: int, timeout: float = 30.0) -> list[int]:
        return [
            message_index((await self.node.receive(timeout=timeout)).data) for _ in range(count)
        ]

    async def op_request(self, address: str, data: str, timeout: float = 10.0) -> dict[str, Any]:
        message_id = await self.node.send_message(address, data.encode(), timeout=timeout)
        answer = await self.node.receive(timeout=timeout)
        return {"data": answer.data.decode(), "reply_to_matches": answer.reply_to == message_id}

    async def op_serve_requests(self, count: int, timeout: float = 30.0) -> None:
        for _ in range(count):
            message = await self.node.receive(timeout=timeout)
            await self.node.reply(message, b"re:" + message.data)

    async def op_listen(self, port: int) -> None:
        self.node.listen(port)

    async def op_stream_send(
        self, address: str, port: int, size: int, seed: int, chunk: int = 0
    ) -> dict[str, str]:
        data = payload(seed, size)
        stream = self.node.open_stream(address, port)
        step = chunk or size or 1
        for offset in range(0, size, step):
            await stream.write(data[offset : offset + step])
        stream.end()
        answer = b"".join([piece async for piece in stream])
        return {"sha": hashlib.sha256(data).hexdigest(), "answer": answer.decode()}

    async def op_stream_hold(self, address: str, port: int, size: int) -> None:
        """Open a stream and write to it without ending it: the peer keeps reading."""
        await self.node.open_stream(address, port).write(payload(2, size))

    async def op_stream_send_many(self, address: str, port: int, count: int, size: int) -> int:
        sent = await asyncio.gather(
            *(self.op_stream_send(address, port, size, seed=i, chunk=16384) for i in range(count))
        )
        return sum(s["sha"] == s["answer"] for s in sent)

    async def op_stream_serve(self, port: int, count: int, timeout: float = 60.0) -> list[str]:
        async def serve(stream: Stream) -> str:
            digest = hashlib.sha256()
            try:
                async for chunk in stream:
                    digest.update(chunk)
                await stream.write(digest.hexdigest().encode(), end=True)
            except PilotError as error:
                return type(error).__name__
            return digest.hexdigest()

        tasks = [
            asyncio.create_task(serve(await self.node.accept(port, timeout=timeout)))
            for _ in range(count)
        ]
        return sorted(await asyncio.gather(*tasks))

    async def op_cancel_transfer(self, address: str, port: int, size: int) -> dict[str, Any]:
        stream = self.node.open_stream(address, port)
        await stream.write(payload(1, 1 << 20))
        writer = asyncio.create_task(stream.write(bytes(size)))
        await asyncio.sleep(0.05)
        how = "finished" if writer.done() else "cancelled"
        writer.cancel()
        try:
            await writer
        except asyncio.CancelledError:
            pass
        try:
            await stream.write(b"more")
            after = "writable"
        except StreamResetError:
            after = "reset"
        return {"cancelled_by": how, "stream_after": after, "rtt": await self.node.ping(address)}

    async def op_close(self, graceful: bool = True) -> None:
        await self.node.close(graceful=graceful)

    async def op_after_close(self) -> dict[str, Any]:
        try:
            await self.node.send_message(self.node.address, b"x")
            send = "sent"
        except NodeClosed:
            send = "NodeClosed"
        return {"send": send, "messages": [m async for m in self.node.messages()]}

    async def op_receive_error(self, timeout: float = 30.0) -> str:
        try:
            await self.node.receive(timeout=timeout)
        except PilotError as error:
            return type(error).__name__
        return "received"


if __name__ == "__main__":
    if "--uvloop" in sys.argv:
        import uvloop

        uvloop.run(AsyncioWorker().serve())
    else:
        asyncio.run(AsyncioWorker().serve())
