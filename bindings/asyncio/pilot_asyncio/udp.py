"""The asyncio binding's UDP socket: set up once, then drained and written without blocking.

Every choice (buffer sizes, GSO batches, GRO splitting, address forms) is made in
`pilot_proto.driver`; this module only makes the system calls, from the loop's reader
callback (`add_reader`), the same on the default loop and on uvloop.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence

from pilot_proto.driver import (
    GSO_REFUSED,
    SO_RCVBUFFORCE,
    SO_SNDBUFFORCE,
    SOCKET_BUFFER_SIZE,
    SOL_UDP,
    UDP_GRO,
    UDP_SEGMENT,
    Driver,
    buffer_shortfall,
    canonical_address,
    sendmsg_calls,
)
from pilot_proto.transmit import Addr, Transmit

log = logging.getLogger("pilot_asyncio")

_READ_SIZE = 65535  # one GRO read holds up to a whole UDP payload's worth of datagrams
_CMSG_SPACE = 64


def open_socket(host: str, port: int, sock: socket.socket | None = None) -> socket.socket:
    """A bound, non-blocking UDP socket (or `sock`, bound already) with large buffers."""
    if sock is None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6 and host == "::":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # dual-stack
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
    sock.setblocking(False)
    for option, force, kind, sysctl in (
        (socket.SO_RCVBUF, SO_RCVBUFFORCE, "receive", "rmem_max"),
        (socket.SO_SNDBUF, SO_SNDBUFFORCE, "send", "wmem_max"),
    ):
        try:  # as root the FORCE variant goes past the sysctl cap
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER_SIZE)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_SIZE)
        # Linux reports twice what it granted (its bookkeeping share): halve to compare.
        warning = buffer_shortfall(
            kind, SOCKET_BUFFER_SIZE, sock.getsockopt(socket.SOL_SOCKET, option) // 2, sysctl
        )
        if warning:
            log.warning(warning)
    return sock


class UdpPort:
    """The node's socket, used from event loop callbacks only."""

    def __init__(self, sock: socket.socket, driver: Driver) -> None:
        self.sock = sock
        self.driver = driver
        self.ipv6 = sock.family == socket.AF_INET6
        self.endpoint: Addr = canonical_address(sock.getsockname())
        self.gso = _supported(lambda: sock.getsockopt(SOL_UDP, UDP_SEGMENT))
        self.gro = _supported(lambda: sock.setsockopt(SOL_UDP, UDP_GRO, 1))
        log.debug("UDP %s: GSO %s, GRO %s", self.endpoint, self.gso, self.gro)

    def receive(self, limit: int, now: float) -> int:
        """Feed up to about `limit` datagrams to the driver; fewer: the socket is drained."""
        recvmsg, feed = self.sock.recvmsg, self.driver.datagrams_received
        count = 0
        try:
            while count < limit:
                data, ancdata, _, addr = recvmsg(_READ_SIZE, _CMSG_SPACE)
                count += feed(data, ancdata, addr, now)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as error:  # e.g. an ICMP error queued on the socket: not fatal
            self.driver.stats["receive_error"] += 1
            log.debug("UDP receive error: %s", error)
        return count

    def send(self, transmits: Sequence[Transmit]) -> None:
        """Send without blocking: a full send buffer drops (the core retransmits)."""
        stats = self.driver.stats
        for target, buffers, ancillary in sendmsg_calls(transmits, self.gso, self.ipv6, stats):
            try:
                self.sock.sendmsg(buffers, ancillary, 0, target)
                if ancillary:
                    stats["gso_sends"] += 1
            except (BlockingIOError, InterruptedError):
                stats["send_dropped_buffer_full"] += len(buffers)
            except OSError as error:
                if ancillary and error.errno in GSO_REFUSED:
                    log.info("UDP GSO refused (%s); sending datagrams one by one", error)
                    self.gso = False
                    self.send([Transmit(data, canonical_address(target)) for data in buffers])
                else:
                    stats["send_error"] += 1
                    log.debug("UDP send to %s failed: %s", target, error)

    def close(self) -> None:
        self.sock.close()


def _supported(probe: Callable[[], object]) -> bool:
    try:
        probe()
    except OSError:
        return False
    return True
