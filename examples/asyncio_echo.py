"""Two pilot nodes on loopback with the asyncio binding: a message, its receipt, a reply,
and an echoed stream. Runs on uvloop when it is installed, else on the default loop.

    python examples/asyncio_echo.py
"""

from __future__ import annotations

import asyncio
import os

from pilot_asyncio import Node

from pilot_proto import Identity, IdentityRecord

ECHO_PORT = 7


def record_of(node: Node) -> IdentityRecord:
    # In a deployment the rendezvous hands out records; here the two nodes swap them.
    return IdentityRecord.create(node.identity, hostname=None, sequence=1, expires_at=2**40)


async def serve(bob: Node) -> None:
    """Bob answers every message and echoes every stream opened to ECHO_PORT."""

    async def answer_messages() -> None:
        async for message in bob.messages():  # each is receipted as it is taken
            print(f"bob   got {message.data.decode()!r}")
            await bob.reply(message, b"hello alice, bob here")

    async def echo_streams() -> None:
        while True:
            stream = await bob.accept(ECHO_PORT)
            async with stream:  # ends bob's direction when the block is done
                async for chunk in stream:
                    await stream.write(chunk.upper())

    await asyncio.gather(answer_messages(), echo_streams())


async def main() -> None:
    async with Node(Identity.generate(os.urandom)) as alice, Node(
        Identity.generate(os.urandom)
    ) as bob:
        print(f"alice {alice.address} at {alice.endpoint}")
        print(f"bob   {bob.address} at {bob.endpoint}")
        alice.add_peer(record_of(bob), [bob.endpoint])
        bob.add_peer(record_of(alice), [alice.endpoint])
        bob.listen(ECHO_PORT)
        server = asyncio.create_task(serve(bob))

        message_id = await alice.send_message(bob.address, b"hello bob")  # waits for the receipt
        print(f"alice's message {message_id.hex()[:12]}... was receipted by bob")
        answer = await alice.receive(timeout=5)
        assert answer.reply_to == message_id
        print(f"alice got the reply {answer.data.decode()!r}")

        stream = alice.open_stream(bob.address, ECHO_PORT)
        await stream.write(b"a stream, ", end=False)
        await stream.write(b"echoed in capitals", end=True)
        echoed = b"".join([chunk async for chunk in stream])
        print(f"alice's stream came back as {echoed.decode()!r}")
        print(f"round trip to bob: {await alice.ping(bob.address) * 1e6:.0f} us")
        server.cancel()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
