"""Local candidate endpoints: the addresses of this host's interfaces (DESIGN 7).

A node bound to one address offers that address. A node bound to a wildcard (`0.0.0.0`,
`::`) offers the address of every interface that is up, read from the kernel with
`getifaddrs(3)` through ctypes (no new dependency), never guessed from RFC 1918 ranges.
Loopback addresses are offered only when the rendezvous itself is on loopback (every
peer then runs on this host); a remote peer would take 127.0.0.1 for itself. IPv6
link-local addresses are left out: their scope id means nothing on another host.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import socket
import sys
from collections.abc import Iterable

__all__ = ["interface_addresses", "local_candidates"]

#: A locator holds at most 16 endpoints; leave room for what the NAT issue adds.
MAX_CANDIDATES = 12
_IFF_UP = 0x1


class _IfAddrs(ctypes.Structure):
    pass


_IfAddrs._fields_ = [
    ("ifa_next", ctypes.POINTER(_IfAddrs)),
    ("ifa_name", ctypes.c_char_p),
    ("ifa_flags", ctypes.c_uint),
    ("ifa_addr", ctypes.c_void_p),
    ("ifa_netmask", ctypes.c_void_p),
    ("ifa_ifu", ctypes.c_void_p),
    ("ifa_data", ctypes.c_void_p),
]

# struct sockaddr starts with sa_family: a u16 on Linux, a u8 after sa_len on the BSDs.
_BSD_SOCKADDR = sys.platform == "darwin" or "bsd" in sys.platform


def _family(pointer: int) -> int:
    if _BSD_SOCKADDR:
        return ctypes.c_uint8.from_address(pointer + 1).value
    return ctypes.c_uint16.from_address(pointer).value


def interface_addresses() -> list[tuple[str, str]]:
    """(interface name, address) of every address on an interface that is up."""
    libc_name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        getifaddrs = libc.getifaddrs
        freeifaddrs = libc.freeifaddrs
    except (OSError, AttributeError):
        return []
    getifaddrs.argtypes = [ctypes.POINTER(ctypes.POINTER(_IfAddrs))]
    getifaddrs.restype = ctypes.c_int
    freeifaddrs.argtypes = [ctypes.POINTER(_IfAddrs)]
    freeifaddrs.restype = None
    head = ctypes.POINTER(_IfAddrs)()
    if getifaddrs(ctypes.byref(head)) != 0:
        return []
    found: list[tuple[str, str]] = []
    try:
        entry = head
        while entry:
            item = entry.contents
            pointer = item.ifa_addr
            if pointer and item.ifa_flags & _IFF_UP:
                name = (item.ifa_name or b"?").decode(errors="replace")
                family = _family(pointer)
                if family == socket.AF_INET:
                    raw = ctypes.string_at(pointer + 4, 4)
                    found.append((name, socket.inet_ntop(socket.AF_INET, raw)))
                elif family == socket.AF_INET6:
                    raw = ctypes.string_at(pointer + 8, 16)
                    found.append((name, socket.inet_ntop(socket.AF_INET6, raw)))
            entry = item.ifa_next
    finally:
        freeifaddrs(head)
    return found


def local_candidates(
    bound: tuple[str, int], *, include_loopback: bool,
    addresses: Iterable[tuple[str, str]] | None = None,
) -> list[tuple[str, int]]:
    """The endpoints peers may try to reach a socket bound to `bound` at."""
    host, port = bound[0], bound[1]
    wildcard_v4, wildcard_v6 = host == "0.0.0.0", host == "::"
    if not (wildcard_v4 or wildcard_v6):
        return [(host, port)]
    out: list[tuple[str, int]] = []
    listed = interface_addresses() if addresses is None else addresses
    for _name, text in listed:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
        if ip.version == 6 and not wildcard_v6:
            continue  # an AF_INET socket cannot use it
        if ip.is_loopback and not include_loopback:
            continue
        if ip.version == 6 and (ip.is_link_local or ip.is_multicast):
            continue
        if ip.is_unspecified:
            continue
        candidate = (str(ip), port)
        if candidate not in out:
            out.append(candidate)
    # Loopback last: a peer on another host never needs it, one on this host finds it.
    out.sort(key=lambda c: ipaddress.ip_address(c[0]).is_loopback)
    return out[:MAX_CANDIDATES]
