"""The asyncio binding's UDP socket: set up once, then drained and written without blocking.

The choices (buffer sizes, GSO batching, GRO splitting, address forms) live in
`pilot_proto.driver`; this module only makes the system calls, from event loop
callbacks (`add_reader`), so it works the same on the default loop and on uvloop.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Sequence

from pilot_proto.driver import (
    SO_RCVBUFFORCE,
    SO_SNDBUFFORCE,
    SOCKET_BUFFER_SIZE,
    SOL_UDP,
    UDP_GRO,
    UDP_SEGMENT,
    Driver,
    buffer_shortfall,
    canonical_address,
    gso_ancillary,
    gso_batches,
    socket_address,
    split_gro,
)
from pilot_proto.transmit import Addr, Transmit

log = logging.getLogger("pilot_asyncio")

_GRO_READ_SIZE = 65535
_CMSG_SPACE = 64
_GIVE_UP_ON_GSO = frozenset({errno.EINVAL, errno.EIO, errno.EOPNOTSUPP, errno.EMSGSIZE})


def open_socket(host: str, port: int, sock: socket.socket | None = None) -> socket.socket:
    """A bound, non-blocking UDP socket (or `sock`, bound already) with large buffers."""
    if sock is None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6 and host in ("::", ""):
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
        try:  # as root, the FORCE variant goes past the sysctl cap
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER_SIZE)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_SIZE)
        # Linux reports twice what it granted; halve to compare with what we asked.
        granted = sock.getsockopt(socket.SOL_SOCKET, option) // 2
        warning = buffer_shortfall(kind, SOCKET_BUFFER_SIZE, granted, sysctl)
        if warning:
            log.warning(warning)
    return sock


class UdpPort:
    """The node's socket on the event loop: GSO and GRO used when the kernel has them."""

    def __init__(self, sock: socket.socket, driver: Driver) -> None:
        self.sock = sock
        self.driver = driver
        self.ipv6 = sock.family == socket.AF_INET6
        self.endpoint: Addr = canonical_address(sock.getsockname())
        self.gso = _probe(sock, UDP_SEGMENT, None)
        self.gro = _probe(sock, UDP_GRO, 1)
        log.debug("UDP %s: GSO %s, GRO %s", self.endpoint, self.gso, self.gro)

    def receive(self, limit: int, now: float) -> int:
        """Feed up to `limit` datagrams to the driver; fewer means the socket is drained."""
        sock, feed = self.sock, self.driver.datagram_received
        count = 0
        try:
            if self.gro:
                while count < limit:
                    data, ancdata, _, addr = sock.recvmsg(_GRO_READ_SIZE, _CMSG_SPACE)
                    for datagram in split_gro(data, ancdata) if ancdata else (data,):
                        feed(datagram, addr, now)
                        count += 1
            else:
                while count < limit:
                    data, addr = sock.recvfrom(_GRO_READ_SIZE)
                    feed(data, addr, now)
                    count += 1
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as error:  # e.g. an ICMP error queued on the socket: not fatal
            self.driver.stats["receive_error"] += 1
            log.debug("UDP receive error: %s", error)
        return count

    def send(self, transmits: Sequence[Transmit]) -> None:
        """Send without blocking; a full send buffer drops (the core retransmits)."""
        if self.gso and len(transmits) > 1:
            for addr, size, datagrams in gso_batches(transmits):
                if len(datagrams) == 1:
                    self._sendto(datagrams[0], addr)
                else:
                    self._send_segments(datagrams, size, addr)
        else:
            for transmit in transmits:
                self._sendto(transmit.data, transmit.addr)

    def _sendto(self, data: bytes, addr: Addr) -> None:
        target = socket_address(addr, self.ipv6)
        if target is None:
            self.driver.stats["send_unreachable_family"] += 1
            return
        try:
            self.sock.sendto(data, target)
        except (BlockingIOError, InterruptedError):
            self.driver.stats["send_dropped_buffer_full"] += 1
        except OSError as error:
            self.driver.stats["send_error"] += 1
            log.debug("UDP send to %s failed: %s", addr, error)

    def _send_segments(self, datagrams: list[bytes], size: int, addr: Addr) -> None:
        target = socket_address(addr, self.ipv6)
        if target is None:
            self.driver.stats["send_unreachable_family"] += len(datagrams)
            return
        try:
            self.sock.sendmsg(datagrams, gso_ancillary(size), 0, target)
            self.driver.stats["gso_sends"] += 1
        except (BlockingIOError, InterruptedError):
            self.driver.stats["send_dropped_buffer_full"] += len(datagrams)
        except OSError as error:
            if error.errno in _GIVE_UP_ON_GSO:
                # The path or device refuses segmentation: fall back for good.
                log.info("UDP GSO refused (%s); sending datagrams one by one", error)
                self.gso = False
            for data in datagrams:
                self._sendto(data, addr)

    def close(self) -> None:
        self.sock.close()


def _probe(sock: socket.socket, option: int, value: int | None) -> bool:
    try:
        if value is None:
            sock.getsockopt(SOL_UDP, option)
        else:
            sock.setsockopt(SOL_UDP, option, value)
    except OSError:
        return False
    return True
