"""The one value the core hands a binding to put on the wire."""

from __future__ import annotations

from typing import Final

#: A canonical UDP address: (host, port), IPv4-mapped IPv6 already turned into IPv4.
Addr = tuple[str, int]


class Transmit:
    """One UDP datagram to send: `data` to `addr`.

    `ttl`, when set, is the IP TTL (IPv6 hop limit) the binding sends this datagram with:
    the core asks for a low one to open its own NAT without reaching the peer's (DESIGN 7,
    the Linux conntrack trap). None: the socket's default.

    A value: equal by content, never changed after construction (the fields are `Final`
    for type checkers). A plain slotted class, not a frozen dataclass: one is built per
    datagram sent, and a frozen dataclass's `__init__` costs about three times as much.
    """

    __slots__ = ("addr", "data", "ttl")

    def __init__(self, data: bytes, addr: Addr, ttl: int | None = None) -> None:
        self.data: Final = data
        self.addr: Final = addr
        self.ttl: Final = ttl

    def __eq__(self, other: object) -> bool:
        if type(other) is not Transmit:
            return NotImplemented
        return self.data == other.data and self.addr == other.addr and self.ttl == other.ttl

    def __hash__(self) -> int:
        return hash((self.data, self.addr, self.ttl))

    def __repr__(self) -> str:
        return f"Transmit(data={self.data!r}, addr={self.addr!r}, ttl={self.ttl!r})"
