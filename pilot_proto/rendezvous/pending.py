"""The rendezvous client's requests waiting to be sent or answered, in submission order.

Every request gets its deadline (`now + request_timeout`) when submitted, so submission
order is deadline order and the first entry is always the next to time out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import LocalProtocolError
from .messages import Request

__all__ = ["PendingRequest", "PendingRequests"]


@dataclass(slots=True)
class PendingRequest:
    kind: str  # register, hostname, allow_list, lookup, note, introduce, ping
    request_id: int
    #: None for registrations: built when sent, so the sequence number is always fresh.
    request: Request | None
    #: The client's own (registration, allow list on connect, heartbeat): their outcome
    #: is no RequestDone/RequestFailed event.
    internal: bool
    deadline: float = 0.0
    sent: bool = False
    retries: int = 0
    hostname: str | None = None
    addresses: tuple[str, ...] = field(default=())
    public: bool = False


class PendingRequests:
    """Request ids and the requests waiting under them (bounded)."""

    __slots__ = ("_entries", "_limit", "_next_id")

    def __init__(self, limit: int) -> None:
        self._entries: dict[int, PendingRequest] = {}
        self._limit = limit
        self._next_id = 1

    def new_id(self) -> int:
        if len(self._entries) >= self._limit:
            raise LocalProtocolError(
                f"{len(self._entries)} rendezvous requests are waiting already; "
                "wait for their results"
            )
        rid = self._next_id
        self._next_id += 1
        return rid

    def add(self, pending: PendingRequest) -> None:
        self._entries[pending.request_id] = pending

    def get(self, rid: int) -> PendingRequest | None:
        return self._entries.get(rid)

    def pop(self, rid: int) -> PendingRequest | None:
        return self._entries.pop(rid, None)

    def take(self, rid: int, *kinds: str) -> PendingRequest | None:
        """Remove and return the request `rid` if it is of one of `kinds`."""
        pending = self._entries.get(rid)
        if pending is None or pending.kind not in kinds:
            return None
        del self._entries[rid]
        return pending

    def due(self, now: float) -> list[PendingRequest]:
        """Remove and return every request whose deadline has passed."""
        expired = []
        for pending in self._entries.values():
            if pending.deadline > now:
                break
            expired.append(pending)
        for pending in expired:
            del self._entries[pending.request_id]
        return expired

    def next_deadline(self) -> float | None:
        return next(iter(self._entries.values())).deadline if self._entries else None

    def latest(self, *kinds: str) -> PendingRequest | None:
        for pending in reversed(self._entries.values()):
            if pending.kind in kinds:
                return pending
        return None

    def clear(self) -> None:
        self._entries.clear()

    def __iter__(self) -> Iterator[PendingRequest]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)
