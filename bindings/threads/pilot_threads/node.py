"""A pilot-proto node driven by the threads that call it: blocking calls, safe from any
number of threads.

The core has one owner at a time (DESIGN 1): whoever holds the node's core lock. A calling
thread takes it, runs its driver call and sends what the call queued, all in its own
thread. A call that must wait (a receipt, a message) makes its thread the "poller" when
nobody else is: it waits in the selector on the UDP socket (and one end of a socketpair),
reads, runs the core, completes whichever calls are done and wakes their threads. A call
that finds the role taken waits on a lock of its own that the poller releases.

A background thread keeps the node alive when no caller polls: it takes the role at once
when callers are left waiting, and otherwise once the role has stayed vacant for _LINGER,
so timers and unsolicited datagrams still run while the application does something else.
It gives the role back as soon as it has served a caller. A thread that calls again at
once (the next request, the reply) never hands anything to another thread: no thread
switch on the round trip.

When what arrived completes a call, the packets it makes due (the ACK, the RECEIPT of a
message) are held back until that thread's next call, so a reply leaves in one datagram
with the RECEIPT of the request it answers; whoever polls next (at the latest _LINGER
later) sends them.
"""

from __future__ import annotations

import logging
import math
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from pilot_proto import Identity, NodeConfig
from pilot_proto import Node as CoreNode
from pilot_proto.driver import BUSY_POLL_LIMIT, BlockingNode, Driver, Notify, Pending, UdpPort
from pilot_proto.errors import NodeClosed
from pilot_proto.events import Event
from pilot_proto.transmit import Addr, Transmit

T = TypeVar("T")

log = logging.getLogger("pilot_threads")

_monotonic = time.monotonic
_get_ident = threading.get_ident
#: How often a caller waiting on its lock checks that the background thread is alive.
_LIVENESS_CHECK = 1.0
#: How long the poller role may stay vacant, and packets be held back for a caller's next
#: call, before someone polls anyway (a caller that calls again at once takes tens of µs).
_LINGER = 0.0005
#: How often the background thread looks for a vacant role while callers keep taking it:
#: a caller that vacates the role does not wake it (that would cost a thread switch per
#: call), so it looks by itself, and sleeps for good once one caller polls for longer.
_WATCH = 0.001
_NOBODY = 0  # no thread: thread idents are never 0


class _Caller:
    """One waiting call: its Pending, and the lock its thread waits on when another
    thread polls for it (None while it polls itself or has not had to wait)."""

    __slots__ = ("lock", "node", "pending")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.lock: threading.Lock | None = None
        self.pending: Pending | None = None

    def notify(self, pending: Pending) -> None:
        """The driver completed the call (under the core lock): wake its thread."""
        lock = self.lock
        if lock is not None:
            self.lock = None
            self.node._waiters -= 1
            lock.release()


