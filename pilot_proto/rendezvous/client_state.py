"""The rendezvous client's states and every legal move between them, as data.

STYLE: "a state machine is data": `RendezvousClient` consults this table on every move,
an illegal move is a bug and raises, and tests/test_rendezvous_client_state.py walks
every row.
"""

from __future__ import annotations

from enum import Enum

from ..errors import LocalProtocolError

__all__ = ["SESSION_UP", "STOPPED", "TRANSITIONS", "ClientState", "check_transition"]


class ClientState(Enum):
    IDLE = "idle"  # not started
    CONNECTING = "connecting"  # a handshake with the server is under way
    PROBING = "probing"  # IK to the pinned key went unanswered: XX to see the key now
    REGISTERING = "registering"  # session up, registration sent
    REGISTERED = "registered"
    UNREGISTERED = "unregistered"  # session up, registration refused
    WAITING = "waiting"  # session lost or not made; reconnecting after a backoff
    KEY_CHANGED = "key_changed"  # the server presents another key: stopped for good
    CLOSED = "closed"


S = ClientState
#: A session with the server exists: requests go out at once instead of queueing.
SESSION_UP = frozenset({S.REGISTERING, S.REGISTERED, S.UNREGISTERED})
#: Nothing more happens; requests are refused.
STOPPED = frozenset({S.KEY_CHANGED, S.CLOSED})

TRANSITIONS: dict[ClientState, frozenset[ClientState]] = {
    S.IDLE: frozenset({S.CONNECTING, S.CLOSED}),
    # Connected (register), IK unanswered with a pinned key (probe), or failed.
    S.CONNECTING: frozenset({S.REGISTERING, S.PROBING, S.WAITING, S.CLOSED}),
    # Same key after all (register), another key (stop), or no answer at all.
    S.PROBING: frozenset({S.REGISTERING, S.KEY_CHANGED, S.WAITING, S.CLOSED}),
    S.REGISTERING: frozenset({S.REGISTERED, S.UNREGISTERED, S.WAITING, S.CLOSED}),
    # Server restart (register again), refresh refused, session lost.
    S.REGISTERED: frozenset({S.REGISTERING, S.UNREGISTERED, S.WAITING, S.CLOSED}),
    # Retry or set_hostname, then accepted; or the session is lost.
    S.UNREGISTERED: frozenset({S.REGISTERING, S.REGISTERED, S.WAITING, S.CLOSED}),
    # Reconnect timer, or the node re-made the session on its own.
    S.WAITING: frozenset({S.CONNECTING, S.REGISTERING, S.CLOSED}),
    S.KEY_CHANGED: frozenset({S.CLOSED}),
    S.CLOSED: frozenset(),
}


def check_transition(old: ClientState, new: ClientState) -> None:
    if new not in TRANSITIONS[old]:
        raise LocalProtocolError(f"rendezvous client cannot go from {old.value} to {new.value}")
