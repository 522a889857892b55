"""The control plane's decisions (DESIGN 8 and 9), driven over the loopback network.

Two or three ControlPlanes share one event loop and a `Switchboard` that stands in for
the rendezvous, the mailbox and the sessions; time is injected where it matters.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pilot_daemon.control import ControlPlane, DaemonFacts
from pilot_daemon.errors import ErrorCode, PilotctlError
from pilot_daemon.events import EventBus
from pilot_daemon.inbox import Inbox, IncomingMessage
from pilot_daemon.limits import MAX_MESSAGE_BYTES, PENDING_TTL_SECONDS, REJECT_COOLDOWN_SECONDS
from pilot_daemon.names import Endpoint
from pilot_daemon.network import (
    NetworkConfig,
    PeerRecord,
    TrustRequestNote,
    UnavailableNetwork,
)
from pilot_daemon.received import ReceivedFiles
from pilot_daemon.store import Direction, Store
from pilot_daemon.testing import Switchboard
from pilot_proto.identity import Identity

T = TypeVar("T")


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


class Node:
    """One control plane with its own state dir, on a shared switchboard."""

    def __init__(self, root: Path, name: str, board: Switchboard | None, clock: Clock,
                 auto_approve: bool = False) -> None:
        self.home = home = root / name
        for sub in ("inbox", "received"):
            (home / sub).mkdir(parents=True)
        self.identity = Identity.generate(os.urandom)
        self.store = Store(home / "pilot.db")
        self.network: Any = board.network() if board else UnavailableNetwork()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.hostname = name
        self.control = ControlPlane(
            identity=self.identity,
            store=self.store,
            inbox=Inbox(home / "inbox"),
            received=ReceivedFiles(home / "received"),
            bus=EventBus(clock),
            network=self.network,
            facts=DaemonFacts(os.getpid(), clock(), "test", home, home / "api.sock",
                              "127.0.0.1:1", Endpoint("127.0.0.1", 7000), False, auto_approve),
            request_shutdown=lambda: None,
            clock=clock,
        )

    async def start(self) -> None:
        await self.network.start(
            NetworkConfig(self.identity, self.udp, Endpoint("127.0.0.1", 7000), self.hostname,
                          False, False, 0, Path("/")),
            self.control,
        )

    @property
    def address(self) -> str:
        return self.identity.address

    def close(self) -> None:
        self.store.close()
        self.udp.close()


class World:
    """A switchboard, a clock, and the nodes made on them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.board = Switchboard()
        self.clock = Clock()
        self.nodes: list[Node] = []

    def make(self, name: str, **kwargs: Any) -> Node:
        node = Node(self.root, name, self.board, self.clock, **kwargs)
        self.nodes.append(node)
        return node


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    for node in w.nodes:
        node.close()


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def settle() -> None:
    """Let the switchboard deliver queued mailbox notes."""
    for _ in range(20):
        await asyncio.sleep(0)


async def until(check: Callable[[], bool]) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


async def trusted_pair(make: Callable[..., Node]) -> tuple[Node, Node]:
    a, b = make("agent-a"), make("agent-b")
    await a.start()
    await b.start()
    await a.control.handshake("agent-b", "task routing")
    await settle()
    await b.control.approve(a.address)
    await settle()
    return a, b


async def requested_pair(make: Callable[..., Node]) -> tuple[Node, Node]:
    """agent-a's trust request waits, pending, at agent-b."""
    a, b = make("agent-a"), make("agent-b")
    await a.start()
    await b.start()
    await a.control.handshake("agent-b", None)
    await settle()
    return a, b


def code_of(exc: pytest.ExceptionInfo[PilotctlError]) -> str:
    return exc.value.code.value


# --- the trust flow (DESIGN 8) ---


