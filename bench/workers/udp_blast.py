"""Raw UDP one-way throughput: `send` blasts datagrams of one size, `receive` counts them.

    python -m bench.workers.udp_blast receive            # prints READY <port>
    python -m bench.workers.udp_blast send --port P --size 1200 --seconds 2

Plain blocking sockets with 4 MiB buffers (or what the OS allows), the fastest a Python
process moves datagrams. The receiver counts from its first datagram to its last and
reports when the parent writes `STOP` on its stdin (an empty datagram to itself wakes its
blocking read; no timeout sits on the hot path). The figure is received bytes per second:
what the sender offers beyond that is dropped by the kernel.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time

from .common import HOST, announce_ready, report, watch_parent

BUFFER_BYTES = 4 * 1024 * 1024
_MAX_DATAGRAM = 65535


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER_BYTES)
    return sock


def receive(lifetime: float) -> None:
    sock = _socket()
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]
    stop = threading.Event()

    def on_line(line: str) -> None:
        if line == "STOP":
            stop.set()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as waker:
                waker.sendto(b"", (HOST, port))

    watch_parent(lifetime, on_line)
    announce_ready(port)
    buffer = bytearray(_MAX_DATAGRAM)
    clock = time.perf_counter
    recv_into = sock.recv_into
    size = recv_into(buffer)
    while size == 0 and not stop.is_set():  # only wake-ups so far
        size = recv_into(buffer)
    first = last = clock()
    first_size = size
    total = size
    datagrams = 1 if size else 0
    while not stop.is_set():
        size = recv_into(buffer)
        if size:
            total += size
            datagrams += 1
            last = clock()
    elapsed = last - first
    counted = total - first_size  # bytes that arrived after the clock started
    report(
        {
            "bytes": total,
            "datagrams": datagrams,
            "seconds": elapsed,
            "bytes_per_second": counted / elapsed if elapsed > 0 else 0.0,
            "rcvbuf": sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        }
    )


def send(port: int, size: int, seconds: float, lifetime: float) -> None:
    watch_parent(lifetime)
    sock = _socket()
    sock.connect((HOST, port))
    payload = bytes(size)
    send_ = sock.send
    clock = time.perf_counter
    start = clock()
    end = start + seconds
    sent = 0
    while clock() < end:
        for _ in range(64):
            send_(payload)
        sent += 64
    report({"datagrams": sent, "bytes": sent * size, "seconds": clock() - start})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.workers.udp_blast")
    parser.add_argument("role", choices=("send", "receive"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--size", type=int, default=1200)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--lifetime", type=float, default=120.0)
    args = parser.parse_args()
    if args.role == "receive":
        receive(args.lifetime)
    else:
        send(args.port, args.size, args.seconds, args.lifetime)


if __name__ == "__main__":
    main()
