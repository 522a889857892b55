"""Sans-IO STUN client transactions (RFC 8489 section 6.2.1) and NAT classification (RFC 5780).

`StunClient` runs Binding transactions over UDP: it hands out datagrams, retransmits them
with a doubling RTO (Rc sends, then Rm x RTO of waiting), matches responses by transaction
id and source address, and reports one frozen result per transaction. `NatClassifier`
drives a `StunClient` through the RFC 5780 tests against a server's primary and alternate
addresses and reports the NAT's mapping and filtering behaviour.

Both follow the aioquic shape: `datagrams_to_send(now)`, `receive_datagram(data, addr,
now)`, `get_timer()`, `handle_timer(now)`; time and randomness come in from the caller.
Nothing from the network raises: what does not match is dropped and counted in `stats`.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum

from .errors import LocalProtocolError
from .stun import (
    TRANSACTION_ID_SIZE,
    ChangeRequest,
    IntegrityAlgorithm,
    StunAttr,
    StunClass,
    StunDecodeError,
    StunMessage,
    StunMethod,
    build_binding_request,
    check_fingerprint,
    check_integrity,
    decode_message,
    is_stun,
)
from .transmit import Addr, Transmit

__all__ = [
    "BindingFailed",
    "BindingResult",
    "BindingSucceeded",
    "ClassifierConfig",
    "NatBehaviour",
    "NatClassification",
    "NatClassifier",
    "StunClient",
    "StunClientConfig",
    "same_endpoint",
]

# Transaction ids are 96 random bits; a repeat among pending ones is astronomically rare,
# so a few redraws then an error (a broken rng) keeps the loop bounded.
_TID_DRAWS = 8


@dataclass(frozen=True, slots=True)
class StunClientConfig:
    """RFC 8489 section 6.2.1 timers: `rto` seconds initial RTO, `rc` sends in all, then
    `rm` x `rto` of waiting after the last one (defaults: 0.5 s, 7, 16: 39.5 s)."""

    rto: float = 0.5
    rc: int = 7
    rm: int = 16
    fingerprint: bool = True
    software: str | None = None

    def __post_init__(self) -> None:
        if not self.rto > 0:
            raise LocalProtocolError("STUN rto must be positive")
        if self.rc < 1 or self.rm < 1:
            raise LocalProtocolError("STUN rc and rm must be at least 1")


@dataclass(frozen=True, slots=True)
class BindingSucceeded:
    """A Binding transaction got a success response.

    `mapped_address` is our reflexive address as the server saw it; `rtt` is measured from
    the last transmission of the request (Karn: the only unambiguous one).
    """

    server: Addr
    mapped_address: Addr
    other_address: Addr | None
    response_origin: Addr | None
    rtt: float
    transaction_id: bytes


@dataclass(frozen=True, slots=True)
class BindingFailed:
    """A Binding transaction ended without a mapped address: timeout or error response
    (`error_code` set), or a success response without any mapped-address attribute."""

    server: Addr
    reason: str
    transaction_id: bytes
    error_code: int | None = None


BindingResult = BindingSucceeded | BindingFailed


def _canonical_host(host: str) -> str:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host.lower()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def same_endpoint(a: Addr, b: Addr) -> bool:
    """Whether two (host, port) pairs name the same UDP endpoint, whatever the spelling
    of the IP address (`::1` and `0:0::1`, IPv4-mapped IPv6 and IPv4)."""
    return a[1] == b[1] and _canonical_host(a[0]) == _canonical_host(b[0])


class _Transaction:
    """One outstanding request: what to resend, where, and when to give up."""

    __slots__ = (
        "deadline",
        "expect_from",
        "integrity_key",
        "interval",
        "last_sent",
        "request",
        "sent",
        "server",
        "transaction_id",
    )

    def __init__(
        self,
        transaction_id: bytes,
        server: Addr,
        expect_from: Addr,
        request: bytes,
        integrity_key: bytes | None,
        now: float,
        rto: float,
    ) -> None:
        self.transaction_id = transaction_id
        self.server = server
        self.expect_from = expect_from
        self.request = request
        self.integrity_key = integrity_key
        self.sent = 1
        self.interval = rto
        self.last_sent = now
        self.deadline = now + rto


class StunClient:
    """Binding transactions toward any number of STUN servers, sans-IO."""

    def __init__(self, rng: Callable[[int], bytes], config: StunClientConfig | None = None) -> None:
        self.config = config or StunClientConfig()
        self._rng = rng
        self._transactions: dict[bytes, _Transaction] = {}
        self._outbox: list[Transmit] = []
        self._results: deque[BindingResult] = deque()
        #: Counters by reason: sends, retransmissions, results, and every dropped datagram.
        self.stats: Counter[str] = Counter()

    # ------------------------------------------------------------------ user actions

    def start_binding(
        self,
        server: Addr,
        now: float,
        *,
        change_request: ChangeRequest | None = None,
        response_from: Addr | None = None,
        username: str | None = None,
        key: bytes | None = None,
        integrity: IntegrityAlgorithm = "sha1",
    ) -> bytes:
        """Start a Binding transaction toward `server`; returns its transaction id.

        The response must come from `server`, or from `response_from` when given (a
        CHANGE-REQUEST is answered from another address, RFC 5780 section 4.4; an error
        response is still accepted from `server`). With
        `key`, the request carries MESSAGE-INTEGRITY and a success response must too.
        """
        tid = self._new_transaction_id()
        request = build_binding_request(
            tid,
            fingerprint=self.config.fingerprint,
            username=username,
            key=key,
            integrity=integrity,
            software=self.config.software,
            change_request=change_request,
        )
        tx = _Transaction(tid, server, response_from or server, request, key, now, self.config.rto)
        self._transactions[tid] = tx
        self._outbox.append(Transmit(request, server))
        self.stats["requests_sent"] += 1
        return tid

    def cancel(self, transaction_id: bytes) -> bool:
        """Forget a pending transaction without a result; False if it was not pending."""
        return self._transactions.pop(transaction_id, None) is not None

    @property
    def pending(self) -> int:
        return len(self._transactions)

    def _new_transaction_id(self) -> bytes:
        for _ in range(_TID_DRAWS):
            tid = bytes(self._rng(TRANSACTION_ID_SIZE))
            if len(tid) != TRANSACTION_ID_SIZE:
                raise LocalProtocolError("rng returned the wrong number of bytes")
            if tid not in self._transactions:
                return tid
        raise LocalProtocolError("rng keeps repeating transaction ids; is it random?")

    # ------------------------------------------------------------------ sans-IO surface

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        if not self._transactions:
            return None
        return min(tx.deadline for tx in self._transactions.values())

    def handle_timer(self, now: float) -> None:
        cfg = self.config
        for tid, tx in list(self._transactions.items()):
            if tx.deadline > now:
                continue
            if tx.sent >= cfg.rc:
                del self._transactions[tid]
                self.stats["timeouts"] += 1
                self._results.append(
                    BindingFailed(tx.server, f"timeout after {tx.sent} requests", tid)
                )
                continue
            # RFC 8489 section 6.2.1: resend at RTO, 3 RTO, 7 RTO, ...; after the Rc-th
            # send wait Rm x RTO for an answer.
            self._outbox.append(Transmit(tx.request, tx.server))
            self.stats["retransmissions"] += 1
            tx.sent += 1
            tx.last_sent = now
            tx.interval *= 2
            tx.deadline = now + (cfg.rm * cfg.rto if tx.sent >= cfg.rc else tx.interval)

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> bool:
        """Feed one datagram; True if it was the response to a pending transaction."""
        if not is_stun(data):
            self.stats["drop_not_stun"] += 1
            return False
        try:
            message = decode_message(data)
        except StunDecodeError:
            self.stats["drop_malformed"] += 1
            return False
        if message.message_class not in (StunClass.SUCCESS_RESPONSE, StunClass.ERROR_RESPONSE):
            self.stats["drop_not_response"] += 1
            return False
        tx = self._transactions.get(message.transaction_id)
        if tx is None:
            self.stats["drop_unknown_transaction"] += 1
            return False
        success = message.message_class == StunClass.SUCCESS_RESPONSE
        # A server that cannot honour a CHANGE-REQUEST refuses it (420) from the address
        # the request went to, not the one a success would come from.
        if not same_endpoint(addr, tx.expect_from) and (
            success or not same_endpoint(addr, tx.server)
        ):
            self.stats["drop_wrong_source"] += 1
            return False
        if message.method != StunMethod.BINDING:
            self.stats["drop_wrong_method"] += 1
            return False
        if message.has(StunAttr.FINGERPRINT) and not check_fingerprint(data):
            self.stats["drop_bad_fingerprint"] += 1
            return False
        sha256 = message.has(StunAttr.MESSAGE_INTEGRITY_SHA256)
        signed = sha256 or message.has(StunAttr.MESSAGE_INTEGRITY)
        # RFC 8489 section 9.1.4: an unsigned error response (400, 401) is still read.
        if tx.integrity_key is not None and (success or signed):
            if not check_integrity(data, tx.integrity_key, sha256=sha256):
                self.stats["drop_bad_integrity"] += 1
                return False
        del self._transactions[tx.transaction_id]
        self._results.append(self._result(tx, message, now))
        return True

    def _result(self, tx: _Transaction, message: StunMessage, now: float) -> BindingResult:
        if message.message_class == StunClass.ERROR_RESPONSE:
            error = message.error_code
            self.stats["failed"] += 1
            if error is None:
                return BindingFailed(
                    tx.server, "error response without ERROR-CODE", tx.transaction_id
                )
            reason = f"error {error.code} {error.reason}".rstrip()
            return BindingFailed(tx.server, reason, tx.transaction_id, error.code)
        # RFC 8489 section 14.1: MAPPED-ADDRESS only for RFC 3489 servers.
        mapped = message.xor_mapped_address or message.mapped_address
        if mapped is None:
            self.stats["failed"] += 1
            return BindingFailed(
                tx.server, "success response without a mapped address", tx.transaction_id
            )
        self.stats["succeeded"] += 1
        return BindingSucceeded(
            tx.server,
            mapped,
            message.other_address,
            message.response_origin,
            max(0.0, now - tx.last_sent),
            tx.transaction_id,
        )

    def next_result(self) -> BindingResult | None:
        return self._results.popleft() if self._results else None


# ---------------------------------------------------------------------- NAT classification


class NatBehaviour(StrEnum):
    """RFC 4787 / RFC 5780 behaviour of a NAT's mapping or filtering."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class NatClassification:
    """What the RFC 5780 tests found.

    `reflexive_addresses` are the distinct mapped addresses seen, in order; more than one
    means the mapping depends on the destination, whatever `mapping` could pin down.
    `notes` says, for people, what could not be tested and why.
    """

    mapping: NatBehaviour
    filtering: NatBehaviour
    reflexive_addresses: tuple[Addr, ...]
    other_address: Addr | None
    notes: tuple[str, ...] = ()

    @property
    def mapping_varies(self) -> bool:
        """True when two servers saw us at different reflexive addresses."""
        return len(self.reflexive_addresses) > 1


