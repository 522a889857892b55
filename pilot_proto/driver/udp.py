"""The node's UDP socket, shared by the three bindings without the core importing `socket`.

The binding injects the socket module it lives with (the standard `socket` for asyncio
and threads, `gevent.socket` for gevent), the way the core is given `rng` and the clock:
this module only calls what it is handed. It is used only from the binding's owner (an
event loop callback, a hub callback, the I/O thread), and never blocks: the socket is
non-blocking, a full receive queue ends a read, a full send buffer drops (the core's loss
recovery resends).

The choices about the socket are plain functions next to it: requested buffer sizes,
grouping datagrams for UDP GSO, cutting GRO reads, address forms (DESIGN 5).
"""

from __future__ import annotations

import errno
import logging
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from ..transmit import Addr, Transmit
from .addresses import canonical_address, socket_address
from .busy_poll import BUSY_POLL_LIMIT, BusyPoll
from .memory import keep_freed_memory

__all__ = [
    "GSO_MAX_BYTES",
    "GSO_MAX_SEGMENTS",
    "GSO_REFUSED",
    "RECEIVE_BATCH",
    "RECEIVE_ROUNDS",
    "SOCKET_BUFFER_SIZE",
    "SOL_UDP",
    "SO_RCVBUFFORCE",
    "SO_SNDBUFFORCE",
    "UDP_GRO",
    "UDP_SEGMENT",
    "DatagramSocket",
    "SendCall",
    "SocketModule",
    "UdpPort",
    "buffer_shortfall",
    "gso_ancillary",
    "gso_batches",
    "sendmsg_calls",
    "split_gro",
]

# Linux socket options Python's socket module has no names for (DESIGN 5).
SOL_UDP = 17
UDP_SEGMENT = 103  # Linux 4.18: send one buffer as equal-size datagrams (u16 segment size)
UDP_GRO = 104  # Linux 5.0: receive coalesced datagrams, segment size in a cmsg (int)
SO_SNDBUFFORCE = 32  # like SO_SNDBUF, above net.core.wmem_max (needs CAP_NET_ADMIN)
SO_RCVBUFFORCE = 33
# Per-datagram TTL / hop limit as ancillary data (a low-TTL NAT opener, DESIGN 7).
IPPROTO_IP = 0
IP_TTL = 2
IPPROTO_IPV6 = 41
IPV6_HOPLIMIT = 52

#: Receive and send buffer size every binding asks for: a burst at loopback speed fits.
SOCKET_BUFFER_SIZE = 4 << 20
#: The kernel's UDP_MAX_SEGMENTS (64 before Linux 6.x raised it) and a total below the
#: largest UDP payload, so one GSO send is always accepted.
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
#: Datagrams read per batch before the core sees them and ACKs go out; a wake-up reads
#: up to RECEIVE_ROUNDS batches, so a busy socket cannot starve timers and callers.
RECEIVE_BATCH = 256
RECEIVE_ROUNDS = 16
_LINUX = sys.platform.startswith("linux")
_READ_SIZE = 65535  # one read holds a whole UDP payload, or a GRO train of datagrams
_CMSG_SPACE = 64


def gso_batches(
    transmits: Sequence[Transmit],
    max_segments: int = GSO_MAX_SEGMENTS,
    max_bytes: int = GSO_MAX_BYTES,
) -> list[tuple[Addr, int, list[bytes]]]:
    """Group consecutive datagrams for UDP GSO: `(addr, segment_size, datagrams)` where
    every datagram but the last has exactly `segment_size` bytes and the last is no
    longer (the kernel's rule). Order is kept, so what the core queued goes out as queued."""
    batches: list[tuple[Addr, int, list[bytes]]] = []
    open_batch: list[bytes] | None = None
    addr: Addr | None = None
    size = total = 0
    for transmit in transmits:
        data = transmit.data
        n = len(data)
        if transmit.ttl is not None:
            # Sent alone with its own TTL (sendmsg_calls): never part of a batch.
            addr, size, total, open_batch = None, 0, 0, None
            continue
        if (
            open_batch is not None
            and transmit.addr == addr
            and n <= size
            and len(open_batch) < max_segments
            and total + n <= max_bytes
        ):
            open_batch.append(data)
            total += n
            if n < size:
                open_batch = None  # a shorter datagram ends the batch
            continue
        addr, size, total = transmit.addr, n, n
        open_batch = [data]
        batches.append((addr, size, open_batch))
    return batches


