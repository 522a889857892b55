"""A stream of the gevent binding: blocking reads and writes for greenlets."""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING

from pilot_proto.driver import StreamState

if TYPE_CHECKING:
    from .node import Node

#: What `read` returns at most unless told otherwise.
READ_SIZE = 1 << 20


class Stream:
    """A reliable, ordered byte stream with one peer, in both directions.

    `write` blocks while the send buffer is full (back-pressure); `read` blocks until data
    or the end arrives. As a context manager it ends our direction on a normal exit and
    resets the stream when the block raises.
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

    def write(self, data: bytes, *, end: bool = False, timeout: float | None = None) -> None:
        """Return once all of `data` is in the send buffer; with `end`, our direction ends
        after it. A write killed or timed out part-way resets the stream."""
        node, state = self._node, self._state
        node._wait(
            lambda now, notify: node._driver.stream_write(state, data, end, now, timeout, notify)
        )

    def end(self) -> None:
        """Half-close: no more data from us; the peer reads to the end."""
        node, state = self._node, self._state
        node._submit(lambda now: node._driver.stream_end(state, now))

    def read(self, max_bytes: int = READ_SIZE, *, timeout: float | None = None) -> bytes:
        """Up to `max_bytes` bytes (at least one), or b"" once the peer ended the stream."""
        node, state = self._node, self._state
        data: bytes = node._wait(
            lambda now, notify: node._driver.stream_read(state, max_bytes, now, timeout, notify)
        )
        return data

    def reset(self, reason: str = "") -> None:
        """Abort both directions; the peer gets StreamResetError(reason)."""
        node, state = self._node, self._state
        node._submit(lambda now: node._driver.stream_reset(state, reason, now))

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read():
            yield chunk

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state.error is not None:
            return
        if kind is None:
            self.end()
        else:
            self.reset(f"the application failed: {kind.__name__}")

    def __repr__(self) -> str:
        return f"<Stream {self.stream_id} with {self.address} port {self.port}>"
