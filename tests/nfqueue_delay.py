"""A userspace delay line for the NAT lab: holds every packet of an NFQUEUE queue for a
fixed delay, drops a given fraction, and releases the rest in arrival order.

Why: this machine's kernel has no sch_netem (`tc qdisc add ... netem` answers "Specified
qdisc kind is unknown") but has NFQUEUE, so the lab queues the core router's forwarding
path between the NAT routers (`iptables -j NFQUEUE --queue-num N`, no `--queue-bypass`: if
this program is gone, packets are dropped rather than silently passed undelayed) and this
program, started inside the core namespace by tests/natlab.py, gives each packet its
verdict. Stdlib only: the nfnetlink_queue protocol on a raw NETLINK_NETFILTER socket
(linux/netfilter/nfnetlink_queue.h). Only metadata is copied (NFQNL_COPY_META): a verdict
needs the packet id, not the bytes.

    ip netns exec NS python nfqueue_delay.py --queue 7 --delay-ms 100 --loss-percent 5

Prints `ready` once bound, then runs until its stdin closes (the lab closes it, or the
lab's process died): every packet still held is accepted at once, and one JSON line of
counts is printed (`held`, `dropped`, `released`, `late_max_ms`: how far past its due
time the latest verdict went, and the kernel's `queue_dropped`/`user_dropped`).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import select
import socket
import struct
import sys
import time
from collections import deque

NETLINK_NETFILTER = 12
SO_RCVBUFFORCE = 33
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR = 2
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NF_DROP, NF_ACCEPT = 0, 1
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid (host order)
_NLATTR = struct.Struct("=HH")  # len, type
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER


def _attr(kind: int, payload: bytes) -> bytes:
    raw = _NLATTR.pack(_NLATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _message(kind: int, queue: int, attrs: bytes, flags: int, seq: int) -> bytes:
    # nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, res_id (the queue) big-endian.
    body = struct.pack("!BBH", socket.AF_UNSPEC, 0, queue) + attrs
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind,
                          flags, seq, 0) + body


def _messages(data: bytes) -> list[tuple[int, bytes]]:
    """(type, payload after the header) of each netlink message in one datagram."""
    out, offset = [], 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        out.append((kind, data[offset + _NLMSGHDR.size:offset + length]))
        offset += (length + 3) & ~3
    return out


def _packet_id(payload: bytes) -> int | None:
    """The id in NFQA_PACKET_HDR of an NFQNL_MSG_PACKET (payload after the nlmsghdr)."""
    offset = 4  # nfgenmsg
    while offset + _NLATTR.size <= len(payload):
        length, kind = _NLATTR.unpack_from(payload, offset)
        if length < _NLATTR.size:
            return None
        if kind & _NLA_TYPE_MASK == NFQA_PACKET_HDR:
            return int(struct.unpack_from("!I", payload, offset + _NLATTR.size)[0])
        offset += (length + 3) & ~3
    return None


class Delayer:
    def __init__(self, queue: int, delay: float, loss: float, seed: int, max_len: int) -> None:
        self.queue, self.delay, self.loss = queue, delay, loss
        self.rng = random.Random(seed)
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        # Room for a burst of packet notices; a notice lost to an overrun would leave its
        # packet in the kernel's queue until we exit.
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        self.sock.bind((0, 0))
        self.seq = 0
        self.held: deque[tuple[float, int]] = deque()  # (due, packet id), arrival order
        self.counts = {"held": 0, "dropped": 0, "released": 0, "overruns": 0}
        self.late_max = 0.0
        self._configure(NFQA_CFG_CMD, struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, 0))
        # copy_range 0 with COPY_META: packet notices carry no payload.
        self._configure(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
        self._configure(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", max_len))
        self.sock.setblocking(False)

    def _configure(self, kind: int, payload: bytes) -> None:
        self.seq += 1
        self.sock.send(_message(NFQNL_MSG_CONFIG, self.queue, _attr(kind, payload),
                                NLM_F_REQUEST | NLM_F_ACK, self.seq))
        for msg_type, body in _messages(self.sock.recv(65536)):
            if msg_type == NLMSG_ERROR:
                code = -struct.unpack_from("=i", body)[0]
                if code:
                    raise OSError(code, f"nfnetlink_queue config {kind} on queue "
                                  f"{self.queue}: {os.strerror(code)}")

    def _verdicts(self, pairs: list[tuple[int, int]]) -> None:
        """Send verdicts, many per datagram (the kernel walks every message in it)."""
        batch = bytearray()
        for packet_id, verdict in pairs:
            self.seq += 1
            batch += _message(NFQNL_MSG_VERDICT, self.queue,
                              _attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id)),
                              NLM_F_REQUEST, self.seq)
            if len(batch) > 32768:
                self.sock.send(batch)
                batch.clear()
        if batch:
            self.sock.send(batch)

    def _receive(self, now: float) -> None:
        drops: list[tuple[int, int]] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.counts["overruns"] += 1
                continue
            for msg_type, body in _messages(data):
                if msg_type != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    continue
                packet_id = _packet_id(body)
                if packet_id is None:
                    continue
                if self.rng.random() < self.loss:
                    drops.append((packet_id, NF_DROP))
                    self.counts["dropped"] += 1
                else:
                    self.held.append((now + self.delay, packet_id))
                    self.counts["held"] += 1
        if drops:
            self._verdicts(drops)

    def _release(self, now: float, everything: bool = False) -> None:
        due: list[tuple[int, int]] = []
        while self.held and (everything or self.held[0][0] <= now):
            at, packet_id = self.held.popleft()
            self.late_max = max(self.late_max, now - at)
            due.append((packet_id, NF_ACCEPT))
        if due:
            self._verdicts(due)
            self.counts["released"] += len(due)

    def run(self) -> None:
        print("ready", flush=True)
        stdin = sys.stdin.fileno()
        while True:
            timeout = max(self.held[0][0] - time.monotonic(), 0.0) if self.held else None
            readable, _, _ = select.select([self.sock, stdin], [], [], timeout)
            now = time.monotonic()
            if self.sock in readable:
                self._receive(now)
            self._release(now)
            if stdin in readable and not os.read(stdin, 4096):
                break
        self._release(time.monotonic(), everything=True)

    def report(self) -> dict[str, object]:
        out: dict[str, object] = dict(self.counts, late_max_ms=round(self.late_max * 1000, 3))
        # /proc/net/netfilter/nfnetlink_queue: queue, portid, waiting, copy mode, range,
        # queue_dropped (queue full), user_dropped (notices lost), last id, 1.
        try:
            with open("/proc/net/netfilter/nfnetlink_queue") as f:
                for line in f:
                    fields = line.split()
                    if fields and int(fields[0]) == self.queue:
                        out["queue_dropped"], out["user_dropped"] = int(fields[5]), int(fields[6])
        except OSError:
            pass
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queue", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, required=True)
    parser.add_argument("--loss-percent", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-len", type=int, default=8192)
    args = parser.parse_args()
    try:
        # A real-time priority, as root: a qdisc's timer runs in the kernel, this loop
        # must not wait behind the lab's busy daemons and pilotctl starts for its turn.
        # It sleeps in select() between verdicts, so it never hogs a core.
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except OSError:
        pass
    try:
        delayer = Delayer(args.queue, args.delay_ms / 1000, args.loss_percent / 100,
                          args.seed, args.max_len)
    except OSError as exc:
        print(f"cannot bind NFQUEUE {args.queue}: {exc}", file=sys.stderr)
        return 1
    delayer.run()
    print(json.dumps(delayer.report()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