def gso_ancillary(segment_size: int) -> list[tuple[int, int, bytes]]:
    """The `sendmsg` ancillary data asking the kernel to cut the buffer into datagrams of
    `segment_size` bytes (UDP_SEGMENT, a native-endian u16)."""
    return [(SOL_UDP, UDP_SEGMENT, segment_size.to_bytes(2, sys.byteorder))]


#: What one `sendmsg` call takes: (socket address, buffers, ancillary data).
SendCall = tuple[tuple[Any, ...], list[bytes], list[tuple[int, int, bytes]]]
_NO_ANCILLARY: list[tuple[int, int, bytes]] = []


def sendmsg_calls(
    transmits: Sequence[Transmit], gso: bool, ipv6_socket: bool, stats: Counter[str]
) -> list[SendCall]:
    """The `sendmsg` calls that put `transmits` on the wire, in order: one per GSO batch
    when `gso`, else one per datagram. Datagrams the socket's family cannot reach are
    counted in `stats` and left out."""
    calls: list[SendCall] = []
    if any(t.ttl is not None for t in transmits):
        plain = [t for t in transmits if t.ttl is None]
        calls = sendmsg_calls(plain, gso, ipv6_socket, stats) if plain else []
        for transmit in transmits:
            if transmit.ttl is None:
                continue
            target = socket_address(transmit.addr, ipv6_socket)
            if target is None:
                stats["send_unreachable_family"] += 1
                continue
            calls.append((target, [transmit.data], ttl_ancillary(transmit.addr, transmit.ttl)))
        return calls
    if gso and len(transmits) > 1:
        for addr, size, datagrams in gso_batches(transmits):
            target = socket_address(addr, ipv6_socket)
            if target is None:
                stats["send_unreachable_family"] += len(datagrams)
            elif len(datagrams) == 1:
                calls.append((target, datagrams, _NO_ANCILLARY))
            else:
                calls.append((target, datagrams, gso_ancillary(size)))
        return calls
    for transmit in transmits:
        target = socket_address(transmit.addr, ipv6_socket)
        if target is None:
            stats["send_unreachable_family"] += 1
        else:
            calls.append((target, [transmit.data], _NO_ANCILLARY))
    return calls


def ttl_ancillary(addr: Addr, ttl: int) -> list[tuple[int, int, bytes]]:
    """Ancillary data sending one datagram with IP TTL (IPv6 hop limit) `ttl`; IPv4 and
    IPv4-mapped targets take IP_TTL, even from a dual-stack socket."""
    value = max(1, min(ttl, 255)).to_bytes(4, sys.byteorder)
    if ":" in addr[0]:
        return [(IPPROTO_IPV6, IPV6_HOPLIMIT, value)]
    return [(IPPROTO_IP, IP_TTL, value)]


#: errno values with which a kernel refuses a GSO send for good (no segmentation on
#: the route's device, or a segment above its MTU): send datagrams one by one from then on.
GSO_REFUSED = frozenset({errno.EINVAL, errno.EIO, errno.EOPNOTSUPP, errno.EMSGSIZE})


def split_gro(data: bytes, ancdata: Iterable[tuple[int, int, bytes]]) -> list[bytes]:
    """The datagrams in one GRO read: `data` cut at the segment size its cmsg names."""
    for level, kind, value in ancdata:
        if level == SOL_UDP and kind == UDP_GRO and len(value) >= 4:
            size = int.from_bytes(value[:4], sys.byteorder)
            if 0 < size < len(data):
                return [data[i : i + size] for i in range(0, len(data), size)]
    return [data]


def buffer_shortfall(kind: str, requested: int, granted: int, option: str) -> str | None:
    """A log line when the OS gave a smaller socket buffer than asked, else None.
    Linux reports double the size it was given (the kernel's bookkeeping share)."""
    if granted >= requested:
        return None
    return (
        f"UDP {kind} buffer is {granted} bytes, less than the {requested} requested: the OS "
        f"caps it (raise net.core.{option}, e.g. sysctl -w net.core.{option}={requested}); "
        f"bursts may be dropped and retransmitted"
    )


# ---------------------------------------------------------------------- the socket


class DatagramSocket(Protocol):
    """What UdpPort uses of a socket object (`socket.socket`, `gevent.socket.socket`)."""

    @property
    def family(self) -> int: ...
    def fileno(self) -> int: ...
    def getsockname(self) -> Any: ...
    def bind(self, address: Any, /) -> None: ...
    def setblocking(self, flag: bool, /) -> None: ...
    def setsockopt(self, level: int, option: int, value: int, /) -> None: ...
    def getsockopt(self, level: int, option: int, /) -> int: ...
    def recvmsg(self, bufsize: int, ancbufsize: int, /) -> tuple[bytes, list[Any], int, Any]: ...
    def sendmsg(self, buffers: Any, ancdata: Any, flags: int, address: Any, /) -> int: ...
    def sendto(self, data: bytes, address: Any, /) -> int: ...
    def close(self) -> None: ...