def test_handshake_pending_approve_then_both_trust(world: World) -> None:
    async def scenario() -> None:
        a, b = world.make("agent-a"), world.make("agent-b")
        await a.start()
        await b.start()
        sent = await a.control.handshake("agent-b", "task routing")
        assert sent["status"] == "requested" and sent["node_id"] == b.address
        await settle()
        pending = await b.control.pending()
        assert pending == [{
            "node_id": a.address, "hostname": "agent-a", "justification": "task routing",
            "received_at": pending[0]["received_at"], "expires_at": pending[0]["expires_at"],
        }]
        assert await a.control.trust() == []
        with b.control.bus.subscribe() as events_b, a.control.bus.subscribe() as events_a:
            approved = await b.control.approve(a.address)
            assert approved["node_id"] == a.address
            # The requester trusts the approver without any further command.
            accepted = await events_a.wait_for(lambda e: e.kind == "trust.accepted", 2)
            assert accepted is not None and accepted.data["node_id"] == b.address
            assert (await events_b.wait_for(lambda e: e.kind == "trust.approved", 1)) is not None
        assert [t["node_id"] for t in await a.control.trust()] == [b.address]
        assert [t["node_id"] for t in await b.control.trust()] == [a.address]
        assert await b.control.pending() == []
        assert b.network.allow_list == [a.address]
        assert a.network.allow_list == [b.address]
        with pytest.raises(PilotctlError) as again:
            await a.control.handshake("agent-b", None)
        assert code_of(again) == "already_exists"

    run(scenario())


def test_handshake_back_to_a_requester_approves(world: World) -> None:
    async def scenario() -> None:
        a, b = world.make("agent-a"), world.make("agent-b")
        await a.start()
        await b.start()
        await a.control.handshake("agent-b", None)
        await settle()
        answer = await b.control.handshake("agent-a", None)
        assert answer["status"] == "approved"
        await settle()
        assert [t["node_id"] for t in await a.control.trust()] == [b.address]

    run(scenario())


def test_auto_approve(world: World) -> None:
    async def scenario() -> None:
        a, b = world.make("agent-a"), world.make("service", auto_approve=True)
        await a.start()
        await b.start()
        await a.control.handshake("service", "please")
        await until(lambda: a.store.get_trust(b.address) is not None)
        assert b.store.get_trust(a.address) is not None
        assert await b.control.pending() == []

    run(scenario())


def test_reject_cooldown_on_both_sides(world: World) -> None:
    async def scenario() -> None:
        a, b = world.make("agent-a"), world.make("agent-b")
        await a.start()
        await b.start()
        await a.control.handshake("agent-b", None)
        await settle()
        rejected = await b.control.reject(a.address)
        assert rejected["notified"] is True
        await settle()
        assert await b.control.pending() == []
        assert a.store.outgoing_to(b.address) == []
        # The requester is told, and may ask again only after the cool-down.
        with pytest.raises(PilotctlError) as early:
            await a.control.handshake("agent-b", None)
        assert code_of(early) == "not_trusted"
        # Even if it asks anyway, the receiver ignores it during the cool-down.
        await b.control.on_trust_request(TrustRequestNote(
            "f" * 32, PeerRecord(a.address, a.identity.public_key, "agent-a"), "again",
            world.clock()))
        assert await b.control.pending() == []
        world.clock.now += REJECT_COOLDOWN_SECONDS + 1
        await a.control.handshake("agent-b", "second try")
        await settle()
        assert [p["justification"] for p in await b.control.pending()] == ["second try"]

    run(scenario())


def test_pending_requests_expire_after_seven_days(world: World) -> None:
    async def scenario() -> None:
        a, b = world.make("agent-a"), world.make("agent-b")
        await a.start()
        await b.start()
        await a.control.handshake("agent-b", None)
        await settle()
        world.clock.now += PENDING_TTL_SECONDS + 1
        assert await b.control.pending() == []
        with pytest.raises(PilotctlError) as late:
            await b.control.approve(a.address)
        assert code_of(late) == "not_found"

    run(scenario())


def test_approve_with_network_down_changes_nothing(world: World) -> None:
    async def scenario() -> None:
        a, b = world.make("agent-a"), world.make("agent-b")
        await a.start()
        await b.start()
        await a.control.handshake("agent-b", None)
        await settle()
        world.board.online = False
        with pytest.raises(PilotctlError) as down:
            await b.control.approve(a.address)
        assert code_of(down) == "connection_failed"
        assert await b.control.trust() == []
        assert len(await b.control.pending()) == 1

    run(scenario())


