"""A pilot-proto node on the gevent hub: blocking calls for greenlets (and other threads).

The hub of the thread that starts the node is the core's single owner. The socket is a
non-blocking socket read from an io watcher callback: a plain `_socket` one, which
monkey-patching leaves alone, since the watcher does all the waiting and gevent's socket
would only wrap every recvmsg and sendmsg in a Python frame. The one timer is a hub
timer, and a call made by a greenlet runs at once (greenlets of one hub never run at the
same time) and schedules one poll with `run_callback`, so the calls of a loop turn share
one flush. Threads other than the hub's queue their calls through `hub.loop.async_()`
and block on a real lock, since gevent's primitives are not thread-safe.
"""

from __future__ import annotations

import _socket
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import gevent  # type: ignore[import-untyped]  # gevent ships no type hints
from gevent import monkey
from gevent import socket as gsocket
from gevent.hub import Waiter  # type: ignore[import-untyped]

from pilot_proto import Identity, NodeConfig
from pilot_proto import Node as CoreNode
from pilot_proto.driver import (
    BUSY_POLL_LIMIT,
    BlockingNode,
    Driver,
    Handoff,
    Notify,
    Pending,
    UdpPort,
)
from pilot_proto.errors import NodeClosed
from pilot_proto.events import Event
from pilot_proto.transmit import Addr, Transmit

T = TypeVar("T")

log = logging.getLogger("pilot_gevent")

_monotonic = time.monotonic
# The real thread primitives even under monkey-patching: a foreign OS thread must block
# itself, not a greenlet of a hub it does not run.
_get_ident: Callable[[], int] = monkey.get_original("_thread", "get_ident")
_allocate_lock: Callable[[], Any] = monkey.get_original("_thread", "allocate_lock")


