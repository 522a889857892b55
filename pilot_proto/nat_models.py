"""NAT models for the simulator (DESIGN 10): mapping and filtering behaviour (RFC 4787),
mapping expiry, hairpinning, and the Linux conntrack trap of DESIGN 7.

`NatModel` is a `simulator.Middlebox`. Hosts behind it share its public IP; datagrams
between two hosts behind the same box (its `inside` networks) pass untranslated, as on a
LAN. Behaviours:

- mapping: endpoint-independent (one public port per inside endpoint), address-dependent
  (one per inside endpoint and remote IP), address-and-port-dependent (one per remote
  endpoint; the ports are drawn at random, like iptables `--random-fully`);
- filtering: an inbound datagram passes when the mapping has sent to its source's IP and
  port (address-and-port-dependent), its IP (address-dependent), or anywhere
  (endpoint-independent);
- mapping expiry after `timeout` seconds without traffic either way;
- hairpinning: a datagram from inside to the box's own public address comes back in, or
  is dropped;
- `conntrack_trap`: a datagram arriving unsolicited leaves an "unreplied" entry for
  `timeout` (refreshed by more of the same); a later flow from inside toward that
  source may not take the port it would have, and gets a random one instead, which is
  what a Linux MASQUERADE router does when a punch arrives before the local side's own
  packet (DESIGN 7).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable
from enum import StrEnum

from .simulator import Middlebox, SeededRandom
from .transmit import Addr

__all__ = ["Behaviour", "NatModel"]


class Behaviour(StrEnum):
    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


class _Mapping:
    """A public port and, per remote endpoint it talked to, when that flow expires
    (conntrack keeps one entry per flow; filtering asks these)."""

    __slots__ = ("contacted", "inside", "port")

    def __init__(self, inside: Addr, port: int) -> None:
        self.inside = inside
        self.port = port
        self.contacted: dict[Addr, float] = {}

    def expires(self) -> float:
        return max(self.contacted.values(), default=0.0)


class NatModel(Middlebox):
    """One NAT router with the public IP `public_ip`, in front of the `inside` networks
    (CIDR strings; hosts there talk to each other untranslated)."""

    def __init__(
        self,
        public_ip: str,
        *,
        inside: Iterable[str] = (),
        mapping: Behaviour = Behaviour.ENDPOINT_INDEPENDENT,
        filtering: Behaviour = Behaviour.ENDPOINT_INDEPENDENT,
        timeout: float = 30.0,
        hairpin: bool = False,
        conntrack_trap: bool = False,
        seed: int = 0,
    ) -> None:
        self.public_ip = public_ip
        self.public_ips = frozenset({public_ip})
        self._inside = [ipaddress.ip_network(net) for net in inside]
        self.mapping = mapping
        self.filtering = filtering
        self.timeout = timeout
        self.hairpin = hairpin
        self.conntrack_trap = conntrack_trap
        self._random = SeededRandom(seed)
        self._by_key: dict[tuple[Addr, str, int], _Mapping] = {}
        self._by_port: dict[int, _Mapping] = {}
        #: Unreplied inbound entries: (public port, remote) -> expiry.
        self._unreplied: dict[tuple[int, Addr], float] = {}
        #: Ports not to hand out again (in use before a reboot).
        self._avoid: set[int] = set()
        self.stats: Counter[str] = Counter()

    def _is_inside(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self._inside)

    def _key(self, src: Addr, dst: Addr) -> tuple[Addr, str, int]:
        if self.mapping is Behaviour.ENDPOINT_INDEPENDENT:
            return (src, "", 0)
        if self.mapping is Behaviour.ADDRESS_DEPENDENT:
            return (src, dst[0], 0)
        return (src, dst[0], dst[1])

    def reboot(self) -> None:
        """Forget every mapping (a router restart); old ports are not reused."""
        self._avoid.update(self._by_port)
        self._by_key.clear()
        self._by_port.clear()
        self._unreplied.clear()

    def _free_port(self, wanted: int | None, remote: Addr) -> int:
        if wanted is not None and wanted not in self._by_port and wanted not in self._avoid:
            if not self._trapped(wanted, remote):
                return wanted
            self.stats["trap_port_changed"] += 1
        while True:
            port = self._random.randrange(1024, 65536)
            if (
                port not in self._by_port
                and port not in self._avoid
                and not self._trapped(port, remote)
            ):
                return port

    def _trapped(self, port: int, remote: Addr) -> bool:
        expiry = self._unreplied.get((port, remote))
        return expiry is not None and expiry > self._now

    _now = 0.0

    def outbound(self, src: Addr, dst: Addr, now: float) -> Addr | None:
        self._now = now
        if self._is_inside(dst[0]):
            return src  # a LAN neighbour: no translation
        self._expire(now)
        key = self._key(src, dst)
        mapping = self._by_key.get(key)
        if mapping is not None and dst not in mapping.contacted and self._trapped(
            mapping.port, dst
        ):
            # A new flow toward a source that already knocked on this port: conntrack
            # sees a clash with the unreplied entry and NATs this flow elsewhere.
            self.stats["trap_port_changed"] += 1
            flow_key = (src, dst[0], dst[1])
            mapping = self._by_key.get(flow_key)
            if mapping is None:
                mapping = self._new_mapping(flow_key, src, None, dst, now)
        elif mapping is None:
            preserve = src[1] if self.mapping is not Behaviour.ADDRESS_AND_PORT_DEPENDENT else None
            mapping = self._new_mapping(key, src, preserve, dst, now)
        mapping.contacted[dst] = now + self.timeout
        self._unreplied.pop((mapping.port, dst), None)
        return (self.public_ip, mapping.port)

    def _new_mapping(
        self, key: tuple[Addr, str, int], src: Addr, wanted: int | None, dst: Addr, now: float
    ) -> _Mapping:
        mapping = _Mapping(src, self._free_port(wanted, dst))
        self._by_key[key] = mapping
        self._by_port[mapping.port] = mapping
        self.stats["mappings"] += 1
        return mapping

    def inbound(self, src: Addr, dst: Addr, now: float) -> Addr | None:
        self._now = now
        if self._is_inside(src[0]) and self._is_inside(dst[0]):
            return dst  # LAN traffic
        if dst[0] != self.public_ip:
            self.stats["drop_to_inside_address"] += 1
            return None
        if src[0] == self.public_ip and not self.hairpin:
            self.stats["drop_hairpin"] += 1
            return None
        self._expire(now)
        mapping = self._by_port.get(dst[1])
        if mapping is None or not self._passes(mapping, src):
            self.stats["drop_filtered"] += 1
            if self.conntrack_trap:
                self._unreplied[(dst[1], src)] = now + self.timeout
            return None
        if src in mapping.contacted:
            mapping.contacted[src] = now + self.timeout  # a reply refreshes its flow
        return mapping.inside

    def _passes(self, mapping: _Mapping, src: Addr) -> bool:
        if self.filtering is Behaviour.ENDPOINT_INDEPENDENT:
            return True
        now = self._now
        if self.filtering is Behaviour.ADDRESS_DEPENDENT:
            return any(c[0] == src[0] and t > now for c, t in mapping.contacted.items())
        return mapping.contacted.get(src, 0.0) > now

    def _expire(self, now: float) -> None:
        for key, mapping in list(self._by_key.items()):
            for remote, expiry in list(mapping.contacted.items()):
                if expiry <= now:
                    del mapping.contacted[remote]
                    self.stats["flows_expired"] += 1
            if not mapping.contacted:
                del self._by_key[key]
                if self._by_port.get(mapping.port) is mapping:
                    del self._by_port[mapping.port]
                self.stats["expired"] += 1
        for entry, expiry in list(self._unreplied.items()):
            if expiry <= now:
                del self._unreplied[entry]