def test_the_node_trusts_a_peer_before_anything_awaits(world: World) -> None:
    """A send racing the accept reads the store, then sends through the node: whenever
    the store says trusted, the node must already say so (on both sides)."""
    async def scenario() -> None:
        a, b = await requested_pair(world.make)
        seen: list[tuple[str, bool, bool]] = []

        def watch(node: Node, peer: Node, step: Callable[..., Awaitable[Any]]) -> Any:
            async def watched(*args: Any) -> Any:
                in_store = node.store.get_trust(peer.address) is not None
                seen.append((node.hostname, in_store, peer.address in node.network.node_trusts))
                return await step(*args)
            return watched

        # Every await of the approver while it posts the accept, and of the requester
        # while it publishes its allow list after the accept.
        b.network.send_trust_answer = watch(b, a, b.network.send_trust_answer)
        a.network.publish_allow_list = watch(a, b, a.network.publish_allow_list)
        await b.control.approve(a.address)
        await settle()
        assert ("agent-b", True, True) in seen and ("agent-a", True, True) in seen
        assert all(in_node for _, in_store, in_node in seen if in_store), seen

    run(scenario())


def test_approve_whose_accept_cannot_be_posted_leaves_the_request_pending(
    world: World,
) -> None:
    async def scenario() -> None:
        a, b = await requested_pair(world.make)

        async def cannot_post(*args: Any) -> None:
            raise PilotctlError(ErrorCode.CONNECTION_FAILED, "the rendezvous went away")

        b.network.send_trust_answer = cannot_post
        with pytest.raises(PilotctlError) as failed:
            await b.control.approve(a.address)
        assert code_of(failed) == "connection_failed"
        assert await b.control.trust() == []
        assert [p["node_id"] for p in await b.control.pending()] == [a.address]
        assert b.network.forgotten == [a.address]  # the node forgets the trust it was given

    run(scenario())


def test_untrust_is_local_first_even_when_network_is_down(world: World) -> None:
    async def scenario() -> None:
        a, b = await trusted_pair(world.make)
        result = await a.control.untrust(b.address)
        assert result["removed"] and result["network_updated"]
        assert a.network.forgotten == [b.address] and a.network.allow_list == []
        c_result = await b.control.untrust(a.address)
        assert c_result["network_updated"]
        await a.control.handshake("agent-b", None)  # can ask again
        await settle()
        await b.control.approve(a.address)
        await settle()
        world.board.online = False
        down = await a.control.untrust(b.address)
        assert down["removed"] and not down["network_updated"] and down["warning"]
        assert await a.control.trust() == []
        with pytest.raises(PilotctlError) as gone:
            await a.control.untrust(b.address)
        assert code_of(gone) == "not_found"

    run(scenario())


# --- pinned hostnames ---


def test_hostname_whose_key_changed_is_refused(world: World) -> None:
    async def scenario() -> None:
        a, b = world.make("agent-a"), world.make("agent-b")
        await a.start()
        await b.start()
        await a.control.handshake("agent-b", None)  # pins agent-b -> b's key
        # agent-b's name now points at another key (say, its registration lapsed).
        imposter = world.make("imposter")
        await imposter.start()
        world.board.names["agent-b"] = imposter.address
        with pytest.raises(PilotctlError) as changed:
            await a.control.find("agent-b")
        assert code_of(changed) == "key_changed"
        assert changed.value.hint
        with pytest.raises(PilotctlError) as changed_too:
            await a.control.handshake("agent-b", None)
        assert code_of(changed_too) == "key_changed"
        found = await b.control.find("imposter")
        assert found["node_id"] == imposter.address
        assert found["public_key"] == imposter.identity.public_key.hex()

    run(scenario())


def test_unknown_hostname_is_not_found(world: World) -> None:
    async def scenario() -> None:
        a = world.make("agent-a")
        await a.start()
        for call in (a.control.find("nobody"), a.control.handshake("nobody", None)):
            with pytest.raises(PilotctlError) as missing:
                await call
            assert code_of(missing) == "not_found"

    run(scenario())


def test_hostname_taken_is_already_exists(world: World) -> None:
    async def scenario() -> None:
        a, b = world.make("agent-a"), world.make("agent-b")
        await a.start()
        await b.start()
        with pytest.raises(PilotctlError) as taken:
            await b.control.set_hostname("agent-a")
        assert code_of(taken) == "already_exists"
        assert (await b.control.set_hostname("agent-b2"))["hostname"] == "agent-b2"
        assert b.store.load_settings().hostname == "agent-b2"
        await b.control.clear_hostname()
        assert b.store.load_settings().hostname is None

    run(scenario())


