"""Redis Streams request/reply: the broker pattern our users replace.

    python -m bench.workers.redis_streams worker --port REDIS_PORT   # prints READY 0
    python -m bench.workers.redis_streams client --port REDIS_PORT --size 200 --seconds 2

The client XADDs a request to `bench:req` and blocks in XREAD on `bench:rep` until the
reply is there; the worker blocks in XREAD on `bench:req` and XADDs each request's payload
to `bench:rep`. One round trip is two XADDs and two XREADs through the broker. Streams are
trimmed (MAXLEN ~ 1000) so memory stays flat. The redis-server itself is started by the
benchmark on a free port with no persistence.
"""

from __future__ import annotations

import argparse
import time
from typing import cast

import redis

from .common import HOST, RttSamples, announce_ready, report, watch_parent

REQUESTS = "bench:req"
REPLIES = "bench:rep"
_TRIM = 1000
_BLOCK_MS = 1000
_WARMUP = 50

StreamReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]


def _connect(port: int) -> redis.Redis:
    return redis.Redis(host=HOST, port=port, socket_connect_timeout=5)


def worker(port: int) -> None:
    r = _connect(port)
    r.ping()
    announce_ready(0)
    last = b"0-0"
    while True:
        answer = cast(StreamReply, r.xread({REQUESTS: last}, count=100, block=_BLOCK_MS))
        for _stream, entries in answer:
            for entry_id, fields in entries:
                last = entry_id
                r.xadd(REPLIES, {"d": fields[b"d"]}, maxlen=_TRIM, approximate=True)


def client(port: int, size: int, seconds: float, max_count: int) -> dict[str, object]:
    r = _connect(port)
    payload = bytes(size)
    samples = RttSamples()
    last = b"0-0"
    clock = time.perf_counter
    end = clock() + seconds
    for done in range(1, _WARMUP + max_count + 1):
        start = clock()
        r.xadd(REQUESTS, {"d": payload}, maxlen=_TRIM, approximate=True)
        while True:
            answer = cast(StreamReply, r.xread({REPLIES: last}, count=1, block=_BLOCK_MS))
            if answer:
                last = answer[0][1][-1][0]
                break
        now = clock()
        if done > _WARMUP:
            samples.add(now - start)
            if now >= end:
                break
    return samples.summary(redis_py=redis.__version__)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.workers.redis_streams")
    parser.add_argument("role", choices=("worker", "client"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--max-count", type=int, default=1_000_000)
    parser.add_argument("--lifetime", type=float, default=120.0)
    args = parser.parse_args()
    watch_parent(args.lifetime)
    if args.role == "worker":
        worker(args.port)
    else:
        report(client(args.port, args.size, args.seconds, args.max_count))


if __name__ == "__main__":
    main()
