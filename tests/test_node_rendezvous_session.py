"""Sessions with a rendezvous: XX on first contact (key learned), IK once pinned."""

from __future__ import annotations

from node_harness import FAST_SESSION, Lab, SimNode

from pilot_proto import MessageReceived
from pilot_proto.config import NodeConfig
from pilot_proto.events import RendezvousConnected, RendezvousFailed
from pilot_proto.packets import XX_INIT, XX_INIT_SIZE, XX_RESPONSE_SIZE
from pilot_proto.simulator import LinkConditions


def server_config() -> NodeConfig:
    return NodeConfig(session=FAST_SESSION, public=True)


def make_server(lab: Lab) -> SimNode:
    return lab.node("rendezvous", server_config(), trust_policy=lambda address: True)


def test_first_contact_uses_xx_and_learns_the_server_key() -> None:
    lab = Lab()
    server = make_server(lab)
    client = lab.node("client")
    client.node.connect_rendezvous(server.addr, None, lab.net.now)
    assert lab.run_until(lambda: bool(client.of(RendezvousConnected)))
    connected = client.of(RendezvousConnected)[0]
    assert connected.address == server.address
    assert connected.static_key == server.identity.static_public
    assert any(d.data[0] == XX_INIT for d in lab.net.captured)
    # The session then carries messages both ways like any peer session.
    client.node.send_message(server.address, b"register me", lab.net.now, type="binary")
    assert lab.run_until(lambda: bool(server.of(MessageReceived)))
    assert server.of(MessageReceived)[0].address == client.address


def test_pinned_key_uses_ik() -> None:
    lab = Lab()
    server = make_server(lab)
    client = lab.node("client")
    client.node.connect_rendezvous(server.addr, server.identity.static_public, lab.net.now)
    assert lab.run_until(lambda: bool(client.of(RendezvousConnected)))
    assert not any(d.data[0] == XX_INIT for d in lab.net.captured)
    assert lab.run_until(lambda: server.node.has_session(client.address))


def test_wrong_pinned_key_fails_without_a_session() -> None:
    lab = Lab()
    server = make_server(lab)
    other = lab.node("other")
    client = lab.node("client")
    client.node.connect_rendezvous(server.addr, other.identity.static_public, lab.net.now)
    assert lab.run_until(lambda: bool(client.of(RendezvousFailed)), timeout=60)
    assert not client.of(RendezvousConnected)
    assert server.node.stats["drop_bad_mac1"] >= 1


def test_xx_first_message_cannot_amplify() -> None:
    assert XX_INIT_SIZE >= XX_RESPONSE_SIZE


def test_private_node_does_not_answer_xx() -> None:
    lab = Lab()
    private = lab.node("private")
    client = lab.node("client")
    client.node.connect_rendezvous(private.addr, None, lab.net.now)
    lab.settle(3)
    assert private.node.stats["drop_xx_not_public"] >= 1
    assert not client.of(RendezvousConnected)


def test_xx_survives_loss() -> None:
    lab = Lab(seed=3)
    lab.net.set_default_link(LinkConditions(loss=0.3, delay=0.01))
    server = make_server(lab)
    client = lab.node("client")
    client.node.connect_rendezvous(server.addr, None, lab.net.now)
    assert lab.run_until(lambda: bool(client.of(RendezvousConnected)), timeout=60)
    client.node.send_message(server.address, b"x", lab.net.now, type="binary")
    assert lab.run_until(lambda: bool(server.of(MessageReceived)), timeout=60)
