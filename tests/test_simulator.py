"""The in-memory network simulator: links, adversary hooks, middleboxes, timers, determinism."""

from __future__ import annotations

import itertools

import pytest

from pilot_proto.errors import LocalProtocolError
from pilot_proto.simulator import (
    DROP_REASONS,
    Datagram,
    LinkConditions,
    Middlebox,
    Network,
    PassThroughMiddlebox,
    SeededRandom,
)
from pilot_proto.transmit import Addr, Transmit

SERVER: Addr = ("198.51.100.1", 7000)
CLIENT: Addr = ("198.51.100.2", 7000)


class Echo:
    """Sends every datagram back to where it came from; records arrivals."""

    def __init__(self) -> None:
        self.received: list[tuple[float, Addr, bytes]] = []
        self._outbox: list[Transmit] = []

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        self.received.append((now, addr, data))
        self._outbox.append(Transmit(data, addr))

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


class Pinger:
    """Sends `count` numbered pings to `peer`, one per timer tick; records the replies."""

    def __init__(
        self, peer: Addr, count: int, interval: float, size: int = 100, start: float = 0.0
    ) -> None:
        self.peer = peer
        self.count = count
        self.interval = interval
        self.size = size
        self.sent_at: list[float] = []
        self.replies: list[tuple[float, int]] = []
        self.reply_data: list[bytes] = []
        self._next: float | None = start
        self._outbox: list[Transmit] = []

    def payload(self, seq: int) -> bytes:
        return seq.to_bytes(4, "big") * (self.size // 4)

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        self.replies.append((now, int.from_bytes(data[:4], "big")))
        self.reply_data.append(data)

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        return self._next

    def handle_timer(self, now: float) -> None:
        assert self._next is not None and now >= self._next
        seq = len(self.sent_at)
        self.sent_at.append(now)
        self._outbox.append(Transmit(self.payload(seq), self.peer))
        self._next = self._next + self.interval if seq + 1 < self.count else None


def ping_network(
    seed: int = 0,
    count: int = 100,
    interval: float = 0.01,
    size: int = 100,
    to_server: LinkConditions | None = None,
    to_client: LinkConditions | None = None,
) -> tuple[Network, Pinger, Echo]:
    net = Network(seed)
    if to_server is not None:
        net.set_link(CLIENT, SERVER, to_server)
    if to_client is not None:
        net.set_link(SERVER, CLIENT, to_client)
    echo = Echo()
    net.add_host(echo, SERVER)
    pinger = Pinger(SERVER, count, interval, size)
    net.add_host(pinger, CLIENT)
    return net, pinger, echo


# --------------------------------------------------------------------------- randomness


def test_seeded_random_is_deterministic_and_in_range() -> None:
    a, b, c = SeededRandom(42), SeededRandom(42), SeededRandom(43)
    first = [a.next_u64() for _ in range(50)]
    assert first == [b.next_u64() for _ in range(50)]
    assert first != [c.next_u64() for _ in range(50)]
    floats = [a.random() for _ in range(20000)]
    assert all(0.0 <= x < 1.0 for x in floats)
    assert abs(sum(floats) / len(floats) - 0.5) < 0.01
    draws = [a.randrange(3, 10) for _ in range(5000)]
    assert set(draws) == set(range(3, 10))
    assert all(0 <= a.randrange(1000) < 1000 for _ in range(1000))
    big = a.randrange(1 << 100)
    assert 0 <= big < 1 << 100
    assert len(a.bytes(13)) == 13 and a.bytes(0) == b""
    assert SeededRandom(9).bytes(20) == SeededRandom(9).bytes(20)
    with pytest.raises(LocalProtocolError):
        a.randrange(5, 5)


def test_rng_for_depends_on_seed_and_name_only() -> None:
    one, same, other_seed = Network(1), Network(1), Network(2)
    assert one.rng_for("alice")(32) == same.rng_for("alice")(32)
    assert one.rng_for("alice")(32) != Network(1).rng_for("bob")(32)
    assert Network(1).rng_for("alice")(32) != other_seed.rng_for("alice")(32)
    # One stream per name: a second call continues it rather than repeating it.
    fresh = Network(1)
    assert fresh.rng_for("alice")(16) != fresh.rng_for("alice")(16)


def test_clocks_follow_virtual_time() -> None:
    net = Network(epoch=1000.0)
    assert net.clock() == 0.0 and net.wall_clock() == 1000.0
    net.run(2.5)
    assert net.clock() == 2.5 and net.wall_clock() == 1002.5
    with pytest.raises(LocalProtocolError):
        net.run(1.0)
    net.run_for(0.5)
    assert net.now == 3.0


# -------------------------------------------------------------------------------- links


def test_echo_round_trips_and_stats() -> None:
    net, pinger, echo = ping_network(count=10)
    assert net.run_idle(5)
    assert [seq for _, seq in pinger.replies] == list(range(10))
    assert len(echo.received) == 10 and echo.received[0][1] == CLIENT
    assert net.stats.sent == 20 and net.stats.delivered == 20
    assert net.stats.bytes_sent == net.stats.bytes_delivered == 20 * 100
    assert net.stats.total_dropped == 0
    assert set(net.stats.dropped) == set(DROP_REASONS)


def test_loss_rate_within_binomial_bounds() -> None:
    net, pinger, echo = ping_network(count=2000, to_server=LinkConditions(loss=0.2))
    net.run_idle(100)
    lost = net.stats.dropped["loss"]
    # Mean 400, standard deviation about 18: four sigma either way.
    assert 328 <= lost <= 472
    assert len(echo.received) == 2000 - lost == len(pinger.replies)


def test_delay_is_exact_and_jitter_is_bounded_and_reorders() -> None:
    net, pinger, _ = ping_network(
        count=20, to_server=LinkConditions(delay=0.05), to_client=LinkConditions(delay=0.05)
    )
    net.run_idle(10)
    assert [now - pinger.sent_at[seq] for now, seq in pinger.replies] == pytest.approx([0.1] * 20)

    net, pinger, _ = ping_network(
        count=200, interval=0.001, to_server=LinkConditions(delay=0.02, jitter=0.01)
    )
    net.run_idle(10)
    rtts = [now - pinger.sent_at[seq] for now, seq in pinger.replies]
    assert all(0.02 <= rtt < 0.03 for rtt in rtts)
    order = [seq for _, seq in pinger.replies]
    assert order != sorted(order) and sorted(order) == list(range(200))


def test_reordering_holds_some_datagrams_back() -> None:
    net, pinger, _ = ping_network(
        count=500, to_server=LinkConditions(reorder=0.3, reorder_delay=0.05)
    )
    net.run_idle(20)
    order = [seq for _, seq in pinger.replies]
    assert sorted(order) == list(range(500))
    overtaken = sum(1 for a, b in itertools.pairwise(order) if a > b)
    assert overtaken > 50
    assert 100 <= net.stats.reordered <= 200


def test_duplication_adds_copies() -> None:
    net, _, echo = ping_network(count=1000, to_server=LinkConditions(duplicate=0.25))
    net.run_idle(20)
    duplicated = net.stats.duplicated
    assert 180 <= duplicated <= 320
    assert len(echo.received) == 1000 + duplicated
    assert len({data for _, _, data in echo.received}) == 1000


def test_corruption_flips_exactly_one_bit() -> None:
    net, pinger, echo = ping_network(count=200, to_server=LinkConditions(corrupt=1.0))
    net.run_idle(10)
    assert net.stats.corrupted == 200
    for seq, (_, _, data) in enumerate(echo.received):
        original = pinger.payload(seq)
        diff = int.from_bytes(data, "big") ^ int.from_bytes(original, "big")
        assert len(data) == len(original) and bin(diff).count("1") == 1


def test_mtu_drops_larger_datagrams() -> None:
    net = Network()
    echo = Echo()
    net.add_host(echo, SERVER)
    net.set_link(CLIENT[0], SERVER[0], LinkConditions(mtu=1200))
    net.inject(("198.51.100.2", 9), SERVER, b"x" * 1500)  # injection bypasses link conditions
    small, big = Pinger(SERVER, 3, 0.1, size=1200), Pinger(SERVER, 3, 0.1, size=1204)
    net.add_host(small, CLIENT)
    net.add_host(big, ("198.51.100.2", 7001))
    net.run_idle(5)
    assert net.stats.dropped["mtu"] == 3
    assert len(small.replies) == 3 and big.replies == []
    assert len(echo.received) == 4


def test_bandwidth_limits_throughput_and_queue_drops() -> None:
    rate = 100_000.0
    # Offer 200 kB/s of 1000-byte datagrams for 2 virtual seconds through a 100 kB/s link.
    net, pinger, echo = ping_network(
        count=400,
        interval=0.005,
        size=1000,
        to_server=LinkConditions(bandwidth=rate, queue_bytes=20_000),
    )
    net.run_idle(10)
    arrivals = [now for now, _, _ in echo.received]
    spacing = [b - a for a, b in itertools.pairwise(arrivals)]
    assert min(spacing) >= 1000 / rate - 1e-9
    throughput = 1000 * (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert throughput == pytest.approx(rate, rel=0.02)
    assert net.stats.dropped["queue"] > 150
    assert len(echo.received) + net.stats.dropped["queue"] == 400
    # The queue never holds more than queue_bytes: waiting is bounded by 20 kB / rate.
    assert max(now - pinger.sent_at[seq] for now, seq in pinger.replies) <= 0.21 + 0.01


def test_blackhole_and_unknown_destinations_are_counted() -> None:
    net, _, echo = ping_network(count=5, to_server=LinkConditions(blackhole=True))
    net.run_idle(5)
    assert net.stats.dropped["blackhole"] == 5 and echo.received == []

    net = Network()
    net.add_host(Pinger(("192.0.2.99", 1), 4, 0.1), CLIENT)
    net.run_idle(5)
    assert net.stats.dropped["unknown"] == 4


def test_address_rule_wins_over_ip_rule_and_default_applies_elsewhere() -> None:
    net = Network()
    net.set_default_link(LinkConditions(delay=0.5))
    net.set_link(CLIENT[0], SERVER[0], LinkConditions(delay=0.2), both_directions=True)
    net.set_link(("198.51.100.2", 7001), SERVER, LinkConditions(delay=0.1))
    net.add_host(Echo(), SERVER)
    by_ip, by_addr = Pinger(SERVER, 1, 1), Pinger(SERVER, 1, 1)
    elsewhere = Pinger(SERVER, 1, 1)
    net.add_host(by_ip, CLIENT)
    net.add_host(by_addr, ("198.51.100.2", 7001))
    net.add_host(elsewhere, ("203.0.113.5", 9))
    net.run_idle(5)
    assert by_ip.replies[0][0] == pytest.approx(0.4)
    assert by_addr.replies[0][0] == pytest.approx(0.3)  # 0.1 out, 0.2 back by the IP rule
    assert elsewhere.replies[0][0] == pytest.approx(1.0)


def test_unimpaired_links_draw_no_random_numbers() -> None:
    def lossy_trace(extra_traffic: bool) -> list[int]:
        net = Network(5)
        net.set_link(CLIENT, SERVER, LinkConditions(loss=0.5))
        net.add_host(Echo(), SERVER)
        pinger = Pinger(SERVER, 200, 0.01)
        net.add_host(pinger, CLIENT)
        if extra_traffic:
            net.add_host(Echo(), ("192.0.2.1", 1))
            net.add_host(Pinger(("192.0.2.1", 1), 500, 0.002), ("192.0.2.2", 1))
        net.run_idle(10)
        return [seq for _, seq in pinger.replies]

    assert lossy_trace(False) == lossy_trace(True)


# ----------------------------------------------------------------------- adversary hooks


def test_taps_drop_modify_duplicate_and_delay() -> None:
    net, pinger, echo = ping_network(count=8, interval=1.0)
    seen: list[Datagram] = []

    def adversary(d: Datagram) -> list[Datagram] | None:
        seen.append(d)
        if d.dst != SERVER:
            return None
        seq = int.from_bytes(d.data[:4], "big")
        if seq == 1:
            return []
        if seq == 2:
            return [d._replace(data=b"\xff" + d.data[1:])]
        if seq == 3:
            return [d, d]
        if seq == 4:
            return [d._replace(time=d.time + 0.5)]
        return None

    net.add_tap(adversary)
    net.run_idle(20)
    assert net.stats.dropped["tap"] == 1
    assert all(d.src in (CLIENT, SERVER) and d.time == int(d.time) for d in seen[:2])
    arrivals = {int.from_bytes(data[:4], "big"): now for now, _, data in echo.received}
    assert 1 not in arrivals
    assert 0xFF000002 in arrivals
    assert sum(1 for _, _, data in echo.received if data == pinger.payload(3)) == 2
    assert arrivals[4] == pytest.approx(4.5)
    net.remove_tap(adversary)


def test_inject_and_replay_from_capture() -> None:
    net = Network(capture_limit=3)
    echo = Echo()
    net.add_host(echo, SERVER)
    net.add_host(Pinger(SERVER, 5, 0.1), CLIENT)
    net.run_idle(5)
    assert len(net.captured) == 3  # bounded: only the latest datagrams are kept
    old = next(d for d in net.captured if d.dst == SERVER)

    forged: Addr = ("192.0.2.66", 666)
    net.inject(forged, SERVER, b"forged", at=net.now + 1.0)
    net.inject(old.src, old.dst, old.data)
    assert net.in_flight == 2
    net.run_idle(5)
    assert echo.received[-2][1:] == (CLIENT, old.data)
    assert echo.received[-1][1:] == (forged, b"forged")
    assert echo.received[-1][0] == pytest.approx(net.now)
    assert net.stats.injected == 2
    with pytest.raises(LocalProtocolError):
        net.inject(forged, SERVER, b"late", at=net.now - 1)
    with pytest.raises(LocalProtocolError):
        _ = Network(capture_limit=0).captured


# --------------------------------------------------------------------------- middleboxes


def test_pass_through_middlebox_sees_both_directions() -> None:
    net = Network()
    box = PassThroughMiddlebox()
    net.add_host(Echo(), SERVER)
    pinger = Pinger(SERVER, 5, 0.1)
    net.add_host(pinger, CLIENT, middlebox=box)
    net.run_idle(5)
    assert len(pinger.replies) == 5
    assert box.outbound_count == 5 and box.inbound_count == 5


class PortRewriter(Middlebox):
    """A toy translating box: the hook's contract, not a NAT model."""

    public_ips = frozenset({"203.0.113.1"})

    def __init__(self) -> None:
        self.mapping: dict[Addr, Addr] = {}

    def outbound(self, src: Addr, dst: Addr, now: float) -> Addr | None:
        public = ("203.0.113.1", 40000 + len(self.mapping))
        self.mapping.setdefault(public, src)
        return public

    def inbound(self, src: Addr, dst: Addr, now: float) -> Addr | None:
        if dst[0] != "203.0.113.1":
            return None  # the inside address is not reachable from outside
        return self.mapping.get(dst)


def test_translating_middlebox_rewrites_and_filters() -> None:
    net = Network()
    echo = Echo()
    net.add_host(echo, SERVER)
    inside: Addr = ("10.0.0.2", 5000)
    pinger = Pinger(SERVER, 1, 0.1)
    net.add_host(pinger, inside, middlebox=PortRewriter())
    net.run_idle(5)
    assert echo.received[0][1] == ("203.0.113.1", 40000)
    assert len(pinger.replies) == 1
    net.inject(SERVER, inside, b"direct")
    net.inject(SERVER, ("203.0.113.1", 41234), b"unmapped")
    net.run_idle(5)
    assert net.stats.dropped["middlebox"] == 2 and len(pinger.replies) == 1


# --------------------------------------------------------------------------- the pump


def test_timers_fire_on_schedule() -> None:
    net, pinger, _ = ping_network(count=5, interval=0.25)
    net.run(0.6)
    assert pinger.sent_at == [0.0, 0.25, 0.5]
    assert net.now == 0.6
    net.run(10)
    assert pinger.sent_at == [0.0, 0.25, 0.5, 0.75, 1.0]


class StuckTimer(Echo):
    """Reports a deadline it never moves past; optionally sends on every firing."""

    def __init__(self, deadline: float, chatty: bool) -> None:
        super().__init__()
        self.deadline = deadline
        self.chatty = chatty
        self.fired: list[float] = []

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        self.received.append((now, addr, data))  # no echo: the ticks end here

    def get_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        self.fired.append(now)
        if self.chatty:
            self._outbox.append(Transmit(b"tick", SERVER))


def test_timer_that_does_not_advance_is_counted_and_skipped() -> None:
    net = Network()
    net.run(2.0)
    stuck = StuckTimer(1.0, chatty=False)
    net.add_host(stuck, CLIENT)
    net.run(5.0)
    assert stuck.fired == [2.0]  # a deadline in the past fires now, not back in time
    assert net.stats.stuck_timers == 1

    net = Network()
    net.add_host(Echo(), SERVER)
    chatty = StuckTimer(0.0, chatty=True)
    net.add_host(chatty, CLIENT)
    net.run(1.0)
    assert net.stats.stuck_timers == 1
    assert 1 < len(chatty.fired) <= 1000 and set(chatty.fired) == {0.0}


def test_run_until_and_run_idle_report_outcome() -> None:
    net, pinger, _ = ping_network(count=10, interval=1.0)
    assert net.run_until(lambda: len(pinger.replies) >= 3, timeout=100)
    assert net.now == 2.0
    assert not net.run_until(lambda: len(pinger.replies) >= 50, timeout=3)
    assert net.now == 5.0

    net = Network()
    echo = Echo()
    net.add_host(echo, SERVER)
    net.inject(CLIENT, SERVER, b"later", at=10.0)
    assert not net.run_idle(5)
    assert net.now == 5.0 and echo.received == []
    assert net.run_idle(10)
    assert echo.received[0][0] == 10.0
    assert net.stats.dropped["unknown"] == 1  # the echo went back to an absent host


def test_step_picks_up_calls_made_outside_the_pump() -> None:
    net = Network()
    assert not net.step()
    echo = Echo()
    net.add_host(echo, SERVER)
    other = Echo()
    net.add_host(other, CLIENT)
    other._outbox.append(Transmit(b"hi", SERVER))  # as if an application call queued it
    assert net.step() and echo.received == [(0.0, CLIENT, b"hi")]
    assert net.step() and other.received == [(0.0, SERVER, b"hi")]


def test_on_activity_runs_after_each_call_and_can_queue() -> None:
    net = Network()
    echo = Echo()
    net.add_host(echo, SERVER)
    calls: list[float] = []
    pinger = Pinger(SERVER, 2, 1.0)

    def application(now: float) -> None:
        calls.append(now)
        if len(pinger.replies) == 1 and len(calls) < 10:
            pinger._outbox.append(Transmit(b"\x00\x00\x00\x63", SERVER))

    net.add_host(pinger, CLIENT, on_activity=application)
    net.run_idle(5)
    assert 99 in [seq for _, seq in pinger.replies]
    assert calls[0] == 0.0


def test_removed_host_no_longer_receives_or_fires() -> None:
    net, pinger, echo = ping_network(count=10, interval=1.0, to_server=LinkConditions(delay=0.5))
    net.run(2.2)
    net.remove_host(SERVER)
    net.run(5.2)
    assert len(echo.received) == 2
    assert net.stats.dropped["unknown"] == 3  # the ping in flight at removal, then 3.0 and 4.0
    net.remove_host(CLIENT)
    net.run(20)
    assert pinger.sent_at == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    with pytest.raises(LocalProtocolError):
        net.remove_host(CLIENT)


def test_misuse_is_a_local_protocol_error() -> None:
    with pytest.raises(LocalProtocolError):
        LinkConditions(loss=1.5)
    with pytest.raises(LocalProtocolError):
        LinkConditions(bandwidth=0)
    with pytest.raises(LocalProtocolError):
        LinkConditions(delay=-1)
    net = Network()
    net.add_host(Echo(), SERVER)
    with pytest.raises(LocalProtocolError):
        net.add_host(Echo(), SERVER)
    assert not LinkConditions().impaired and LinkConditions(mtu=1500).impaired


# ---------------------------------------------------------------------------- determinism


def _impaired_trace(seed: int) -> list[tuple[float, int, bytes]]:
    hostile = LinkConditions(
        loss=0.1, delay=0.01, jitter=0.02, reorder=0.1, duplicate=0.1, corrupt=0.05
    )
    net, pinger, _ = ping_network(seed, count=300, to_server=hostile, to_client=hostile)
    net.run_idle(30)
    replies = zip(pinger.replies, pinger.reply_data, strict=True)
    return [(now, seq, data) for (now, seq), data in replies]


def test_same_seed_same_run_other_seed_other_run() -> None:
    assert _impaired_trace(11) == _impaired_trace(11)
    assert _impaired_trace(11) != _impaired_trace(12)


def test_transmit_is_a_value() -> None:
    """What the core hands a binding compares, hashes and prints by content."""
    addr = ("192.0.2.1", 1)
    one = Transmit(b"x", addr)
    assert one == Transmit(b"x", addr) and hash(one) == hash(Transmit(b"x", addr))
    assert one != Transmit(b"x", addr, ttl=2) and one != Transmit(b"y", addr)
    assert len({one, Transmit(b"x", addr), Transmit(b"x", addr, 2)}) == 2
    assert repr(one) == "Transmit(data=b'x', addr=('192.0.2.1', 1), ttl=None)"
