"""The daemon's network service: a `pilot_asyncio.Node` plus a `RendezvousClient`.

`PilotNetwork` implements `NetworkService` (network.py) on the daemon's event loop:

- one core Node on the daemon's UDP socket (the asyncio binding drives it), whose trust
  policy is the control plane's trust store, so a trusted peer that restarted or whose
  address changed is answered without first being added again;
- the rendezvous client on that same Node: it sees every node event first (the binding's
  `on_event` hook) and takes the rendezvous server's traffic, and its timer is armed next
  to the node's (`Node.add_timer`);
- trust requests and answers as mailbox notes (DESIGN 8), pushed by the server, or as
  trust frames inside a session when one can be made with a peer that does not trust us
  yet (a public node); an answer goes back the way its request came;
- messages: introduction through the rendezvous, `add_peer` and a Noise IK session,
  then the message under the control plane's id; the RECEIPT goes back only after the
  host wrote the inbox file (`auto_confirm=False`);
- files, the benchmark and `connect`/`send`/`recv`/`listen` over streams (`transfer.py`).

Timing (DESIGN 8, contract): `start` returns once registered, or fails within
`START_TIMEOUT` with connection_failed (unreachable), already_exists (hostname taken) or
key_changed (the pinned rendezvous key changed; the hint names the new HOST:PORT#KEY).
A TRUST_ACCEPT arriving makes the host trust the peer and, here, a session with it is
made at once, so the first message after `approve` finds it ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pilot_asyncio import Node

from pilot_proto import DeliveryConfig, NodeConfig
from pilot_proto.config import PathConfig, SessionConfig
from pilot_proto.delivery import MessageReceived
from pilot_proto.driver import BUSY_POLL_LIMIT
from pilot_proto.errors import (
    ConnectionFailed,
    ConnectTimeout,
    DeliveryTimeout,
    LocalProtocolError,
    MessageTooLarge,
    NodeClosed,
    NotTrustedByPeer,
    PeerNotTrusted,
    PilotError,
    PilotTimeout,
    UnknownPeer,
)
from pilot_proto.events import (
    Event,
    HandshakeCompleted,
    NatDiscovered,
    PathChanged,
    RendezvousConnected,
    TrustAccepted,
    TrustRejected,
    TrustRequested,
)
from pilot_proto.records import IdentityRecord
from pilot_proto.rendezvous import (
    ClientConfig,
    ClientEvent,
    Disconnected,
    IntroductionReceived,
    InvalidServerKey,
    KeyChanged,
    LookupResult,
    NoteKind,
    NoteReceived,
    Registered,
    RegistrationFailed,
    RendezvousClient,
    RequestDone,
    RequestFailed,
    decode_server_key,
    encode_server_key,
)
from pilot_proto.stun_client import ClassifierConfig

from . import transfer
from .errors import ErrorCode, PilotctlError
from .inbox import IncomingMessage
from .interfaces import local_candidates
from .limits import MAX_MESSAGE_BYTES
from .names import Endpoint
from .network import (
    FileSent,
    NetworkConfig,
    NetworkHost,
    NetworkStatus,
    PeerPath,
    PeerRecord,
    TrustAnswerNote,
    TrustRequestNote,
)

log = logging.getLogger("pilot_daemon.network")

__all__ = ["PilotNetwork"]

T = TypeVar("T")

#: `daemon start` fails with connection_failed when not registered within this long.
START_TIMEOUT = 5.0
#: An IK attempt to the pinned rendezvous key gives up after this long, so a changed key
#: (the server silently drops IK to a key it does not hold) is seen well within
#: START_TIMEOUT: the client then looks with XX at what the server presents.
PINNED_GIVE_UP = 2.0
#: Rendezvous requests a command waits on (lookups, notes, allow lists).
REQUEST_TIMEOUT = 15.0
#: How long a request waits while we are not registered (the client reconnects meanwhile).
NOT_REGISTERED_WAIT = 3.0
#: Background session set-up (at start, after an accept, as an introduction's target).
BACKGROUND_CONNECT_TIMEOUT = 15.0
#: Concurrent background session set-ups.
BACKGROUND_CONNECTS = 8
#: How long `handshake` tries to make a session for an in-session trust request.
TRUST_SESSION_TIMEOUT = 5.0
#: In-session trust requests remembered for answering the same way.
MAX_SESSION_REQUESTS = 1024
#: How long `stop` waits for the server to take our empty locator.
OFFLINE_NOTICE_TIMEOUT = 0.5
#: Messages of every allowed type; anything else a peer sends is kept as binary.
MESSAGE_TYPES = ("text", "json", "binary")
#: How long `start` waits, once registered, for the NAT classification (so `info` shows
#: it); a rendezvous that does not answer STUN leaves `nat_type` null, nothing fails.
NAT_DISCOVERY_WAIT = 3.0
#: RFC 5780 transaction timers for the classification at start (seconds, sends).
NAT_CLASSIFIER = ClassifierConfig(rto=0.2, rc=3, rm=3, test_filtering=False)
#: Environment variable with path timers (DESIGN 7: every timer a config value, so tests
#: and labs can shorten them): a JSON object of `pilot_proto.config.PathConfig` fields
#: (keepalive_interval, reason_deadline, direct_retry_min, ...), plus
#: `rendezvous_heartbeat`, the seconds between heartbeats to the rendezvous (default 20),
#: which keep our NAT's mapping toward it (and so the relay) alive.
PATH_TIMERS_ENV = "PILOT_PATH_TIMERS"
#: Environment variable with the longest busy-poll after a send, in microseconds
#: (pilot_proto/driver/busy_poll.py; 0 never spins: the least CPU, the slowest LAN replies).
BUSY_POLL_ENV = "PILOT_BUSY_POLL_US"


def busy_poll_limit(environ: Mapping[str, str] | None = None) -> float:
    """`PILOT_BUSY_POLL_US` in seconds (the binding's default when unset).
    PilotctlError(invalid_argument) when it is not a number of microseconds >= 0."""
    text = (os.environ if environ is None else environ).get(BUSY_POLL_ENV, "").strip()
    if not text:
        return BUSY_POLL_LIMIT
    try:
        micros = float(text)
    except ValueError:
        micros = -1.0
    if not 0 <= micros <= 1e6:
        raise PilotctlError(
            ErrorCode.INVALID_ARGUMENT,
            f"{BUSY_POLL_ENV} must be microseconds from 0 to 1000000, got {text!r}",
            f"e.g. {BUSY_POLL_ENV}=0 to never busy-poll, or unset it for the default "
            f"({BUSY_POLL_LIMIT * 1e6:.0f})",
        )
    return micros * 1e-6


def path_timers(environ: Mapping[str, str] | None = None) -> tuple[PathConfig, float | None]:
    """`PILOT_PATH_TIMERS` as a PathConfig and the rendezvous heartbeat (None: default).
    PilotctlError(invalid_argument) when it is not a JSON object of known fields."""
    text = (os.environ if environ is None else environ).get(PATH_TIMERS_ENV, "").strip()
    if not text:
        return PathConfig(), None
    hint = (f"{PATH_TIMERS_ENV} is a JSON object such as "
            '{"keepalive_interval": 5, "reason_deadline": 4, "rendezvous_heartbeat": 5}')
    try:
        values = json.loads(text)
    except ValueError as exc:
        raise PilotctlError(ErrorCode.INVALID_ARGUMENT,
                            f"{PATH_TIMERS_ENV} is not JSON: {exc}", hint) from None
    if not isinstance(values, dict):
        raise PilotctlError(ErrorCode.INVALID_ARGUMENT, f"{PATH_TIMERS_ENV} is not an object",
                            hint)
    heartbeat = values.pop("rendezvous_heartbeat", None)
    known = {f.name for f in dataclasses.fields(PathConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PilotctlError(ErrorCode.INVALID_ARGUMENT,
                            f"{PATH_TIMERS_ENV}: unknown field(s) {', '.join(unknown)}",
                            f"known: {', '.join(sorted(known))}, rendezvous_heartbeat")
    if heartbeat is not None and (not isinstance(heartbeat, int | float) or heartbeat <= 0):
        raise PilotctlError(ErrorCode.INVALID_ARGUMENT,
                            f"{PATH_TIMERS_ENV}: rendezvous_heartbeat must be a positive number",
                            hint)
    try:
        return PathConfig(**values), (float(heartbeat) if heartbeat is not None else None)
    except TypeError as exc:
        raise PilotctlError(ErrorCode.INVALID_ARGUMENT, f"{PATH_TIMERS_ENV}: {exc}",
                            hint) from None


def _node_config(
    floor_ns: int, paths: PathConfig | None = None, *, public: bool = False
) -> NodeConfig:
    return NodeConfig(
        # DESIGN 8: a public node completes handshakes with anyone; the core then passes
        # it nothing but trust frames from peers the trust store does not hold.
        public=public,
        paths=paths or PathConfig(),
        # Initiations retried every second (not every 5 s): a lost first packet costs a
        # second, not five, and the rendezvous check at start stays within seconds.
        session=SessionConfig(handshake_retry=1.0, handshake_jitter=0.2),
        delivery=DeliveryConfig(
            max_message_size=MAX_MESSAGE_BYTES + 64 * 1024,
            message_receive_window=8 << 20,
        ),
        initiation_floor_ns=floor_ns,
    )


def _show(addr: tuple[str, int] | None) -> str | None:
    if addr is None:
        return None
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _label(peer: PeerRecord) -> str:
    return f"{peer.hostname} ({peer.address})" if peer.hostname else peer.address


def not_trusted_by(peer: PeerRecord, what: str) -> PilotctlError:
    """The peer refused what we sent because it does not trust us (DESIGN 8)."""
    return PilotctlError(
        ErrorCode.NOT_TRUSTED,
        f"{_label(peer)} does not trust this node: it refused {what}",
        f"ask for trust first: pilotctl handshake {peer.hostname or peer.address}",
    )


def _rendezvous_error(code: str, message: str, what: str) -> PilotctlError:
    """A rendezvous error code (or the client's timeout/connection_failed) as a DESIGN 9
    error."""
    if code in ErrorCode._value2member_map_:
        return PilotctlError(code, f"{what}: {message}")
    if code == "rate_limited":
        return PilotctlError(ErrorCode.CONNECTION_FAILED, f"{what}: {message}",
                             "the rendezvous limits requests per node; try again shortly")
    return PilotctlError(ErrorCode.INTERNAL, f"{what}: {message} ({code})")


class PilotNetwork:
    """The real network service (see the module docstring)."""

    def __init__(self) -> None:
        self._config: NetworkConfig | None = None
        self._host: NetworkHost | None = None
        self._node: Node | None = None
        self._client: RendezvousClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._endpoint: tuple[str, int] | None = None
        self._candidates: list[tuple[str, int]] = []
        #: From NatDiscovered: the one-word NAT type and our reflexive addresses.
        self._nat_type: str | None = None
        self._reflexive: list[tuple[str, int]] = []
        self._nat_known: asyncio.Event | None = None
        self._registered = False
        self._detail: str | None = None
        self._started: asyncio.Future[None] | None = None
        self._requests: dict[int, asyncio.Future[ClientEvent]] = {}
        self._records: dict[str, IdentityRecord] = {}
        self._reasons: dict[str, str] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        #: Trust requests that came inside a session (request id -> sender): the answer
        #: goes back the same way while that session lasts, else through the mailbox.
        self._session_requests: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._background = asyncio.Semaphore(BACKGROUND_CONNECTS)
        self._floor_saved = 0
        self._server_message: asyncio.Event | None = None
        self._stopping = False
        self.ports = transfer.PortTable()

    # ------------------------------------------------------------------ lifecycle

    async def start(self, config: NetworkConfig, host: NetworkHost) -> None:
        self._config, self._host = config, host
        self._loop = loop = asyncio.get_running_loop()
        self._floor_saved = config.handshake_floor_ns
        paths, heartbeat = path_timers()
        busy_poll = busy_poll_limit()
        endpoint = await _resolve(config.rendezvous, config.udp_socket.family)
        key = _decode_key(config.rendezvous)
        self._endpoint = endpoint
        node = Node(
            config.identity,
            _node_config(config.handshake_floor_ns, paths, public=config.public),
            sock=config.udp_socket,
            auto_confirm=False,
            on_event=self._on_node_event,
            trust_policy=self._trust_policy,
            busy_poll=busy_poll,
        )
        await node.start()
        self._node = node
        bound = config.udp_socket.getsockname()
        self._candidates = local_candidates(
            (bound[0], bound[1]), include_loopback=ipaddress.ip_address(endpoint[0]).is_loopback
        )
        client = RendezvousClient(
            node.core,
            config.identity,
            endpoint,
            key,
            hostname=config.hostname,
            public=config.public,
            candidates=self._candidates,
            rng=os.urandom,
            wall_clock=time.time,
            allow_list=host.trusted_keys(),
            config=ClientConfig(heartbeat_interval=heartbeat) if heartbeat else None,
        )
        self._client = client
        node.add_timer(client.get_timer, self._client_timer)
        self._started = loop.create_future()
        now = time.monotonic()
        node.core.set_local_candidates(self._candidates, now)
        loopback = ipaddress.ip_address(endpoint[0]).is_loopback
        if not loopback:
            # RFC 5780 against the rendezvous' two addresses (DESIGN 7); over loopback
            # there is no NAT to classify and `nat_type` stays null.
            self._nat_known = asyncio.Event()
            node.core.discover_nat(endpoint, now, config=NAT_CLASSIFIER)
        if key is not None:
            # Opened here with a short give-up; the client's own connect then joins it.
            node.core.connect_rendezvous(endpoint, key, now, give_up=PINNED_GIVE_UP)
        client.start(now)
        self._after_direct_call()
        try:
            await asyncio.wait_for(asyncio.shield(self._started), START_TIMEOUT)
        except TimeoutError:
            await self._shutdown(graceful=False)
            raise PilotctlError(
                ErrorCode.CONNECTION_FAILED,
                f"the rendezvous at {_show(endpoint)} did not answer within "
                f"{START_TIMEOUT:g} s",
                "check that it runs (pilotctl rendezvous serve --listen HOST:PORT) and that "
                "the address is right",
            ) from None
        except BaseException:
            await self._shutdown(graceful=False)
            raise
        if self._nat_known is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nat_known.wait(), NAT_DISCOVERY_WAIT)
            if self._nat_type is None:
                log.warning("no NAT classification from the rendezvous' STUN within %g s",
                            NAT_DISCOVERY_WAIT)
        node.listen(transfer.SERVICE_PORT)
        self._spawn(self._receive_loop())
        self._spawn(self._accept_loop())
        for address, public_key in host.trusted_keys().items():
            # Peers we trust get a session at once: whoever restarted, the session is
            # made again without anyone asking (DESIGN 8: trust is kept across restarts).
            self._spawn(self._background_connect(PeerRecord(address, public_key)))

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        await self._shutdown(graceful=True)

    async def _shutdown(self, *, graceful: bool) -> None:
        node, client = self._node, self._client
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        self.ports.close()
        if node is None:
            return
        if client is not None and graceful and self._registered:
            # Tell the server we are gone (an empty locator), so a peer asking for us now
            # hears "not online" at once instead of timing out on our old address.
            self._server_message = asyncio.Event()
            with contextlib.suppress(PilotError):
                client.set_candidates((), time.monotonic())
                self._after_direct_call()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._server_message.wait(), OFFLINE_NOTICE_TIMEOUT)
        if client is not None:
            client.close(time.monotonic())
        self._save_floor()
        for future in list(self._requests.values()):
            if not future.done():
                future.set_exception(PilotctlError(ErrorCode.CONNECTION_FAILED,
                                                   "the daemon is stopping"))
        await node.close(graceful=graceful)

    def status(self) -> NetworkStatus:
        return NetworkStatus(
            available=True,
            registered=self._registered,
            nat_type=self._nat_type,
            candidates=[text for text in map(_show, dict.fromkeys(
                [*self._candidates, *self._reflexive])) if text],
            detail=self._detail,
        )

    # ------------------------------------------------------------------ plumbing

    def _require(self) -> tuple[Node, RendezvousClient, NetworkHost]:
        if self._node is None or self._client is None or self._host is None:
            raise PilotctlError(ErrorCode.CONNECTION_FAILED, "the network service is not running")
        return self._node, self._client, self._host

    def _trust_policy(self, address: str) -> bool:
        host = self._host
        return host is not None and address in host.trusted_keys()

    def _after_direct_call(self) -> None:
        """After calling the client or the core directly: route what the client has for
        us, and let the binding send what was queued and re-arm its timer."""
        self._pump()
        if self._node is not None:
            self._node.flush()

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("network task failed", exc_info=task.exception())

    def _on_node_event(self, event: Event) -> bool:
        """Every core event, before the binding routes it: the client takes its own."""
        client = self._client
        if client is None:
            return False
        now = time.monotonic()
        if isinstance(event, HandshakeCompleted | RendezvousConnected):
            self._save_floor()
        if isinstance(event, NatDiscovered):
            self._on_nat(event)
            return True
        if isinstance(event, TrustRequested | TrustAccepted | TrustRejected):
            self._spawn(self._on_trust_frame(event))
            return True
        if isinstance(event, PathChanged):
            # One line per change in daemon.log: what `peers` shows, with its moment, and
            # the RTO the liveness rule used (no ACK crosses a cut path, so after a cut it
            # is the RTO the connection had when the path was cut).
            log.info("path to %s: %s%s%s%s", event.address, event.path,
                     f" ({event.reason})" if event.reason else "",
                     f" via {_show(event.endpoint)}" if event.endpoint else "",
                     self._timing(event.address))
        if (
            self._server_message is not None
            and isinstance(event, MessageReceived)
            and event.address == client.server_address
        ):
            self._server_message.set()
        consumed = client.handle_event(event, now)
        if consumed:
            self._pump()
        elif isinstance(event, HandshakeCompleted):
            self._reasons.pop(event.address, None)
        return consumed

    def _timing(self, address: str) -> str:
        """` [rto X ms]` of the session with `address`, or "" without one."""
        try:
            info = self._node.core.peer_info(address) if self._node is not None else None
        except PilotError:
            return ""
        if info is None or info.rto is None:
            return ""
        return f" [rto {info.rto * 1000:.3f} ms]"

    def _on_nat(self, event: NatDiscovered) -> None:
        self._nat_type = event.nat_type
        self._reflexive = [(str(a[0]), int(a[1])) for a in event.reflexive]
        log.info("NAT: %s (mapping %s, filtering %s), seen as %s", event.nat_type,
                 event.mapping, event.filtering,
                 ", ".join(filter(None, map(_show, event.reflexive))) or "-")
        if self._nat_known is not None:
            self._nat_known.set()

    def _client_timer(self, now: float) -> None:
        assert self._client is not None
        self._client.handle_timer(now)
        self._pump()

    def _pump(self) -> None:
        client = self._client
        if client is None:
            return
        while (event := client.next_event()) is not None:
            try:
                self._on_client_event(event)
            except Exception:
                log.exception("handling %s failed", type(event).__name__)

    def _on_client_event(self, event: ClientEvent) -> None:
        if isinstance(event, LookupResult | RequestDone | RequestFailed):
            self._answer(event.request_id, event)
        elif isinstance(event, IntroductionReceived):
            if event.request_id is not None:
                self._answer(event.request_id, event)
            else:
                self._spawn(self._introduced(event))
        elif isinstance(event, NoteReceived):
            self._spawn(self._on_note(event))
        elif isinstance(event, Registered):
            self._on_registered(event)
        elif isinstance(event, RegistrationFailed):
            self._registered = False
            error = self._registration_error(event)
            self._detail = error.message
            if not self._start_failed(error):
                log.error("the rendezvous refused our registration: %s", error.message)
        elif isinstance(event, KeyChanged):
            self._registered = False
            error = self._key_changed_error(event)
            self._detail = error.message
            if not self._start_failed(error):
                log.error("%s (%s)", error.message, error.hint)
        elif isinstance(event, Disconnected):
            self._registered = False
            self._detail = event.reason
            log.warning("rendezvous: %s", event.reason)

    def _answer(self, request_id: int, event: ClientEvent) -> None:
        future = self._requests.pop(request_id, None)
        if future is not None and not future.done():
            future.set_result(event)

    def _start_failed(self, error: PilotctlError) -> bool:
        started = self._started
        if started is not None and not started.done():
            started.set_exception(error)
            return True
        return False

    def _on_registered(self, event: Registered) -> None:
        assert self._config is not None and self._host is not None
        self._registered = True
        self._detail = None
        if self._config.rendezvous.key is None:
            key = encode_server_key(event.static_key)
            self._host.on_rendezvous_key(key)  # pinned for every later start
        started = self._started
        again = started is None or started.done()
        log.info("registered at the rendezvous %s as %s (seen from %s)%s",
                 _show(self._endpoint), self._config.identity.address, _show(event.observed),
                 " again, after a reconnection" if again else "")
        if started is not None and not started.done():
            started.set_result(None)

    def _registration_error(self, event: RegistrationFailed) -> PilotctlError:
        assert self._config is not None
        hostname = self._config.hostname
        if event.code == "already_exists":
            return PilotctlError(
                ErrorCode.ALREADY_EXISTS,
                f"the hostname {hostname} is registered to another node at the rendezvous",
                "choose another name with --hostname NAME (a name stays with the first key "
                "that claimed it for 30 days after its last renewal)",
            )
        return _rendezvous_error(event.code, event.message, "the rendezvous refused us")

    def _key_changed_error(self, event: KeyChanged) -> PilotctlError:
        assert self._endpoint is not None
        new = f"{_show(event.endpoint)}#{encode_server_key(event.presented)}"
        return PilotctlError(
            ErrorCode.KEY_CHANGED,
            f"the rendezvous at {_show(event.endpoint)} presents the key "
            f"{encode_server_key(event.presented)}, not the pinned "
            f"{encode_server_key(event.pinned)}",
            f"if its operator confirms the new key, start with --rendezvous {new}",
        )

    def _save_floor(self) -> None:
        node, host = self._node, self._host
        if node is None or host is None:
            return
        floor = node.core.initiation_floor
        if floor > self._floor_saved:
            self._floor_saved = floor
            try:
                host.on_handshake_floor(floor)
            except Exception:
                log.exception("could not save the handshake floor")

    async def _ask(self, start: Callable[[RendezvousClient, float], int], what: str,
                   timeout: float = REQUEST_TIMEOUT) -> ClientEvent:
        """Submit one rendezvous request and wait for its answer."""
        _, client, _ = self._require()
        assert self._loop is not None
        if not self._registered:
            # The client queues requests until its session is back; do not make a
            # command wait long for a rendezvous that is away.
            timeout = min(timeout, NOT_REGISTERED_WAIT)
        try:
            request_id = start(client, time.monotonic())
        except LocalProtocolError as exc:  # the client stopped (e.g. the server key changed)
            raise PilotctlError(ErrorCode.CONNECTION_FAILED, f"{what}: {exc}",
                                self._detail) from None
        future: asyncio.Future[ClientEvent] = self._loop.create_future()
        self._requests[request_id] = future
        self._after_direct_call()
        try:
            event = await asyncio.wait_for(future, max(timeout, 0.0))
        except TimeoutError:
            raise PilotctlError(
                ErrorCode.TIMEOUT if self._registered else ErrorCode.CONNECTION_FAILED,
                f"{what}: the rendezvous did not answer within {timeout:g} s",
                None if self._registered else f"not connected to the rendezvous: {self._detail}",
            ) from None
        finally:
            self._requests.pop(request_id, None)
        if isinstance(event, RequestFailed):
            raise _rendezvous_error(event.code, event.message, what)
        return event

    # ------------------------------------------------------------------ names

    async def lookup(self, target: str) -> PeerRecord:
        try:
            event = await self._ask(lambda c, now: c.lookup(target, now), f"look up {target}")
        except PilotctlError as exc:
            if exc.code is ErrorCode.NOT_FOUND:
                raise PilotctlError(
                    ErrorCode.NOT_FOUND,
                    f"no node named {target} is registered at the rendezvous",
                    "check the spelling; a node claims its name with `pilotctl daemon start "
                    "--hostname NAME` (or give its node address)",
                ) from None
            raise
        assert isinstance(event, LookupResult)
        record = event.record
        self._records[record.address] = record
        return PeerRecord(record.address, record.public_key, record.hostname)

    async def register_hostname(self, hostname: str | None) -> None:
        try:
            await self._ask(lambda c, now: c.set_hostname(hostname, now),
                            f"claim the hostname {hostname}" if hostname else
                            "release the hostname")
        except PilotctlError as exc:
            if exc.code is ErrorCode.ALREADY_EXISTS:
                raise PilotctlError(
                    ErrorCode.ALREADY_EXISTS,
                    f"the hostname {hostname} is registered to another node",
                    "choose another name",
                ) from None
            raise

    async def publish_allow_list(self, addresses: Sequence[str]) -> None:
        await self._ask(lambda c, now: c.publish_allow_list(list(addresses), now),
                        "publish the allow list")

    # ------------------------------------------------------------------ trust notes

    async def _record_for(self, peer: PeerRecord) -> IdentityRecord:
        """The peer's verified identity record (its X25519 key seals notes to it)."""
        record = self._records.get(peer.address)
        if record is None or record.public_key != peer.public_key:
            found = await self.lookup(peer.address)
            record = self._records[found.address]
        if record.public_key != peer.public_key:
            raise PilotctlError(
                ErrorCode.KEY_CHANGED,
                f"the rendezvous holds another key for {peer.address}",
            )
        return record

    async def send_trust_request(
        self, peer: PeerRecord, request_id: str, justification: str | None
    ) -> str:
        """Inside a session when one exists or the rendezvous introduces us (the peer is
        public, or still lists us): "session"; else as a mailbox note: "mailbox"."""
        assert self._config is not None
        if peer.address == self._config.identity.address:
            raise PilotctlError(ErrorCode.INVALID_ARGUMENT, "that is this node's own address")
        record = await self._record_for(peer)
        if await self._session_for_trust(record):
            node, _, _ = self._require()
            try:
                node.send_trust_request(peer.address, bytes.fromhex(request_id),
                                        justification or "")
                return "session"
            except PilotError as exc:
                log.info("trust request to %s through the mailbox: %s", _label(peer), exc)
        await self._ask(
            lambda c, now: c.post_note(record, NoteKind.TRUST_REQUEST,
                                       bytes.fromhex(request_id), justification, now),
            f"send the trust request to {_label(peer)}",
        )
        return "mailbox"

    async def _session_for_trust(self, record: IdentityRecord) -> bool:
        """A session with a peer that may not trust us, for trust frames: the one we have,
        or one made after an introduction. False when the rendezvous refuses to introduce
        us (a private peer that does not list us): then only the mailbox reaches it."""
        node, _, host = self._require()
        address = record.address
        if node.core.has_session(address):
            return True
        try:
            event = await self._ask(lambda c, now: c.request_introduction(address, now),
                                    f"reach {address}", timeout=TRUST_SESSION_TIMEOUT)
        except PilotctlError:
            return False
        if not isinstance(event, IntroductionReceived) or event.record.address != address \
                or not event.candidates:
            return False
        self._records[address] = event.record
        try:
            if address in host.trusted_keys():
                self._apply_introduction(node, event)
            else:
                # Direct to its candidates only: punching and the relay are for peers
                # we trust (the core drops path probes of untrusted ones).
                node.add_peer(event.record, event.candidates, trusted=False)
        except LocalProtocolError as exc:
            log.info("no session with %s for a trust request: %s", address, exc)
            return False
        try:
            await node.connect(address, timeout=TRUST_SESSION_TIMEOUT)
        except PilotError as exc:
            log.info("no session with %s for a trust request: %s", address, exc)
            return False
        return True

    async def _on_trust_frame(
        self, event: TrustRequested | TrustAccepted | TrustRejected
    ) -> None:
        """A trust frame from a session: the same handling as the mailbox note."""
        node, _, host = self._require()
        address = event.address
        public_key = node.core.peer_public_key(address) if address in node.core.peers() \
            else None
        if public_key is None:
            return
        record = self._records.get(address)
        sender = PeerRecord(address, public_key,
                            record.hostname if record is not None
                            and record.public_key == public_key else None)
        request_id = event.request_id.hex()
        if isinstance(event, TrustRequested):
            if sender.hostname is None:
                with contextlib.suppress(PilotctlError):
                    found = await self.lookup(address)  # the verified record's hostname
                    if found.public_key == public_key:
                        sender = found
            log.info("trust request from %s (in session)", _label(sender))
            self._session_requests[request_id] = address
            while len(self._session_requests) > MAX_SESSION_REQUESTS:
                del self._session_requests[next(iter(self._session_requests))]
            await host.on_trust_request(TrustRequestNote(
                request_id, sender, event.justification or None, time.time()))
            return
        accepted = isinstance(event, TrustAccepted)
        log.info("trust %s from %s (in session)", "accept" if accepted else "reject",
                 _label(sender))
        await host.on_trust_answer(TrustAnswerNote(request_id, sender, accepted))

    def peer_trusted(self, address: str) -> None:
        node = self._node
        if node is not None and address in node.core.peers():
            node.core.set_trust(address, True, time.monotonic())
            node.flush()

    async def send_trust_answer(self, peer: PeerRecord, request_id: str, accept: bool) -> None:
        node, _, _ = self._require()
        core = node.core
        if accept:
            self.peer_trusted(peer.address)  # the requester's first message is delivered
        if self._session_requests.get(request_id) == peer.address \
                and core.has_session(peer.address):
            try:
                node.answer_trust(peer.address, bytes.fromhex(request_id), accept)
                del self._session_requests[request_id]
                return
            except PilotError as exc:
                log.info("answering %s through the mailbox: %s", _label(peer), exc)
        record = await self._record_for(peer)
        kind = NoteKind.TRUST_ACCEPT if accept else NoteKind.TRUST_REJECT
        await self._ask(
            lambda c, now: c.post_note(record, kind, bytes.fromhex(request_id), None, now),
            f"answer {_label(peer)}",
        )

    async def _on_note(self, event: NoteReceived) -> None:
        _, _, host = self._require()
        note, sender_record = event.note, event.sender_record
        if sender_record is not None:
            self._records[sender_record.address] = sender_record
        sender = PeerRecord(
            note.sender, note.sender_public_key,
            sender_record.hostname if sender_record is not None else None,
        )
        request_id = note.request_id.hex()
        if note.kind is NoteKind.TRUST_REQUEST:
            log.info("trust request from %s", _label(sender))
            await host.on_trust_request(
                TrustRequestNote(request_id, sender, note.justification, note.sent_at)
            )
            return
        accepted = note.kind is NoteKind.TRUST_ACCEPT
        log.info("trust %s from %s", "accept" if accepted else "reject", _label(sender))
        await host.on_trust_answer(TrustAnswerNote(request_id, sender, accepted))
        if accepted and sender.address in host.trusted_keys():
            # Make the session now: the first message after the accept finds it ready.
            await self._background_connect(sender)

    async def forget_peer(self, address: str) -> None:
        node, _, _ = self._require()
        core = node.core
        if address not in core.peers():
            return
        if core.has_session(address):
            with contextlib.suppress(PilotError):
                node.close_peer(address)  # the peer is told (CLOSE), our queues dropped
            for _ in range(2):
                await asyncio.sleep(0)  # the binding's poll sends the CLOSE
        core.remove_peer(address, time.monotonic())
        self._reasons.pop(address, None)
        node.flush()

    # ------------------------------------------------------------------ sessions

    async def ensure_session(self, peer: PeerRecord, deadline: float) -> None:
        """A session with `peer` (trusted): the one we have, or introduction, add_peer,
        handshake. PilotctlError: not_trusted, connection_failed, timeout."""
        node, _, _ = self._require()
        address = peer.address
        if node.core.has_session(address):
            return
        lock = self._connecting.setdefault(address, asyncio.Lock())
        async with lock:
            if node.core.has_session(address):
                return
            await self._introduce_and_connect(node, peer, deadline)

    async def _introduce_and_connect(self, node: Node, peer: PeerRecord, deadline: float) -> None:
        address = peer.address
        try:
            event = await self._ask(
                lambda c, now: c.request_introduction(address, now),
                f"reach {_label(peer)}", timeout=deadline - time.monotonic(),
            )
        except PilotctlError as exc:
            if exc.code is ErrorCode.NOT_FOUND:
                raise await self._refused(peer) from None
            raise
        assert isinstance(event, IntroductionReceived)
        record = event.record
        if record.address != address:
            raise PilotctlError(ErrorCode.INTERNAL, f"introduced to {record.address}, not "
                                f"{address}")
        self._records[address] = record
        if not event.candidates:
            # The server adds the address it sees a node's session from to every
            # introduction: none at all means the peer has no session with it, so the
            # relay (which forwards only to online nodes) cannot reach it either.
            self._reasons[address] = "no-candidates"
            raise PilotctlError(
                ErrorCode.CONNECTION_FAILED,
                f"{_label(peer)} is not online: the rendezvous knows no address for it",
                "its daemon must be running (pilotctl daemon start); try again later",
            )
        try:
            self._apply_introduction(node, event)
        except LocalProtocolError as exc:
            raise PilotctlError(ErrorCode.CONNECTION_FAILED,
                                f"cannot use the record of {_label(peer)}: {exc}") from None
        self._reasons[address] = "probing"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout(peer, "no session")
        try:
            await node.connect(address, timeout=remaining)
        except ConnectTimeout:
            self._reasons[address] = "punch-timeout"
            raise _timeout(peer, "no answer at its addresses "
                           f"({', '.join(filter(None, map(_show, event.candidates)))})") \
                from None
        except ConnectionFailed as exc:
            self._reasons[address] = "punch-timeout"
            raise PilotctlError(ErrorCode.CONNECTION_FAILED,
                                f"no session with {_label(peer)}: {exc}") from None
        self._reasons.pop(address, None)

    def _apply_introduction(self, node: Node, event: IntroductionReceived) -> None:
        """`add_peer` then the core's `introduce` (DESIGN 6-7): punching toward the
        candidates in step with the peer from the agreed start, the rendezvous as the
        relay until a direct path is proven (and as standby after)."""
        client = self._client
        assert client is not None
        record = event.record
        now = time.monotonic()
        node.add_peer(record, event.candidates, trusted=True)
        relay = client.server_address
        if relay is not None and relay not in node.core.peers():
            relay = None  # no session with the rendezvous right now: direct only
        node.core.introduce(record.address, event.candidates, now,
                            start_delay=event.start_delay, probe_limit=event.probe_limit,
                            relay=relay)
        node.flush()

    async def _refused(self, peer: PeerRecord) -> PilotctlError:
        """An introduction was refused: the peer does not accept us, or is unknown."""
        try:
            await self.lookup(peer.address)
        except PilotctlError:
            self._reasons[peer.address] = "no-candidates"
            return PilotctlError(
                ErrorCode.CONNECTION_FAILED,
                f"{_label(peer)} is not registered at the rendezvous",
                "its daemon must be running (pilotctl daemon start); try again later",
            )
        # The rendezvous refused because the peer's allow list lacks us: the refusal tells
        # nothing of where the peer is (DESIGN 8), only that it does not accept us.
        return not_trusted_by(peer, "to be reached by this node (we are not on its allow list)")

    async def _background_connect(self, peer: PeerRecord) -> None:
        async with self._background:
            try:
                await self.ensure_session(
                    peer, time.monotonic() + BACKGROUND_CONNECT_TIMEOUT
                )
            except PilotctlError as exc:
                log.info("no session with %s yet: %s", _label(peer), exc.message)

    async def _introduced(self, event: IntroductionReceived) -> None:
        """The rendezvous introduced a peer that asked for us: connect toward it too."""
        node, _, host = self._require()
        record = event.record
        if host.trusted_keys().get(record.address) != record.public_key:
            log.info("ignored an introduction to %s: not trusted", record.address)
            return
        self._records[record.address] = record
        try:
            # Even without candidates: the requester is online, so the relay reaches it.
            self._apply_introduction(node, event)
        except LocalProtocolError as exc:
            log.info("ignored an introduction to %s: %s", record.address, exc)
            return
        if node.core.has_session(record.address):
            return  # the peer's initiation, or ours, made it already
        try:
            await node.connect(record.address, timeout=BACKGROUND_CONNECT_TIMEOUT)
        except PilotError as exc:
            log.info("no session with %s after its introduction: %s", record.address, exc)

    # ------------------------------------------------------------------ messages

    async def send_message(
        self,
        peer: PeerRecord,
        message_id: str,
        type: str,
        data: bytes,
        reply_to: str | None,
        timeout: float,
    ) -> None:
        node, _, _ = self._require()
        deadline = time.monotonic() + timeout
        raw_id = bytes.fromhex(message_id)
        raw_reply = bytes.fromhex(reply_to) if reply_to else None
        while True:
            await self.ensure_session(peer, deadline)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _timeout(peer, "no receipt")
            try:
                await node.send_message(peer.address, data, type=type, reply_to=raw_reply,
                                        timeout=remaining, message_id=raw_id)
                return
            except DeliveryTimeout:
                raise PilotctlError(
                    ErrorCode.TIMEOUT,
                    f"{_label(peer)} did not confirm the message within {timeout:g} s",
                    "the peer may be overloaded or gone; check it with: pilotctl ping "
                    f"{peer.hostname or peer.address}",
                ) from None
            except MessageTooLarge as exc:
                raise PilotctlError(ErrorCode.TOO_LARGE, str(exc)) from None
            except NotTrustedByPeer:
                raise not_trusted_by(peer, "the message") from None
            except (PeerNotTrusted, UnknownPeer):
                raise PilotctlError(ErrorCode.NOT_TRUSTED,
                                    f"{_label(peer)} is no longer trusted") from None
            except (ConnectionFailed, NodeClosed) as exc:
                if self._stopping or isinstance(exc, NodeClosed):
                    raise PilotctlError(ErrorCode.CONNECTION_FAILED,
                                        "the daemon is stopping") from None
                # The session ended under the message (the peer stopped or restarted):
                # make a new one and send again under the same id (the peer de-duplicates).
                log.info("session with %s lost while sending: %s; retrying", peer.address, exc)
                await asyncio.sleep(0.05)

    async def _receive_loop(self) -> None:
        node, _, _ = self._require()
        while True:
            try:
                message = await node.receive()
            except NodeClosed:
                return
            await self._deliver(node, message)

    async def _deliver(self, node: Node, message: MessageReceived) -> None:
        _, _, host = self._require()
        if len(message.message_id) != 16:
            log.warning("dropped a message from %s with a %d-byte id", message.address,
                        len(message.message_id))
            return
        reply_to = message.reply_to.hex() if message.reply_to and len(message.reply_to) == 16 \
            else None
        incoming = IncomingMessage(
            id=message.message_id.hex(),
            type=message.type if message.type in MESSAGE_TYPES else "binary",
            sender=message.address,
            sender_hostname=None,  # the host fills it from its trust store
            data=message.data,
            reply_to=reply_to,
            received_at=time.time(),
        )
        try:
            await host.on_message(incoming)
        except PilotctlError as exc:
            log.warning("message %s from %s refused: %s", incoming.id, message.address,
                        exc.message)
            if exc.code is ErrorCode.NOT_TRUSTED:
                await self.forget_peer(message.address)
            return
        except Exception:
            log.exception("could not store message %s from %s; no receipt sent", incoming.id,
                          message.address)
            return
        try:
            node.confirm(message)  # durable in the inbox: only now the RECEIPT goes back
        except PilotError as exc:
            log.info("receipt for %s not sent (%s); the sender resends and is receipted then",
                     incoming.id, exc)

    # ------------------------------------------------------------------ streams

    async def _accept_loop(self) -> None:
        node, _, host = self._require()
        while True:
            try:
                stream = await node.accept(transfer.SERVICE_PORT)
            except NodeClosed:
                return
            self._spawn(transfer.serve(stream, host, self._hostname_of))

    def _hostname_of(self, address: str) -> str | None:
        record = self._records.get(address)
        return record.hostname if record is not None else None

    async def send_file(self, peer: PeerRecord, path: Path, timeout: float,
                        name: str | None = None) -> FileSent:
        node, _, _ = self._require()
        deadline = time.monotonic() + timeout
        await self.ensure_session(peer, deadline)
        host = self._host
        assert host is not None

        def progress(sent: int, size: int) -> None:
            host.publish_event("file.progress", {"to": peer.address, "path": str(path),
                                                 "name": name or path.name, "sent": sent,
                                                 "bytes": size})

        try:
            return await transfer.send_file(node, peer, path, name or path.name, deadline,
                                            progress)
        except PilotTimeout:
            raise _timeout(peer, f"{path.name} was not received") from None
        except NotTrustedByPeer:
            raise not_trusted_by(peer, f"the file {path.name}") from None
        except PilotError as exc:
            raise PilotctlError(ErrorCode.CONNECTION_FAILED,
                                f"sending {path.name} to {_label(peer)} failed: {exc}") from None

    async def peers(self) -> list[PeerPath]:
        node, _, host = self._require()
        core = node.core
        rows = []
        for address in sorted(host.trusted_keys()):
            try:
                info = core.peer_info(address)
            except PilotError:
                info = None
            hostname = self._hostname_of(address)
            if info is not None and info.has_session and info.path != "none" \
                    and info.endpoint is not None:
                # The core's path report (DESIGN 7): direct, or relay and why not direct.
                rtt = round(info.rtt * 1000, 3) if info.rtt is not None else None
                rows.append(PeerPath(address, hostname, info.path, _show(info.endpoint), rtt,
                                     info.reason))
                continue
            core_reason = info.reason if info is not None else None
            if core_reason not in (None, "probing", "no-candidates"):
                rows.append(PeerPath(address, hostname, "none", None, None, core_reason))
                continue
            reason = self._reasons.get(address)
            if reason is None or reason == "probing":
                # A final reason (punch-timeout) stands even while the core keeps trying.
                in_progress = info is not None and info.handshake_in_progress
                reason = "probing" if in_progress or reason else "no-candidates"
            rows.append(PeerPath(address, hostname, "none", None, None, reason))
        return rows

    async def ping(self, peer: PeerRecord, count: int, timeout: float) -> list[float | None]:
        node, _, _ = self._require()
        await self.ensure_session(peer, time.monotonic() + timeout)
        rtts: list[float | None] = []
        for index in range(count):
            if index:
                await asyncio.sleep(0.05)
            try:
                rtt = await node.ping(peer.address, timeout=timeout)
                rtts.append(round(rtt * 1000, 3))
            except PilotTimeout:
                rtts.append(None)
            except PilotError as exc:
                raise PilotctlError(ErrorCode.CONNECTION_FAILED,
                                    f"ping {_label(peer)}: {exc}") from None
        return rtts

    async def bench(self, peer: PeerRecord, size: int, timeout: float) -> dict[str, Any]:
        node, _, _ = self._require()
        deadline = time.monotonic() + timeout
        await self.ensure_session(peer, deadline)
        try:
            return await transfer.bench(node, peer, size, deadline)
        except PilotTimeout:
            raise _timeout(peer, "the benchmark did not finish") from None
        except NotTrustedByPeer:
            raise not_trusted_by(peer, "the benchmark stream") from None
        except PilotError as exc:
            raise PilotctlError(ErrorCode.CONNECTION_FAILED,
                                f"bench with {_label(peer)}: {exc}") from None

    async def call(self, operation: str, params: Mapping[str, Any]) -> Any:
        node, _, host = self._require()
        return await transfer.call(self, node, host, operation, params)


def _timeout(peer: PeerRecord, what: str) -> PilotctlError:
    return PilotctlError(
        ErrorCode.TIMEOUT,
        f"{_label(peer)}: {what} in time",
        "is its daemon running? check with: pilotctl ping "
        f"{peer.hostname or peer.address}",
    )


def _decode_key(endpoint: Endpoint) -> bytes | None:
    if endpoint.key is None:
        return None
    try:
        return decode_server_key(endpoint.key)
    except InvalidServerKey as exc:
        raise PilotctlError(
            ErrorCode.INVALID_ARGUMENT, str(exc),
            "copy the whole HOST:PORT#KEY line the rendezvous printed",
        ) from None


async def _resolve(endpoint: Endpoint, family: int) -> tuple[str, int]:
    """The rendezvous as an IP address and port the UDP socket can reach."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise PilotctlError(
            ErrorCode.CONNECTION_FAILED,
            f"cannot resolve the rendezvous host {endpoint.host!r}: {exc.strerror}",
            "check the name, or give an IP address",
        ) from None
    for info_family, _, _, _, address in infos:
        if info_family == family or family == socket.AF_INET6:
            host = str(address[0])
            if family == socket.AF_INET6 and info_family == socket.AF_INET:
                return host, int(address[1])
            return host.split("%", 1)[0], int(address[1])
    raise PilotctlError(
        ErrorCode.INVALID_ARGUMENT,
        f"the rendezvous {endpoint.hostport} is not reachable from the UDP socket's address "
        "family",
        "bind the daemon with --listen [::]:0 for IPv6 rendezvous servers",
    )
