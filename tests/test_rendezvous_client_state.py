"""The rendezvous client's state table, row by row (STYLE: a state machine is data)."""

from __future__ import annotations

import itertools

import pytest

from pilot_proto.errors import LocalProtocolError
from pilot_proto.rendezvous.client_state import (
    SESSION_UP,
    STOPPED,
    TRANSITIONS,
    ClientState,
    check_transition,
)


@pytest.mark.parametrize(("old", "new"), list(itertools.product(ClientState, ClientState)))
def test_every_pair_is_allowed_exactly_when_the_table_says(
    old: ClientState, new: ClientState
) -> None:
    if new in TRANSITIONS[old]:
        check_transition(old, new)
    else:
        with pytest.raises(LocalProtocolError, match=f"from {old.value} to {new.value}"):
            check_transition(old, new)


def test_every_state_has_a_row_and_is_reachable_from_idle() -> None:
    assert set(TRANSITIONS) == set(ClientState)
    seen = {ClientState.IDLE}
    frontier = [ClientState.IDLE]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(ClientState)


def test_closing_is_always_possible_and_final() -> None:
    for state in ClientState:
        if state is not ClientState.CLOSED:
            assert ClientState.CLOSED in TRANSITIONS[state]
    assert TRANSITIONS[ClientState.CLOSED] == frozenset()
    assert TRANSITIONS[ClientState.KEY_CHANGED] == {ClientState.CLOSED}


def test_a_session_can_always_be_lost_and_a_lost_one_is_retried() -> None:
    for state in SESSION_UP:
        assert ClientState.WAITING in TRANSITIONS[state]
    assert ClientState.CONNECTING in TRANSITIONS[ClientState.WAITING]
    assert not (SESSION_UP & STOPPED)
