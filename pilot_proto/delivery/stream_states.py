"""The states of a stream's two halves, as tables (RFC 9000 section 3, simplified).

A stream is bidirectional. Its send half and receive half each move through the states
below; the stream is forgotten once both halves are terminal. A reset (ours or the peer's)
aborts both halves at once. Transitions not in a table are illegal: for the application's
actions that is a `StreamStateError`; the connection never applies a remote one that is not
allowed (the frame is ignored and counted).
"""

from __future__ import annotations

import enum

from ..errors import StreamStateError

__all__ = [
    "RECEIVE_TRANSITIONS",
    "SEND_TRANSITIONS",
    "ReceiveEvent",
    "ReceiveState",
    "SendEvent",
    "SendState",
    "receive_transition",
    "send_transition",
]


class SendState(enum.Enum):
    OPEN = "open"  # the application may write
    ENDED = "ended"  # end_stream called: the FIN is queued or sent, waiting for ACKs
    DONE = "done"  # every byte and the FIN acknowledged (terminal)
    RESET = "reset"  # aborted (terminal)


class SendEvent(enum.Enum):
    WRITE = "write"  # application: send_stream
    END = "end"  # application: send_stream(..., end_stream=True)
    ALL_ACKED = "all_acked"  # the peer acknowledged everything up to the FIN
    RESET = "reset"  # reset_stream, a peer's STREAM_RESET, or a refusal


SEND_TRANSITIONS: dict[tuple[SendState, SendEvent], SendState] = {
    (SendState.OPEN, SendEvent.WRITE): SendState.OPEN,
    (SendState.OPEN, SendEvent.END): SendState.ENDED,
    (SendState.OPEN, SendEvent.RESET): SendState.RESET,
    (SendState.ENDED, SendEvent.ALL_ACKED): SendState.DONE,
    (SendState.ENDED, SendEvent.RESET): SendState.RESET,
    (SendState.DONE, SendEvent.RESET): SendState.RESET,
}


class ReceiveState(enum.Enum):
    RECV = "recv"  # data arriving, final size unknown
    SIZE_KNOWN = "size_known"  # the FIN arrived, some bytes before it are missing
    DATA_RECVD = "data_recvd"  # every byte arrived; the application is still reading
    DATA_READ = "data_read"  # the application read up to the FIN (terminal, StreamEnded)
    RESET = "reset"  # aborted (terminal)


class ReceiveEvent(enum.Enum):
    FIN = "fin"  # a frame with the FIN arrived
    ALL_RECEIVED = "all_received"  # no byte before the final size is missing
    ALL_READ = "all_read"  # the application read the last byte
    RESET = "reset"


RECEIVE_TRANSITIONS: dict[tuple[ReceiveState, ReceiveEvent], ReceiveState] = {
    (ReceiveState.RECV, ReceiveEvent.FIN): ReceiveState.SIZE_KNOWN,
    (ReceiveState.RECV, ReceiveEvent.RESET): ReceiveState.RESET,
    (ReceiveState.SIZE_KNOWN, ReceiveEvent.ALL_RECEIVED): ReceiveState.DATA_RECVD,
    (ReceiveState.SIZE_KNOWN, ReceiveEvent.RESET): ReceiveState.RESET,
    (ReceiveState.DATA_RECVD, ReceiveEvent.ALL_READ): ReceiveState.DATA_READ,
    (ReceiveState.DATA_RECVD, ReceiveEvent.RESET): ReceiveState.RESET,
}

_SEND_REFUSALS = {
    SendState.ENDED: "the stream was already ended (end_stream)",
    SendState.DONE: "the stream was already ended and fully delivered",
    SendState.RESET: "the stream was reset",
}


def send_transition(state: SendState, event: SendEvent) -> SendState:
    """The next send state; StreamStateError if `event` is not allowed in `state`."""
    try:
        return SEND_TRANSITIONS[(state, event)]
    except KeyError:
        reason = _SEND_REFUSALS.get(state, f"state {state.value}")
        raise StreamStateError(f"cannot {event.value} on this stream: {reason}") from None


def receive_transition(state: ReceiveState, event: ReceiveEvent) -> ReceiveState:
    """The next receive state; StreamStateError if `event` is not allowed in `state`."""
    try:
        return RECEIVE_TRANSITIONS[(state, event)]
    except KeyError:
        raise StreamStateError(
            f"receive half in state {state.value} does not allow {event.value}"
        ) from None
