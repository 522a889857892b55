"""aioquic baselines: a 200-byte echo on one stream, and one-stream bulk throughput.

    python -m bench.workers.quic server --mode echo|sink --cert C --key K [--datagram-size N]
    python -m bench.workers.quic echo --port P --cafile C --size 200 --seconds 2
    python -m bench.workers.quic bulk --port P --cafile C --bytes N --seconds 4

Both sides run on asyncio with uvloop when it is installed. `echo`: the client writes
`--size` bytes on one bidirectional stream and waits until as many bytes come back, then
repeats; the figure is the median round trip. `sink`: the server counts what arrives on a
stream and writes back its running total (8 bytes, big-endian) after every MiB and once
more at FIN; the client keeps at most `_WINDOW` bytes beyond the last total it heard, so
aioquic's unbounded send buffer never grows without limit, writes until `--bytes` or
`--seconds`, sends FIN and reports the server's final total over the time until that total
arrived. Flow-control windows are 16 MiB (stream and connection), the datagram size is
`--datagram-size` (aioquic's default is 1200), congestion control aioquic's default.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import time
from typing import cast

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StreamDataReceived

from .certs import SERVER_NAME
from .common import HOST, RttSamples, announce_ready, install_uvloop, report, watch_parent

_LOOP = {"name": "asyncio"}


def _choose_loop(name: str) -> str:
    """`uvloop` (when installed) or the standard `asyncio` loop; return what runs."""
    return install_uvloop() if name == "uvloop" else "asyncio"


ALPN = ["pilot-bench"]
WINDOW_BYTES = 16 * 1024 * 1024
_PROGRESS_EVERY = 1024 * 1024
_WINDOW = 8 * 1024 * 1024
_CHUNK = 64 * 1024
_WARMUP = 50


def _configuration(*, is_client: bool, datagram_size: int) -> QuicConfiguration:
    return QuicConfiguration(
        is_client=is_client,
        alpn_protocols=ALPN,
        max_datagram_size=datagram_size,
        max_data=WINDOW_BYTES,
        max_stream_data=WINDOW_BYTES,
        idle_timeout=30.0,
    )


# -- server ---------------------------------------------------------------------------------


class EchoServer(QuicConnectionProtocol):
    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            self._quic.send_stream_data(event.stream_id, event.data, end_stream=event.end_stream)
            self.transmit()


class SinkServer(QuicConnectionProtocol):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.received: dict[int, int] = {}
        self.reported: dict[int, int] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if not isinstance(event, StreamDataReceived):
            return
        sid = event.stream_id
        total = self.received.get(sid, 0) + len(event.data)
        self.received[sid] = total
        if event.end_stream:
            self._quic.send_stream_data(sid, total.to_bytes(8, "big"), end_stream=True)
            self.transmit()
        elif total - self.reported.get(sid, 0) >= _PROGRESS_EVERY:
            self.reported[sid] = total
            self._quic.send_stream_data(sid, total.to_bytes(8, "big"))
            self.transmit()


def server(mode: str, cert: str, key: str, datagram_size: int) -> None:
    configuration = _configuration(is_client=False, datagram_size=datagram_size)
    configuration.load_cert_chain(cert, key)
    protocol = EchoServer if mode == "echo" else SinkServer

    async def main() -> None:
        quic_server = await serve(HOST, 0, configuration=configuration, create_protocol=protocol)
        # aioquic's serve() has no public accessor for the bound address.
        transport = cast(asyncio.DatagramTransport, quic_server._transport)
        announce_ready(transport.get_extra_info("sockname")[1])
        await asyncio.get_running_loop().create_future()

    asyncio.run(main())


# -- clients --------------------------------------------------------------------------------


class Client(QuicConnectionProtocol):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.inbound = bytearray()
        self.ended = False
        self.changed: asyncio.Event = asyncio.Event()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            self.inbound += event.data
            self.ended = self.ended or event.end_stream
            self.changed.set()

    async def wait_change(self) -> None:
        await self.changed.wait()
        self.changed.clear()

    def send(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self._quic.send_stream_data(stream_id, data, end_stream=end_stream)
        self.transmit()

    def new_stream(self) -> int:
        return self._quic.get_next_available_stream_id()


def _client_configuration(cafile: str, datagram_size: int) -> QuicConfiguration:
    configuration = _configuration(is_client=True, datagram_size=datagram_size)
    configuration.verify_mode = ssl.CERT_REQUIRED
    configuration.load_verify_locations(cafile)
    configuration.server_name = SERVER_NAME
    return configuration


def echo_client(
    port: int, cafile: str, size: int, seconds: float, max_count: int, datagram_size: int
) -> dict[str, object]:
    samples = RttSamples()
    payload = bytes(size)

    async def main() -> None:
        configuration = _client_configuration(cafile, datagram_size)
        async with connect(HOST, port, configuration=configuration, create_protocol=Client) as c:
            client = cast(Client, c)
            stream = client.new_stream()
            clock = time.perf_counter
            end = clock() + seconds
            for done in range(1, _WARMUP + max_count + 1):
                start = clock()
                client.send(stream, payload)
                while len(client.inbound) < size:
                    await client.wait_change()
                del client.inbound[:size]
                now = clock()
                if done > _WARMUP:
                    samples.add(now - start)
                    if now >= end:
                        break

    asyncio.run(main())
    return samples.summary(loop=_LOOP["name"], datagram_size=datagram_size)


def bulk_client(
    port: int, cafile: str, total: int, seconds: float, datagram_size: int
) -> dict[str, object]:
    chunk = bytes(_CHUNK)
    outcome: dict[str, object] = {}

    async def main() -> None:
        configuration = _client_configuration(cafile, datagram_size)
        async with connect(HOST, port, configuration=configuration, create_protocol=Client) as c:
            client = cast(Client, c)
            stream = client.new_stream()

            def heard() -> int:
                """The server's latest running total (its reports are 8 bytes each)."""
                usable = len(client.inbound) - len(client.inbound) % 8
                if usable == 0:
                    return 0
                return int.from_bytes(client.inbound[usable - 8 : usable], "big")

            clock = time.perf_counter
            start = clock()
            end = start + seconds
            sent = 0
            while sent < total and clock() < end:
                while sent - heard() >= _WINDOW:
                    await client.wait_change()
                client.send(stream, chunk)
                sent += len(chunk)
                await asyncio.sleep(0)  # let the loop read ACKs and progress
            client.send(stream, b"", end_stream=True)
            while not client.ended:
                await client.wait_change()
            elapsed = clock() - start
            received = heard()
            outcome.update(
                bytes=received,
                seconds=elapsed,
                bytes_per_second=received / elapsed,
                sent=sent,
            )

    asyncio.run(main())
    return {**outcome, "loop": _LOOP["name"], "datagram_size": datagram_size}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.workers.quic")
    parser.add_argument("role", choices=("server", "echo", "bulk"))
    parser.add_argument("--mode", choices=("echo", "sink"), default="echo")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--cafile")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--bytes", type=int, default=200 * 1024 * 1024)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--max-count", type=int, default=1_000_000)
    parser.add_argument("--datagram-size", type=int, default=1200)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--lifetime", type=float, default=120.0)
    args = parser.parse_args()
    watch_parent(args.lifetime)
    _LOOP["name"] = _choose_loop(args.loop)
    if args.role == "server":
        server(args.mode, args.cert, args.key, args.datagram_size)
    elif args.role == "echo":
        report(
            echo_client(
                args.port, args.cafile, args.size, args.seconds, args.max_count, args.datagram_size
            )
        )
    else:
        report(bulk_client(args.port, args.cafile, args.bytes, args.seconds, args.datagram_size))


if __name__ == "__main__":
    main()
