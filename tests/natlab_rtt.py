"""UDP round trips across the NAT lab (the lab has no `ping`): `echo HOST:PORT` answers
every datagram until stdin closes (it prints `ready` once bound); `probe HOST:PORT COUNT`
sends COUNT numbered datagrams one after another, each waiting up to a second for its
echo, and prints `{"rtts_ms": [...], "lost": N}`. Run in two namespaces by tests/natlab.py
to prove the delay it applies between the NAT routers is real."""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
import time


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def echo(where: tuple[str, int]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(where)
    print("ready", flush=True)
    stdin = sys.stdin.fileno()
    while True:
        readable, _, _ = select.select([sock, stdin], [], [])
        if sock in readable:
            data, peer = sock.recvfrom(2048)
            sock.sendto(data, peer)
        if stdin in readable and not sys.stdin.buffer.read1(4096):
            return


def probe(where: tuple[str, int], count: int) -> dict[str, object]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtts: list[float] = []
    for seq in range(count):
        sent = time.monotonic()
        sock.sendto(struct.pack("!I", seq), where)
        deadline = sent + 1.0
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                break
            data, _ = sock.recvfrom(2048)
            if data == struct.pack("!I", seq):  # late echoes of earlier probes are skipped
                rtts.append(round((time.monotonic() - sent) * 1000, 3))
                break
    return {"rtts_ms": rtts, "lost": count - len(rtts)}


def main() -> int:
    mode, where = sys.argv[1], _address(sys.argv[2])
    if mode == "echo":
        echo(where)
    else:
        print(json.dumps(probe(where, int(sys.argv[3]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
