"""The one value the core hands a binding to put on the wire."""

from __future__ import annotations

from dataclasses import dataclass

#: A canonical UDP address: (host, port), IPv4-mapped IPv6 already turned into IPv4.
Addr = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Transmit:
    """One UDP datagram to send: `data` to `addr`.

    `ttl`, when set, is the IP TTL (IPv6 hop limit) the binding sends this datagram with:
    the core asks for a low one to open its own NAT without reaching the peer's (DESIGN 7,
    the Linux conntrack trap). None: the socket's default.
    """

    data: bytes
    addr: Addr
    ttl: int | None = None