@dataclass(frozen=True, slots=True)
class ClassifierConfig:
    """Transaction timers for the classifier: shorter than a plain Binding's, because
    a filtering test is *expected* to time out on a filtering NAT (0.3 s, 3 sends, then
    1.2 s: a silent test costs 2.1 s)."""

    rto: float = 0.3
    rc: int = 3
    rm: int = 4
    test_filtering: bool = True
    software: str | None = None


class _Test(Enum):
    """The tests, named by where the request goes and what it asks (RFC 5780 section 4)."""

    MAP_PRIMARY = "binding to the primary address"
    FILTER_CHANGE_BOTH = "CHANGE-REQUEST for the alternate IP and port"
    FILTER_CHANGE_PORT = "CHANGE-REQUEST for the alternate port"
    MAP_ALTERNATE = "binding to the alternate address"
    MAP_ALTERNATE_IP = "binding to the alternate IP at the primary port"


class NatClassifier:
    """RFC 5780 mapping and filtering discovery against one server's two addresses.

    Order: (1) Binding to the primary address, which also learns the alternate address
    from OTHER-ADDRESS unless `alternate` is given; (2) the filtering tests, before any
    packet goes to the alternate address, since that packet would open the very filter
    being tested: CHANGE-REQUEST for IP and port (answer: endpoint-independent), else for
    port only (answer: address-dependent, silence: address-and-port-dependent); a 4xx
    means the server cannot change address, and filtering stays unknown; (3) Binding to
    the alternate address: the same mapping as (1) means endpoint-independent; a
    different one is narrowed by a Binding to the alternate IP at the primary port (same
    mapping as at the alternate address: address-dependent; otherwise
    address-and-port-dependent).

    With only one server IP (primary and alternate differ in port only) the
    address-versus-port question cannot be asked; what can be told is reported, the rest
    is unknown with a note.
    """

    def __init__(
        self,
        rng: Callable[[int], bytes],
        primary: Addr,
        *,
        alternate: Addr | None = None,
        config: ClassifierConfig | None = None,
    ) -> None:
        self.config = config or ClassifierConfig()
        cfg = self.config
        self.client = StunClient(
            rng,
            StunClientConfig(rto=cfg.rto, rc=cfg.rc, rm=cfg.rm, software=cfg.software),
        )
        self.primary = primary
        self.alternate = alternate
        self._current: tuple[_Test, bytes] | None = None
        self._mapped: dict[_Test, Addr] = {}
        self._reflexive: list[Addr] = []
        self._failed: dict[_Test, BindingFailed] = {}
        self._notes: list[str] = []
        self._filtering = NatBehaviour.UNKNOWN
        self._mapping = NatBehaviour.UNKNOWN
        self._result: NatClassification | None = None
        self._started = False

    @property
    def stats(self) -> Counter[str]:
        return self.client.stats

    @property
    def done(self) -> bool:
        return self._result is not None

    @property
    def result(self) -> NatClassification | None:
        return self._result

    def start(self, now: float) -> None:
        if self._started:
            raise LocalProtocolError("the classifier was already started")
        self._started = True
        self._run(_Test.MAP_PRIMARY, now)

    # ------------------------------------------------------------------ sans-IO surface

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        return self.client.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        return self.client.get_timer()

    def handle_timer(self, now: float) -> None:
        self.client.handle_timer(now)
        self._drain(now)

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> bool:
        consumed = self.client.receive_datagram(data, addr, now)
        if consumed:
            self._drain(now)
        return consumed

    # ------------------------------------------------------------------ the tests

    def _targets(self) -> dict[_Test, tuple[Addr, ChangeRequest | None, Addr]]:
        """Per test: where the request goes, what it asks, where the answer comes from."""
        p = self.primary
        a = self.alternate or p
        return {
            _Test.MAP_PRIMARY: (p, None, p),
            _Test.FILTER_CHANGE_BOTH: (p, ChangeRequest(True, True), a),
            _Test.FILTER_CHANGE_PORT: (p, ChangeRequest(False, True), (p[0], a[1])),
            _Test.MAP_ALTERNATE: (a, None, a),
            _Test.MAP_ALTERNATE_IP: ((a[0], p[1]), None, (a[0], p[1])),
        }

    def _run(self, test: _Test, now: float) -> None:
        server, change, expect_from = self._targets()[test]
        tid = self.client.start_binding(
            server, now, change_request=change, response_from=expect_from
        )
        self._current = (test, tid)

    def _drain(self, now: float) -> None:
        while (outcome := self.client.next_result()) is not None:
            if self._current is None or outcome.transaction_id != self._current[1]:
                continue
            test = self._current[0]
            self._current = None
            if isinstance(outcome, BindingSucceeded):
                self._mapped[test] = outcome.mapped_address
                if outcome.mapped_address not in self._reflexive:
                    self._reflexive.append(outcome.mapped_address)
                if test is _Test.MAP_PRIMARY and self.alternate is None:
                    self.alternate = outcome.other_address
            else:
                self._failed[test] = outcome
            following = self._next_test(test)
            if following is None:
                self._finish()
            else:
                self._run(following, now)

    def _one_ip(self) -> bool:
        assert self.alternate is not None
        return same_endpoint((self.primary[0], 0), (self.alternate[0], 0))

    def _next_test(self, done: _Test) -> _Test | None:
        """Decide from the results so far; returns the next test or None when finished."""
        if done is _Test.MAP_PRIMARY:
            if done in self._failed:
                self._notes.append(f"primary server did not answer: {self._failed[done].reason}")
                return None
            if self.alternate is None:
                self._notes.append("server sent no OTHER-ADDRESS and none was configured")
                return None
            if same_endpoint(self.alternate, self.primary):
                self._notes.append("alternate address is the primary address")
                return None
            if not self.config.test_filtering:
                self._notes.append("filtering tests disabled")
                return _Test.MAP_ALTERNATE
            return _Test.FILTER_CHANGE_PORT if self._one_ip() else _Test.FILTER_CHANGE_BOTH
        if done is _Test.FILTER_CHANGE_BOTH:
            failure = self._failed.get(done)
            if failure is None:
                self._filtering = NatBehaviour.ENDPOINT_INDEPENDENT
                return _Test.MAP_ALTERNATE
            if failure.error_code is not None:
                self._notes.append(f"server cannot change address: {failure.reason}")
                return _Test.MAP_ALTERNATE
            return _Test.FILTER_CHANGE_PORT
        if done is _Test.FILTER_CHANGE_PORT:
            failure = self._failed.get(done)
            if failure is not None and failure.error_code is not None:
                self._notes.append(f"server cannot change port: {failure.reason}")
            elif failure is not None:
                self._filtering = NatBehaviour.ADDRESS_AND_PORT_DEPENDENT
            elif self._one_ip():
                self._notes.append(
                    "filtering is not port-dependent; address dependence needs a second server IP"
                )
            else:
                self._filtering = NatBehaviour.ADDRESS_DEPENDENT
            return _Test.MAP_ALTERNATE
        if done is _Test.MAP_ALTERNATE:
            if done in self._failed:
                self._notes.append(f"alternate address did not answer: {self._failed[done].reason}")
                return None
            if self._mapped[done] == self._mapped[_Test.MAP_PRIMARY]:
                if self._one_ip():
                    self._notes.append(
                        "mapping is not port-dependent; address dependence needs a second server IP"
                    )
                else:
                    self._mapping = NatBehaviour.ENDPOINT_INDEPENDENT
                return None
            if self._one_ip():
                self._mapping = NatBehaviour.ADDRESS_AND_PORT_DEPENDENT
                return None
            return _Test.MAP_ALTERNATE_IP
        # MAP_ALTERNATE_IP: same IP as MAP_ALTERNATE, other port.
        if done in self._failed:
            self._notes.append(
                "mapping depends on the destination; the alternate IP at the primary port "
                "did not answer, so address versus port dependence was not told apart: "
                + self._failed[done].reason
            )
        elif self._mapped[done] == self._mapped[_Test.MAP_ALTERNATE]:
            self._mapping = NatBehaviour.ADDRESS_DEPENDENT
        else:
            self._mapping = NatBehaviour.ADDRESS_AND_PORT_DEPENDENT
        return None

    def _finish(self) -> None:
        self._result = NatClassification(
            self._mapping,
            self._filtering,
            tuple(self._reflexive),
            self.alternate,
            tuple(self._notes),
        )
