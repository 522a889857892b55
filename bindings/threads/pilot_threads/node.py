"""A pilot-proto node on an I/O thread: blocking calls, safe from any number of threads.

One thread owns the socket and the core (DESIGN 1: the core is single-owner). It waits in
a `selectors` selector on the UDP socket and one end of a socketpair; a caller in another
thread queues its call and writes a byte to the other end, then blocks on a lock the I/O
thread releases when the core has answered. Having completed a caller, the I/O thread
lingers briefly for that caller's next call (waiting on a lock the call releases), so a
reply leaves in one datagram with the RECEIPT of the request it answers.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from pilot_proto import Identity, NodeConfig
from pilot_proto import Node as CoreNode
from pilot_proto.driver import BlockingNode, Driver, Handoff, Notify, Pending, UdpPort
from pilot_proto.errors import NodeClosed
from pilot_proto.events import Event
from pilot_proto.transmit import Addr, Transmit

T = TypeVar("T")

log = logging.getLogger("pilot_threads")

_monotonic = time.monotonic
#: How often a blocked caller checks that the I/O thread is still alive.
_LIVENESS_CHECK = 1.0
#: How long the I/O thread waits for the next call of a caller it just completed, before
#: it sends what is queued anyway (a caller that answers at once takes tens of µs).
_LINGER = 0.0005
_LINGER_ROUNDS = 4


class Node(BlockingNode):
    """A node bound to a UDP socket, driven by its own I/O thread.

    Every method may be called from any thread; the blocking ones take `timeout` seconds
    (None waits for as long as it takes) and raise a `PilotTimeout` subclass when it
    passes. Use as a context manager, or call `start()` and `close()`. The calls are
    those of `pilot_proto.driver.BlockingNode`.
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
    ) -> None:
        self.identity = identity
        core = CoreNode(identity, config, rng=rng, wall_clock=wall_clock)
        self._driver = Driver(core, auto_confirm=auto_confirm, on_event=on_event)
        self._bind = (host, port, sock)
        self._owns_socket = sock is None
        self._udp: UdpPort | None = None
        self._calls: deque[Callable[[], None]] = deque()
        self._woken = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._owner = -1
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        #: While the I/O thread lingers it waits on this lock (it holds it otherwise), and
        #: a caller's `_post` releases it: cheaper than a byte through the socketpair.
        self._doorbell = threading.Lock()
        self._lingering = False
        self._owed = False  # a poll is due before the loop waits again
        self._completed = False  # a blocked caller was completed since the last check

    # ------------------------------------------------------------------ life cycle

    @property
    def endpoint(self) -> Addr:
        """The bound UDP endpoint, canonical (host, port)."""
        if self._udp is None:
            raise NodeClosed("the node is not started; call start() first")
        return self._udp.endpoint

    def start(self) -> Node:
        """Bind the socket and start the I/O thread. Returns the node."""
        if self._thread is not None:
            return self
        host, port, sock = self._bind
        driver = self._driver
        self._udp = UdpPort.open(
            socket, host, port, sock, driver.datagram_received, driver.stats, log
        )
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
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
        if thread is None or self._stopping:
            if thread is not None and threading.get_ident() != self._owner:
                thread.join(timeout)
            return

        def stop(now: float) -> None:
            self._driver.close(now, graceful)
            assert self._udp is not None
            self._udp.send(self._driver.poll(now))
            self._stopping = True

        try:
            self._submit(stop)
        except NodeClosed:
            pass
        if threading.get_ident() != self._owner:
            thread.join(timeout)

    # ------------------------------------------------------------------ the I/O thread

    def _run(self) -> None:
        self._owner = threading.get_ident()
        udp, driver, wake_r, wake_w = self._udp, self._driver, self._wake_r, self._wake_w
        assert udp is not None and wake_r is not None and wake_w is not None
        selector = selectors.DefaultSelector()
        selector.register(udp.sock, selectors.EVENT_READ, True)
        selector.register(wake_r, selectors.EVENT_READ, False)
        self._doorbell.acquire()
        try:
            while not self._stopping:
                wakeup = driver.next_wakeup()
                delay = None if wakeup is None else max(wakeup - _monotonic(), 0.0)
                if self._calls:
                    delay = 0.0  # posted by a caller that rang a linger just ending
                readable = False
                for key, _ in selector.select(delay):
                    if key.data:
                        readable = True
                    else:
                        self._drain_wake()
                # A poll is owed unless the socket's drain polled last: calls ran, the
                # timer is due, or the drain held its packets back for lingering callers.
                self._owed = not readable
                if readable:
                    udp.drain(self._poll_after_read, _monotonic)
                self._run_calls()
                self._linger()
                if self._owed:
                    udp.send(driver.poll(_monotonic()))
                self._completed = False  # those completed by the poll: nothing to wait for
        except BaseException:
            log.exception("the pilot I/O thread failed; the node is closed")
            raise
        finally:
            self._stopping = True
            self._owner = -1  # a later thread may get this ident
            selector.close()
            if self._owns_socket:
                udp.close()
            wake_r.close()
            wake_w.close()
            self._fail_queued_calls()

    def _drain_wake(self) -> None:
        # One read takes every byte queued (callers write one per wake-up, and only while
        # `_woken` is clear); bytes written later make the socket readable again.
        wake_r = self._wake_r
        assert wake_r is not None
        try:
            wake_r.recv(4096)
        except BlockingIOError:
            pass

    def _run_calls(self) -> None:
        """Run the calls other threads queued. A caller that finds `_woken` set relies on
        this loop seeing its call, so it is cleared only with the queue found empty."""
        calls = self._calls
        before = self._driver.completions
        while True:
            while calls:
                calls.popleft()()
                self._owed = True
            self._woken = False
            if not calls:
                break
        if self._driver.completions != before:
            self._completed = True

    def _poll_after_read(self, now: float) -> Sequence[Transmit]:
        """The drain's poll: route what arrived; if that completed a blocked caller, hold
        the packets back (`_linger` gives the caller a moment to make its next call)."""
        if self._driver.route(now):
            self._completed = self._owed = True
            return ()
        self._owed = False
        return self._driver.poll(now)

    def _linger(self) -> None:
        """While the last calls or datagrams completed a blocked caller, wait (briefly) for
        that caller's next call and run it before polling: a reply then leaves with the
        RECEIPT of the request it answers, and a request with the RECEIPT of the last
        reply, one datagram instead of two or three. Each wait ends at the caller's next
        call; only a caller that makes none (it is busy, or done) lets it run out."""
        rounds = 0
        while self._completed and rounds < _LINGER_ROUNDS:
            self._completed = False
            rounds += 1
            if not self._calls and not self._await_call():
                self._driver.stats["linger_expired"] += 1
                return
            self._run_calls()

    def _await_call(self) -> bool:
        """Wait up to _LINGER for a queued call; False if none came."""
        deadline = _monotonic() + _LINGER
        self._lingering = True
        try:
            # A ring that came after the last wait ended leaves the lock free: the loop
            # then finds no call and waits again.
            while not self._calls:
                left = deadline - _monotonic()
                if left <= 0:
                    return False
                self._doorbell.acquire(True, left)
            return True
        finally:
            self._lingering = False

    def _fail_queued_calls(self) -> None:
        while self._calls:
            try:
                self._calls.popleft()()
            except Exception:  # NodeClosed from a closed driver: the caller sees it
                pass

    def _post(self, call: Callable[[], None]) -> None:
        if self._stopping or self._thread is None:
            raise NodeClosed()
        self._calls.append(call)
        if self._lingering:
            try:
                self._doorbell.release()
            except RuntimeError:
                pass  # rung already
            return
        if not self._woken and self._wake_w is not None:
            self._woken = True
            try:
                self._wake_w.send(b"\0")
            except OSError:
                pass  # the pipe is full, so the thread will wake (or the node just closed)

    def _submit(self, call: Callable[[float], T]) -> T:
        """Run `call(now)` on the I/O thread and return its result here."""
        if threading.get_ident() == self._owner:
            return call(_monotonic())
        handoff = Handoff(threading.Lock())
        self._post(lambda: handoff.call(call, _monotonic()))
        self._block(handoff)
        result: T = handoff.outcome()
        return result

    def _wait(self, start: Callable[[float, Notify], Pending]) -> Any:
        """Start a driver operation on the I/O thread and block until it completes."""
        if self._stopping or self._thread is None:
            raise NodeClosed()
        if threading.get_ident() == self._owner:
            raise RuntimeError("blocking pilot calls cannot run on the node's own I/O thread")
        handoff = Handoff(threading.Lock())
        self._post(lambda: handoff.start(start, _monotonic()))
        try:
            self._block(handoff)
        except BaseException:
            # Interrupted (KeyboardInterrupt): stop waiting without leaving a waiter behind.
            def give_up() -> None:
                if handoff.pending is not None:
                    self._driver.abandon(handoff.pending, _monotonic())

            try:
                self._post(give_up)
            except NodeClosed:
                pass
            raise
        return handoff.outcome()

    def _block(self, handoff: Handoff) -> None:
        thread = self._thread
        while not handoff.wait(_LIVENESS_CHECK):
            if thread is None or not thread.is_alive():
                raise NodeClosed("the node's I/O thread stopped")
