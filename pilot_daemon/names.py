"""Parsing and checking of the names users type: hostnames, addresses, HOST:PORT[#KEY].

pilotctl checks values here before it talks to the daemon, and the daemon checks them
again for other API clients. No cryptography here: the address check is a pattern
match (the same one as `pilot_proto.identity.is_address`), so pilotctl stays fast.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from .errors import ErrorCode, PilotctlError

# DESIGN 3: RFC 1123 labels, lowercase letters, digits, hyphens, 1-63 characters, no
# leading or trailing hyphen.
_HOSTNAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# DESIGN 3: eight colon-separated groups of four lowercase hex digits, never compressed.
_ADDRESS = re.compile(r"[0-9a-f]{4}(?::[0-9a-f]{4}){7}")
# A message id is 128 random bits in lowercase hex.
_MESSAGE_ID = re.compile(r"[0-9a-f]{32}")
# Rendezvous keys are opaque to the daemon's control plane; the network side decodes
# them. Accept the hex and base64 alphabets, nothing that could confuse a shell or a URL.
_KEY = re.compile(r"[A-Za-z0-9+/=_-]{16,256}")


def is_hostname(text: str) -> bool:
    return _HOSTNAME.fullmatch(text) is not None


def is_address(text: str) -> bool:
    return _ADDRESS.fullmatch(text) is not None


def is_message_id(text: str) -> bool:
    return _MESSAGE_ID.fullmatch(text) is not None


def check_hostname(text: str) -> str:
    if not is_hostname(text):
        raise PilotctlError(
            ErrorCode.INVALID_ARGUMENT,
            f"invalid hostname {text!r}",
            "a hostname is 1-63 lowercase letters, digits and hyphens, "
            "not starting or ending with a hyphen",
        )
    return text


def check_address(text: str) -> str:
    if not is_address(text):
        raise PilotctlError(
            ErrorCode.INVALID_ARGUMENT,
            f"invalid node address {text!r}",
            "a node address is eight groups of four lowercase hex digits, as shown by "
            "`pilotctl pending` or `pilotctl info` (node_id)",
        )
    return text


def check_peer(text: str) -> str:
    """A NAME|ADDR argument: either a node address or a hostname."""
    if is_address(text) or is_hostname(text):
        return text
    raise PilotctlError(
        ErrorCode.INVALID_ARGUMENT,
        f"{text!r} is neither a hostname nor a node address",
        "give a hostname such as agent-b, or a node address (eight groups of four hex "
        "digits)",
    )


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A HOST:PORT pair, with the optional pinned key of a rendezvous (`#KEY`)."""

    host: str
    port: int
    key: str | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{host}:{self.port}"
        return f"{text}#{self.key}" if self.key else text

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_endpoint(text: str, *, what: str, allow_key: bool = False,
                   allow_port_zero: bool = False) -> Endpoint:
    """Parse HOST:PORT (IPv6 in brackets), and `#KEY` when `allow_key`."""
    example = "HOST:PORT#KEY" if allow_key else "HOST:PORT"

    def bad(why: str) -> PilotctlError:
        return PilotctlError(
            ErrorCode.INVALID_ARGUMENT,
            f"invalid {what} {text!r}: {why}",
            f"expected {example}, e.g. 127.0.0.1:7000" + ("#KEY" if allow_key else ""),
        )

    body, sep, key = text.partition("#")
    if sep:
        if not allow_key:
            raise bad("no #KEY part is allowed here")
        if not _KEY.fullmatch(key):
            raise bad("the key after # must be 16-256 characters of hex or base64")
    if body.startswith("["):
        host, close, rest = body[1:].partition("]")
        if not close or not rest.startswith(":"):
            raise bad("an IPv6 address goes in brackets: [::1]:7000")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"{host!r} is not an IPv6 address") from None
    else:
        host, colon, port_text = body.rpartition(":")
        if not colon or not host:
            raise bad("missing :PORT")
        if ":" in host:
            raise bad("an IPv6 address goes in brackets: [::1]:7000")
        if not (_is_ipv4(host) or _is_dns_name(host)):
            raise bad(f"{host!r} is not a host name or IPv4 address")
    if not port_text.isdecimal():
        raise bad("the port must be a number")
    port = int(port_text)
    if not (0 if allow_port_zero else 1) <= port <= 65535:
        raise bad("the port must be between 1 and 65535")
    return Endpoint(host, port, key or None)


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _is_dns_name(text: str) -> bool:
    labels = text.rstrip(".").split(".")
    return len(text) <= 253 and all(
        re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", label)
        for label in labels
    )
