"""The rendezvous server's logic, sans-IO, on top of a public Node (DESIGN 6).

The application (pilot_daemon/rendezvous.py, or a test) builds the Node with
`NodeConfig(public=True)` and `trust_policy=lambda address: True`, so every client that
proves its key gets a session, and hands this object every node event. Requests arrive
as `MessageReceived` from clients (named by their verified address) and are answered
with `node.send_message`; each is confirmed (`confirm_persisted`) once handled, so the
client's RECEIPT means the server's store has it.

What the server keeps (through a `RegistryStore`): identity records and locators (checked
signatures, newer sequence numbers only, bounded expiry), hostname claims (first key
wins, kept 30 days after the last renewal), allow lists, and mailbox notes for offline
nodes. What it keeps in memory only: who is online now, where it saw them, rate limits.

Privacy (DESIGN 8): lookups return identity records only, never locators. Locators and
observed addresses go out only in introductions, and only to a node the target's allow
list accepts; everyone else gets the very answer an unknown target gets.

Remote input never raises out of here: everything is dropped and counted in `stats`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from ..delivery import MessageDelivered, MessageReceived
from ..errors import PilotError
from ..events import Event, HandshakeFailed, SessionClosed
from ..identity import address_bytes, address_from_public_key
from ..node import Node
from ..records import Locator
from ..relay import decode_relay, encode_relay
from ..transmit import Addr, Transmit
from .codec import canonical_endpoint
from .config import ServerConfig
from .errors import RendezvousDecodeError
from .messages import (
    ErrorCode,
    ErrorReply,
    Introduce,
    Introduction,
    Lookup,
    Message,
    NotePush,
    Ok,
    Ping,
    PostNote,
    PublishAllowList,
    RecordReply,
    Register,
    RegisteredReply,
    decode_message,
    encode_message,
)
from .rate_limit import RateLimiter
from .relay import RelayConfig, RelayPairs
from .store import HostnameClaim, Registration, RegistryStore, StoredNote

__all__ = ["RendezvousServer"]


@dataclass(slots=True)
class _OnlineClient:
    """A client registered since it last connected, and where we saw it."""

    observed: Addr | None
    last_seen: float


class RendezvousServer:
    """Answers rendezvous requests arriving on `node`; persists through `store`."""

    def __init__(
        self,
        node: Node,
        store: RegistryStore,
        *,
        wall_clock: Callable[[], float],
        config: ServerConfig | None = None,
        relay_config: RelayConfig | None = None,
    ) -> None:
        self.node = node
        self.store = store
        self.config = config or ServerConfig()
        self._wall_clock = wall_clock
        self.stats: Counter[str] = Counter()
        cfg = self.config
        self._request_limit = RateLimiter(cfg.requests_per_second, cfg.request_burst)
        self._note_limit = RateLimiter(cfg.notes_per_minute / 60, cfg.note_burst)
        self._introduction_limit = RateLimiter(
            cfg.introductions_per_minute / 60, cfg.introduction_burst
        )
        self._online: dict[str, _OnlineClient] = {}
        self._online_by_ip: dict[str, set[str]] = {}
        #: Note pushes awaiting the client's receipt: message id -> (target, note id), and
        #: per target, note id -> message id.
        self._pushes: dict[bytes, tuple[str, bytes]] = {}
        self._pushed: dict[str, dict[bytes, bytes]] = {}
        self._next_sweep: float | None = None
        #: Pairs introduced to each other may relay through us (DESIGN 6).
        self.relay = RelayPairs(relay_config)

    # ------------------------------------------------------------------ sans-IO surface

    def handle_event(self, event: Event, now: float) -> bool:
        """Take one node event; True if it was the server's business."""
        if self._next_sweep is None:
            self._next_sweep = now + self.config.sweep_interval
        try:
            if isinstance(event, MessageReceived):
                self._on_message(event, now)
            elif isinstance(event, MessageDelivered):
                self._on_delivered(event)
            elif isinstance(event, SessionClosed | HandshakeFailed):
                self._go_offline(event.address)
            else:
                return False
        except Exception:  # a bug must not become a remote kill switch; tests assert zero
            self.stats["internal_error"] += 1
        return True

    def get_timer(self) -> float | None:
        return self._next_sweep

    def handle_timer(self, now: float) -> None:
        if self._next_sweep is None or now < self._next_sweep:
            return
        self._next_sweep = now + self.config.sweep_interval
        try:
            self._sweep(now)
        except Exception:
            self.stats["internal_error"] += 1

    def is_online(self, address: str) -> bool:
        return address in self._online

    def relay_datagram(self, data: bytes, source: Addr, now: float) -> Transmit | None:
        """Forward a RELAY datagram (first byte 0x57) that arrived from `source`, or None
        (dropped and counted in `relay.stats`). The sender is the client whose session
        path `source` is; the target must be online, and the pair introduced."""
        stats = self.relay.stats
        decoded = decode_relay(data)
        if decoded is None:
            stats["relay_drop_malformed"] += 1
            return None
        sender = self.node.peer_at(source)
        if sender is None or sender not in self._online:
            stats["relay_drop_unknown_sender"] += 1
            return None
        target, inner = decoded
        path = self._observed(target) if target in self._online else None
        if path is None:
            stats["relay_drop_target_offline"] += 1
            return None
        refused = self.relay.check(sender, target, source, len(data), now)
        if refused is not None:
            stats[refused] += 1
            return None
        stats["relayed"] += 1
        stats["relayed_bytes"] += len(data)
        return Transmit(encode_relay(sender, inner), path)

    # ------------------------------------------------------------------ requests

    def _on_message(self, event: MessageReceived, now: float) -> None:
        address = event.address
        try:
            self._handle_request(address, event.type, event.data, now)
        finally:
            # Handled (stored, or refused): only now may the client's RECEIPT go back.
            try:
                self.node.confirm_persisted(address, event.message_id, now)
            except PilotError:
                self.stats["confirm_failed"] += 1

    def _handle_request(self, address: str, kind: str, data: bytes, now: float) -> None:
        if kind != "binary" or len(data) > self.config.max_request_size:
            self.stats["drop_bad_request"] += 1
            return
        try:
            request = decode_message(data)
        except RendezvousDecodeError:
            self.stats["drop_malformed_request"] += 1
            return
        online = self._online.get(address)
        if online is not None:
            online.last_seen = now
        if not isinstance(
            request, Register | PublishAllowList | Lookup | PostNote | Introduce | Ping
        ):
            self.stats["drop_not_a_request"] += 1
            return
        self.stats["requests"] += 1
        if not self._request_limit.allow(address, now):
            self._error(
                address,
                request.request_id,
                ErrorCode.RATE_LIMITED,
                "too many requests; slow down",
                now,
            )
            return
        if isinstance(request, Register):
            self._register(address, request, now)
        elif isinstance(request, PublishAllowList):
            self._publish_allow_list(address, request, now)
        elif isinstance(request, Lookup):
            self._lookup(address, request, now)
        elif isinstance(request, PostNote):
            self._post_note(address, request, now)
        elif isinstance(request, Introduce):
            self._introduce(address, request, now)
        else:
            self._send(address, Ok(request.request_id), now)

    def _register(self, address: str, request: Register, now: float) -> None:
        wall = self._wall_clock()
        record, locator = request.record, request.locator
        rid = request.request_id
        if (
            record.public_key != locator.public_key
            or address_from_public_key(record.public_key) != address
        ):
            self._error(
                address,
                rid,
                ErrorCode.INVALID_ARGUMENT,
                "the record and locator must be the sender's own",
                now,
            )
            return
        latest = wall + self.config.max_record_lifetime
        if record.expires_at > latest or locator.expires_at > latest:
            self._error(
                address,
                rid,
                ErrorCode.INVALID_ARGUMENT,
                f"records may live at most {self.config.max_record_lifetime:.0f} s",
                now,
            )
            return
        if not (record.verify(wall) and locator.verify(wall)):
            self._error(
                address,
                rid,
                ErrorCode.INVALID_ARGUMENT,
                "the record or locator does not verify (signature, binding or expiry)",
                now,
            )
            return
        stored = self.store.load_registration(address)
        if stored is not None and (
            record.sequence <= stored.record.sequence or locator.sequence <= stored.locator.sequence
        ):
            newest = max(stored.record.sequence, stored.locator.sequence)
            self._error(
                address,
                rid,
                ErrorCode.STALE_SEQUENCE,
                f"sequence numbers must be newer than {newest}",
                now,
                detail=newest,
            )
            return
        claim = None
        if record.hostname is not None:
            held = self.store.hostname_claim(record.hostname)
            if held is not None and held.address != address and held.expires_at > wall:
                self._error(
                    address,
                    rid,
                    ErrorCode.ALREADY_EXISTS,
                    f"the hostname {record.hostname} is registered to another node",
                    now,
                )
                return
            claim = HostnameClaim(record.hostname, address, wall + self.config.hostname_retention)
        observed = self._observed(address)
        ip = observed[0] if observed is not None else None
        if ip is not None:
            members = self._online_by_ip.get(ip, set())
            if address not in members and len(members) >= self.config.max_registrations_per_ip:
                self.stats["refused_ip_limit"] += 1
                self._error(
                    address,
                    rid,
                    ErrorCode.RATE_LIMITED,
                    f"too many nodes registered from {ip}",
                    now,
                )
                return
        self.store.save_registration(Registration(record, locator), claim)
        self.stats["registrations"] += 1
        self._forget_presence(address)  # the new observation replaces the old one
        self._online[address] = _OnlineClient(observed, now)
        if ip is not None:
            self._online_by_ip.setdefault(ip, set()).add(address)
        self._send(address, RegisteredReply(rid, observed), now)
        self._push_waiting_notes(address, now)

    def _publish_allow_list(self, address: str, request: PublishAllowList, now: float) -> None:
        allow_list, rid = request.allow_list, request.request_id
        if allow_list.address != address or not allow_list.verify():
            self._error(
                address,
                rid,
                ErrorCode.INVALID_ARGUMENT,
                "the allow list must be the sender's own, signed",
                now,
            )
            return
        if len(allow_list.addresses) > self.config.max_allow_list_entries:
            self._error(
                address,
                rid,
                ErrorCode.TOO_LARGE,
                f"an allow list holds at most {self.config.max_allow_list_entries} addresses",
                now,
            )
            return
        stored = self.store.load_allow_list(address)
        if stored is not None and allow_list.sequence <= stored.sequence:
            self._error(
                address,
                rid,
                ErrorCode.STALE_SEQUENCE,
                f"sequence numbers must be newer than {stored.sequence}",
                now,
                detail=stored.sequence,
            )
            return
        self.store.save_allow_list(allow_list)
        self.stats["allow_lists"] += 1
        self._send(address, Ok(rid), now)

    def _lookup(self, address: str, request: Lookup, now: float) -> None:
        wall = self._wall_clock()
        query = request.query
        target = query
        if ":" not in query:
            claim = self.store.hostname_claim(query)
            target = claim.address if claim is not None and claim.expires_at > wall else ""
        registration = self.store.load_registration(target) if target else None
        if (
            registration is None
            or registration.record.expires_at <= wall
            or (":" not in query and registration.record.hostname != query)
        ):
            self._error(
                address,
                request.request_id,
                ErrorCode.NOT_FOUND,
                f"no node {query} is registered",
                now,
            )
            return
        # The identity record only: where a node is never comes out of a lookup.
        self._send(address, RecordReply(request.request_id, registration.record), now)

    def _post_note(self, address: str, request: PostNote, now: float) -> None:
        wall = self._wall_clock()
        rid, target = request.request_id, request.target
        cfg = self.config
        if len(request.sealed) > cfg.max_note_size:
            self._error(
                address,
                rid,
                ErrorCode.TOO_LARGE,
                f"a note is at most {cfg.max_note_size} bytes",
                now,
            )
            return
        registration = self.store.load_registration(target)
        if registration is None or registration.record.expires_at <= wall:
            self._error(address, rid, ErrorCode.NOT_FOUND, f"no node {target} is registered", now)
            return
        if not self._note_limit.allow(address, now):
            self._error(address, rid, ErrorCode.RATE_LIMITED, "too many notes; slow down", now)
            return
        if (
            self.store.note_count(target) >= cfg.max_notes_per_target
            or self.store.note_count() >= cfg.max_notes_total
        ):
            self.stats["refused_mailbox_full"] += 1
            self._error(
                address,
                rid,
                ErrorCode.RATE_LIMITED,
                f"the mailbox of {target} is full; try later",
                now,
            )
            return
        digest = hashlib.sha256(address_bytes(target) + request.sealed).digest()
        note = StoredNote(digest[:16], target, address, request.sealed, wall + cfg.note_lifetime)
        # Stored before it is acknowledged or pushed: a crash loses no acknowledged note.
        if self.store.add_note(note):
            self.stats["notes_stored"] += 1
        self._send(address, Ok(rid), now)
        if target in self._online and not self._is_in_flight(target, note.note_id):
            self._push_note(note, now)

    def _introduce(self, address: str, request: Introduce, now: float) -> None:
        wall = self._wall_clock()
        rid, target = request.request_id, request.target
        requester = self.store.load_registration(address)
        if requester is None or requester.record.expires_at <= wall:
            self._error(
                address,
                rid,
                ErrorCode.INVALID_ARGUMENT,
                "register before asking for introductions",
                now,
            )
            return
        if not self._introduction_limit.allow(address, now):
            self._error(
                address, rid, ErrorCode.RATE_LIMITED, "too many introductions; slow down", now
            )
            return
        registration = self.store.load_registration(target)
        allow_list = self.store.load_allow_list(target)
        if (
            target == address
            or registration is None
            or registration.record.expires_at <= wall
            or allow_list is None
            or not allow_list.allows(address)
        ):
            # One answer for "unknown" and "does not accept you": strangers learn nothing.
            self.stats["introductions_refused"] += 1
            self._error(address, rid, ErrorCode.NOT_FOUND, f"no node {target} is registered", now)
            return
        self.stats["introductions"] += 1
        self.relay.allow_pair(address, target, now)
        start = self.config.introduction_delay
        owd_a, owd_b = self._one_way_delay(address), self._one_way_delay(target)
        later = max(owd_a, owd_b)
        probes = self.config.max_probes_per_introduction
        self._send(
            address,
            Introduction(
                rid,
                registration.record,
                _current(registration.locator, wall),
                self._reflexive(target),
                start + later - owd_a,
                probes,
            ),
            now,
        )
        if target in self._online:
            self._send(
                target,
                Introduction(
                    0,
                    requester.record,
                    _current(requester.locator, wall),
                    self._reflexive(address),
                    start + later - owd_b,
                    probes,
                ),
                now,
            )

    # ------------------------------------------------------------------ mailbox delivery

    def _push_waiting_notes(self, target: str, now: float) -> None:
        for note in self.store.notes_for(target):
            if not self._is_in_flight(target, note.note_id):
                self._push_note(note, now)

    def _push_note(self, note: StoredNote, now: float) -> None:
        sender = self.store.load_registration(note.sender)
        push = NotePush(sender.record if sender is not None else None, note.sealed)
        message_id = self._send(note.target, push, now)
        if message_id is not None:
            self._pushes[message_id] = (note.target, note.note_id)
            self._pushed.setdefault(note.target, {})[note.note_id] = message_id
            self.stats["notes_pushed"] += 1

    def _is_in_flight(self, target: str, note_id: bytes) -> bool:
        return note_id in self._pushed.get(target, ())

    def _on_delivered(self, event: MessageDelivered) -> None:
        entry = self._pushes.pop(event.message_id, None)
        if entry is None:
            return
        target, note_id = entry
        pushed = self._pushed.get(target)
        if pushed is not None:
            pushed.pop(note_id, None)
            if not pushed:
                del self._pushed[target]
        # The client's node confirmed the push: the note has arrived; forget it.
        self.store.delete_note(note_id)
        self.stats["notes_delivered"] += 1

    # ------------------------------------------------------------------ presence

    def _go_offline(self, address: str) -> None:
        self._forget_presence(address)
        # Pushes on a closed session are dropped with it; they go again on the next
        # registration (the client drops duplicates).
        for message_id in self._pushed.pop(address, {}).values():
            self._pushes.pop(message_id, None)

    def _forget_presence(self, address: str) -> None:
        online = self._online.pop(address, None)
        if online is not None and online.observed is not None:
            members = self._online_by_ip.get(online.observed[0])
            if members is not None:
                members.discard(address)
                if not members:
                    del self._online_by_ip[online.observed[0]]

    def _sweep(self, now: float) -> None:
        self.store.expire(self._wall_clock())
        cutoff = now - self.config.online_timeout
        for address in [a for a, c in self._online.items() if c.last_seen < cutoff]:
            self._go_offline(address)
        for limiter in (self._request_limit, self._note_limit, self._introduction_limit):
            limiter.prune(now)
        self.relay.sweep(now)
        self.stats["sweeps"] += 1

    def _observed(self, address: str) -> Addr | None:
        try:
            path = self.node.peer_path(address)
        except PilotError:
            return None
        return canonical_endpoint(path) if path is not None else None

    def _reflexive(self, address: str) -> tuple[Addr, ...]:
        online = self._online.get(address)
        if online is None or online.observed is None:
            return ()
        return (online.observed,)

    def _one_way_delay(self, address: str) -> float:
        try:
            rtt = self.node.peer_info(address).rtt
        except PilotError:
            return 0.0
        return rtt / 2 if rtt is not None else 0.0

    # ------------------------------------------------------------------ answering

    def _error(
        self, address: str, request_id: int, code: ErrorCode, text: str, now: float, detail: int = 0
    ) -> None:
        self.stats[f"error_{code.value}"] += 1
        self._send(address, ErrorReply(request_id, code, text, detail), now)

    def _send(self, address: str, message: Message, now: float) -> bytes | None:
        try:
            return self.node.send_message(address, encode_message(message), now, type="binary")
        except PilotError:
            self.stats["send_failed"] += 1
            return None


def _current(locator: Locator, now_wall: float) -> Locator | None:
    return locator if locator.expires_at > now_wall else None
