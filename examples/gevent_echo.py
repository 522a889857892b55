"""Two pilot nodes on loopback with the gevent binding: a message, its receipt, a reply,
and an echoed stream, with bob's side served from greenlets.

    python examples/gevent_echo.py
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # optional for pilot_gevent; an application usually does it first

import os  # noqa: E402

import gevent  # noqa: E402
from pilot_gevent import Node, Stream  # noqa: E402

from pilot_proto import Identity, IdentityRecord  # noqa: E402

ECHO_PORT = 7


def record_of(node: Node) -> IdentityRecord:
    # In a deployment the rendezvous hands out records; here the two nodes swap them.
    return IdentityRecord.create(node.identity, hostname=None, sequence=1, expires_at=2**40)


def answer_messages(bob: Node) -> None:
    for message in bob.messages():  # receipted as taken; ends when bob closes
        print(f"bob   got {message.data.decode()!r}")
        bob.reply(message, b"hello alice, bob here")


def echo(stream: Stream) -> None:
    with stream:  # ends bob's direction when the block is done
        for chunk in stream:
            stream.write(chunk.upper())


def echo_streams(bob: Node) -> None:
    while True:
        gevent.spawn(echo, bob.accept(ECHO_PORT))


def main() -> None:
    with Node(Identity.generate(os.urandom)) as alice, Node(Identity.generate(os.urandom)) as bob:
        print(f"alice {alice.address} at {alice.endpoint}")
        print(f"bob   {bob.address} at {bob.endpoint}")
        alice.add_peer(record_of(bob), [bob.endpoint])
        bob.add_peer(record_of(alice), [alice.endpoint])
        bob.listen(ECHO_PORT)
        servers = [gevent.spawn(answer_messages, bob), gevent.spawn(echo_streams, bob)]

        message_id = alice.send_message(bob.address, b"hello bob")  # waits for the receipt
        print(f"alice's message {message_id.hex()[:12]}... was receipted by bob")
        answer = alice.receive(timeout=5)
        assert answer.reply_to == message_id
        print(f"alice got the reply {answer.data.decode()!r}")

        stream = alice.open_stream(bob.address, ECHO_PORT)
        stream.write(b"a stream, ")
        stream.write(b"echoed in capitals", end=True)
        echoed = b"".join(stream)
        print(f"alice's stream came back as {echoed.decode()!r}")
        print(f"round trip to bob: {alice.ping(bob.address) * 1e6:.0f} us")
        gevent.killall(servers)


if __name__ == "__main__":
    main()
