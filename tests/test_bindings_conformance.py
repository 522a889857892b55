"""One conformance suite for the three bindings, on real UDP sockets on loopback.

Each node lives in a worker process of its binding (tests/binding_workers/), so gevent's
monkey-patching never reaches this process and every binding is driven the same way.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Callable, Iterator

import pytest
from binding_workers.common import payload
from binding_workers.harness import BINDINGS, RemoteError, Worker

pytestmark = pytest.mark.timeout(120)

MiB = 1 << 20


@pytest.fixture(params=BINDINGS)
def binding(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def workers() -> Iterator[Callable[[str], Worker]]:
    started: list[Worker] = []

    def spawn(binding: str) -> Worker:
        worker = Worker(binding)
        started.append(worker)
        return worker

    yield spawn
    for worker in started:
        worker.close()


def introduce(a: Worker, b: Worker) -> None:
    a.knows(b)
    b.knows(a)


@pytest.fixture
def pair(binding: str, workers: Callable[[str], Worker]) -> tuple[Worker, Worker]:
    a = workers(binding).node(os.urandom(32))
    b = workers(binding).node(os.urandom(32))
    introduce(a, b)
    return a, b


def no_internal_errors(*nodes: Worker) -> None:
    for node in nodes:
        assert node.call("stats").get("internal_error", 0) == 0


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_a_public_peer_that_does_not_trust_us_refuses_at_once(
    binding: str, workers: Callable[[str], Worker]
) -> None:
    """Every binding raises the same error when the peer refuses (DESIGN 8)."""
    a = workers(binding).node(os.urandom(32))
    b = workers(binding).node(os.urandom(32), public=True)
    a.knows(b)  # b never heard of a: a stranger at a public node
    with pytest.raises(RemoteError) as refused:
        a.call("send_messages", address=b.address, count=1, timeout=20)
    assert refused.value.kind == "MessageRefused"
    assert "NotTrustedByPeer" in refused.value.kinds
    assert b.call("stats").get("untrusted_message_frames", 0) >= 1
    no_internal_errors(a, b)


def test_handshake(pair: tuple[Worker, Worker]) -> None:
    a, b = pair
    a.call("connect", address=b.address)
    assert a.call("peer_info", address=b.address) == {"has_session": True}
    assert wait_for(lambda: b.call("peer_info", address=a.address)["has_session"])
    rtt = b.call("ping", address=a.address)
    assert 0 < rtt < 1.0
    no_internal_errors(a, b)


def test_ten_mib_over_a_stream_arrive_exactly(pair: tuple[Worker, Worker]) -> None:
    a, b = pair
    b.call("listen", port=9)
    served = b.start("stream_serve", port=9, count=1)
    sent = a.call("stream_send", address=b.address, port=9, size=10 * MiB, seed=7, chunk=MiB)
    expected = hashlib.sha256(payload(7, 10 * MiB)).hexdigest()
    assert sent == {"sha": expected, "answer": expected}
    assert served.result(30) == [expected]
    no_internal_errors(a, b)


def test_a_thousand_ordered_messages_with_receipts(pair: tuple[Worker, Worker]) -> None:
    a, b = pair
    received = b.start("receive_messages", count=1000)
    a.call("send_messages", address=b.address, count=1000, size=200)  # each waits its receipt
    assert received.result(30) == list(range(1000))
    served = b.start("serve_requests", count=3)
    for text in ("one", "two", "three"):
        answer = a.call("request", address=b.address, data=text)
        assert answer == {"data": "re:" + text, "reply_to_matches": True}
    served.result(10)
    no_internal_errors(a, b)


def test_fifty_concurrent_streams(pair: tuple[Worker, Worker]) -> None:
    a, b = pair
    size = 64 * 1024
    b.call("listen", port=50)
    served = b.start("stream_serve", port=50, count=50)
    assert a.call("stream_send_many", address=b.address, port=50, count=50, size=size) == 50
    expected = sorted(hashlib.sha256(payload(i, size)).hexdigest() for i in range(50))
    assert served.result(30) == expected
    no_internal_errors(a, b)


def test_a_restarted_peer_is_reconnected(
    binding: str, workers: Callable[[str], Worker]
) -> None:
    seed = os.urandom(32)
    a = workers(binding).node(os.urandom(32))
    b = workers(binding).node(seed)
    introduce(a, b)
    a.call("connect", address=b.address)
    received = b.start("receive_messages", count=1)
    a.call("send_messages", address=b.address, count=1)
    assert received.result(10) == [0]
    # B dies without a word (no CLOSE) and comes back: same identity, same port.
    b.call("close", graceful=False)
    host, port = b.endpoint
    b.close()
    b = workers(binding).node(seed, host=host, port=port)
    b.knows(a)
    received = b.start("receive_messages", count=3)
    a.call("send_messages", address=b.address, count=3, timeout=20)
    assert received.result(20) == [0, 1, 2]
    assert a.call("stats").get("peer_restarts", 0) >= 1
    assert b.call("ping", address=a.address) > 0
    no_internal_errors(a, b)


def test_clean_close(pair: tuple[Worker, Worker]) -> None:
    a, b = pair
    b.call("listen", port=3)
    reading = b.start("stream_serve", port=3, count=1)
    a.call("connect", address=b.address)
    a.call("stream_hold", address=b.address, port=3, size=4096)
    a.call("ping", address=b.address)  # the stream's data went before the PING
    waiting = a.start("receive_error")
    a.call("close")
    assert waiting.result(10) == "NodeClosed"
    assert a.call("after_close") == {"send": "NodeClosed", "messages": []}
    # The peer was told: its reader fails with ConnectionLost, its session is gone.
    assert reading.result(10) == ["ConnectionLost"]
    assert not b.call("peer_info", address=a.address)["has_session"]
    # The port was released.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(tuple(a.endpoint))
    with pytest.raises(RemoteError) as failed:
        b.call("connect", address=a.address, timeout=0.5)
    assert failed.value.kind == "ConnectTimeout"
    assert {"ConnectionFailed", "PilotTimeout", "TimeoutError"} <= set(failed.value.kinds)


def test_cancelling_a_transfer_midway_leaves_the_node_usable(
    pair: tuple[Worker, Worker],
) -> None:
    a, b = pair
    b.call("listen", port=6)
    served = b.start("stream_serve", port=6, count=1)
    cancelled = a.call("cancel_transfer", address=b.address, port=6, size=256 * MiB)
    assert cancelled["cancelled_by"] in ("cancelled", "killed", "timeout")
    assert cancelled["stream_after"] == "reset"
    assert served.result(10) == ["StreamResetError"]
    received = b.start("receive_messages", count=5)
    a.call("send_messages", address=b.address, count=5)
    assert received.result(10) == list(range(5))
    no_internal_errors(a, b)


@pytest.mark.parametrize("other", ["gevent", "threads"])
def test_mixed_pair_with_asyncio_on_uvloop(
    other: str, workers: Callable[[str], Worker]
) -> None:
    a = workers("asyncio-uvloop").node(os.urandom(32))
    b = workers(other).node(os.urandom(32))
    introduce(a, b)
    for one, two in ((a, b), (b, a)):
        served = two.start("serve_requests", count=2)
        for text in ("hello", "again"):
            answer = one.call("request", address=two.address, data=text)
            assert answer == {"data": "re:" + text, "reply_to_matches": True}
        served.result(10)
        two.call("listen", port=8)
        streamed = two.start("stream_serve", port=8, count=1)
        sent = one.call("stream_send", address=two.address, port=8, size=4 * MiB, seed=3)
        assert sent["sha"] == sent["answer"] and streamed.result(30) == [sent["sha"]]
        assert one.call("ping", address=two.address) > 0
    no_internal_errors(a, b)


def test_ipv6_and_dual_stack(binding: str, workers: Callable[[str], Worker]) -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    a = workers(binding).node(os.urandom(32), host="::1")
    b = workers(binding).node(os.urandom(32), host="::1")
    introduce(a, b)
    served = b.start("serve_requests", count=1)
    assert a.call("request", address=b.address, data="six")["data"] == "re:six"
    served.result(10)
    # A dual-stack node reaches an IPv4 node, which sees it as plain IPv4.
    c = workers(binding).node(os.urandom(32), host="::")
    d = workers(binding).node(os.urandom(32))
    c.knows(d)
    d.call("add_peer", record=c.record, endpoint=["127.0.0.1", c.endpoint[1]])
    served = d.start("serve_requests", count=1)
    assert c.call("request", address=d.address, data="four")["data"] == "re:four"
    served.result(10)
    no_internal_errors(a, b, c, d)


def kernel_has_udp_gso() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.getsockopt(17, 103)  # SOL_UDP, UDP_SEGMENT
            probe.setsockopt(17, 104, 1)  # UDP_GRO
        except OSError:
            return False
    return True


def test_gso_and_gro_carry_a_stream_of_small_datagrams(
    binding: str, workers: Callable[[str], Worker]
) -> None:
    if not kernel_has_udp_gso():
        pytest.skip("the kernel has no UDP GSO/GRO")
    a = workers(binding).node(os.urandom(32), datagram_size=1200)
    b = workers(binding).node(os.urandom(32), datagram_size=1200)
    introduce(a, b)
    b.call("listen", port=12)
    served = b.start("stream_serve", port=12, count=1)
    sent = a.call("stream_send", address=b.address, port=12, size=2 * MiB, seed=12)
    assert sent["sha"] == sent["answer"] and served.result(30) == [sent["sha"]]
    assert a.call("stats").get("gso_sends", 0) > 0  # trains of 1200-byte datagrams
    assert b.call("stats").get("gro_reads", 0) > 0  # read back coalesced
    no_internal_errors(a, b)