class SocketModule(Protocol):
    """What UdpPort uses of the injected socket module (`socket`, `gevent.socket`)."""

    @property
    def AF_INET(self) -> int: ...
    @property
    def AF_INET6(self) -> int: ...
    @property
    def SOCK_DGRAM(self) -> int: ...
    @property
    def SOL_SOCKET(self) -> int: ...
    @property
    def SO_RCVBUF(self) -> int: ...
    @property
    def SO_SNDBUF(self) -> int: ...
    @property
    def IPPROTO_IPV6(self) -> int: ...
    @property
    def IPV6_V6ONLY(self) -> int: ...

    def socket(self, family: int, type: int) -> Any: ...


Feed = Callable[[bytes, tuple[Any, ...], float], None]


class UdpPort:
    """A node's non-blocking UDP socket: GSO and GRO when the kernel has them."""

    def __init__(
        self,
        sock: DatagramSocket,
        ipv6: bool,
        feed: Feed,
        stats: Counter[str],
        log: logging.Logger,
        busy_poll: float = BUSY_POLL_LIMIT,
    ) -> None:
        self.sock = sock
        self.busy = BusyPoll(busy_poll)
        self.ipv6 = ipv6
        self._feed = feed
        self._stats = stats
        self._log = log
        self.endpoint: Addr = canonical_address(sock.getsockname())
        self.gso = _supported(lambda: sock.getsockopt(SOL_UDP, UDP_SEGMENT))
        self.gro = _supported(lambda: sock.setsockopt(SOL_UDP, UDP_GRO, 1))
        log.debug("UDP %s: GSO %s, GRO %s", self.endpoint, self.gso, self.gro)

    @classmethod
    def open(
        cls,
        sockets: SocketModule,
        host: str,
        port: int,
        sock: DatagramSocket | None,
        feed: Feed,
        stats: Counter[str],
        log: logging.Logger,
        busy_poll: float = BUSY_POLL_LIMIT,
    ) -> UdpPort:
        """Bind `host`:`port` (an IPv6 host gives an IPv6 socket, "::" a dual-stack one),
        or take `sock`, bound already; make it non-blocking with large buffers. The first
        port of a process also keeps freed datagram buffers in it (`memory`)."""
        log.debug("malloc: %s", keep_freed_memory())
        if sock is None:
            family = sockets.AF_INET6 if ":" in host else sockets.AF_INET
            sock = sockets.socket(family, sockets.SOCK_DGRAM)
            try:
                if family == sockets.AF_INET6 and host == "::":
                    sock.setsockopt(sockets.IPPROTO_IPV6, sockets.IPV6_V6ONLY, 0)
                sock.bind((host, port))
            except OSError:
                sock.close()
                raise
        sock.setblocking(False)
        for option, force, kind, sysctl in (
            (sockets.SO_RCVBUF, SO_RCVBUFFORCE, "receive", "rmem_max"),
            (sockets.SO_SNDBUF, SO_SNDBUFFORCE, "send", "wmem_max"),
        ):
            _request_buffer(sock, sockets.SOL_SOCKET, option, force)
            granted = sock.getsockopt(sockets.SOL_SOCKET, option)
            if _LINUX:
                granted //= 2  # Linux reports twice what it granted (its bookkeeping share)
            warning = buffer_shortfall(kind, SOCKET_BUFFER_SIZE, granted, sysctl)
            if warning:
                log.warning(warning)
        return cls(sock, sock.family == sockets.AF_INET6, feed, stats, log, busy_poll)

    def receive(self, limit: int, now: float) -> int:
        """Feed up to about `limit` datagrams to the core; fewer: the socket is drained."""
        recvmsg, feed, stats = self.sock.recvmsg, self._feed, self._stats
        count = 0
        try:
            while count < limit:
                data, ancdata, _, addr = recvmsg(_READ_SIZE, _CMSG_SPACE)
                if ancdata:
                    datagrams = split_gro(data, ancdata)
                    for datagram in datagrams:
                        feed(datagram, addr, now)
                    count += len(datagrams)
                    stats["gro_reads"] += 1
                else:
                    feed(data, addr, now)
                    count += 1
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as error:  # e.g. an ICMP error queued on the socket: not fatal
            stats["receive_error"] += 1
            self._log.debug("UDP receive error: %s", error)
        return count

    def drain(
        self, poll: Callable[[float], Sequence[Transmit]], clock: Callable[[], float]
    ) -> None:
        """Read everything the socket holds, a batch at a time, each batch followed by a
        `poll` of the core whose datagrams (ACKs first of all) go out at once."""
        now = clock()
        self.busy.woke(now)
        for _ in range(RECEIVE_ROUNDS):
            count = self.receive(RECEIVE_BATCH, now)
            self.send(poll(now))
            if count < RECEIVE_BATCH:
                return
            now = clock()

    def send_and_linger(
        self,
        transmits: Sequence[Transmit],
        poll: Callable[[float], Sequence[Transmit]],
        clock: Callable[[], float],
    ) -> None:
        """Send, and if anything went out, keep reading for the adaptive busy-poll window
        (`busy_poll`) before the binding sleeps, since an answer is likely within
        microseconds: what arrives meanwhile is fed and answered as `drain` does. Blocks
        the caller for at most the window."""
        if not transmits:
            return
        self.send(transmits)
        count = self.spin(self._read_batch, clock)
        if count:
            self.send(poll(clock()))
            if count >= RECEIVE_BATCH:
                self.drain(poll, clock)

    def spin(self, ready: Callable[[float], int], clock: Callable[[], float]) -> int:
        """Call `ready(now)` until it counts something arrived or the busy-poll window
        ends (at once when the window is closed); returns that count (0: nothing caught).
        The window's bookkeeping for every binding's way of looking (`send_and_linger`,
        a selector). Only the binding's one reader of the socket calls it."""
        busy, stats = self.busy, self._stats
        now = clock()
        if busy.window:
            until = now + busy.window
            while True:
                count = ready(now)
                if count:
                    busy.caught()
                    stats["busy_poll_caught"] += 1
                    return count
                if now >= until:
                    stats["busy_poll_missed"] += 1
                    break
                now = clock()
        busy.missed(now)
        return 0

    def _read_batch(self, now: float) -> int:
        return self.receive(RECEIVE_BATCH, now)

    def send(self, transmits: Sequence[Transmit]) -> None:
        """Send without blocking: a full send buffer drops (the core retransmits)."""
        if not transmits:
            return  # most polls between packets have nothing to send
        stats = self._stats
        if len(transmits) == 1 and transmits[0].ttl is None:
            # A round trip's case: one datagram, no batch, no ancillary data to build.
            transmit = transmits[0]
            target = socket_address(transmit.addr, self.ipv6)
            if target is None:
                stats["send_unreachable_family"] += 1
                return
            try:
                self.sock.sendto(transmit.data, target)
                stats["datagrams_sent"] += 1
            except (BlockingIOError, InterruptedError):
                stats["send_dropped_buffer_full"] += 1
            except OSError as error:
                self._send_failed(target, error)
            return
        for target, buffers, ancillary in sendmsg_calls(transmits, self.gso, self.ipv6, stats):
            try:
                self.sock.sendmsg(buffers, ancillary, 0, target)
                stats["datagrams_sent"] += len(buffers)
                if ancillary and ancillary[0][1] == UDP_SEGMENT:
                    stats["gso_sends"] += 1
            except (BlockingIOError, InterruptedError):
                stats["send_dropped_buffer_full"] += len(buffers)
            except OSError as error:
                if ancillary and ancillary[0][1] == UDP_SEGMENT and error.errno in GSO_REFUSED:
                    self._log.info("UDP GSO refused (%s); sending datagrams one by one", error)
                    self.gso = False
                    self.send([Transmit(data, canonical_address(target)) for data in buffers])
                else:
                    self._send_failed(target, error)

    def _send_failed(self, target: tuple[Any, ...], error: OSError) -> None:
        self._stats["send_error"] += 1
        self._log.debug("UDP send to %s failed: %s", target, error)

    def close(self) -> None:
        self.sock.close()


def _request_buffer(sock: DatagramSocket, level: int, option: int, force: int) -> None:
    if _LINUX:
        try:  # as root the FORCE variant goes past the sysctl cap
            sock.setsockopt(level, force, SOCKET_BUFFER_SIZE)
            return
        except OSError:
            pass
    sock.setsockopt(level, option, SOCKET_BUFFER_SIZE)


def _supported(probe: Callable[[], object]) -> bool:
    try:
        probe()
    except OSError:
        return False
    return True
