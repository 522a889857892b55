"""The seam between the daemon's control plane and the network (Node, rendezvous client).

The control plane (`control.py`) owns every local decision and every byte of local
state: trust store, pending requests, pins, inbox, received files. The network service
owns the wire: the `pilot_proto.Node` on the asyncio binding, the rendezvous client,
sessions and transfers. They meet here, in two small protocols:

- `NetworkService`: what the control plane asks of the network. Each method is one wire
  operation; none of them touches the store. Failures are `PilotctlError`s with the
  DESIGN 9 codes (`connection_failed`, `timeout`, `not_found`, `already_exists`...).
- `NetworkHost`: what the network hands back to the control plane (a trust request
  arrived, a message arrived, ...). The host persists first and returns after; only then
  does the network acknowledge (RECEIPT after the inbox file is durable, DESIGN 5).

The daemon binds the UDP socket itself and passes it in `NetworkConfig`, so a port in
use is reported the same way whatever network service runs, and `daemon stop` knows
the port is released when the daemon closes it.

`netservice.PilotNetwork` is the real one (`default_network_service`).
`UnavailableNetwork` refuses every wire operation with `connection_failed`; it is kept
for embedding the control plane without a network (tests, tools).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ErrorCode, PilotctlError
from .inbox import IncomingMessage
from .names import Endpoint
from .received import IncomingFile

if TYPE_CHECKING:
    from pilot_proto.identity import Identity

__all__ = [
    "FileSent",
    "NetworkConfig",
    "NetworkHost",
    "NetworkService",
    "NetworkStatus",
    "PeerPath",
    "PeerRecord",
    "TrustAnswerNote",
    "TrustRequestNote",
    "UnavailableNetwork",
    "default_network_service",
]


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """A peer as the network verified it: the key hashes to the address (DESIGN 3)."""

    address: str
    public_key: bytes
    hostname: str | None = None


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """Everything the network service needs to start."""

    identity: Identity
    udp_socket: socket.socket  # bound by the daemon, non-blocking; the service must not close it
    rendezvous: Endpoint  # `key` set when pinned (given with #KEY or learned earlier)
    hostname: str | None
    public: bool  # accept introductions from anyone (DESIGN 8)
    trust_auto_approve: bool
    handshake_floor_ns: int  # pass to NodeConfig.initiation_floor_ns
    state_dir: Path


@dataclass(frozen=True, slots=True)
class NetworkStatus:
    """What `info` shows about the network side."""

    available: bool
    registered: bool = False
    nat_type: str | None = None
    candidates: Sequence[str] = ()
    detail: str | None = None  # a sentence for humans when something is off


@dataclass(frozen=True, slots=True)
class PeerPath:
    """One row of `peers` (DESIGN 7 peer path report)."""

    node_id: str
    hostname: str | None
    path: str  # direct | relay | none
    endpoint: str | None
    rtt_ms: float | None
    reason: str | None  # symmetric-nat | peer-filtered | punch-timeout | ... when not direct

    def as_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "hostname": self.hostname,
            "path": self.path,
            "endpoint": self.endpoint,
            "rtt_ms": self.rtt_ms,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class FileSent:
    name: str
    bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class TrustRequestNote:
    """A TRUST_REQUEST that arrived (mailbox or in-session), sender already verified."""

    request_id: str
    sender: PeerRecord
    justification: str | None
    sent_at: float  # the sender's wall-clock timestamp


@dataclass(frozen=True, slots=True)
class TrustAnswerNote:
    """A TRUST_ACCEPT or TRUST_REJECT for a request we sent."""

    request_id: str
    sender: PeerRecord
    accepted: bool


class NetworkHost(Protocol):
    """Implemented by the control plane; called by the network service."""

    def trusted_keys(self) -> Mapping[str, bytes]:
        """address -> Ed25519 public key of every trusted peer (the core's trust policy)."""
        ...

    async def on_trust_request(self, note: TrustRequestNote) -> None:
        """Store it as pending (or drop it in a cool-down, or auto-approve)."""
        ...

    async def on_trust_answer(self, note: TrustAnswerNote) -> None:
        """Counts only if it matches a request we sent; an accept trusts the peer."""
        ...

    async def on_message(self, message: IncomingMessage) -> None:
        """Returns once the message is durably in the inbox (send the RECEIPT then).

        Duplicates (same id) return at once without a second inbox file. Raises
        PilotctlError(not_trusted) for a sender that is not trusted.
        """
        ...

    def begin_file(self, sender: str, name: str, size: int, sha256: str) -> IncomingFile:
        """Start landing a file in received/; the network writes chunks then commits."""
        ...

    async def on_file(self, sender: str, path: Path, sha256: str) -> None:
        """A file was committed (hash-checked, on disk): record and announce it."""
        ...

    def on_delivery(self, message_id: str, delivered: bool, error: str | None) -> None:
        """A message we sent was acknowledged (RECEIPT) or given up."""
        ...

    def on_rendezvous_key(self, key: str) -> None:
        """The rendezvous key learned on first use (XX), to pin it for next time."""
        ...

    def on_handshake_floor(self, floor_ns: int) -> None:
        """Persist `Node.initiation_floor` (DESIGN 2: timestamps never go back)."""
        ...

    def publish_event(self, kind: str, data: Mapping[str, Any]) -> None:
        """Put an event on the local event stream (`GET /v1/events`)."""
        ...


class NetworkService(Protocol):
    """Implemented by the network side; called by the control plane."""

    async def start(self, config: NetworkConfig, host: NetworkHost) -> None:
        """Bring the node up and register at the rendezvous; raise PilotctlError on failure
        (rendezvous unreachable: connection_failed; hostname taken: already_exists)."""
        ...

    async def stop(self) -> None:
        """Close sessions and stop every task. Must not close `config.udp_socket`."""
        ...

    def status(self) -> NetworkStatus: ...

    async def lookup(self, target: str) -> PeerRecord:
        """Resolve a hostname or address through the rendezvous (not_found if unknown)."""
        ...

    async def register_hostname(self, hostname: str | None) -> None:
        """Claim (or, with None, release) our hostname (already_exists if taken)."""
        ...

    async def publish_allow_list(self, addresses: Sequence[str]) -> None:
        """Replace the allow list at the rendezvous with exactly `addresses`."""
        ...

    def peer_trusted(self, address: str) -> None:
        """The store trusts `address` now: so must the node, before anything awaits (a
        send racing the peer's accept reads the store and then sends through the node)."""
        ...

    async def send_trust_request(
        self, peer: PeerRecord, request_id: str, justification: str | None
    ) -> str:
        """Send TRUST_REQUEST inside a session ("session": one exists or can be made,
        e.g. the peer is public) or through the mailbox ("mailbox"); returns the way."""
        ...

    async def send_trust_answer(self, peer: PeerRecord, request_id: str, accept: bool) -> None:
        """Post TRUST_ACCEPT / TRUST_REJECT; returns once posted."""
        ...

    async def forget_peer(self, address: str) -> None:
        """Untrust: close the peer's sessions and drop its queued traffic."""
        ...

    async def send_message(
        self,
        peer: PeerRecord,
        message_id: str,
        type: str,
        data: bytes,
        reply_to: str | None,
        timeout: float,
    ) -> None:
        """Returns when the peer's RECEIPT arrives; PilotctlError(timeout) otherwise."""
        ...

    async def send_file(
        self, peer: PeerRecord, path: Path, timeout: float, name: str | None = None
    ) -> FileSent:
        """Returns once the receiver has the whole file, hash-checked, on disk. `name` is
        the name the receiver is told (default: the file's own); it sanitizes it."""
        ...

    async def peers(self) -> list[PeerPath]: ...

    async def ping(self, peer: PeerRecord, count: int, timeout: float) -> list[float | None]:
        """Round-trip times in ms, None for a lost probe."""
        ...

    async def bench(self, peer: PeerRecord, size: int, timeout: float) -> dict[str, Any]:
        """Send `size` bytes through the peer's echo; report throughput."""
        ...

    async def call(self, operation: str, params: Mapping[str, Any]) -> Any:
        """Operations of later issues (connect, send, recv, listen, publish, subscribe)."""
        ...


UNAVAILABLE_MESSAGE = "the network service is not available in this build"
UNAVAILABLE_HINT = (
    "this pilot_daemon build has the local control plane only (trust store, inbox, "
    "local API); network commands need the network service, which is not wired in yet"
)


@dataclass
class UnavailableNetwork:
    """The network service of this build: nothing on the wire, every operation refused."""

    started: bool = field(default=False, init=False)

    def _refuse(self, what: str) -> PilotctlError:
        return PilotctlError(
            ErrorCode.CONNECTION_FAILED, f"{what}: {UNAVAILABLE_MESSAGE}", UNAVAILABLE_HINT
        )

    async def start(self, config: NetworkConfig, host: NetworkHost) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    def status(self) -> NetworkStatus:
        return NetworkStatus(available=False, detail=UNAVAILABLE_MESSAGE)

    async def lookup(self, target: str) -> PeerRecord:
        raise self._refuse(f"cannot look up {target}")

    async def register_hostname(self, hostname: str | None) -> None:
        raise self._refuse("cannot register the hostname")

    async def publish_allow_list(self, addresses: Sequence[str]) -> None:
        raise self._refuse("cannot publish the allow list")

    def peer_trusted(self, address: str) -> None:
        pass  # no node: nothing to tell

    async def send_trust_request(
        self, peer: PeerRecord, request_id: str, justification: str | None
    ) -> str:
        raise self._refuse("cannot send the trust request")

    async def send_trust_answer(self, peer: PeerRecord, request_id: str, accept: bool) -> None:
        raise self._refuse("cannot send the trust answer")

    async def forget_peer(self, address: str) -> None:
        raise self._refuse("cannot close the peer's sessions")

    async def send_message(
        self,
        peer: PeerRecord,
        message_id: str,
        type: str,
        data: bytes,
        reply_to: str | None,
        timeout: float,
    ) -> None:
        raise self._refuse("cannot send the message")

    async def send_file(
        self, peer: PeerRecord, path: Path, timeout: float, name: str | None = None
    ) -> FileSent:
        raise self._refuse("cannot send the file")

    async def peers(self) -> list[PeerPath]:
        raise self._refuse("cannot list peers")

    async def ping(self, peer: PeerRecord, count: int, timeout: float) -> list[float | None]:
        raise self._refuse("cannot ping")

    async def bench(self, peer: PeerRecord, size: int, timeout: float) -> dict[str, Any]:
        raise self._refuse("cannot run the benchmark")

    async def call(self, operation: str, params: Mapping[str, Any]) -> Any:
        raise self._refuse(f"cannot {operation}")


def default_network_service() -> NetworkService:
    """The network service `pilotctl daemon start` runs: the Node on the asyncio binding
    plus the rendezvous client (netservice.py)."""
    from .netservice import PilotNetwork

    return PilotNetwork()
