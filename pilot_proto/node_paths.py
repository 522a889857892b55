"""The Node's paths: NAT discovery (STUN), rendezvous introductions, path probes and
relaying (DESIGN 6-7). The path manager (`paths`) decides; this sends and indexes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .events import PathChanged
from .nat import NatDiscovery
from .node_state import NodeState
from .paths import PathReport, ProbeOut
from .peer import Peer
from .probe import PING, pair_id_of
from .relay import encode_relay
from .stun_client import ClassifierConfig
from .transmit import Addr, Transmit


class NodePaths(NodeState):
    """NAT traversal and path glue between the path manager and the wire."""

    def introduce(
        self,
        address: str,
        candidates: Iterable[Addr],
        now: float,
        *,
        start_delay: float = 0.0,
        probe_limit: int = 32,
        relay: str | None = None,
    ) -> None:
        """Apply a rendezvous introduction (DESIGN 6-7): punch toward `candidates` from
        `now + start_delay` in step with the peer, and use `relay` (the node address of
        the rendezvous that introduced us, a peer with a session) until a direct path is
        proven. Add the peer (`add_peer`) first. Data can be sent at once: it goes
        through the relay until a PONG proves a direct path."""
        peer = self._trusted_peer(address)
        if relay is not None:
            self._peer(relay)  # must be known: the rendezvous session's peer
            self._relays.add(relay)
        peer.paths.set_our_mapping(self.nat_mapping)
        probes = peer.paths.introduce(list(candidates), relay, start_delay, probe_limit, now)
        self._send_probes(peer, probes)
        self._after_route_change(peer, now)
        self._touch(peer)

    def set_local_candidates(self, candidates: Iterable[Addr], now: float) -> None:
        """Our own endpoints (from interface addresses, DESIGN 7). A change means a new
        network: direct paths are retried at once, with the backoff reset."""
        fresh = tuple(dict.fromkeys(candidates))
        if fresh == self._local_candidates:
            return
        self._local_candidates = fresh
        for peer in self._peers.values():
            peer.paths.on_local_change(now)
            self._stale.add(peer)

    @property
    def local_candidates(self) -> tuple[Addr, ...]:
        return self._local_candidates

    def discover_nat(
        self,
        primary: Addr,
        now: float,
        alternate: Addr | None = None,
        config: ClassifierConfig | None = None,
    ) -> None:
        """Classify our NAT against a STUN server from this node's socket (RFC 5780):
        the rendezvous (its second address comes in OTHER-ADDRESS) or any STUN server.
        A `NatDiscovered` event follows; peers are told our mapping in probes.

        Filtering is not tested unless `config` asks: an answer from the alternate
        address arriving first leaves a Linux router an unreplied conntrack entry that
        changes our mapping toward that address (DESIGN 7's trap, seen in the NAT lab),
        so the mapping test would report a symmetric NAT that is not one."""
        if config is None:
            config = ClassifierConfig(test_filtering=False)
        self._nat = NatDiscovery(self._rng, primary, alternate, config)
        self._nat.start(now)
        self._outbox.extend(self._nat.datagrams_to_send(now))

    def _on_stun(self, data: bytes, addr: Addr, now: float) -> None:
        nat = self._nat
        if nat is None or not nat.receive(data, addr, now):
            self.stats["drop_stun_unhandled"] += 1
            return
        self.stats["accepted_stun"] += 1
        self._nat_progress(now)

    def _nat_progress(self, now: float) -> None:
        nat = self._nat
        if nat is None:
            return
        self._outbox.extend(nat.datagrams_to_send(now))
        outcome = nat.outcome(self.address)
        if outcome is not None:
            self._nat = None
            self.nat_mapping = outcome.mapping
            for peer in self._peers.values():
                self._stale.add(peer)
                peer.paths.set_our_mapping(outcome.mapping)
                # Peers reached through a relay learn our mapping from a probe.
                self._send_probes(peer, peer.paths.relay_ping(now))
            self._events.append(outcome)

    def _path_timers(self, peer: Peer, now: float) -> None:
        paths = peer.paths
        paths.session_up = peer.keys.sending is not None
        connection = peer.connection
        if connection is not None and peer.keys.sending is not None:
            paths.rto = connection.rto
        changed = False
        if connection is not None and paths.check_liveness(connection.silence_start, now):
            self.stats["direct_path_failures"] += 1
            changed = True
        deadline = paths.deadline()
        if deadline is not None and now >= deadline:
            moved, probes = paths.handle_timer(now)
            if moved:
                self.stats["direct_path_failures"] += 1
            changed = changed or moved
            self._send_probes(peer, probes)
        if changed:
            self._after_route_change(peer, now)
        elif peer.last_report is not None:
            self._report_path(peer, now)

    def _on_probe(self, data: bytes, addr: Addr, now: float, relayed_from: str | None) -> None:
        pair_id = pair_id_of(data)
        peer = self._peer_by_pair_id.get(pair_id) if pair_id is not None else None
        if peer is None or peer.probe_key is None:
            self.stats["drop_unknown_probe"] += 1
            return
        if relayed_from is not None and relayed_from != peer.address:
            self.stats["drop_relay_mismatch"] += 1
            return
        probe = peer.probe_key.decode(data)
        if probe is None:
            self.stats["drop_bad_probe"] += 1
            return
        if not peer.trusted:
            self.stats["drop_untrusted_probe"] += 1
            return
        self._stale.add(peer)  # a probe moves path timers (challenges, keepalive)
        source = None if relayed_from is not None else addr
        if probe.kind == PING:
            answers = peer.paths.on_ping(source, probe.txid, probe.mapping, now)
            if answers is None:
                self.stats["drop_probe_rate_limited"] += 1
                return
            self.stats["accepted_probe"] += 1
            self._send_probes(peer, answers)
            return
        self.stats["accepted_probe"] += 1
        if peer.paths.on_pong(source, probe.txid, probe.mapping, now):
            self._after_route_change(peer, now)
        else:
            self._report_path(peer, now)

    def _reply(self, packet: bytes, addr: Addr, relayed_from: str | None) -> Transmit:
        """An answer to what came from `addr`, back the way it came."""
        if relayed_from is None:
            return Transmit(packet, addr)
        return Transmit(encode_relay(relayed_from, packet), addr)

    def _relay_endpoint(self, peer: Peer) -> Addr | None:
        relay = peer.paths.relay
        server = self._peers.get(relay) if relay is not None else None
        return server.path if server is not None else None

    def _send_relayed(self, peer: Peer, packet: bytes) -> None:
        endpoint = self._relay_endpoint(peer)
        if endpoint is None:
            self.stats["relay_unreachable"] += 1
            return
        self._outbox.append(Transmit(encode_relay(peer.address, packet), endpoint))

    def _send_probes(self, peer: Peer, probes: Sequence[ProbeOut]) -> None:
        key = peer.probe_key
        if key is None or not probes:
            return
        for probe in probes:
            packet = key.encode(probe.kind, probe.txid, self.nat_mapping)
            if probe.addr is None:
                self._send_relayed(peer, packet)
            else:
                self._outbox.append(Transmit(packet, probe.addr, probe.ttl))
            self.stats["probes_sent"] += 1

    def _after_route_change(self, peer: Peer, now: float) -> None:
        """The path manager moved the peer: index it, restart delivery's path state when
        packets now take another way (RFC 9000 section 9.4), tell the application."""
        direct = peer.paths.direct
        if direct != peer.indexed_path:
            self._unindex_path(peer)
            if direct is not None:
                self._peer_by_path[direct] = peer
                peer.indexed_path = direct
        route = (peer.paths.route(), peer.paths.via_relay)
        if route != peer.last_route:
            moved = peer.last_route != (None, False)
            peer.last_route = route
            if moved and peer.connection is not None and peer.keys.sending is not None:
                peer.connection.path_changed(now)
                self.stats["path_switches"] += 1
        self._report_path(peer, now)
        self._touch(peer)

    def _report_path(self, peer: Peer, now: float) -> None:
        report: PathReport = peer.paths.report(now)
        endpoint = report.direct if report.path == "direct" else self._relay_endpoint(peer)
        summary = (report.path, endpoint, report.reason)
        if summary != peer.last_report:
            peer.last_report = summary
            self._events.append(PathChanged(peer.address, report.path, endpoint, report.reason))
