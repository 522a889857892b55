"""The path manager of one peer (DESIGN 7): where packets go, and why.

A peer can be reached on a direct path (an address proven by a PONG) or through the relay
(the rendezvous that introduced us). This object decides which, sans-IO: the Node tells
it what arrived and asks it where to send; it answers with probes to send (`ProbeOut`).

- Introductions start synchronized punching: an opener with a low TTL to every
  candidate at once (our own NAT learns the flow before any punch from the peer arrives,
  which defeats the Linux conntrack trap), then PINGs to every candidate from the agreed
  start, at intervals that double, in step with the peer, capped by the probe limit.
- A PONG proves the address it came from. The first proven address becomes the direct
  path; a later one replaces it only if clearly faster (a LAN address after a NAT one).
- An authenticated packet from an address that is not proven draws a challenge (a PING);
  traffic moves only when the PONG comes back. Until then the address gets no more than
  `unvalidated_amplification` times the bytes it sent (RFC 9000 section 8.1).
- Liveness: when data on the direct path waits `liveness_rtos` RTOs for an ACK (or an
  idle keepalive PING for its PONG), traffic moves to the relay at once, and direct is
  retried with backoff (reset when our local addresses change).
- The report (`path`, `reason`, DESIGN 7 contract): direct, relay or none; when not
  direct one of `REASONS`; `probing` lasts at most `reason_deadline` after an
  introduction or a failure.

The report's state moves by `PATH_TRANSITIONS`, a table the tests walk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final, NamedTuple

from .config import PathConfig
from .errors import LocalProtocolError
from .probe import PING, PONG, PROBE_SIZE, TXID_SIZE
from .transmit import Addr

__all__ = [
    "PATH_TRANSITIONS",
    "REASONS",
    "PathEvent",
    "PathManager",
    "PathReport",
    "PathState",
    "ProbeOut",
]

#: DESIGN 7 (contract): why a peer is not on a direct path.
REASONS: Final = (
    "symmetric-nat",
    "peer-filtered",
    "punch-timeout",
    "no-candidates",
    "probing",
    "relay-only",
)
_SYMMETRIC = frozenset({"address-dependent", "address-and-port-dependent"})
#: Outstanding probe transactions remembered per peer, and for how long.
_MAX_OUTSTANDING = 256
_TXID_LIFETIME = 30.0
#: A proven address counts as validated for this long without a fresh PONG.
_PROOF_LIFETIME = 60.0
#: A faster direct path replaces the current one below this share of its RTT.
_BETTER_RTT = 0.7
#: RTO assumed before a session measured one (RFC 6298's initial 1 s).
DEFAULT_RTO: Final = 1.0


class PathState(Enum):
    NONE = "none"
    RELAY = "relay"
    DIRECT = "direct"


class PathEvent(Enum):
    DIRECT_PROVEN = "direct_proven"  # a PONG proved an address: traffic goes there
    DIRECT_FAILED = "direct_failed"  # liveness lost on the direct path
    RELAY_KNOWN = "relay_known"  # an introduction named a relay
    PEER_ON_RELAY = "peer_on_relay"  # the peer's newest packets come through the relay
    FORGOTTEN = "forgotten"  # the session and its paths were dropped


S, E = PathState, PathEvent
# Members as module constants: `PathState.DIRECT` is a slow lookup on the per-packet path.
_NONE, _RELAY, _DIRECT = S.NONE, S.RELAY, S.DIRECT
#: (state, event) -> next state; a pair missing here leaves the state as it is.
PATH_TRANSITIONS: Final[dict[tuple[PathState, PathEvent], PathState]] = {
    (S.NONE, E.DIRECT_PROVEN): S.DIRECT,
    (S.NONE, E.RELAY_KNOWN): S.RELAY,
    (S.RELAY, E.DIRECT_PROVEN): S.DIRECT,
    (S.RELAY, E.FORGOTTEN): S.NONE,
    (S.DIRECT, E.DIRECT_FAILED): S.RELAY,
    (S.DIRECT, E.PEER_ON_RELAY): S.RELAY,
    (S.DIRECT, E.DIRECT_PROVEN): S.DIRECT,
    (S.DIRECT, E.FORGOTTEN): S.NONE,
}


def next_state(state: PathState, event: PathEvent, relay: bool) -> PathState:
    """The state after `event`; leaving DIRECT without a relay leaves nowhere to go, so a
    peer without one stays on its (last) direct path and the session layer recovers."""
    new = PATH_TRANSITIONS.get((state, event), state)
    if new is S.RELAY and not relay:
        return S.DIRECT if state is S.DIRECT and event is not E.FORGOTTEN else S.NONE
    return new


class ProbeOut(NamedTuple):
    """A probe the Node must send: to `addr`, or through the relay when it is None."""

    addr: Addr | None
    kind: int
    txid: bytes
    ttl: int | None = None


@dataclass(frozen=True, slots=True)
class PathReport:
    path: str
    direct: Addr | None
    reason: str | None


#: What `on_authenticated` answers for nearly every packet: no move, no probe.
_UNCHANGED: Final[tuple[bool, Sequence[ProbeOut]]] = (False, ())


class _Candidate:
    __slots__ = ("addr", "proven_at", "received", "rtt", "sent")

    def __init__(self, addr: Addr) -> None:
        self.addr = addr
        self.proven_at: float | None = None
        self.rtt: float | None = None
        #: Bytes from / to this address before it was proven (anti-amplification).
        self.received = 0
        self.sent = 0


class PathManager:
    """Paths toward one peer. `rng` draws transaction ids."""

    def __init__(self, config: PathConfig, rng: Callable[[int], bytes]) -> None:
        self.config = config
        self._rng = rng
        self.state = _NONE
        #: The relay (the rendezvous' node address) that introduced us, if any.
        self.relay: str | None = None
        self.direct: Addr | None = None
        self._candidates: dict[Addr, _Candidate] = {}
        #: Candidates named by the application or an introduction, in order.
        self._named: list[Addr] = []
        self._outstanding: dict[bytes, tuple[Addr | None, float, str]] = {}
        self.our_mapping = "unknown"
        self.peer_mapping = "unknown"
        # Punching after an introduction.
        self._introduced = False
        self._punch_next: float | None = None
        self._punch_interval = config.punch_interval
        self._probes_left = 0
        self._reason_at: float | None = None
        self._start_at = 0.0
        self._wait_until = 0.0
        #: When we first heard an authenticated probe from the peer since the
        #: introduction: proof that it processed the introduction and sent its openers.
        self._peer_ready = False
        self._final_reason: str | None = None
        self._heard_direct = False
        # Retrying direct after a failure or a failed punch.
        self._retry_at: float | None = None
        self._retry_backoff = config.direct_retry_min
        # Keepalive and liveness on the direct path.
        self._last_sent = float("-inf")
        self._keepalive_txid: bytes | None = None
        self._keepalive_deadline: float | None = None
        self._challenges: dict[Addr, tuple[int, float]] = {}  # addr -> (attempts, next)
        self._answers = config.probe_answers_per_second
        self._answers_at = 0.0
        self.rto = DEFAULT_RTO
        #: The Node says whether a session exists: keepalives only keep one alive.
        self.session_up = False
        self.challenges_refused = 0

    # ------------------------------------------------------------------ what the node asks

    @property
    def _relay_only(self) -> bool:
        """`relay_only` concerns introduced peers; the rendezvous itself is reached direct."""
        return self.config.relay_only and self.relay is not None

    @property
    def via_relay(self) -> bool:
        return self.state is _RELAY

    def route(self) -> Addr | None:
        """Where transport packets go: the direct address, or None (the relay, when
        `via_relay`; nowhere yet otherwise)."""
        if self.state is _DIRECT:
            return self.direct
        return None

    def report(self, now: float) -> PathReport:
        if self.state is _DIRECT:
            return PathReport("direct", self.direct, None)
        path = "relay" if self.state is _RELAY else "none"
        return PathReport(path, self.direct, self.reason(now))

    def reason(self, now: float) -> str:
        if self._relay_only:
            return "relay-only"
        if self._final_reason is not None:
            return self._final_reason
        if self._reason_at is not None and now < self._reason_at:
            return "probing"
        return self._classify()

    def _classify(self) -> str:
        if self._relay_only:
            return "relay-only"
        if not self._candidates and not self._named:
            return "no-candidates"
        if self.our_mapping in _SYMMETRIC or self.peer_mapping in _SYMMETRIC:
            return "symmetric-nat"
        if not self._heard_direct:
            return "peer-filtered"
        return "punch-timeout"

    def handshake_targets(self, now: float) -> list[Addr | None]:
        """Where a handshake initiation goes (None: through the relay). Never to an
        unproven candidate before the punch starts: it would spring the conntrack trap."""
        targets: list[Addr | None] = []
        if self.direct is not None and (self.state is _DIRECT or self.relay is None):
            targets.append(self.direct)
        if self.relay is not None:
            targets.append(None)
        elif self.direct is None and not self._relay_only:
            if not self._introduced or now >= self._start_at:
                targets.extend(self._named[:8])
        return targets

    def candidates(self) -> list[Addr]:
        return list(self._named)

    # ------------------------------------------------------------------ inputs

    def set_candidates(self, addrs: Iterable[Addr]) -> None:
        """Addresses the application gave for the peer (add_peer endpoints)."""
        for addr in addrs:
            self._name(addr)

    def _name(self, addr: Addr) -> None:
        if addr not in self._named and len(self._named) < self.config.max_candidates:
            self._named.append(addr)
        self._candidate(addr)

    def _candidate(self, addr: Addr) -> _Candidate:
        candidate = self._candidates.get(addr)
        if candidate is None:
            if len(self._candidates) >= 4 * self.config.max_candidates:
                # Peer-reflexive addresses come and go; forget an unproven one first.
                for key, old in self._candidates.items():
                    if old.proven_at is None and key != self.direct and key not in self._named:
                        del self._candidates[key]
                        break
            candidate = self._candidates[addr] = _Candidate(addr)
        return candidate

    def introduce(
        self,
        candidates: Iterable[Addr],
        relay: str | None,
        start_delay: float,
        probe_limit: int,
        now: float,
    ) -> list[ProbeOut]:
        """An introduction: remember the relay, punch from `now + start_delay`. Returns
        the openers (low TTL) and a PING through the relay (it carries our NAT mapping
        and measures the relay)."""
        cfg = self.config
        for addr in candidates:
            self._name(addr)
        if relay is not None:
            self.relay = relay
            self._move(PathEvent.RELAY_KNOWN)
        self._introduced = True
        self._final_reason = None
        self._heard_direct = False
        self._reason_at = now + cfg.reason_deadline
        self._start_at = now + max(start_delay, 0.0)
        # With a relay, direct punches wait until the peer is heard (its openers are out,
        # so our punches cannot spring its conntrack trap), at most `punch_wait`.
        self._peer_ready = self.relay is None
        self._wait_until = self._start_at + cfg.punch_wait
        out: list[ProbeOut] = []
        if relay is not None:
            out.append(self._ping(None, "relay", now))
        if self._relay_only or not self._named:
            self._punch_next = None
            self._final_reason = self._classify() if self._relay_only or not self._named else None
            return out
        self._punch_next = self._start_at
        self._punch_interval = cfg.punch_interval
        self._probes_left = max(probe_limit, 0)
        if cfg.opener_ttl is not None and self.state is not _DIRECT:
            for addr in self._named:
                out.append(self._ping(addr, "opener", now, ttl=cfg.opener_ttl))
        return out

    def on_handshake(self, addr: Addr | None, now: float, *, answered: bool) -> bool:
        """A handshake message authenticated from `addr` (None: through the relay).
        `answered`: it is the response to our initiation, which proves the address as a
        PONG would. Without an introduction (no relay) the first address heard is the
        path, as before NAT traversal existed. True when the route changed."""
        if addr is None or self._relay_only:
            return False
        self._heard_from(addr)
        if answered:
            self._prove(addr, None, now)
            if self.state is not _DIRECT or (self.relay is None and addr != self.direct):
                self.direct = addr
                return self._move(PathEvent.DIRECT_PROVEN)
            return False
        if self.direct is None and self.relay is None:
            self._prove(addr, None, now)
            self.direct = addr
            return self._move(PathEvent.DIRECT_PROVEN)
        return False

    def on_handshake_retry(self) -> None:
        """A handshake went unanswered: a direct address that is not one the application
        named is forgotten, so every named endpoint is tried again."""
        if self.relay is None and self.direct is not None and self._named:
            if self.direct not in self._named:
                self.direct = None
                self.state = _NONE

    def on_authenticated(
        self, addr: Addr | None, size: int, newest: bool, now: float
    ) -> tuple[bool, Sequence[ProbeOut]]:
        """A transport packet authenticated, from `addr` (None: through the relay);
        `newest` when its counter is the highest seen. Returns (route changed, probes)."""
        if addr is None:
            if newest and self.state is _DIRECT and self.relay is not None:
                # The peer moved to the relay (it lost the direct path): follow at once,
                # the relay needs no validation, and retry direct soon.
                changed = self._move(PathEvent.PEER_ON_RELAY)
                self._after_failure(now)
                return changed, []
            return False, []
        self._heard_direct = True  # _heard_from, inline: every packet
        if addr == self.direct and self.state is _DIRECT:
            return _UNCHANGED  # the path in use (its candidate exists since it was proven)
        candidate = self._candidate(addr)
        if not newest or self._relay_only:
            return False, []
        if self._is_valid(candidate, now):
            self.direct = addr
            return self._move(PathEvent.DIRECT_PROVEN), []
        if self.direct is None and self.relay is None and self.state is _NONE:
            # No path at all yet (keys made elsewhere): nothing to protect, take it.
            self._prove(addr, None, now)
            self.direct = addr
            return self._move(PathEvent.DIRECT_PROVEN), []
        candidate.received += size
        return False, self._challenge(addr, now)

    def on_ping(
        self, addr: Addr | None, txid: bytes, mapping: str, now: float
    ) -> list[ProbeOut] | None:
        """An authenticated PING: answer it where it came from; from an address we have
        not proven, check it ourselves too (ICE's triggered check). None: over the
        answer rate, dropped."""
        self._learn_mapping(mapping)
        self._heard_peer(now)
        if not self._allow_answer(now):
            return None
        out = [ProbeOut(addr, PONG, txid)]
        if addr is None:
            return out
        self._heard_from(addr)
        candidate = self._candidate(addr)
        if not self._is_valid(candidate, now) and not self._relay_only:
            if not any(a == addr for a, _, _ in self._outstanding.values()):
                out.append(self._ping(addr, "triggered", now))
        return out

    def on_pong(self, addr: Addr | None, txid: bytes, mapping: str, now: float) -> bool:
        """An authenticated PONG; True when the route changed."""
        self._learn_mapping(mapping)
        self._heard_peer(now)
        entry = self._outstanding.pop(txid, None)
        if entry is None:
            return False
        _, sent_at, purpose = entry
        if addr is None:
            return False  # the relay answered: nothing to switch
        self._heard_from(addr)
        rtt = max(now - sent_at, 0.0)
        self._prove(addr, rtt, now)
        self._challenges.pop(addr, None)
        if txid == self._keepalive_txid:
            self._keepalive_txid = self._keepalive_deadline = None
        if self._relay_only:
            return False
        current = self._candidates.get(self.direct) if self.direct is not None else None
        switch = (
            self.state is not _DIRECT
            or self.direct is None
            or (addr != self.direct and purpose == "challenge")
            or (
                addr != self.direct
                and current is not None
                and current.rtt is not None
                and rtt < _BETTER_RTT * current.rtt
            )
        )
        if not switch:
            return False
        self.direct = addr
        self._final_reason = None
        self._retry_at = None
        self._retry_backoff = self.config.direct_retry_min
        self._punch_next = None if self._probes_left <= 0 else self._punch_next
        return self._move(PathEvent.DIRECT_PROVEN)

    def on_sent(self, now: float) -> None:
        """Something went out on the direct path (keepalives wait for idleness)."""
        self._last_sent = now

    def on_local_change(self, now: float) -> None:
        """Our own addresses changed: a direct path may work again, try at once."""
        self._retry_backoff = self.config.direct_retry_min
        if self.state is not _DIRECT and self._named:
            self._retry_at = now

    def set_our_mapping(self, mapping: str) -> None:
        self.our_mapping = mapping

    def forget(self) -> None:
        """The session is gone for good (untrusted, removed): no path any more."""
        self._move(PathEvent.FORGOTTEN)
        self.direct = None
        self._punch_next = self._retry_at = self._keepalive_deadline = None
        self._keepalive_txid = None
        self._outstanding.clear()

    # ------------------------------------------------------------------ liveness

    def liveness_deadline(self, silence_start: float | None) -> float | None:
        """When outstanding data without an ACK means the direct path is gone."""
        if silence_start is None or self.state is not _DIRECT or self.relay is None:
            return None
        return silence_start + self._liveness_timeout()

    def _liveness_timeout(self) -> float:
        return max(self.config.liveness_rtos * self.rto, self.config.liveness_floor)

    def check_liveness(self, silence_start: float | None, now: float) -> bool:
        """True (route changed) when the direct path just failed."""
        deadline = self.liveness_deadline(silence_start)
        if deadline is None or now < deadline:
            return False
        return self._direct_failed(now)

    def _direct_failed(self, now: float) -> bool:
        changed = self._move(PathEvent.DIRECT_FAILED)
        if changed:
            self._after_failure(now)
        return changed

    def _after_failure(self, now: float) -> None:
        self._keepalive_txid = self._keepalive_deadline = None
        self._heard_direct = False
        self._final_reason = None
        self._reason_at = now + self.config.reason_deadline
        if self.direct is not None:
            self._candidates[self.direct].proven_at = None
        self._retry_at = now + self._retry_backoff
        self._retry_backoff = min(self._retry_backoff * 2, self.config.direct_retry_max)

    # ------------------------------------------------------------------ timers

    def deadline(self) -> float | None:
        # Asked after every packet the peer's deadline may have moved by: plain
        # comparisons, no list or generator.
        deadline = self._punch_next
        t = self._retry_at
        if t is not None and (deadline is None or t < deadline):
            deadline = t
        t = self._keepalive_deadline
        if t is not None and (deadline is None or t < deadline):
            deadline = t
        if self._final_reason is None:
            t = self._reason_at
            if t is not None and (deadline is None or t < deadline):
                deadline = t
        keepalive = self.config.keepalive_interval
        if (
            keepalive is not None
            and self.session_up
            and self.state is _DIRECT
            and self._keepalive_txid is None
            and self.direct is not None
        ):
            t = self._last_sent + keepalive
            if deadline is None or t < deadline:
                deadline = t
        if self._challenges:
            for _, t in self._challenges.values():
                if deadline is None or t < deadline:
                    deadline = t
        return deadline

    def handle_timer(self, now: float) -> tuple[bool, list[ProbeOut]]:
        """Run what is due. Returns (route changed, probes to send)."""
        out: list[ProbeOut] = []
        changed = False
        cfg = self.config
        if self._final_reason is None and self._reason_at is not None and now >= self._reason_at:
            self._reason_at = None
            if self.state is not _DIRECT:
                self._final_reason = self._classify()
                self._punch_next = None
                if self._retry_at is None and self._named and not self._relay_only:
                    self._retry_at = now + self._retry_backoff
                    self._retry_backoff = min(self._retry_backoff * 2, cfg.direct_retry_max)
        if self._punch_next is not None and now >= self._punch_next:
            out.extend(self._punch_round(now))
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            if self.state is not _DIRECT and not self._relay_only:
                targets = list(self._named)
                if self.direct is not None and self.direct not in targets:
                    targets.insert(0, self.direct)
                out.extend(self._ping(addr, "retry", now) for addr in targets)
                self._retry_at = now + self._retry_backoff
                self._retry_backoff = min(self._retry_backoff * 2, cfg.direct_retry_max)
        if self._keepalive_deadline is not None and now >= self._keepalive_deadline:
            self._keepalive_txid = self._keepalive_deadline = None
            if self.relay is not None:
                changed = self._direct_failed(now) or changed
        keepalive = cfg.keepalive_interval
        if (
            keepalive is not None
            and self.session_up
            and self.state is _DIRECT
            and self.direct is not None
            and self._keepalive_txid is None
            and now >= self._last_sent + keepalive
        ):
            probe = self._ping(self.direct, "keepalive", now)
            self._keepalive_txid = probe.txid
            self._keepalive_deadline = now + self._liveness_timeout()
            self._last_sent = now
            out.append(probe)
        for addr, (attempts, at) in list(self._challenges.items()):
            if now < at:
                continue
            if attempts >= cfg.challenge_attempts:
                del self._challenges[addr]
                continue
            out.extend(self._challenge(addr, now, resend=True))
        self._expire_outstanding(now)
        return changed, out

    def _punch_round(self, now: float) -> list[ProbeOut]:
        cfg = self.config
        if self._probes_left <= 0 or self.state is _DIRECT:
            self._punch_next = None
            return []
        out = []
        if not self._peer_ready and now < self._wait_until:
            # Not heard from the peer yet: ask through the relay again, punch later.
            if self.relay is not None:
                out.append(self._ping(None, "relay", now))
            self._punch_next = min(now + self._punch_interval, self._wait_until)
            self._punch_interval = min(self._punch_interval * 2, cfg.punch_interval_max)
            return out
        if not self._peer_ready:
            self._peer_ready = True  # waited long enough: punch anyway
            self._punch_interval = cfg.punch_interval
        for addr in self._named:
            if self._probes_left <= 0:
                break
            self._probes_left -= 1
            out.append(self._ping(addr, "punch", now))
        self._punch_next = now + self._punch_interval
        self._punch_interval = min(self._punch_interval * 2, cfg.punch_interval_max)
        return out

    # ------------------------------------------------------------------ helpers

    def _challenge(self, addr: Addr, now: float, resend: bool = False) -> list[ProbeOut]:
        attempts, at = self._challenges.get(addr, (0, now))
        if (not resend and addr in self._challenges) or now < at:
            return []
        candidate = self._candidate(addr)
        if not self.may_send(addr, PROBE_SIZE, now):
            # Out of budget: wait until the address sends more (each packet re-arms).
            self._challenges.pop(addr, None)
            self.challenges_refused += 1
            return []
        candidate.sent += PROBE_SIZE
        self._challenges[addr] = (attempts + 1, now + self.config.challenge_interval)
        return [self._ping(addr, "challenge", now)]

    def may_send(self, addr: Addr, size: int, now: float) -> bool:
        """Whether `size` bytes may go to `addr`: always once proven, else within the
        anti-amplification budget of what came from there."""
        candidate = self._candidates.get(addr)
        if candidate is None:
            return addr in self._named
        if candidate.proven_at is not None or addr in self._named:
            return True
        budget = self.config.unvalidated_amplification * candidate.received
        return candidate.sent + size <= budget

    def _ping(
        self, addr: Addr | None, purpose: str, now: float, ttl: int | None = None
    ) -> ProbeOut:
        txid = bytes(self._rng(TXID_SIZE))
        if len(txid) != TXID_SIZE:
            raise LocalProtocolError("rng returned the wrong number of bytes")
        if len(self._outstanding) >= _MAX_OUTSTANDING:
            del self._outstanding[next(iter(self._outstanding))]
        self._outstanding[txid] = (addr, now, purpose)
        return ProbeOut(addr, PING, txid, ttl)

    def _expire_outstanding(self, now: float) -> None:
        for txid, (_, sent_at, _) in list(self._outstanding.items()):
            if now - sent_at < _TXID_LIFETIME:
                break  # insertion order is sending order
            del self._outstanding[txid]

    def _prove(self, addr: Addr, rtt: float | None, now: float) -> None:
        candidate = self._candidate(addr)
        candidate.proven_at = now
        if rtt is not None:
            candidate.rtt = rtt if candidate.rtt is None else 0.75 * candidate.rtt + 0.25 * rtt

    def _is_valid(self, candidate: _Candidate, now: float) -> bool:
        return candidate.proven_at is not None and now - candidate.proven_at < _PROOF_LIFETIME

    def _heard_from(self, addr: Addr) -> None:
        self._heard_direct = True

    def _heard_peer(self, now: float) -> None:
        if not self._peer_ready:
            self._peer_ready = True
            if self._punch_next is not None:
                # Start the real punching now, from the first interval.
                self._punch_next = max(now, self._start_at)
                self._punch_interval = self.config.punch_interval

    def relay_ping(self, now: float) -> list[ProbeOut]:
        """A PING through the relay (our NAT mapping changed, say): None if no relay."""
        return [self._ping(None, "relay", now)] if self.relay is not None else []

    def _learn_mapping(self, mapping: str) -> None:
        if mapping != "unknown":
            self.peer_mapping = mapping

    def _allow_answer(self, now: float) -> bool:
        rate = self.config.probe_answers_per_second
        self._answers = min(rate, self._answers + (now - self._answers_at) * rate)
        self._answers_at = now
        if self._answers < 1.0:
            return False
        self._answers -= 1.0
        return True

    def _move(self, event: PathEvent) -> bool:
        new = next_state(self.state, event, self.relay is not None)
        changed = new is not self.state
        self.state = new
        return changed or event is PathEvent.DIRECT_PROVEN
