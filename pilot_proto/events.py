"""Events the Node hands the application (session layer).

Frozen, slotted dataclasses without behaviour. Every event names the peer it concerns by
its address string. Layers above the session (reliable delivery) define their own events
in their own module, subclassing `Event`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event `Node.next_event()` returns."""

    address: str