# --- messages ---


def test_send_message_lands_in_inbox_with_verified_hostname(world: World) -> None:
    async def scenario() -> None:
        a, b = await trusted_pair(world.make)
        a.network.hostname = "liar"  # the sender's claim is never used
        sent = await a.control.send_message("agent-b", "text",
                                             b"run subtask: analyze document X")
        assert sent["delivered"] and sent["to"] == b.address and sent["bytes"] == 31
        files = list((b.home / "inbox").iterdir())
        assert len(files) == 1 and files[0].name.endswith(f"-{sent['id']}.json")
        entry = json.loads(files[0].read_text())
        assert entry["from"] == a.address and entry["from_hostname"] == "agent-a"
        assert entry["data"] == "run subtask: analyze document X"
        out = a.store.get_delivery(sent["id"], Direction.OUT)
        assert out is not None and out.state == "delivered"
        inn = b.store.get_delivery(sent["id"], Direction.IN)
        assert inn is not None and inn.state == "persisted"

    run(scenario())


def test_duplicate_message_is_persisted_exactly_once(world: World) -> None:
    async def scenario() -> None:
        a, b = await trusted_pair(world.make)
        message = IncomingMessage("ab" * 16, "text", a.address, None, b"once", None, world.clock())
        await b.control.on_message(message)
        await b.control.on_message(message)  # a resend after a lost RECEIPT
        b.control.inbox.clear()
        await b.control.on_message(message)  # even after the user cleared the inbox
        assert b.control.inbox.entries() == []

    run(scenario())


def test_recovery_settles_half_recorded_delivery(world: World) -> None:
    async def scenario() -> None:
        a, b = await trusted_pair(world.make)
        message = IncomingMessage("cd" * 16, "text", a.address, None, b"x", None, world.clock())
        # Crash after the inbox file was renamed but before the record said so.
        b.store.record_delivery(message.id, Direction.IN, a.address, "text", 1, None,
                                "receiving", world.clock())
        b.control.inbox.write(message)
        b.control.recover()
        record = b.store.get_delivery(message.id, Direction.IN)
        assert record is not None and record.state == "persisted"

    run(scenario())


def test_untrusted_sender_and_target(world: World) -> None:
    async def scenario() -> None:
        a, b = world.make("agent-a"), world.make("agent-b")
        await a.start()
        await b.start()
        with pytest.raises(PilotctlError) as local:
            await a.control.send_message("agent-b", "text", b"hi")
        assert code_of(local) == "not_trusted"
        assert "handshake" in (local.value.hint or "")
        stray = IncomingMessage("ee" * 16, "text", a.address, None, b"hi", None, world.clock())
        with pytest.raises(PilotctlError) as remote:
            await b.control.on_message(stray)
        assert code_of(remote) == "not_trusted"
        assert b.control.inbox.entries() == []

    run(scenario())


def test_message_checks(world: World) -> None:
    async def scenario() -> None:
        a, b = await trusted_pair(world.make)
        cases = [("json", b"{nope", "invalid_argument"),
                 ("text", b"x" * (MAX_MESSAGE_BYTES + 1), "too_large"),
                 ("text", b"\xff", "invalid_argument"),
                 ("yaml", b"a: 1", "invalid_argument")]
        for type_, data, code in cases:
            with pytest.raises(PilotctlError) as bad:
                await a.control.send_message("agent-b", type_, data)
            assert code_of(bad) == code
        ok = await a.control.send_message(b.address, "binary", b"\x00\xff")
        assert ok["type"] == "binary"

    run(scenario())


def test_send_waits_for_an_accept_on_its_way(world: World) -> None:
    async def scenario() -> None:
        a, b = world.make("agent-a"), world.make("agent-b")
        await a.start()
        await b.start()
        await a.control.handshake("agent-b", None)
        await settle()
        sending = asyncio.ensure_future(a.control.send_message("agent-b", "text", b"early",
                                                               timeout=5))
        await asyncio.sleep(0.05)
        assert not sending.done()
        await b.control.approve(a.address)
        sent = await sending
        assert sent["delivered"]
        assert [m["id"] for m in b.control.inbox.entries()] == [sent["id"]]

    run(scenario())


