"""The daemon's local event stream: what `GET /v1/events` (and `recv`, `listen`,
`subscribe`, `send-message --wait`) follow.

Publishing never blocks: each subscriber has a bounded queue, and one that falls too
far behind is cut off with a final `stream.overflow` event instead of slowing the
daemon down or growing without limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from .inbox import iso_utc

#: The kinds the daemon publishes (docs/LOCAL_API.md describes each one).
EVENT_KINDS = (
    "message",  # a message landed in the inbox (the inbox entry, without data)
    "file",  # a file landed in received/
    "file.progress",  # bytes of a file we send (a few times a second, and at the end)
    "delivery",  # a message we sent was acknowledged or given up
    "trust.request",  # a trust request arrived and is pending
    "trust.accepted",  # a peer accepted our request: it is trusted now
    "trust.rejected",  # a peer rejected our request
    "trust.approved",  # we approved a request
    "trust.removed",  # we untrusted a peer
    "inbox.cleared",
    "daemon.stopping",
    "stream.overflow",  # this subscriber fell behind and is cut off
)

_QUEUE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    kind: str
    time: float
    data: Mapping[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "time": iso_utc(self.time),
                "data": dict(self.data)}


class Subscription:
    """One subscriber's queue; iterate it, or `wait_for` one matching event."""

    def __init__(self, bus: EventBus, kinds: Collection[str] | None) -> None:
        self._bus = bus
        self._kinds = frozenset(kinds) if kinds else None
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()  # bounded by hand in _offer
        self.closed = False

    def _offer(self, event: Event) -> None:
        if self.closed or (self._kinds is not None and event.kind not in self._kinds):
            return
        if self._queue.qsize() >= _QUEUE_SIZE:
            # Tell the reader what happened, then end its stream.
            self._queue.put_nowait(
                Event(event.seq, "stream.overflow", event.time, {"dropped_from_seq": event.seq})
            )
            self._end()
            return
        self._queue.put_nowait(event)

    def _end(self) -> None:
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(None)
            self._bus._subscribers.discard(self)

    def close(self) -> None:
        self._end()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            event = await self._queue.get()
            if event is None:
                return
            yield event

    async def wait_for(self, match: Callable[[Event], bool], timeout: float) -> Event | None:
        """The first event satisfying `match` within `timeout` seconds, else None."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                event = await asyncio.wait_for(self._queue.get(), remaining)
            except TimeoutError:
                return None
            if event is None:
                return None
            if match(event):
                return event


class EventBus:
    """Fan-out of events to subscribers."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._seq = 0
        self._subscribers: set[Subscription] = set()

    def publish(self, kind: str, data: Mapping[str, Any]) -> Event:
        self._seq += 1
        event = Event(self._seq, kind, self._clock(), data)
        for subscriber in list(self._subscribers):
            subscriber._offer(event)
        return event

    def subscribe(self, kinds: Collection[str] | None = None) -> Subscription:
        subscription = Subscription(self, kinds)
        self._subscribers.add(subscription)
        return subscription

    def close(self) -> None:
        """End every subscription (daemon shutdown)."""
        for subscriber in list(self._subscribers):
            subscriber._end()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
