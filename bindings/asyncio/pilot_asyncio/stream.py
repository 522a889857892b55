"""A stream of the asyncio binding: awaitable reads and writes, an async iterator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING

from pilot_proto.driver import StreamState

if TYPE_CHECKING:
    from .node import Node

#: What `read` returns at most unless told otherwise.
READ_SIZE = 1 << 20


class Stream:
    """A reliable, ordered byte stream with one peer, in both directions.

    `await write(...)` waits while the send buffer is full (back-pressure); `await read()`
    until data or the end arrives. As an async context manager it ends our direction on a
    normal exit and resets the stream when the block raises or is cancelled.
    """

    def __init__(self, node: Node, state: StreamState) -> None:
        self._node = node
        self._state = state

    @property
    def address(self) -> str:
        """The peer's address."""
        return self._state.address

    @property
    def stream_id(self) -> int:
        return self._state.stream_id

    @property
    def port(self) -> int:
        return self._state.port

    async def write(self, data: bytes, *, end: bool = False, timeout: float | None = None) -> None:
        """Return once all of `data` is in the send buffer; with `end`, our direction ends
        after it. A write cancelled or timed out part-way resets the stream."""
        node, state = self._node, self._state
        await node._finish(
            node._driver.stream_write(state, data, end, node._now(), timeout, node._notify)
        )

    def end(self) -> None:
        """Half-close: no more data from us; the peer reads to the end."""
        self._node._call(lambda now: self._node._driver.stream_end(self._state, now))

    async def read(self, max_bytes: int = READ_SIZE, *, timeout: float | None = None) -> bytes:
        """Up to `max_bytes` bytes (at least one), or b"" once the peer ended the stream."""
        node, state = self._node, self._state
        data: bytes = await node._finish(
            node._driver.stream_read(state, max_bytes, node._now(), timeout, node._notify)
        )
        return data

    def reset(self, reason: str = "") -> None:
        """Abort both directions; the peer gets StreamResetError(reason)."""
        self._node._call(lambda now: self._node._driver.stream_reset(self._state, reason, now))

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state.error is not None or self._node._driver.closed:
            return
        if kind is None:
            self.end()
        else:
            self.reset(f"the application failed: {kind.__name__}")

    def __repr__(self) -> str:
        return f"<Stream {self.stream_id} with {self.address} port {self.port}>"
