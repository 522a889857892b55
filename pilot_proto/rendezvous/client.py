"""The rendezvous client, sans-IO, on a Node it does not own (DESIGN 6 and 8).

The application (the daemon's network service) owns the Node and hands this client
every node event (`handle_event`), arms its timer next to the node's (`get_timer`,
`handle_timer`) and reads its results (`next_event`). The client:

- opens the session (`Node.connect_rendezvous`: IK to the pinned key, or XX to learn
  it), registers its identity record and locator, and publishes its allow list;
- re-registers before the locator expires, keeps the session busy enough that a lost
  or restarted server is noticed, reconnects with backoff, and re-registers by itself
  after the server restarted;
- turns a changed server key into `KeyChanged`: when IK to the pinned key gets no answer
  it tries XX once to see what the server presents now;
- runs requests (lookup, hostname, allow list, mailbox notes, introductions), queued
  until the session is up, each answered by one event carrying its request id;
- opens, verifies and de-duplicates mailbox notes the server pushes, and re-checks every
  record it receives, so the server can withhold but never forge.

Remote input never raises out of here: it is dropped and counted in `stats`.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable

from ..delivery import MessageReceived
from ..errors import LocalProtocolError, PilotError
from ..events import (
    Event,
    HandshakeCompleted,
    HandshakeFailed,
    RendezvousConnected,
    RendezvousFailed,
    SessionClosed,
)
from ..identity import Identity, is_address
from ..node import Node
from ..records import IdentityRecord, Locator, is_valid_hostname
from ..transmit import Addr
from .allow_list import AllowList
from .client_state import SESSION_UP, STOPPED, ClientState, check_transition
from .codec import canonical_endpoint
from .config import ClientConfig
from .errors import RendezvousDecodeError
from .events import (
    ClientEvent,
    Disconnected,
    IntroductionReceived,
    KeyChanged,
    LookupResult,
    NoteReceived,
    Registered,
    RegistrationFailed,
    RequestDone,
    RequestFailed,
)
from .mailbox import NoteKind, SeenNotes, open_note, seal_note
from .messages import (
    ErrorCode,
    ErrorReply,
    Introduce,
    Introduction,
    Lookup,
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
from .pending import PendingRequest, PendingRequests

__all__ = ["ClientState", "RendezvousClient"]

#: Attempts to move past a STALE_SEQUENCE answer (a clock stepped back) per request.
_MAX_SEQUENCE_RETRIES = 3


S = ClientState


class RendezvousClient:
    """Registration, lookups, mailbox and introductions through one rendezvous server."""

    def __init__(
        self,
        node: Node,
        identity: Identity,
        server_endpoint: Addr,
        server_key: bytes | None,
        *,
        hostname: str | None,
        public: bool,
        candidates: Iterable[Addr],
        rng: Callable[[int], bytes],
        wall_clock: Callable[[], float],
        config: ClientConfig | None = None,
        allow_list: Iterable[str] = (),
    ) -> None:
        """`server_key` is the pinned X25519 key (None: learn it on first use).
        `candidates` are our local endpoints for the locator; `allow_list` the addresses
        we accept introductions from (the trusted peers), published on every connect."""
        if identity.address != node.address:
            raise LocalProtocolError("the identity must be the node's own")
        endpoint = canonical_endpoint(server_endpoint)
        if endpoint is None:
            raise LocalProtocolError(
                f"rendezvous endpoint {server_endpoint!r} must be an IP address and port"
            )
        if server_key is not None and len(server_key) != 32:
            raise LocalProtocolError("a rendezvous key is 32 bytes")
        self.node = node
        self.identity = identity
        self.endpoint = endpoint
        self.config = config or ClientConfig()
        self.stats: Counter[str] = Counter()
        self._rng = rng
        self._wall_clock = wall_clock
        self._pinned = server_key
        self._hostname = _checked_hostname(hostname)
        self._confirmed_hostname: str | None = None
        self._public = public
        self._allow_list = _checked_addresses(allow_list)
        self._candidates = self._checked_candidates(candidates)
        self._state = S.IDLE
        self._server_address: str | None = None
        #: Every address the server had, so late events from an old one are still ours.
        self._server_addresses: set[str] = set()
        self._probed = False
        self._observed: Addr | None = None
        self._events: deque[ClientEvent] = deque()
        self._pending = PendingRequests(self.config.max_pending_requests)
        self._sequence = 0
        self._seen_notes = SeenNotes(self.config.seen_notes)
        self._backoff = self.config.reconnect_min
        self._reconnect_at: float | None = None
        self._refresh_at: float | None = None
        self._heartbeat_at: float | None = None

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def registered(self) -> bool:
        return self._state is S.REGISTERED

    @property
    def server_address(self) -> str | None:
        return self._server_address

    @property
    def server_key(self) -> bytes | None:
        """The pinned key, or the one learned on first use."""
        return self._pinned

    @property
    def hostname(self) -> str | None:
        """The hostname of our last accepted registration."""
        return self._confirmed_hostname

    @property
    def observed(self) -> Addr | None:
        """Our address as the server last saw it."""
        return self._observed

    def _move(self, new: ClientState) -> None:
        check_transition(self._state, new)
        self._state = new

    # ------------------------------------------------------------------ lifecycle

    def start(self, now: float) -> None:
        """Open the session with the server; registration follows by itself."""
        if self._state is not S.IDLE:
            raise LocalProtocolError("the rendezvous client was started already")
        self._connect(now)

    def close(self, now: float) -> None:
        """Stop: close the session with the server, arm no more timers."""
        if self._state is S.CLOSED:
            return
        address = self._server_address
        self._move(S.CLOSED)
        self._reconnect_at = self._refresh_at = self._heartbeat_at = None
        self._pending.clear()
        if address is not None and self.node.has_session(address):
            try:
                self.node.close_peer(address, now, "rendezvous client closed")
            except PilotError:
                pass

    def _connect(self, now: float) -> None:
        self._move(S.CONNECTING)
        self._reconnect_at = None
        self.node.connect_rendezvous(self.endpoint, self._pinned, now)

    # ------------------------------------------------------------------ requests

    def lookup(self, name_or_address: str, now: float) -> int:
        """Resolve a hostname or an address: `LookupResult` or `RequestFailed(not_found)`."""
        if not (is_address(name_or_address) or is_valid_hostname(name_or_address)):
            raise LocalProtocolError(f"{name_or_address!r} is neither a hostname nor an address")
        rid = self._pending.new_id()
        return self._submit(PendingRequest("lookup", rid, Lookup(rid, name_or_address), False), now)

    def set_hostname(self, hostname: str | None, now: float) -> int:
        """Claim `hostname` (None releases ours): `RequestDone`, or `RequestFailed` with
        already_exists when another key holds it (ours stays as it was)."""
        name = _checked_hostname(hostname)
        self._hostname = name
        rid = self._pending.new_id()
        return self._submit(PendingRequest("hostname", rid, None, False, hostname=name), now)

    def publish_allow_list(
        self, addresses: Iterable[str], now: float, *, public: bool | None = None
    ) -> int:
        """Replace our allow list at the server, whole (and remember it for reconnects)."""
        self._allow_list = _checked_addresses(addresses)
        if public is not None:
            self._public = public
        return self._send_allow_list(now, internal=False)

    def post_note(
        self,
        target: IdentityRecord,
        kind: NoteKind | str,
        request_id: bytes,
        justification: str | None,
        now: float,
    ) -> int:
        """Seal a mailbox note to `target` (a verified record, e.g. from a lookup) and post
        it; `RequestDone` once the server stored it. `request_id`: 16 random bytes."""
        sealed = seal_note(
            self.identity,
            target,
            kind,
            request_id,
            justification,
            now_wall=self._wall_clock(),
            rng=self._rng,
        )
        rid = self._pending.new_id()
        pending = PendingRequest("note", rid, PostNote(rid, target.address, sealed), False)
        return self._submit(pending, now)

    def request_introduction(self, address: str, now: float) -> int:
        """Ask to reach `address`: `IntroductionReceived` (request_id set) if its allow
        list accepts us, else `RequestFailed(not_found)`, as for an unknown node."""
        if not is_address(address):
            raise LocalProtocolError(f"{address!r} is not a node address")
        rid = self._pending.new_id()
        return self._submit(PendingRequest("introduce", rid, Introduce(rid, address), False), now)

    def set_candidates(self, candidates: Iterable[Addr], now: float) -> None:
        """Our local endpoints changed: re-register with a new locator."""
        self._candidates = self._checked_candidates(candidates)
        if self._state in (S.REGISTERED, S.UNREGISTERED):
            self._register(now)

    def _submit(self, pending: PendingRequest, now: float) -> int:
        if self._state in STOPPED:
            raise LocalProtocolError(f"the rendezvous client is {self._state.value}")
        pending.deadline = now + self.config.request_timeout
        rid = pending.request_id
        self._pending.add(pending)
        if self._state in SESSION_UP:
            self._transmit(pending, now)
        return rid

    def _transmit(self, pending: PendingRequest, now: float) -> None:
        assert self._server_address is not None
        request = pending.request
        if request is None:
            request = self._register_message(pending.request_id, pending.hostname)
        try:
            self.node.send_message(
                self._server_address, encode_message(request), now, type="binary"
            )
        except PilotError:
            self.stats["send_failed"] += 1
            return
        pending.sent = True
        self._heartbeat_at = now + self.config.heartbeat_interval

    # ------------------------------------------------------------------ registration

    def _next_sequence(self) -> int:
        # From the wall clock (milliseconds), so a restarted node always goes up, and
        # strictly increasing within this run whatever the clock does.
        self._sequence = max(self._sequence + 1, int(self._wall_clock() * 1000))
        return self._sequence

    def _register_message(self, rid: int, hostname: str | None) -> Register:
        wall = self._wall_clock()
        sequence = self._next_sequence()
        record = IdentityRecord.create(
            self.identity,
            hostname=hostname,
            sequence=sequence,
            expires_at=int(wall + self.config.record_lifetime),
        )
        locator = Locator.create(
            self.identity,
            endpoints=self._candidates,
            sequence=sequence,
            expires_at=int(wall + self.config.locator_lifetime),
        )
        return Register(rid, record, locator)

    def _register(self, now: float) -> None:
        """Our own registration (on connect, refresh, new candidates)."""
        self._refresh_at = None
        rid = self._pending.new_id()
        self._submit(PendingRequest("register", rid, None, True, hostname=self._hostname), now)

    def _send_allow_list(self, now: float, *, internal: bool) -> int:
        rid = self._pending.new_id()
        allow_list = AllowList.create(
            self.identity, self._allow_list, public=self._public, sequence=self._next_sequence()
        )
        pending = PendingRequest(
            "allow_list",
            rid,
            PublishAllowList(rid, allow_list),
            internal,
            addresses=self._allow_list,
            public=self._public,
        )
        return self._submit(pending, now)

    def _session_up(self, now: float) -> None:
        """A session with the server exists: register, publish, flush the queue."""
        if self._state is not S.REGISTERING:
            self._move(S.REGISTERING)
        self._reconnect_at = None
        waiting = []
        for pending in self._pending:
            if pending.internal:
                self._pending.pop(pending.request_id)  # replaced by the fresh ones below
            else:
                # The server may have restarted or lost the session: send what is
                # unanswered again (duplicates are harmless: answers are matched by id).
                pending.sent = False
                waiting.append(pending)
        # Ordered delivery: the server sees the registration before anything else.
        self._register(now)
        self._send_allow_list(now, internal=True)
        for pending in waiting:
            self._transmit(pending, now)

    def _session_lost(self, now: float, reason: str) -> None:
        if self._state in STOPPED or self._state is S.WAITING:
            return
        self._move(S.WAITING)
        self._refresh_at = self._heartbeat_at = None
        self._reconnect_at = now + self._backoff
        self._backoff = min(self._backoff * 2, self.config.reconnect_max)
        self._events.append(Disconnected(reason))

    # ------------------------------------------------------------------ node events

    def handle_event(self, event: Event, now: float) -> bool:
        """Take one node event. True if it concerned the rendezvous (the application
        then ignores it); False for everything else, which the application handles."""
        if isinstance(event, RendezvousConnected | RendezvousFailed):
            if event.endpoint != self.endpoint:
                return False
        elif event.address not in self._server_addresses:
            return False
        try:
            self._on_event(event, now)
        except Exception:  # a bug must not become a remote kill switch; tests assert zero
            self.stats["internal_error"] += 1
        return True

    def _on_event(self, event: Event, now: float) -> None:
        if isinstance(event, RendezvousConnected):
            self._on_connected(event, now)
        elif isinstance(event, RendezvousFailed):
            self._on_connect_failed(event, now)
        elif isinstance(event, MessageReceived):
            self._on_message(event, now)
        elif isinstance(event, HandshakeCompleted):
            if event.address != self._server_address or self._state in STOPPED:
                return
            if self._state is S.WAITING:
                # The node re-made the session on its own (it had data for the server).
                self._session_up(now)
            elif event.peer_restarted and self._state in SESSION_UP:
                # The server restarted and forgot our session: register again.
                self.stats["server_restarts"] += 1
                self._session_up(now)
        elif isinstance(event, SessionClosed | HandshakeFailed):
            if event.address == self._server_address and self._state in SESSION_UP:
                self._session_lost(now, f"session with the rendezvous lost: {event.reason}")
        # MessageDelivered, PeerUnresponsive, ...: the session layer handles them.

    def _on_connected(self, event: RendezvousConnected, now: float) -> None:
        if self._state not in (S.CONNECTING, S.PROBING):
            self.stats["unexpected_connected"] += 1
            return
        self._server_addresses.add(event.address)
        self._server_address = event.address
        if self._pinned is not None and event.static_key != self._pinned:
            # Only the XX probe can present another key (IK proves the pinned one).
            self._move(S.KEY_CHANGED)
            self._reconnect_at = None
            try:
                self.node.close_peer(event.address, now, "rendezvous key changed")
            except PilotError:
                pass
            self._events.append(KeyChanged(self.endpoint, self._pinned, event.static_key))
            for pending in self._pending:
                self._fail(pending.request_id, "key_changed", "the rendezvous server key changed")
            return
        self._pinned = event.static_key  # trust on first use: later sessions use IK
        self._session_up(now)

    def _on_connect_failed(self, event: RendezvousFailed, now: float) -> None:
        if self._state is S.CONNECTING and self._pinned is not None and not self._probed:
            # IK to the pinned key went unanswered: a silent refusal would hide a changed
            # key, so look (once) at what the server presents now.
            self._probed = True
            self._move(S.PROBING)
            self.node.connect_rendezvous(self.endpoint, None, now)
            return
        if self._state in (S.CONNECTING, S.PROBING):
            where = _show(self.endpoint)
            self._session_lost(now, f"cannot reach the rendezvous at {where}: {event.reason}")

    # ------------------------------------------------------------------ server messages

    def _on_message(self, event: MessageReceived, now: float) -> None:
        try:
            # Nothing to store first: our state is in memory, so confirm at once.
            self.node.confirm_persisted(event.address, event.message_id, now)
        except PilotError:
            self.stats["confirm_failed"] += 1
        if event.type != "binary":
            self.stats["drop_not_binary"] += 1
            return
        try:
            message = decode_message(event.data)
        except RendezvousDecodeError:
            self.stats["drop_malformed"] += 1
            return
        if isinstance(message, NotePush):
            self._on_note(message)
        elif isinstance(message, Introduction):
            self._on_introduction(message)
        elif isinstance(message, RegisteredReply):
            self._on_registered(message, now)
        elif isinstance(message, ErrorReply):
            self._on_error(message, now)
        elif isinstance(message, Ok):
            self._on_ok(message)
        elif isinstance(message, RecordReply):
            self._on_record(message)
        else:
            self.stats["drop_unexpected"] += 1

    def _take(self, rid: int, *kinds: str) -> PendingRequest | None:
        pending = self._pending.take(rid, *kinds)
        if pending is None:
            self.stats["drop_unmatched_answer"] += 1
        return pending

    def _on_registered(self, message: RegisteredReply, now: float) -> None:
        pending = self._take(message.request_id, "register", "hostname")
        if pending is None:
            return
        self._confirmed_hostname = pending.hostname
        self._observed = message.observed
        self._backoff = self.config.reconnect_min
        self._probed = False
        if self._pending.latest("register", "hostname") is None:
            self._refresh_at = now + self.config.locator_lifetime * self.config.refresh_fraction
        if self._state is not S.REGISTERED:
            self._move(S.REGISTERED)
            assert self._server_address is not None and self._pinned is not None
            self._events.append(Registered(self._server_address, self._pinned, self._observed))
        if pending.kind == "hostname":
            self._events.append(RequestDone(message.request_id))

    def _on_error(self, message: ErrorReply, now: float) -> None:
        rid = message.request_id
        pending = self._pending.get(rid)
        if pending is None:
            self.stats["drop_unmatched_answer"] += 1
            return
        if message.code is ErrorCode.STALE_SEQUENCE and pending.retries < _MAX_SEQUENCE_RETRIES:
            # Our clock is behind the newest sequence the server holds: move past it.
            self._sequence = max(self._sequence, message.detail)
            pending.retries += 1
            if pending.kind == "allow_list":
                allow_list = AllowList.create(
                    self.identity,
                    pending.addresses,
                    public=pending.public,
                    sequence=self._next_sequence(),
                )
                pending.request = PublishAllowList(rid, allow_list)
            self._transmit(pending, now)
            return
        self._pending.pop(rid)
        code, text = message.code.value, message.message
        if message.code is ErrorCode.STALE_SEQUENCE:
            code = ErrorCode.INVALID_ARGUMENT.value
        if pending.kind == "register":
            self._registration_refused(code, text, now)
        elif pending.kind == "hostname":
            self._hostname = self._confirmed_hostname  # the server kept the old one
            self._events.append(RequestFailed(rid, code, text))
        elif not pending.internal:
            self._events.append(RequestFailed(rid, code, text))
        else:
            self.stats[f"internal_request_failed_{code}"] += 1

    def _registration_refused(self, code: str, text: str, now: float) -> None:
        if self._state in (S.REGISTERING, S.REGISTERED):
            self._move(S.UNREGISTERED)
        self._events.append(RegistrationFailed(code, text))
        if code in (ErrorCode.RATE_LIMITED.value, ErrorCode.INTERNAL.value, "timeout"):
            self._refresh_at = now + self.config.registration_retry

    def _on_ok(self, message: Ok) -> None:
        pending = self._take(message.request_id, "allow_list", "note", "ping")
        if pending is not None and not pending.internal:
            self._events.append(RequestDone(message.request_id))

    def _on_record(self, message: RecordReply) -> None:
        pending = self._take(message.request_id, "lookup")
        if pending is None:
            return
        assert isinstance(pending.request, Lookup)
        record, query = message.record, pending.request.query
        matches = record.address == query if ":" in query else record.hostname == query
        if not (matches and record.verify(self._wall_clock())):
            self.stats["drop_bad_record"] += 1
            self._events.append(
                RequestFailed(
                    message.request_id,
                    ErrorCode.INTERNAL.value,
                    "the rendezvous answered with a record that does not verify",
                )
            )
            return
        self._events.append(LookupResult(message.request_id, record))

    def _on_note(self, message: NotePush) -> None:
        wall = self._wall_clock()
        note = open_note(
            self.identity,
            message.sealed,
            wall,
            max_age=self.config.note_max_age,
            max_future=self.config.note_max_future,
        )
        if note is None:
            self.stats["drop_bad_note"] += 1
            return
        if not self._seen_notes.first_time(note):
            self.stats["drop_duplicate_note"] += 1
            return
        record = message.sender_record
        if record is not None and not (
            record.public_key == note.sender_public_key and record.verify(wall)
        ):
            self.stats["drop_bad_sender_record"] += 1
            record = None
        self._events.append(NoteReceived(note, record))

    def _on_introduction(self, message: Introduction) -> None:
        wall = self._wall_clock()
        record = message.record
        rid: int | None = message.request_id or None
        if rid is not None:
            pending = self._take(rid, "introduce")
            if pending is None:
                return
            assert isinstance(pending.request, Introduce)
            if record.address != pending.request.target:
                self.stats["drop_bad_introduction"] += 1
                self._events.append(
                    RequestFailed(rid, ErrorCode.INTERNAL.value, "introduced to the wrong node")
                )
                return
        if record.address == self.identity.address or not record.verify(wall):
            self.stats["drop_bad_introduction"] += 1
            if rid is not None:
                self._events.append(
                    RequestFailed(rid, ErrorCode.INTERNAL.value, "introduction does not verify")
                )
            return
        candidates = list(message.reflexive)
        locator = message.locator
        if locator is not None:
            if locator.public_key == record.public_key and locator.verify(wall):
                candidates.extend(locator.endpoints)
            else:
                self.stats["drop_bad_locator"] += 1
        unique = tuple(dict.fromkeys(candidates))
        self._events.append(
            IntroductionReceived(record, unique, message.start_delay, message.probe_limit, rid)
        )

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        deadlines = [
            t for t in (self._reconnect_at, self._refresh_at, self._heartbeat_at) if t is not None
        ]
        deadline = self._pending.next_deadline()
        if deadline is not None:
            deadlines.append(deadline)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        try:
            self._handle_timer(now)
        except Exception:
            self.stats["internal_error"] += 1

    def _handle_timer(self, now: float) -> None:
        if self._state in STOPPED:
            return
        for pending in self._pending.due(now):
            self._expire_request(pending, now)
        if self._reconnect_at is not None and now >= self._reconnect_at:
            self._connect(now)
        if self._refresh_at is not None and now >= self._refresh_at:
            self._refresh_at = None
            if self._state in (S.REGISTERED, S.UNREGISTERED):
                self._register(now)
        if self._heartbeat_at is not None and now >= self._heartbeat_at:
            self._heartbeat_at = None
            if self._state in SESSION_UP:
                rid = self._pending.new_id()
                self._submit(PendingRequest("ping", rid, Ping(rid), True), now)

    def _expire_request(self, pending: PendingRequest, now: float) -> None:
        rid = pending.request_id
        self.stats["request_timeouts"] += 1
        if pending.kind == "register":
            if self._state in SESSION_UP:
                self._registration_refused("timeout", "the rendezvous did not answer", now)
            return
        if pending.kind == "hostname":
            self._hostname = self._confirmed_hostname
        if not pending.internal:
            code = "timeout" if self._state in SESSION_UP else "connection_failed"
            self._events.append(RequestFailed(rid, code, "the rendezvous did not answer in time"))

    def _fail(self, rid: int, code: str, text: str) -> None:
        pending = self._pending.pop(rid)
        if pending is not None and not pending.internal:
            self._events.append(RequestFailed(rid, code, text))

    def next_event(self) -> ClientEvent | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ checks

    @staticmethod
    def _checked_candidates(candidates: Iterable[Addr]) -> tuple[Addr, ...]:
        out: list[Addr] = []
        for candidate in candidates:
            canonical = canonical_endpoint(candidate)
            if canonical is None:
                raise LocalProtocolError(f"candidate {candidate!r} is not an IP address and port")
            if canonical not in out:
                out.append(canonical)
        if len(out) > 16:
            raise LocalProtocolError("a locator holds at most 16 candidates")
        return tuple(out)


def _checked_hostname(hostname: str | None) -> str | None:
    if hostname is not None and not is_valid_hostname(hostname):
        raise LocalProtocolError(
            f"invalid hostname {hostname!r}: use 1-63 lowercase letters, digits or hyphens, "
            "not starting or ending with a hyphen"
        )
    return hostname


def _checked_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    out = tuple(sorted(set(addresses)))
    for address in out:
        if not is_address(address):
            raise LocalProtocolError(f"{address!r} is not a node address")
    return out


def _show(endpoint: Addr) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
