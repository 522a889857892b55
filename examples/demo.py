"""Two agents on a simulated network: identities, an IK handshake, encrypted messages.

Runs entirely in memory with a virtual clock, so it needs no network and finishes at once.
`make demo` runs it. Everything printed comes from the real protocol core.
"""

from __future__ import annotations

import os

from pilot_proto import Identity, IdentityRecord, Node, NodeConfig
from pilot_proto.delivery import MessageDelivered, MessageReceived
from pilot_proto.events import Event, HandshakeCompleted
from pilot_proto.simulator import LinkConditions, Network


def show(who: str, event: Event) -> None:
    name = type(event).__name__
    if isinstance(event, MessageReceived):
        short_id = event.message_id.hex()[:12]
        print(f"  [{who}] {name}: {event.data.decode()!r} (type {event.type}, id {short_id}…)")
    elif isinstance(event, MessageDelivered):
        print(f"  [{who}] {name}: receipt for id {event.message_id.hex()[:12]}…")
    elif isinstance(event, HandshakeCompleted):
        role = "initiator" if event.initiator else "responder"
        print(f"  [{who}] {name}: session with {event.address} ({role})")


def main() -> None:
    net = Network(seed=int.from_bytes(os.urandom(4), "big"))
    net.set_default_link(LinkConditions(delay=0.025, jitter=0.005, loss=0.02))
    config = NodeConfig()
    agents = {}
    for name, addr in (("agent-a", ("192.0.2.10", 4000)), ("agent-b", ("198.51.100.20", 4000))):
        identity = Identity.generate(os.urandom)
        node = Node(identity, config, rng=os.urandom, wall_clock=net.wall_clock)
        net.add_host(node, addr)
        agents[name] = (node, identity, addr)
        print(f"{name}: address {identity.address} at {addr[0]}:{addr[1]}")

    (a, a_id, a_addr), (b, b_id, b_addr) = agents["agent-a"], agents["agent-b"]
    # Each side learns the other's signed identity record (the rendezvous does this in the daemon).
    a.add_peer(
        IdentityRecord.create(b_id, hostname="agent-b", sequence=1, expires_at=2**40), [b_addr]
    )
    b.add_peer(
        IdentityRecord.create(a_id, hostname="agent-a", sequence=1, expires_at=2**40), [a_addr]
    )
    print("\nlink: 25 ms one way, 2% loss\n")

    def pump(seconds: float) -> None:
        net.flush()
        net.run_for(seconds)
        for who, node in (("agent-a", a), ("agent-b", b)):
            while (event := node.next_event()) is not None:
                show(who, event)
                if isinstance(event, MessageReceived) and who == "agent-b":
                    node.confirm_persisted(event.address, event.message_id, net.now)
                    b.send_message(
                        event.address, b"done: 3 findings", net.now, reply_to=event.message_id
                    )

    print("agent-a sends a task (the handshake happens on first use):")
    a.send_message(b_id.address, b"run subtask: analyze document X", net.now)
    for _ in range(20):
        pump(0.1)
    stats = net.stats
    print(f"\nvirtual time {net.now:.2f} s; datagrams: {stats.sent}, lost: {stats.total_dropped}")
    print(f"agent-a stats: {dict(sorted((k, v) for k, v in a.stats.items() if v))}")


if __name__ == "__main__":
    main()
