"""The daemon's control plane: every command's local logic, and the network's host.

Each public coroutine here is one local API operation and returns JSON-ready data (the
`data` of the ok envelope) or raises `PilotctlError`. Local decisions live here: who
is trusted, what is pending, when a cool-down ends, whether a pinned name's key
changed, what lands in the inbox. The wire lives behind `NetworkService`.

Order of effects, where it matters:
- approve: allow list published and accept posted first, then the trust stored, so a
  failed approve leaves nothing half-done and can simply be retried.
- reject, untrust: the local change comes first and stands even if the network is
  down (revoking must never fail for network reasons); the answer reports whether the
  network part happened. The network service republishes the allow list when it starts.
- incoming message: delivery record `receiving`, inbox file durable, record
  `persisted`, then return (the network sends the RECEIPT after that).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ErrorCode, PilotctlError
from .events import Event, EventBus
from .inbox import Inbox, IncomingMessage, inbox_entry, iso_utc
from .limits import (
    DELIVERY_RECORD_TTL_SECONDS,
    MAX_JUSTIFICATION_BYTES,
    MAX_PENDING_REQUESTS,
    PENDING_TTL_SECONDS,
    SEND_TIMEOUT_SECONDS,
)
from .names import Endpoint, check_address, check_hostname, check_peer, is_address
from .network import (
    NetworkService,
    PeerRecord,
    TrustAnswerNote,
    TrustRequestNote,
)
from .payload import check_message
from .received import IncomingFile, ReceivedFiles
from .store import Direction, PinOutcome, Store

if TYPE_CHECKING:
    from pilot_proto.identity import Identity

log = logging.getLogger("pilot_daemon.control")

__all__ = ["ControlPlane", "DaemonFacts"]


@dataclass(frozen=True, slots=True)
class DaemonFacts:
    """What the running daemon process is, for `info` and `daemon status`."""

    pid: int
    started_at: float
    version: str
    state_dir: Path
    socket_path: Path
    listen: str
    rendezvous: Endpoint
    public: bool
    trust_auto_approve: bool


class ControlPlane:
    """Implements the local API operations and the `NetworkHost` protocol."""

    def __init__(
        self,
        *,
        identity: Identity,
        store: Store,
        inbox: Inbox,
        received: ReceivedFiles,
        bus: EventBus,
        network: NetworkService,
        facts: DaemonFacts,
        request_shutdown: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.store = store
        self.inbox = inbox
        self.received = received
        self.bus = bus
        self.network = network
        self.facts = facts
        self._request_shutdown = request_shutdown
        self._clock = clock
        #: Trust requests refused because MAX_PENDING_REQUESTS were already pending.
        self.refused_pending_full = 0

    # --- start-up ---

    def recover(self) -> None:
        """Settle what a crash interrupted: temp files, half-recorded deliveries."""
        now = self._clock()
        removed = self.inbox.recover() + self.received.recover()
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted write", removed)
        for record in self.store.list_deliveries(direction=Direction.IN, state="receiving"):
            if self.inbox.find(record.message_id) is not None:
                self.store.set_delivery_state(record.message_id, Direction.IN, "persisted", now)
        self.store.prune_expired(now)

    def housekeeping(self) -> None:
        """Periodic: forget expired requests and finished cool-downs, and delivery records
        past the de-duplication horizon."""
        now = self._clock()
        self.store.prune_expired(now)
        self.store.prune_deliveries(now - DELIVERY_RECORD_TTL_SECONDS)

    # --- daemon ---

    async def health(self) -> dict[str, Any]:
        return {
            "pid": self.facts.pid,
            "node_id": self.identity.address,
            "uptime_s": round(self._clock() - self.facts.started_at, 3),
        }

    async def shutdown(self) -> dict[str, Any]:
        self._request_shutdown()
        return {"pid": self.facts.pid, "stopping": True}

    async def info(self) -> dict[str, Any]:
        settings = self.store.load_settings()
        status = self.network.status()
        now = self._clock()
        rendezvous = self.facts.rendezvous
        if rendezvous.key is None and settings.rendezvous_key:
            # Learned on first use (Noise XX) and pinned since: show what to pin elsewhere.
            rendezvous = Endpoint(rendezvous.host, rendezvous.port, settings.rendezvous_key)
        return {
            "node_id": self.identity.address,
            "hostname": settings.hostname,
            "public_key": self.identity.public_key.hex(),
            "listen": self.facts.listen,
            "rendezvous": str(rendezvous),
            "nat_type": status.nat_type,
            "candidates": list(status.candidates),
            "public": self.facts.public,
            "trust_auto_approve": self.facts.trust_auto_approve,
            "network": {
                "available": status.available,
                "registered": status.registered,
                "detail": status.detail,
            },
            "trusted_peers": len(self.store.list_trust()),
            "pending_requests": len(self.store.list_pending(now)),
            "inbox_messages": self.inbox.count(),
            "pid": self.facts.pid,
            "version": self.facts.version,
            "state_dir": str(self.facts.state_dir),
            "socket": str(self.facts.socket_path),
            "started_at": iso_utc(self.facts.started_at),
            "uptime_s": round(now - self.facts.started_at, 3),
        }

    # --- trust: local views ---

    async def pending(self) -> list[dict[str, Any]]:
        return [
            {
                "node_id": p.from_address,
                "hostname": p.hostname,
                "justification": p.justification,
                "received_at": iso_utc(p.received_at),
                "expires_at": iso_utc(p.expires_at),
            }
            for p in self.store.list_pending(self._clock())
        ]

    async def trust(self) -> list[dict[str, Any]]:
        return [
            {"node_id": t.address, "hostname": t.hostname, "since": iso_utc(t.since)}
            for t in self.store.list_trust()
        ]

    # --- trust: operations that reach the network ---

    async def handshake(self, target: str, justification: str | None) -> dict[str, Any]:
        check_peer(target)
        if justification is not None and len(justification.encode()) > MAX_JUSTIFICATION_BYTES:
            raise PilotctlError(
                ErrorCode.TOO_LARGE,
                f"the justification is {len(justification.encode())} bytes; the limit is "
                f"{MAX_JUSTIFICATION_BYTES}",
                "shorten it",
            )
        known = self._trusted_record(target)
        if known is not None:
            raise PilotctlError(
                ErrorCode.ALREADY_EXISTS,
                f"{_label(known)} is already trusted",
                f"send it a message: pilotctl send-message {target} --data '...'",
            )
        peer = await self._lookup(target, pin=True)
        if peer.address == self.identity.address:
            raise PilotctlError(ErrorCode.INVALID_ARGUMENT,
                                f"{target} is this node itself", "name another node")
        if self.store.get_trust(peer.address) is not None:
            raise PilotctlError(ErrorCode.ALREADY_EXISTS, f"{_label(peer)} is already trusted")
        now = self._clock()
        if self.store.get_pending(peer.address, now) is not None:
            # They asked us first: asking them back is agreeing.
            result = await self.approve(peer.address)
            return {**result, "status": "approved"}
        rejection = self.store.active_rejection(peer.address, "by_peer", now)
        if rejection is not None:
            raise PilotctlError(
                ErrorCode.NOT_TRUSTED,
                f"{_label(peer)} rejected our trust request at {iso_utc(rejection.rejected_at)}",
                f"you may ask again after {iso_utc(rejection.until)}",
            )
        request_id = secrets.token_hex(16)
        # Recorded before sending, so an accept that races back still finds its request.
        self.store.add_outgoing(request_id, peer.address, peer.hostname, now)
        try:
            via = await self.network.send_trust_request(peer, request_id, justification)
        except BaseException:
            self.store.remove_outgoing_to(peer.address)
            raise
        return {
            "node_id": peer.address,
            "hostname": peer.hostname,
            "request_id": request_id,
            "status": "requested",
            "via": via,
        }

    async def approve(self, address: str) -> dict[str, Any]:
        check_address(address)
        now = self._clock()
        request = self.store.get_pending(address, now)
        if request is None:
            if self.store.get_trust(address) is not None:
                raise PilotctlError(ErrorCode.ALREADY_EXISTS, f"{address} is already trusted")
            raise PilotctlError(
                ErrorCode.NOT_FOUND,
                f"no pending trust request from {address}",
                "list them: pilotctl pending",
            )
        peer = PeerRecord(request.from_address, request.public_key, request.hostname)
        allow = sorted({t.address for t in self.store.list_trust()} | {peer.address})
        await self.network.publish_allow_list(allow)
        # Trusted here (store and node) before the accept leaves: the requester's first
        # message can arrive while the accept is still being posted.
        trusted = self._grant_trust(peer, now)
        self.network.peer_trusted(peer.address)
        try:
            await self.network.send_trust_answer(peer, request.request_id, True)
        except BaseException:
            # Not told, not trusted: the request stays pending and approve can be rerun.
            self.store.remove_trust(peer.address)
            await self._best_effort(self.network.forget_peer(peer.address), "")
            raise
        self.store.remove_pending(address)
        self.bus.publish("trust.approved", {"node_id": peer.address, "hostname": peer.hostname})
        return {"node_id": trusted.address, "hostname": trusted.hostname,
                "since": iso_utc(trusted.since)}

    async def reject(self, address: str) -> dict[str, Any]:
        check_address(address)
        now = self._clock()
        request = self.store.get_pending(address, now)
        if request is None:
            raise PilotctlError(
                ErrorCode.NOT_FOUND,
                f"no pending trust request from {address}",
                "list them: pilotctl pending",
            )
        rejection = self.store.record_rejection(address, "by_us", now)
        self.store.remove_pending(address)
        peer = PeerRecord(request.from_address, request.public_key, request.hostname)
        warning = await self._best_effort(
            self.network.send_trust_answer(peer, request.request_id, False),
            "the rejection was recorded but the requester could not be told",
        )
        return {
            "node_id": address,
            "hostname": request.hostname,
            "rejected": True,
            "cooldown_until": iso_utc(rejection.until),
            "notified": warning is None,
            "warning": warning,
        }

    async def untrust(self, address: str) -> dict[str, Any]:
        check_address(address)
        peer = self.store.get_trust(address)
        if peer is None:
            raise PilotctlError(
                ErrorCode.NOT_FOUND, f"{address} is not trusted", "list them: pilotctl trust"
            )
        self.store.remove_trust(address)
        self.store.remove_outgoing_to(address)
        allow = sorted(t.address for t in self.store.list_trust())
        warning = await self._best_effort(
            self._forget(address, allow),
            "the peer is no longer trusted here, but the network could not be updated "
            "(the allow list is republished when the network service starts)",
        )
        self.bus.publish("trust.removed", {"node_id": address, "hostname": peer.hostname})
        return {
            "node_id": address,
            "hostname": peer.hostname,
            "removed": True,
            "network_updated": warning is None,
            "warning": warning,
        }

    async def _forget(self, address: str, allow: list[str]) -> None:
        await self.network.forget_peer(address)
        await self.network.publish_allow_list(allow)

    # --- names ---

    async def find(self, name: str) -> dict[str, Any]:
        check_peer(name)
        peer = await self._lookup(name, pin=False)
        return {"node_id": peer.address, "hostname": peer.hostname,
                "public_key": peer.public_key.hex()}

    async def set_hostname(self, hostname: str) -> dict[str, Any]:
        check_hostname(hostname)
        await self.network.register_hostname(hostname)
        self.store.update_settings(hostname=hostname)
        return {"node_id": self.identity.address, "hostname": hostname}

    async def clear_hostname(self) -> dict[str, Any]:
        await self.network.register_hostname(None)
        self.store.update_settings(hostname=None)
        return {"node_id": self.identity.address, "hostname": None}

    # --- messages ---

    async def send_message(
        self,
        target: str,
        type: str,
        data: bytes,
        *,
        reply_to: str | None = None,
        wait: float | None = None,
        timeout: float = SEND_TIMEOUT_SECONDS,
    ) -> dict[str, Any]:
        check_peer(target)
        check_message(type, data)
        loop_deadline = time.monotonic() + timeout
        peer = await self._resolve_trusted(target, timeout)
        message_id = secrets.token_hex(16)
        now = self._clock()
        self.store.record_delivery(
            message_id, Direction.OUT, peer.address, type, len(data), reply_to, "sending", now
        )
        # Subscribe before sending: a fast reply must not slip past us.
        replies = self.bus.subscribe({"message"}) if wait is not None else None
        try:
            try:
                await self.network.send_message(
                    peer, message_id, type, data, reply_to,
                    max(0.0, loop_deadline - time.monotonic()),
                )
            except PilotctlError as exc:
                self.store.set_delivery_state(message_id, Direction.OUT, "failed", self._clock())
                raise exc
            self.store.set_delivery_state(message_id, Direction.OUT, "delivered", self._clock())
            result: dict[str, Any] = {
                "id": message_id,
                "to": peer.address,
                "hostname": peer.hostname,
                "type": type,
                "bytes": len(data),
                "reply_to": reply_to,
                "delivered": True,
            }
            if replies is not None and wait is not None:
                result["reply"] = await self._await_reply(replies, message_id, wait)
            return result
        finally:
            if replies is not None:
                replies.close()

    async def _await_reply(self, replies: Any, message_id: str, wait: float) -> dict[str, Any]:
        def is_reply(event: Event) -> bool:
            return event.data.get("reply_to") == message_id

        event = await replies.wait_for(is_reply, wait)
        if event is None:
            raise PilotctlError(
                ErrorCode.TIMEOUT,
                f"message {message_id} was delivered, but no reply came within {wait:g} s",
                f"a late reply still lands in the inbox: pilotctl inbox (reply_to {message_id})",
            )
        return self.inbox.show(str(event.data["id"]))

    async def reply(
        self, ref: str, type: str, data: bytes, *, wait: float | None = None
    ) -> dict[str, Any]:
        original = self.inbox.show(ref)
        sender = str(original.get("from", ""))
        if not is_address(sender):
            raise PilotctlError(
                ErrorCode.INTERNAL, f"inbox message {ref} has no valid sender address"
            )
        return await self.send_message(
            sender, type, data, reply_to=str(original["id"]), wait=wait
        )

    async def send_file(
        self, target: str, path: str, timeout: float, name: str | None = None
    ) -> dict[str, Any]:
        check_peer(target)
        if name is not None and not 0 < len(name.encode()) <= 1024:
            raise PilotctlError(ErrorCode.INVALID_ARGUMENT, "name must be 1-1024 bytes")
        file_path = Path(path)
        if not file_path.is_absolute():
            raise PilotctlError(ErrorCode.INVALID_ARGUMENT, f"{path}: give an absolute path")
        if not file_path.is_file():
            raise PilotctlError(ErrorCode.NOT_FOUND, f"no such file: {path}")
        peer = await self._resolve_trusted(target, timeout)
        sent = await self.network.send_file(peer, file_path, timeout, name)
        return {"to": peer.address, "hostname": peer.hostname, "name": sent.name,
                "bytes": sent.bytes, "sha256": sent.sha256, "delivered": True}

    # --- inbox, received, outbox ---

    async def inbox_list(self) -> list[dict[str, Any]]:
        return self.inbox.entries()

    async def inbox_show(self, ref: str) -> dict[str, Any]:
        return self.inbox.show(ref)

    async def inbox_remove(self, ref: str) -> dict[str, Any]:
        return {"removed": 1, "id": self.inbox.remove(ref)}

    async def inbox_clear(self) -> dict[str, Any]:
        removed = self.inbox.clear()
        self.bus.publish("inbox.cleared", {"removed": removed})
        return {"removed": removed}

    async def received_list(self) -> list[dict[str, Any]]:
        return self.received.entries()

    async def outbox_list(self) -> list[dict[str, Any]]:
        return [
            {
                "id": e.message_id,
                "to": e.peer,
                "type": e.type,
                "bytes": len(e.data) if e.data is not None else None,
                "file": e.file_path,
                "reply_to": e.reply_to,
                "state": str(e.state),
                "attempts": e.attempts,
                "created_at": iso_utc(e.created_at),
                "last_error": e.last_error,
            }
            for e in self.store.list_outbox()
        ]

    # --- diagnostics ---

    async def peers(self) -> list[dict[str, Any]]:
        rows = [p.as_json() for p in await self.network.peers()]
        for row in rows:
            if row.get("hostname") is None:
                trusted = self.store.get_trust(str(row["node_id"]))
                row["hostname"] = trusted.hostname if trusted is not None else None
        return rows

    async def ping(self, target: str, count: int, timeout: float) -> dict[str, Any]:
        check_peer(target)
        if not 1 <= count <= 100:
            raise PilotctlError(ErrorCode.INVALID_ARGUMENT, "count must be between 1 and 100")
        peer = await self._resolve_trusted(target, timeout)
        rtts = await self.network.ping(peer, count, timeout)
        answered = [r for r in rtts if r is not None]
        return {
            "node_id": peer.address,
            "hostname": peer.hostname,
            "sent": len(rtts),
            "received": len(answered),
            "rtt_ms": rtts,
            "rtt_min_ms": min(answered) if answered else None,
            "rtt_avg_ms": sum(answered) / len(answered) if answered else None,
            "rtt_max_ms": max(answered) if answered else None,
        }

    async def bench(self, target: str, size: int, timeout: float) -> dict[str, Any]:
        check_peer(target)
        peer = await self._resolve_trusted(target, timeout)
        return {"node_id": peer.address, "hostname": peer.hostname,
                **await self.network.bench(peer, size, timeout)}

    async def later(self, operation: str, params: Mapping[str, Any]) -> Any:
        """connect, send, recv, listen (streams), publish, subscribe (a later issue).
        A `target` is resolved here to a trusted peer: the network gets its address,
        hostname and key (`public_key`, hex)."""
        target = params.get("target")
        if isinstance(target, str) and operation in ("connect", "send"):
            check_peer(target)
            timeout = params.get("timeout")
            wait = float(timeout) if isinstance(timeout, int | float) and timeout > 0 \
                else SEND_TIMEOUT_SECONDS
            peer = await self._resolve_trusted(target, wait)
            params = {**params, "target": peer.address, "hostname": peer.hostname,
                      "public_key": peer.public_key.hex()}
        return await self.network.call(operation, params)

    # --- NetworkHost ---

    def trusted_keys(self) -> Mapping[str, bytes]:
        return {t.address: t.public_key for t in self.store.list_trust()}

    async def on_trust_request(self, note: TrustRequestNote) -> None:
        now = self._clock()
        sender = note.sender
        if self.store.get_trust(sender.address) is not None:
            # They lost our accept (or their state): answering again is harmless.
            await self.network.send_trust_answer(sender, note.request_id, True)
            return
        if self.store.active_rejection(sender.address, "by_us", now) is not None:
            log.info("ignored a trust request from %s: still in its cool-down", sender.address)
            return
        if (
            self.store.get_pending(sender.address, now) is None
            and self.store.count_pending(now) >= MAX_PENDING_REQUESTS
        ):
            self.refused_pending_full += 1
            log.warning(
                "refused a trust request from %s: %d requests are already pending; "
                "approve or reject some (pilotctl pending)", sender.address, MAX_PENDING_REQUESTS,
            )
            return
        justification = _truncate(note.justification, MAX_JUSTIFICATION_BYTES)
        self.store.add_pending(
            note.request_id, sender.address, sender.public_key, sender.hostname,
            justification, now,
        )
        if self.facts.trust_auto_approve:
            await self.approve(sender.address)
            return
        self.bus.publish(
            "trust.request",
            {"node_id": sender.address, "hostname": sender.hostname,
             "justification": justification},
        )

    async def on_trust_answer(self, note: TrustAnswerNote) -> None:
        outgoing = self.store.get_outgoing(note.request_id)
        if outgoing is None or outgoing.to_address != note.sender.address:
            log.info("ignored a trust answer from %s matching no request of ours",
                     note.sender.address)
            return
        now = self._clock()
        self.store.remove_outgoing_to(note.sender.address)
        if note.accepted:
            self._grant_trust(note.sender, now)
            self.network.peer_trusted(note.sender.address)
            allow = sorted(t.address for t in self.store.list_trust())
            await self._best_effort(self.network.publish_allow_list(allow), "")
            self.bus.publish("trust.accepted",
                             {"node_id": note.sender.address, "hostname": note.sender.hostname})
        else:
            self.store.record_rejection(note.sender.address, "by_peer", now)
            self.bus.publish("trust.rejected",
                             {"node_id": note.sender.address, "hostname": note.sender.hostname})

    async def on_message(self, message: IncomingMessage) -> None:
        sender = self.store.get_trust(message.sender)
        if sender is None:
            raise PilotctlError(ErrorCode.NOT_TRUSTED, f"{message.sender} is not trusted")
        record = self.store.get_delivery(message.id, Direction.IN)
        if record is not None and record.state == "persisted":
            return  # a duplicate: the RECEIPT goes out again, no second inbox file
        now = self._clock()
        if record is None:
            self.store.record_delivery(
                message.id, Direction.IN, message.sender, message.type, len(message.data),
                message.reply_to, "receiving", now,
            )
        # from_hostname comes from our verified trust record, never from the sender.
        local = IncomingMessage(
            message.id, message.type, message.sender, sender.hostname, message.data,
            message.reply_to, message.received_at,
        )
        path = self.inbox.write(local)
        self.store.set_delivery_state(message.id, Direction.IN, "persisted", self._clock())
        entry = inbox_entry(local)
        entry.pop("data", None)
        entry.pop("encoding", None)
        self.bus.publish("message", {**entry, "file": str(path)})

    def begin_file(self, sender: str, name: str, size: int, sha256: str) -> IncomingFile:
        if self.store.get_trust(sender) is None:
            raise PilotctlError(ErrorCode.NOT_TRUSTED, f"{sender} is not trusted")
        return self.received.begin(name, size, sha256)

    async def on_file(self, sender: str, path: Path, sha256: str) -> None:
        peer = self.store.get_trust(sender)
        self.bus.publish(
            "file",
            {"from": sender, "from_hostname": peer.hostname if peer else None,
             "name": path.name, "path": str(path), "bytes": path.stat().st_size,
             "sha256": sha256},
        )

    def on_delivery(self, message_id: str, delivered: bool, error: str | None) -> None:
        now = self._clock()
        state = "delivered" if delivered else "failed"
        self.store.set_delivery_state(message_id, Direction.OUT, state, now)
        if delivered:
            self.store.mark_delivered(message_id, now)
        else:
            self.store.mark_failed(message_id, now, error or "failed")
        self.bus.publish("delivery", {"id": message_id, "state": state, "error": error})

    def on_rendezvous_key(self, key: str) -> None:
        self.store.update_settings(rendezvous_key=key)

    def on_handshake_floor(self, floor_ns: int) -> None:
        self.store.raise_handshake_floor(floor_ns)

    def publish_event(self, kind: str, data: Mapping[str, Any]) -> None:
        self.bus.publish(kind, data)

    # --- helpers ---

    def _trusted_record(self, target: str) -> PeerRecord | None:
        peer = (
            self.store.get_trust(target) if is_address(target)
            else self.store.find_trust_by_hostname(target)
        )
        return PeerRecord(peer.address, peer.public_key, peer.hostname) if peer else None

    def _grant_trust(self, peer: PeerRecord, now: float) -> Any:
        trusted = self.store.add_trust(peer.address, peer.public_key, peer.hostname, now)
        self.store.clear_rejections(peer.address)
        if peer.hostname:
            self.store.pin_hostname(peer.hostname, peer.public_key, peer.address, now)
        return trusted

    async def _lookup(self, target: str, *, pin: bool) -> PeerRecord:
        """Resolve through the network; refuse a hostname whose pinned key changed."""
        peer = await self.network.lookup(target)
        if peer.hostname:
            outcome = (
                self.store.pin_hostname(peer.hostname, peer.public_key, peer.address,
                                        self._clock())
                if pin else self.store.check_pin(peer.hostname, peer.public_key)
            )
            if outcome is PinOutcome.KEY_CHANGED:
                pinned = self.store.get_pin(peer.hostname)
                raise PilotctlError(
                    ErrorCode.KEY_CHANGED,
                    f"the hostname {peer.hostname} now belongs to a different key "
                    f"(node {peer.address}) than the one pinned on first use "
                    f"(node {pinned.address if pinned else '?'})",
                    "if the peer really moved to a new identity, verify it out of band and "
                    "contact it by its new node address",
                )
        return peer

    async def _resolve_trusted(self, target: str, timeout: float) -> PeerRecord:
        """A trusted peer by name or address; waits for an accept already on its way."""
        known = self._trusted_record(target)
        if known is not None:
            return known
        fresh_since = self._clock() - PENDING_TTL_SECONDS  # the peer's copy has expired
        outgoing = [
            o for o in self.store.list_outgoing()
            if (o.to_address == target or o.hostname == target) and o.sent_at > fresh_since
        ]
        if outgoing:
            # DESIGN 8: a send to a peer whose accept is on its way waits for it.
            address = outgoing[-1].to_address
            with self.bus.subscribe({"trust.accepted", "trust.rejected"}) as sub:
                known = self._trusted_record(address)  # it may have landed meanwhile
                if known is None:
                    event = await sub.wait_for(
                        lambda e: e.data.get("node_id") == address, timeout
                    )
                    known = self._trusted_record(address)
                    if event is None and known is None:
                        raise PilotctlError(
                            ErrorCode.TIMEOUT,
                            f"{target} has not accepted our trust request yet",
                            "ask its operator to run: pilotctl approve "
                            f"{self.identity.address}",
                        )
            if known is not None:
                return known
        raise PilotctlError(
            ErrorCode.NOT_TRUSTED,
            f"{target} is not a trusted peer",
            f"ask for trust first: pilotctl handshake {target}",
        )

    async def _best_effort(self, operation: Any, warning: str) -> str | None:
        """Run a network step whose failure must not undo a local change."""
        try:
            await operation
        except PilotctlError as exc:
            log.warning("%s: %s", warning or "network step failed", exc.message)
            return f"{warning}: {exc.message}" if warning else exc.message
        return None


def _label(peer: PeerRecord) -> str:
    return f"{peer.hostname} ({peer.address})" if peer.hostname else peer.address


def _truncate(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")
