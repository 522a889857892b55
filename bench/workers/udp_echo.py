"""Raw UDP echo in one loop style: `server` echoes every datagram, `client` times round trips.

    python -m bench.workers.udp_echo server --style asyncio|gevent|threads
    python -m bench.workers.udp_echo client --style ... --port P --size 200 --seconds 2

The client sends one datagram, waits for it to come back, and repeats, for `--seconds` or
`--max-count` round trips, whichever ends first; it reports the median round trip. No
per-datagram timeout sits on the measured path (it would slow the baseline down): a
watchdog resends when a round trip stalls for a whole interval, and the lifetime bounds
everything. Both sides use the same loop style, as two nodes of one binding would.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from typing import Any, cast

from .common import HOST, RttSamples, announce_ready, install_uvloop, report, watch_parent

STYLES = ("asyncio", "gevent", "threads")
_STALL = 0.5  # seconds without progress before the watchdog resends
_WARMUP = 100
_BUFFER = 65536


def _bound_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, port))
    return sock


# -- asyncio (uvloop when installed) --------------------------------------------------------


def _asyncio_server() -> None:
    import asyncio

    install_uvloop()

    class Echo(asyncio.DatagramProtocol):
        transport: asyncio.DatagramTransport

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            # uvloop's UDP transport does not subclass asyncio.DatagramTransport.
            self.transport = cast(asyncio.DatagramTransport, transport)

        def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
            self.transport.sendto(data, addr)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=(HOST, 0))
        announce_ready(transport.get_extra_info("sockname")[1])
        await loop.create_future()  # until the watchdog ends the process

    asyncio.run(main())


def _asyncio_client(port: int, size: int, seconds: float, max_count: int) -> dict[str, object]:
    import asyncio

    loop_name = install_uvloop()
    payload = bytes(size)
    samples = RttSamples()

    class Client(asyncio.DatagramProtocol):
        def __init__(self) -> None:
            self.waiter: asyncio.Future[None] | None = None

        def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            Client, local_addr=(HOST, 0), remote_addr=(HOST, port)
        )
        done = 0
        seen = -1

        def watchdog() -> None:
            nonlocal seen
            if done == seen:
                transport.sendto(payload)  # a lost datagram: send the round trip again
            seen = done
            loop.call_later(_STALL, watchdog)

        loop.call_later(_STALL, watchdog)
        clock = time.perf_counter
        end = clock() + seconds
        total = _WARMUP + max_count
        while done < total:
            proto.waiter = loop.create_future()
            start = clock()
            transport.sendto(payload)
            await proto.waiter
            now = clock()
            done += 1
            if done > _WARMUP:
                samples.add(now - start)
                if now >= end:
                    break
        transport.close()

    asyncio.run(main())
    return samples.summary(loop=loop_name)


# -- gevent (gevent.socket, no monkey-patching) ---------------------------------------------


def _gevent_server() -> None:
    from gevent import socket as gsocket  # type: ignore[import-untyped]

    sock = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    announce_ready(sock.getsockname()[1])
    while True:
        data, addr = sock.recvfrom(_BUFFER)
        sock.sendto(data, addr)


class _EchoLoop:
    """The timed send/receive loop of the two blocking clients. `done` counts echoes; the
    clients' watchdogs read it to resend a datagram the loop is stuck waiting for."""

    def __init__(self) -> None:
        self.done = 0

    def run(self, sock: Any, payload: bytes, seconds: float, max_count: int,
            samples: RttSamples) -> None:
        clock = time.perf_counter
        end = clock() + seconds
        total = _WARMUP + max_count
        while self.done < total:
            start = clock()
            sock.send(payload)
            sock.recv(_BUFFER)
            now = clock()
            self.done += 1
            if self.done > _WARMUP:
                samples.add(now - start)
                if now >= end:
                    break


def _gevent_client(port: int, size: int, seconds: float, max_count: int) -> dict[str, object]:
    import gevent
    from gevent import socket as gsocket

    payload = bytes(size)
    samples = RttSamples()
    sock = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.connect((HOST, port))
    loop = _EchoLoop()

    def watchdog() -> None:
        seen = -1
        while True:
            gevent.sleep(_STALL)
            if loop.done == seen:
                sock.send(payload)
            seen = loop.done

    guard = gevent.spawn(watchdog)
    loop.run(sock, payload, seconds, max_count, samples)
    guard.kill()
    sock.close()
    return samples.summary(loop="gevent")


# -- threads (plain blocking sockets) -------------------------------------------------------


def _threads_server() -> None:
    sock = _bound_socket()
    announce_ready(sock.getsockname()[1])
    while True:
        data, addr = sock.recvfrom(_BUFFER)
        sock.sendto(data, addr)


def _threads_client(port: int, size: int, seconds: float, max_count: int) -> dict[str, object]:
    payload = bytes(size)
    samples = RttSamples()
    sock = _bound_socket()
    sock.connect((HOST, port))
    loop = _EchoLoop()
    finished = threading.Event()

    def watchdog() -> None:
        seen = -1
        while not finished.wait(_STALL):
            if loop.done == seen:
                sock.send(payload)
            seen = loop.done

    threading.Thread(target=watchdog, daemon=True).start()
    loop.run(sock, payload, seconds, max_count, samples)
    finished.set()
    sock.close()
    return samples.summary(loop="threads")


SERVERS = {"asyncio": _asyncio_server, "gevent": _gevent_server, "threads": _threads_server}
CLIENTS = {"asyncio": _asyncio_client, "gevent": _gevent_client, "threads": _threads_client}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.workers.udp_echo")
    parser.add_argument("role", choices=("server", "client"))
    parser.add_argument("--style", choices=STYLES, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--max-count", type=int, default=1_000_000)
    parser.add_argument("--lifetime", type=float, default=120.0)
    args = parser.parse_args()
    watch_parent(args.lifetime)
    if args.role == "server":
        SERVERS[args.style]()
    else:
        report(CLIENTS[args.style](args.port, args.size, args.seconds, args.max_count))


if __name__ == "__main__":
    main()
