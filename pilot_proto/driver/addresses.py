"""Canonical addresses (DESIGN 2), the one form of a UDP endpoint the core ever sees.

A socket hands out `(host, port)` or `(host, port, flowinfo, scope_id)`; users write
endpoints by hand. Both become `(host, port)`: IPv4-mapped IPv6 as IPv4, IPv6 compressed,
and a scope id kept only where it means something, on link-local addresses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from ..errors import LocalProtocolError
from ..transmit import Addr

__all__ = ["canonical_address", "socket_address"]


def canonical_address(raw: Sequence[Any]) -> Addr:
    """DESIGN 2: `(host, port)` with IPv4-mapped IPv6 turned into IPv4 and a scope id kept
    only on link-local addresses. Takes socket addresses (2- or 4-tuples) and user input;
    a host that is not an IP address raises LocalProtocolError (resolve names first)."""
    host, port = raw[0], raw[1]
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 0xFFFF:
        raise LocalProtocolError(f"port {port!r} is not in 0-65535")
    name, _, zone = str(host).partition("%")
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        raise LocalProtocolError(
            f"{host!r} is not an IP address; resolve host names before using them"
        ) from None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return (str(ip.ipv4_mapped), port)
        if ip.is_link_local:
            # A socket gives the scope as a number (4th element); users may write "%eth0".
            scope = str(raw[3]) if len(raw) > 3 and raw[3] else zone
            if scope:
                return (f"{ip.compressed}%{scope}", port)
        return (ip.compressed, port)
    return (str(ip), port)


def socket_address(addr: Addr, ipv6_socket: bool) -> tuple[Any, ...] | None:
    """The address to hand `sendto` on an AF_INET (False) or AF_INET6 socket (True);
    None when the socket's family cannot reach it (IPv6 from an IPv4 socket)."""
    host, port = addr
    if ":" not in host:
        # A dual-stack AF_INET6 socket reaches IPv4 through the mapped form.
        return ("::ffff:" + host, port, 0, 0) if ipv6_socket else addr
    if not ipv6_socket:
        return None
    name, _, zone = host.partition("%")
    if zone.isdigit():
        return (name, port, 0, int(zone))
    return (host, port, 0, 0)  # an interface name: the socket module resolves it
