"""The one value the core hands a binding to put on the wire."""

from __future__ import annotations

from dataclasses import dataclass

#: A canonical UDP address: (host, port), IPv4-mapped IPv6 already turned into IPv4.
Addr = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Transmit:
    """One UDP datagram to send: `data` to `addr`."""

    data: bytes
    addr: Addr