def test_wait_for_accept_times_out(world: World) -> None:
    async def scenario() -> None:
        a, b = world.make("agent-a"), world.make("agent-b")
        await a.start()
        await b.start()
        await a.control.handshake("agent-b", None)
        with pytest.raises(PilotctlError) as slow:
            await a.control.send_message("agent-b", "text", b"x", timeout=0.1)
        assert code_of(slow) == "timeout"

    run(scenario())


def test_send_with_wait_returns_the_reply(world: World) -> None:
    async def scenario() -> None:
        a, b = await trusted_pair(world.make)

        async def answer_first_message() -> None:
            with b.control.bus.subscribe({"message"}) as sub:
                event = await sub.wait_for(lambda e: True, 5)
                assert event is not None
                await b.control.reply(str(event.data["id"])[:8], "json", b'{"findings": 3}')

        responder = asyncio.ensure_future(answer_first_message())
        await asyncio.sleep(0)
        sent = await a.control.send_message("agent-b", "text", b"analyze X", wait=5)
        await responder
        reply = sent["reply"]
        assert reply["reply_to"] == sent["id"] and reply["data"] == {"findings": 3}
        assert reply["from"] == b.address and reply["from_hostname"] == "agent-b"
        with pytest.raises(PilotctlError) as silent:
            await a.control.send_message("agent-b", "text", b"anyone?", wait=0.05)
        assert code_of(silent) == "timeout" and "delivered" in silent.value.message
        with pytest.raises(PilotctlError) as unknown:
            await a.control.reply("9999", "text", b"x")
        assert code_of(unknown) == "not_found"

    run(scenario())


def test_send_file_lands_in_received(world: World, tmp_path: Path) -> None:
    async def scenario() -> None:
        a, b = await trusted_pair(world.make)
        source = tmp_path / "report.txt"
        source.write_text("findings")
        with b.control.bus.subscribe({"file"}) as sub:
            first = await a.control.send_file("agent-b", str(source), 5)
            second = await a.control.send_file("agent-b", str(source), 5)
            assert (await sub.wait_for(lambda e: True, 1)) is not None
        assert (first["name"], second["name"]) == ("report.txt", "report (1).txt")
        names = sorted(f["name"] for f in await b.control.received_list())
        assert names == ["report (1).txt", "report.txt"]
        landed = b.control.begin_file(a.address, "../../etc/passwd", 1,
                                      hashlib.sha256(b"x").hexdigest())
        landed.write(b"x")
        assert landed.commit().parent.name == "received"
        with pytest.raises(PilotctlError) as relative:
            await a.control.send_file("agent-b", "report.txt", 5)
        assert code_of(relative) == "invalid_argument"
        with pytest.raises(PilotctlError) as missing:
            await a.control.send_file("agent-b", str(tmp_path / "nope"), 5)
        assert code_of(missing) == "not_found"

    run(scenario())


def test_diagnostics_through_the_interface(world: World) -> None:
    async def scenario() -> None:
        a, b = await trusted_pair(world.make)
        assert [p["node_id"] for p in await a.control.peers()] == [b.address]
        ping = await a.control.ping("agent-b", 3, 1)
        assert ping["sent"] == ping["received"] == 3
        assert (await a.control.bench("agent-b", 1000, 5))["bytes"] == 1000
        info = await a.control.info()
        assert info["network"]["available"] and info["nat_type"] == "loopback"
        assert info["trusted_peers"] == 1

    run(scenario())


# --- the build without a network service ---


def test_unavailable_network_answers_connection_failed(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = Node(tmp_path, "alone", None, Clock())
        await node.start()
        try:
            calls = [node.control.find("agent-b"), node.control.handshake("agent-b", None),
                     node.control.set_hostname("x"), node.control.peers(),
                     node.control.later("connect", {})]
            for call in calls:
                with pytest.raises(PilotctlError) as refused:
                    await call
                assert refused.value.code is ErrorCode.CONNECTION_FAILED
                assert "not available in this build" in refused.value.message
            info = await node.control.info()
            assert info["network"]["available"] is False
            assert info["node_id"] == node.address
        finally:
            node.close()

    run(scenario())
