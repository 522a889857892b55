"""An application call waiting for the core, in whatever way the binding waits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Notify", "Pending", "copy_error"]

Notify = Callable[["Pending"], None]


class Pending:
    """One application call waiting for the core: a connect, a receipt, a pong, a message,
    an incoming stream, data on a stream or room in its send buffer.

    The driver sets `result` or `error`, then `done`, then calls the binding's `notify`
    (on the owner, from inside a driver call). `outcome()` hands the caller the result
    or raises the error."""

    __slots__ = (
        "_cleanup", "_give_back", "_notify", "_on_timeout", "done", "error", "result", "waiter",
    )

    def __init__(self, notify: Notify) -> None:
        self._notify = notify
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        #: Undoes the registration when the caller gives up (timeout or cancellation).
        self._cleanup: Callable[[float], None] | None = None
        #: Puts a handed-out item back if the caller was cancelled before it saw it.
        self._give_back: Callable[[], None] | None = None
        self._on_timeout: Callable[[], BaseException] | None = None
        #: The binding's own waiting object (e.g. a future), for a `notify` shared by every
        #: call: no closure per call, and none at all for a call that completes at once.
        self.waiter: Any = None

    def outcome(self) -> Any:
        error = self.error
        if error is None:
            return self.result
        # One error often fails many waiters (a closed session, a closed node): each
        # caller gets its own copy, so no traceback mixes frames of several callers.
        fresh = copy_error(error)
        if error.__traceback__ is not None:
            raise fresh from error  # raised inside the core: show where
        raise fresh


def copy_error(error: BaseException) -> BaseException:
    # Not copy.copy: it calls __init__ with `args`, which our exceptions' __init__ differ from.
    fresh = type(error).__new__(type(error))
    fresh.args = error.args
    fresh.__dict__.update(error.__dict__)
    return fresh
