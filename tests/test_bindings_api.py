"""The asyncio and thread bindings in this process: errors, timeouts, cancellation,
concurrency from many tasks and threads, sockets passed in. (gevent is exercised only in
worker processes: tests/test_bindings_conformance.py.)"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Iterator

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
