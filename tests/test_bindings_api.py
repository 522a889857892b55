"""The asyncio and thread bindings in this process: errors, timeouts, cancellation,
concurrency from many tasks and threads, sockets passed in. (gevent is exercised only in
worker processes: tests/test_bindings_conformance.py.)"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pilot_asyncio
import pilot_threads
import pytest

from pilot_proto import Identity, IdentityRecord
from pilot_proto.errors import DeliveryTimeout, NodeClosed, PilotTimeout, StreamResetError

pytestmark = pytest.mark.timeout(60)


def record_of(identity: Identity) -> IdentityRecord:
    return IdentityRecord.create(identity, hostname=None, sequence=1, expires_at=2**40)


# ---------------------------------------------------------------------- asyncio


async def asyncio_pair(
    **options: bool,
) -> tuple[pilot_asyncio.Node, pilot_asyncio.Node]:
    a = await pilot_asyncio.Node(Identity.generate(os.urandom)).start()
    b = await pilot_asyncio.Node(Identity.generate(os.urandom), **options).start()
    a.add_peer(record_of(b.identity), [b.endpoint])
    b.add_peer(record_of(a.identity), [a.endpoint])
    return a, b


def test_asyncio_explicit_confirmation_and_delivery_timeout() -> None:
    async def main() -> None:
        a, b = await asyncio_pair(auto_confirm=False)
        async with a, b:
            with pytest.raises(DeliveryTimeout) as timed_out:
                await a.send_message(b.address, b"unconfirmed", timeout=0.3)
            message = await b.receive(timeout=5)
            assert message.message_id == timed_out.value.message_id
            sending = asyncio.create_task(a.send_message(b.address, b"second", timeout=5))
            second = await b.receive(timeout=5)
            b.confirm(second)
            assert await sending == second.message_id

    asyncio.run(main())


def test_asyncio_cancelled_receive_loses_no_message() -> None:
    async def main() -> None:
        a, b = await asyncio_pair()
        async with a, b:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(b.receive(), 0.05)
            # Receipted only once taken (auto_confirm): the receive runs alongside.
            taking = asyncio.create_task(b.receive(timeout=5))
            await a.send_message(b.address, b"after the cancel", timeout=5)
            assert (await taking).data == b"after the cancel"
            # Many tasks at once: started in order, delivered in order.
            sends = [a.send_message(b.address, str(i).encode(), timeout=10) for i in range(100)]
            receiving = asyncio.create_task(b_receives(b, 100))
            await asyncio.gather(*sends)
            assert await receiving == [str(i).encode() for i in range(100)]

    async def b_receives(b: pilot_asyncio.Node, count: int) -> list[bytes]:
        return [(await b.receive(timeout=10)).data for _ in range(count)]

    asyncio.run(main())


def test_asyncio_stream_block_that_raises_resets_the_stream() -> None:
    async def main() -> None:
        a, b = await asyncio_pair()
        async with a, b:
            b.listen(4)
            with pytest.raises(RuntimeError):
                async with a.open_stream(b.address, 4) as stream:
                    await stream.write(b"half a thought")
                    await a.ping(b.address)  # the data is there before the failure
                    raise RuntimeError("the application failed")
            accepted = await b.accept(4, timeout=5)
            with pytest.raises(StreamResetError, match="RuntimeError"):
                while await accepted.read(timeout=5):
                    pass

    asyncio.run(main())


def test_asyncio_closed_node_refuses_calls_and_ends_iteration() -> None:
    async def main() -> None:
        a, b = await asyncio_pair()
        receiving = asyncio.create_task(anext(aiter(b.messages()), None))
        await asyncio.sleep(0)
        await b.close()
        await b.close()  # idempotent
        assert await receiving is None
        with pytest.raises(NodeClosed):
            await b.send_message(a.address, b"x")
        await a.close()

    asyncio.run(main())


# ---------------------------------------------------------------------- threads


@pytest.fixture
def thread_pair() -> Iterator[tuple[pilot_threads.Node, pilot_threads.Node]]:
    with pilot_threads.Node(Identity.generate(os.urandom)) as a, pilot_threads.Node(
        Identity.generate(os.urandom)
    ) as b:
        a.add_peer(record_of(b.identity), [b.endpoint])
        b.add_peer(record_of(a.identity), [a.endpoint])
        yield a, b


def test_threads_many_callers_at_once(
    thread_pair: tuple[pilot_threads.Node, pilot_threads.Node],
) -> None:
    a, b = thread_pair
    errors: list[BaseException] = []

    def sender(n: int) -> None:
        try:
            for i in range(20):
                a.send_message(b.address, f"{n}:{i}".encode(), timeout=20)
        except BaseException as error:
            errors.append(error)

    received: list[bytes] = []
    receiver = threading.Thread(
        target=lambda: received.extend(b.receive(timeout=20).data for _ in range(400))
    )
    receiver.start()
    senders = [threading.Thread(target=sender, args=(n,)) for n in range(20)]
    for thread in senders:
        thread.start()
    for thread in [*senders, receiver]:
        thread.join(30)
    assert not errors
    assert len(received) == 400
    for n in range(20):  # each thread's messages arrive in the order it sent them
        mine = [int(m.split(b":")[1]) for m in received if m.split(b":")[0] == str(n).encode()]
        assert mine == list(range(20))


def test_threads_timeouts(thread_pair: tuple[pilot_threads.Node, pilot_threads.Node]) -> None:
    a, b = thread_pair
    with pytest.raises(PilotTimeout):
        b.receive(timeout=0.05)
    with pytest.raises(PilotTimeout):
        b.listen(2)
        b.accept(2, timeout=0.05)
    assert a.ping(b.address, timeout=5) > 0


def test_threads_closed_node(thread_pair: tuple[pilot_threads.Node, pilot_threads.Node]) -> None:
    a, b = thread_pair
    results: list[object] = []
    waiter = threading.Thread(target=lambda: results.append(list(b.messages())))
    waiter.start()
    closers = [threading.Thread(target=b.close) for _ in range(4)]
    for thread in closers:
        thread.start()
    for thread in [*closers, waiter]:
        thread.join(10)
    assert results == [[]]
    with pytest.raises(NodeClosed):
        b.send_message(a.address, b"x")


def in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run `call` in a thread; its result (or the exception it raised) lands in the list."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_threads_calls_go_through_while_a_thread_is_blocked_in_receive(
    thread_pair: tuple[pilot_threads.Node, pilot_threads.Node],
) -> None:
    """A thread blocked in receive() waits on the socket for the node; other threads'
    calls (a ping, a message out and its receipt, stats) still complete meanwhile."""
    a, b = thread_pair
    waiting, got = in_thread(lambda: b.receive(timeout=20))
    replies, echoed = in_thread(lambda: a.receive(timeout=20))
    assert b.ping(a.address, timeout=5) > 0
    b.send_message(a.address, b"from another thread", timeout=5)
    assert b.stats()["datagrams_sent"] > 0
    replies.join(10)
    assert [m.data for m in echoed] == [b"from another thread"]  # type: ignore[attr-defined]
    assert waiting.is_alive()  # still waiting for its own message
    a.send_message(b.address, b"for the waiting thread", timeout=5)
    waiting.join(10)
    assert [m.data for m in got] == [b"for the waiting thread"]  # type: ignore[attr-defined]


def test_threads_request_reply_from_many_threads_while_one_collects_replies(
    thread_pair: tuple[pilot_threads.Node, pilot_threads.Node],
) -> None:
    """Eight threads send requests (each waiting for its receipt) while one thread of the
    same node collects every reply: each request gets its reply, none is lost."""
    a, b = thread_pair
    count = 8 * 15

    def serve() -> None:
        for _ in range(count):
            request = b.receive(timeout=20)
            b.reply(request, b"re:" + request.data, timeout=20)

    server, served = in_thread(serve)
    collector, collected = in_thread(lambda: [a.receive(timeout=20) for _ in range(count)])
    sent: dict[bytes, bytes] = {}

    def request(n: int) -> None:
        for i in range(15):
            data = f"{n}:{i}".encode()
            sent[a.send_message(b.address, data, timeout=20)] = data

    senders = [in_thread(lambda n=n: request(n)) for n in range(8)]
    for thread, outcome in senders:
        thread.join(30)
        assert outcome == [None]
    server.join(30)
    collector.join(30)
    assert served == [None]
    replies = collected[0]
    assert isinstance(replies, list) and len(replies) == count
    assert {m.reply_to: m.data for m in replies} == {
        message_id: b"re:" + data for message_id, data in sent.items()
    }


@pytest.mark.parametrize("first_gives_up", [True, False])
def test_threads_a_timeout_in_the_middle_of_a_wait_leaves_the_node_working(
    thread_pair: tuple[pilot_threads.Node, pilot_threads.Node], first_gives_up: bool
) -> None:
    """Two threads wait in receive(); one of them (the one that started first and waits on
    the socket for both, or the other) times out. The other still gets the next message,
    and the message that arrives after the timeout is not lost to the one that gave up."""
    a, b = thread_pair
    short, long = (0.3, 20.0) if first_gives_up else (20.0, 0.3)
    first, first_got = in_thread(lambda: b.receive(timeout=short))
    second, second_got = in_thread(lambda: b.receive(timeout=long))
    quitter, quitter_got = (first, first_got) if first_gives_up else (second, second_got)
    stayer, stayer_got = (second, second_got) if first_gives_up else (first, first_got)
    quitter.join(10)
    assert len(quitter_got) == 1 and isinstance(quitter_got[0], PilotTimeout)
    assert stayer.is_alive()
    a.send_message(b.address, b"after the timeout", timeout=5)
    stayer.join(10)
    assert [m.data for m in stayer_got] == [b"after the timeout"]  # type: ignore[attr-defined]
    receiving, got = in_thread(lambda: b.receive(timeout=5))
    a.send_message(b.address, b"next", timeout=5)  # returns once b's thread took it
    receiving.join(10)
    assert [m.data for m in got] == [b"next"]  # type: ignore[attr-defined]


def test_threads_receipt_goes_out_while_the_receiver_makes_no_further_call(
    thread_pair: tuple[pilot_threads.Node, pilot_threads.Node],
) -> None:
    """The RECEIPT of a message is held back for the receiving thread's next call (so a
    reply can carry it); a thread that makes none must not leave the sender waiting."""
    a, b = thread_pair
    for n in range(5):
        receiving, got = in_thread(lambda: b.receive(timeout=10))
        a.send_message(b.address, b"%d" % n, timeout=5)  # DeliveryTimeout without it
        receiving.join(10)
        assert [m.data for m in got] == [b"%d" % n]  # type: ignore[attr-defined]
    assert b.stats()["linger_expired"] >= 1


def test_threads_close_wakes_every_blocked_thread(
    thread_pair: tuple[pilot_threads.Node, pilot_threads.Node],
) -> None:
    """Threads blocked in different calls (one waits on the socket, the others for it)
    all get NodeClosed when another thread closes the node, and the port is free again."""
    a, b = thread_pair
    b.listen(7)
    calls = [
        lambda: b.receive(),
        lambda: b.receive_datagram(),
        lambda: b.accept(7),
        lambda: b.send_message(a.address, b"never receipted"),
    ]
    blocked = [in_thread(call) for call in calls]  # a takes no message: no receipt comes
    time.sleep(0.2)  # let them block (one that had not yet would get NodeClosed too)
    host, port = b.endpoint
    b.close()
    for thread, outcome in blocked:
        thread.join(10)
        assert not thread.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], NodeClosed), outcome
    again = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    again.bind((host, port))
    again.close()


def test_a_socket_passed_in_is_used_and_left_open(caplog: pytest.LogCaptureFixture) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    caplog.set_level(logging.WARNING)
    with pilot_threads.Node(Identity.generate(os.urandom), sock=sock) as node:
        assert node.endpoint == sock.getsockname()
    assert sock.fileno() != -1  # still the caller's
    sock.close()
    if os.geteuid() == 0:  # root may raise the buffers past the sysctl cap: no warning
        assert not [r for r in caplog.records if r.name == "pilot_threads"]


# ---------------------------------------------------------------------- trust


def test_both_bindings_raise_not_trusted_by_peer_alike() -> None:
    """A public node that does not trust us refuses our message and stream: the sender
    gets MessageRefused / StreamRefused (both NotTrustedByPeer) at once, in each style."""
    from pilot_proto import NodeConfig, NotTrustedByPeer
    from pilot_proto.errors import MessageRefused, StreamRefused
    from pilot_proto.events import Event, TrustRequested

    seen: list[Event] = []
    with pilot_threads.Node(Identity.generate(os.urandom)) as a, pilot_threads.Node(
        Identity.generate(os.urandom), NodeConfig(public=True), on_event=seen.append
    ) as b:
        a.add_peer(record_of(b.identity), [b.endpoint])
        with pytest.raises(MessageRefused) as refused:
            a.send_message(b.address, b"let me in", timeout=20)
        assert isinstance(refused.value, NotTrustedByPeer)
        b.listen(9)
        stream = a.open_stream(b.address, 9)
        with pytest.raises(StreamRefused):  # the refusal may come before the write
            stream.write(b"data", end=True, timeout=20)
            stream.read(timeout=20)
        a.send_trust_request(b.address, bytes(16), "please")

        def asked() -> bool:
            return any(isinstance(e, TrustRequested) for e in seen)

        deadline = threading.Event()
        for _ in range(200):
            if asked():
                break
            deadline.wait(0.05)
        assert asked()

    async def main() -> None:
        a = await pilot_asyncio.Node(Identity.generate(os.urandom)).start()
        b = await pilot_asyncio.Node(
            Identity.generate(os.urandom), NodeConfig(public=True)
        ).start()
        async with a, b:
            a.add_peer(record_of(b.identity), [b.endpoint])
            with pytest.raises(MessageRefused):
                await a.send_message(b.address, b"let me in", timeout=20)

    asyncio.run(main())