class Node(BlockingNode):
    """A node bound to a UDP socket on the current thread's gevent hub.

    Blocking methods take `timeout` seconds (None waits as long as it takes) and raise a
    `PilotTimeout` subclass when it passes; killing a waiting greenlet (or a
    gevent.Timeout) is always safe. Use as a context manager, or `start()` and `close()`.
    The calls are those of `pilot_proto.driver.BlockingNode`.
    """

    def __init__(
        self,
        identity: Identity,
        config: NodeConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sock: gsocket.socket | None = None,
        auto_confirm: bool = True,
        on_event: Callable[[Event], None] | None = None,
        rng: Callable[[int], bytes] = os.urandom,
        wall_clock: Callable[[], float] = time.time,
        busy_poll: float = BUSY_POLL_LIMIT,
    ) -> None:
        self.identity = identity
        core = CoreNode(identity, config, rng=rng, wall_clock=wall_clock)
        self._driver = Driver(core, auto_confirm=auto_confirm, on_event=on_event)
        self._bind = (host, port, sock)
        self._busy_poll = busy_poll
        self._owns_socket = sock is None
        self._udp: UdpPort | None = None
        self._loop: Any = None
        self._owner = -1
        self._reader: Any = None
        self._timer: Any = None
        self._timer_at: float | None = None
        self._poll_scheduled = False
        self._foreign: deque[Callable[[], None]] = deque()
        self._async: Any = None

    # ------------------------------------------------------------------ life cycle

    @property
    def endpoint(self) -> Addr:
        """The bound UDP endpoint, canonical (host, port)."""
        if self._udp is None:
            raise NodeClosed("the node is not started; call start() first")
        return self._udp.endpoint

    def start(self) -> Node:
        """Bind the socket on this thread's hub. Returns the node."""
        if self._loop is not None:
            return self
        host, port, sock = self._bind
        driver = self._driver
        self._udp = UdpPort.open(
            _socket, host, port, sock, driver.datagram_received, driver.stats, log,
            self._busy_poll,
        )
        self._owner = _get_ident()
        loop = self._loop = gevent.get_hub().loop
        self._reader = loop.io(self._udp.sock.fileno(), 1)
        self._reader.start(self._on_readable)
        self._async = loop.async_()
        self._async.start(self._run_foreign)
        return self

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self, graceful: bool = True) -> None:
        """Close every session (telling the peers when `graceful`), fail every blocked
        call with NodeClosed, release the socket. Idempotent."""
        if self._loop is None or self._driver.closed:
            return
        if _get_ident() != self._owner:
            self._submit(lambda now: self.close(graceful))
            return
        udp = self._udp
        assert udp is not None
        now = _monotonic()
        self._driver.close(now, graceful)
        udp.send(self._driver.poll(now))
        for watcher in (self._reader, self._timer, self._async):
            if watcher is not None:
                watcher.stop()
                watcher.close()
        self._timer = None
        if self._owns_socket:
            udp.close()
        self._run_foreign()  # calls queued meanwhile fail with NodeClosed

    # ------------------------------------------------------------------ hub callbacks

    def _on_readable(self) -> None:
        assert self._udp is not None
        self._udp.drain(self._poll_after_read, _monotonic)
        self._arm_timer()

    def _poll_after_read(self, now: float) -> Sequence[Transmit]:
        """The drain's poll. When what arrived completed a waiting greenlet, build nothing
        yet: the poll scheduled now runs after that greenlet in this loop turn, so its
        next call (a reply, the next request) shares the packet with the RECEIPT and ACK
        that are due."""
        if self._driver.route(now):
            self._kick()
            return ()
        return self._driver.poll(now)

    def _on_timer(self) -> None:
        self._timer_at = None
        self._poll()

    def _poll(self) -> None:
        self._poll_scheduled = False
        if self._driver.closed:
            return
        assert self._udp is not None
        out = self._driver.poll(_monotonic())
        self._udp.send_and_linger(out, self._poll_after_read, _monotonic)
        self._arm_timer()

    def _arm_timer(self) -> None:
        wanted = self._driver.next_wakeup()
        if Driver.timer_needs_rearm(self._timer_at, wanted):
            assert wanted is not None
            if self._timer is not None:
                self._timer.stop()
                self._timer.close()
            self._timer_at = wanted
            self._timer = self._loop.timer(max(wanted - _monotonic(), 0.0))
            self._timer.start(self._on_timer, update=True)

    def _kick(self) -> None:
        """Schedule one poll for this loop turn: what the calls queued goes out together."""
        if not self._poll_scheduled:
            self._poll_scheduled = True
            self._loop.run_callback(self._poll)

    def _run_foreign(self) -> None:
        calls = self._foreign
        while calls:
            calls.popleft()()
        self._kick()

    # ------------------------------------------------------------------ calling the core

    def _now(self) -> float:
        if self._loop is None:
            raise NodeClosed("the node is not started; call start() first")
        return _monotonic()

    def _submit(self, call: Callable[[float], T]) -> T:
        """Run `call(now)` on the hub's thread and return its result."""
        now = self._now()
        if _get_ident() == self._owner:
            result = call(now)
            self._kick()
            return result
        handoff = Handoff(_allocate_lock())
        self._post_foreign(lambda: handoff.call(call, _monotonic()))
        handoff.wait()
        outcome: T = handoff.outcome()
        return outcome

    def _post_foreign(self, call: Callable[[], None]) -> None:
        if self._driver.closed:
            raise NodeClosed()
        self._foreign.append(call)
        self._async.send()
        if self._driver.closed:  # closed meanwhile: the hub may never run the call
            try:
                self._foreign.remove(call)
            except ValueError:
                return  # it ran (or is running) after all
            raise NodeClosed()

    def _wait(self, start: Callable[[float, Notify], Pending]) -> Any:
        """Start a driver operation and block this greenlet (or thread) until it completes."""
        now = self._now()
        if _get_ident() != self._owner:
            return self._wait_foreign(start)
        # A bare hub Waiter, made only when the call has to wait (a receive often finds
        # its message queued): the completion switches back to this greenlet from a hub
        # callback in the same loop turn. A switch after the wait was given up only
        # stores the value in the Waiter.
        waiters: list[Waiter] = []
        run_callback = self._loop.run_callback

        def notify(pending: Pending) -> None:
            if waiters:
                run_callback(waiters[0].switch, None)

        pending = start(now, notify)
        self._kick()
        if not pending.done:
            waiter = Waiter()
            waiters.append(waiter)
            try:
                waiter.get()
            except BaseException:  # GreenletExit (kill), gevent.Timeout, KeyboardInterrupt
                self._driver.abandon(pending, _monotonic())
                self._kick()
                raise
        return pending.outcome()

    def _wait_foreign(self, start: Callable[[float, Notify], Pending]) -> Any:
        handoff = Handoff(_allocate_lock())
        self._post_foreign(lambda: handoff.start(start, _monotonic()))
        handoff.wait()
        return handoff.outcome()