class Node(BlockingNode):
    """A node bound to a UDP socket, driven by the threads that call it.

    Every method may be called from any thread; the blocking ones take `timeout` seconds
    (None waits for as long as it takes) and raise a `PilotTimeout` subclass when it
    passes. Use as a context manager, or call `start()` and `close()`. The calls are
    those of `pilot_proto.driver.BlockingNode`. `on_event` runs in whichever thread
    drives the core at the time, with the core lock held: it may make the non-blocking
    calls, not the waiting ones.
    """

    def __init__(
        self,
        identity: Identity,
        config: NodeConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
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
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        # Everything below is read and written with _core held.
        self._core = threading.Lock()
        self._holder = _NOBODY  # the thread holding _core (on_event calls run inline)
        self._poller = _NOBODY  # the thread waiting on the socket
        self._poller_call: _Caller | None = None  # its own call (None: the background thread)
        self._armed = math.inf  # when the poller's wait ends at the latest
        self._waiters = 0  # callers waiting on their lock for the poller
        self._owed = False  # packets are held back for a completed caller's next call
        self._vacated_at = 0.0
        self._takes = 0  # times a caller took the role: the background thread watches it
        self._bell = threading.Lock()  # the background thread sleeps on it; release wakes
        self._bg_asleep = False  # it sleeps without a timeout: ring it when the role frees
        self._woken = False  # a byte is in the socketpair for the poller
        self._stopping = False
        self._released = False

    # ------------------------------------------------------------------ life cycle

    @property
    def endpoint(self) -> Addr:
        """The bound UDP endpoint, canonical (host, port)."""
        if self._udp is None:
            raise NodeClosed("the node is not started; call start() first")
        return self._udp.endpoint

    def start(self) -> Node:
        """Bind the socket and start the background thread. Returns the node."""
        if self._thread is not None:
            return self
        host, port, sock = self._bind
        driver = self._driver
        self._udp = UdpPort.open(
            socket, host, port, sock, driver.datagram_received, driver.stats, log,
            self._busy_poll,
        )
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._udp.sock, selectors.EVENT_READ, True)
        self._selector.register(self._wake_r, selectors.EVENT_READ, False)
        self._bell.acquire()
        self._vacated_at = _monotonic() - _LINGER  # nobody polls yet: the thread starts to
        self._thread = threading.Thread(
            target=self._run, name=f"pilot-io {self.address[:9]}", daemon=True
        )
        self._thread.start()
        return self

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self, graceful: bool = True, timeout: float = 5.0) -> None:
        """Close every session (telling the peers when `graceful`), fail every blocked
        call with NodeClosed, release the socket. Idempotent."""
        thread = self._thread
        if thread is None:
            return
        inside = self._holder == _get_ident()  # from on_event: the core lock is ours
        if not inside:
            self._core.acquire()
            self._holder = _get_ident()
        try:
            if not self._stopping:
                now = _monotonic()
                self._driver.close(now, graceful)
                assert self._udp is not None
                self._udp.send(self._driver.poll(now))
                self._stopping = True
                self._ring()  # a polling caller finds its call failed and lets go
                self._ring_bell()
        finally:
            if not inside:
                self._holder = _NOBODY
                self._core.release()
        if not inside and thread is not threading.current_thread():
            thread.join(timeout)

    # ------------------------------------------------------------------ calling the core

    def _submit(self, call: Callable[[float], T]) -> T:
        """Run `call(now)` as the core's owner and send what it queued."""
        me = _get_ident()
        if self._holder == me:
            return call(_monotonic())  # from on_event: the call driving it sends
        core = self._core
        core.acquire()
        self._holder = me
        try:
            self._check_open()
            now = _monotonic()
            try:
                return call(now)
            finally:
                self._flush(now)
        finally:
            self._holder = _NOBODY
            core.release()

    def _wait(self, start: Callable[[float, Notify], Pending]) -> Any:
        """Start a driver operation and block this thread until it completes: polling the
        socket itself when nobody else does, else on a lock the poller releases."""
        me = _get_ident()
        if self._holder == me:
            raise RuntimeError(
                "blocking pilot calls cannot run inside on_event (it runs while the node's "
                "core is busy); make the call from another thread"
            )
        caller = _Caller(self)
        core = self._core
        core.acquire()
        self._holder = me
        try:
            self._check_open()
            now = _monotonic()
            try:
                pending = caller.pending = start(now, caller.notify)
            except BaseException:
                self._hold_back(now)  # what the call queued before it failed
                raise
            polling = False
            lock = None
            timeout: float | None = None
            if pending.done:
                # Answered at once (a queued message): what that made due (its RECEIPT)
                # goes with this thread's next call.
                self._hold_back(now)
            else:
                self._flush(now)
                if pending.done:
                    pass  # the poll completed it (a read the core had data for)
                elif self._poller == _NOBODY:
                    self._poller = me
                    self._poller_call = caller
                    self._takes += 1
                    polling = True
                    timeout = self._arm(now)
                else:
                    lock = caller.lock = threading.Lock()
                    lock.acquire()
                    self._waiters += 1
        finally:
            self._holder = _NOBODY
            core.release()
        if polling:
            self._poll_until_done(caller, timeout)
        elif lock is not None:
            self._block(caller, lock)
        return pending.outcome()

    def _check_open(self) -> None:
        if self._stopping or self._thread is None:
            raise NodeClosed()

    def _flush(self, now: float) -> None:
        """Poll the core and send what is due (with anything held back)."""
        assert self._udp is not None
        self._owed = False
        self._udp.send(self._driver.poll(now))
        self._nudge(now)

    def _hold_back(self, now: float) -> None:
        self._owed = True
        self._nudge(now)

    def _nudge(self, now: float) -> None:
        """Wake the thread polling, if another, when it must act before its wait ends:
        its own call was completed here, or the core's next timer (or a held-back
        packet) came due earlier than it waits."""
        poller = self._poller
        if poller == _NOBODY or poller == _get_ident():
            return
        call = self._poller_call
        if call is not None and call.pending is not None and call.pending.done:
            self._ring()
            return
        wakeup = self._driver.next_wakeup()
        due = math.inf if wakeup is None else wakeup
        if self._owed:
            due = min(due, now + _LINGER)
        if due < self._armed:
            self._ring()

    def _arm(self, now: float) -> float | None:
        """Before the poller waits (core lock held): when its wait must end, as the
        selector's timeout."""
        wakeup = self._driver.next_wakeup()
        armed = math.inf if wakeup is None else wakeup
        if self._owed:
            armed = min(armed, now + _LINGER)
        self._armed = armed
        if armed == math.inf:
            return None
        # From a fresh clock: the selector rounds a timeout up to the millisecond, so a
        # pacing delay of a few µs that has passed already must wait 0, not 1 ms.
        return max(armed - _monotonic(), 0.0)

    def _ring(self) -> None:
        """Wake the poller out of the selector (one byte until it reads them)."""
        if self._woken or self._released or self._wake_w is None:
            return
        self._woken = True
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # full: the poller wakes anyway

    def _ring_bell(self) -> None:
        self._bg_asleep = False
        try:
            self._bell.release()
        except RuntimeError:
            pass  # rung already

    # ------------------------------------------------------------------ polling

    def _poll_until_done(self, caller: _Caller, timeout: float | None) -> None:
        """This thread holds the poller role: wait on the socket and run the core until
        its own call is done, then let the role go."""
        me = _get_ident()
        pending = caller.pending
        assert pending is not None and self._selector is not None
        select = self._selector.select
        core = self._core
        events = self._spin(select, timeout)
        try:
            while True:
                if not events:
                    events = select(timeout)
                core.acquire()
                self._holder = me
                try:
                    now = _monotonic()
                    self._serve(events, now)
                    if pending.done or self._stopping:
                        self._vacate(now)
                        return
                    timeout = self._arm(now)
                    events = []
                finally:
                    self._holder = _NOBODY
                    core.release()
        except BaseException:
            # Interrupted (KeyboardInterrupt) or the core failed: give the call up, leave
            # no waiter behind, and let another thread poll.
            core.acquire()
            self._holder = me
            try:
                self._give_up(pending)
                if self._poller == me:
                    self._vacate(_monotonic())
            finally:
                self._holder = _NOBODY
                core.release()
            raise

    def _spin(
        self, select: Callable[[float], list[tuple[selectors.SelectorKey, int]]],
        timeout: float | None,
    ) -> list[tuple[selectors.SelectorKey, int]]:
        """Before the new poller's first wait, right after its call sent: look at the
        socket (and the wake-up pair) for the busy-poll window without sleeping, since an
        answer on a LAN comes sooner than a sleeping thread wakes (driver/busy_poll.py).
        Not when the core's timer is due sooner than the window."""
        udp = self._udp
        assert udp is not None
        if timeout is not None and timeout <= udp.busy.window:
            return []
        events: list[tuple[selectors.SelectorKey, int]] = []

        def ready(now: float) -> int:
            nonlocal events
            events = select(0)
            return len(events)

        udp.spin(ready, _monotonic)
        return events

    def _serve(self, events: list[tuple[selectors.SelectorKey, int]], now: float) -> None:
        """The poller's wake-up (core lock held): read the socket, or run what is due."""
        readable = False
        for key, _ in events:
            if key.data:
                readable = True
            else:
                self._drain_wake()
        if self._stopping:
            return
        if readable:
            assert self._udp is not None
            self._udp.drain(self._poll_after_read, _monotonic)
        else:
            self._flush(now)  # a timer, held-back packets, or a nudge

    def _poll_after_read(self, now: float) -> Sequence[Transmit]:
        """The drain's poll: route what arrived; if that completed the polling thread's
        own call, hold the packets back for its next call (another thread's next call
        comes only after a thread switch: they go now)."""
        if self._driver.route(now):
            call = self._poller_call
            if call is not None and call.pending is not None and call.pending.done:
                self._owed = True
                return ()
        self._owed = False
        return self._driver.poll(now)

    def _drain_wake(self) -> None:
        # One read takes every byte (one is written per ring, and only while `_woken`
        # is clear); bytes written later make the socket readable again.
        self._woken = False
        wake_r = self._wake_r
        assert wake_r is not None
        try:
            wake_r.recv(4096)
        except (BlockingIOError, InterruptedError):
            pass

    def _vacate(self, now: float) -> None:
        """Let the poller role go (core lock held). Callers left waiting need a poller at
        once; else the background thread takes it only if nobody does within _LINGER."""
        self._poller = _NOBODY
        self._poller_call = None
        self._armed = math.inf
        if self._stopping:
            self._release()
            return
        self._vacated_at = now
        if self._waiters or self._bg_asleep:
            self._ring_bell()

    def _block(self, caller: _Caller, lock: threading.Lock) -> None:
        """Wait for the poller to complete the call."""
        thread = self._thread
        try:
            while not lock.acquire(True, _LIVENESS_CHECK):
                if thread is None or not thread.is_alive():
                    raise NodeClosed("the node's background thread stopped")
        except BaseException:
            core = self._core
            core.acquire()
            self._holder = _get_ident()
            try:
                if caller.lock is not None:
                    caller.lock = None
                    self._waiters -= 1
                assert caller.pending is not None
                self._give_up(caller.pending)
            finally:
                self._holder = _NOBODY
                core.release()
            raise

    def _give_up(self, pending: Pending) -> None:
        """The caller stops waiting (core lock held): nothing waits on its behalf, and an
        item already handed to it goes back."""
        now = _monotonic()
        self._driver.abandon(pending, now)
        if not self._stopping:
            self._hold_back(now)  # abandoning may queue packets (a reset stream)

    # ------------------------------------------------------------------ the background thread

    def _run(self) -> None:
        me = _get_ident()
        core, bell = self._core, self._bell
        seen = -1
        try:
            while True:
                core.acquire()
                self._holder = me
                try:
                    if self._stopping:
                        return
                    now = _monotonic()
                    sleep: float | None
                    timeout: float | None = None
                    polling = False
                    if self._poller == _NOBODY:
                        idle = now - self._vacated_at
                        if self._waiters or idle >= _LINGER:
                            if self._owed:  # the completed caller made no call in time
                                self._driver.stats["linger_expired"] += 1
                            self._poller = me
                            self._flush(now)  # anything held back, timers due
                            timeout = self._arm(now)
                            polling = True
                        sleep = _LINGER - idle
                    elif self._takes != seen:
                        seen = self._takes  # callers keep polling: look again soon
                        sleep = _WATCH
                    else:
                        self._bg_asleep = True  # one caller polls on: ring when it stops
                        sleep = None
                finally:
                    self._holder = _NOBODY
                    core.release()
                if polling:
                    self._poll_for_nobody(timeout)
                    seen = self._takes
                elif sleep is None:
                    bell.acquire()
                else:
                    bell.acquire(True, sleep)
        except BaseException:
            log.exception("the pilot background thread failed; the node is closed")
            raise
        finally:
            self._stop_here(me)

    def _poll_for_nobody(self, timeout: float | None) -> None:
        """The background thread polls while no caller does, until it served one and
        none is left waiting (the next call polls for itself) or the node stops."""
        me = _get_ident()
        assert self._selector is not None
        select = self._selector.select
        core = self._core
        driver = self._driver
        while True:
            events = select(timeout)
            core.acquire()
            self._holder = me
            try:
                if self._stopping:
                    return
                now = _monotonic()
                before = driver.completions
                self._serve(events, now)
                if driver.completions != before and not self._waiters:
                    self._vacate(now)
                    return
                timeout = self._arm(now)
            finally:
                self._holder = _NOBODY
                core.release()

    def _stop_here(self, me: int) -> None:
        with self._core:
            self._holder = me
            self._stopping = True
            if not self._driver.closed:  # the thread failed: fail every waiting call
                self._driver.close(_monotonic(), graceful=False)
            if self._poller in (_NOBODY, me):
                self._poller = _NOBODY
                self._release()
            else:
                self._ring()  # the caller polling lets go, and releases the socket
            self._holder = _NOBODY

    def _release(self) -> None:
        """Close the socket and the selector (core lock held, nobody polling)."""
        if self._released:
            return
        self._released = True
        assert self._selector is not None and self._udp is not None
        self._selector.close()
        if self._owns_socket:
            self._udp.close()
        for end in (self._wake_r, self._wake_w):
            if end is not None:
                end.close()
