"""Rendezvous registry in the simulator: registration, hostnames, lookups, sequence numbers,
expiry, introductions, allow lists, rate limits, server restarts and key changes."""

from __future__ import annotations

import ipaddress

from rendezvous_harness import (
    SERVER_ADDR,
    App,
    RawClient,
    RvLab,
    client_config,
    register_message,
    server_config,
)

from pilot_proto.events import HandshakeCompleted
from pilot_proto.identity import Identity
from pilot_proto.rendezvous import (
    ClientState,
    Disconnected,
    IntroductionReceived,
    KeyChanged,
    LookupResult,
    Registered,
    RegistrationFailed,
    RequestDone,
    RequestFailed,
)
from pilot_proto.rendezvous.messages import (
    ErrorCode,
    ErrorReply,
    RegisteredReply,
    encode_message,
)


def registered(lab: RvLab, *apps: App, timeout: float = 30.0) -> bool:
    return lab.run_until(lambda: all(app.of(Registered) for app in apps), timeout)


def packed(endpoint: tuple[str, int]) -> bytes:
    return ipaddress.ip_address(endpoint[0]).packed + endpoint[1].to_bytes(2, "big")


# ------------------------------------------------------------------ registration and lookup


def test_register_then_lookup_by_hostname_and_by_address() -> None:
    lab = RvLab()
    a = lab.client("a", hostname="agent-a")
    b = lab.client("b", hostname="agent-b")
    assert registered(lab, a, b)
    event = a.of(Registered)[0]
    assert event.server_address == lab.server.address
    assert event.static_key == lab.server_identity.static_public
    assert event.observed == ("192.0.2.1", 5001)
    assert a.client is not None and a.client.hostname == "agent-a" and a.client.registered

    by_name = lab.result(a, lab.call(a, lambda c, now: c.lookup("agent-b", now)))
    assert isinstance(by_name, LookupResult)
    assert by_name.record.address == b.address and by_name.record.hostname == "agent-b"
    by_address = lab.result(b, lab.call(b, lambda c, now: c.lookup(a.address, now)))
    assert isinstance(by_address, LookupResult) and by_address.record.hostname == "agent-a"
    own = lab.result(a, lab.call(a, lambda c, now: c.lookup("agent-a", now)))
    assert isinstance(own, LookupResult) and own.record.address == a.address


def test_unknown_names_and_addresses_are_not_found() -> None:
    lab = RvLab()
    a = lab.client("a")
    assert registered(lab, a)
    stranger = Identity.generate(lab.net.rng_for("stranger")).address
    for query in ("nobody", stranger):
        event = lab.result(a, lab.call(a, lambda c, now, q=query: c.lookup(q, now)))
        assert isinstance(event, RequestFailed) and event.code == "not_found"


def test_requests_before_the_session_are_queued() -> None:
    lab = RvLab()
    b = lab.client("b", hostname="agent-b")
    a = lab.client("a", start=False)
    rid = lab.call(a, lambda c, now: c.lookup("agent-b", now))
    lab.start(a)
    event = lab.result(a, rid)
    assert isinstance(event, LookupResult) and event.record.address == b.address


def test_first_contact_learns_the_key_and_pins_it() -> None:
    lab = RvLab()
    a = lab.client("a", pinned=False)
    assert registered(lab, a)
    assert a.of(Registered)[0].static_key == lab.server_identity.static_public
    assert a.client is not None and a.client.server_key == lab.server_identity.static_public


# ------------------------------------------------------------------ hostnames


def test_a_hostname_held_by_another_key_is_refused() -> None:
    lab = RvLab()
    a = lab.client("a", hostname="agent-a")
    assert registered(lab, a)
    b = lab.client("b", hostname="agent-a")
    assert lab.run_until(lambda: bool(b.of(RegistrationFailed)))
    failed = b.of(RegistrationFailed)[0]
    assert failed.code == "already_exists" and "agent-a" in failed.message
    assert b.client is not None and b.client.state is ClientState.UNREGISTERED
    # The name still leads to its first owner.
    event = lab.result(b, lab.call(b, lambda c, now: c.lookup("agent-a", now)))
    assert isinstance(event, LookupResult) and event.record.address == a.address
    # The refused node can still pick a free name.
    done = lab.result(b, lab.call(b, lambda c, now: c.set_hostname("agent-b", now)))
    assert isinstance(done, RequestDone)
    assert b.client.registered and b.client.hostname == "agent-b"


def test_set_hostname_to_a_taken_name_keeps_the_old_one() -> None:
    lab = RvLab()
    a = lab.client("a", hostname="agent-a")
    b = lab.client("b", hostname="agent-b")
    assert registered(lab, a, b)
    failed = lab.result(b, lab.call(b, lambda c, now: c.set_hostname("agent-a", now)))
    assert isinstance(failed, RequestFailed) and failed.code == "already_exists"
    assert b.client is not None and b.client.hostname == "agent-b"
    lab.settle(1)
    event = lab.result(a, lab.call(a, lambda c, now: c.lookup("agent-b", now)))
    assert isinstance(event, LookupResult) and event.record.address == b.address


def test_clearing_a_hostname_releases_it() -> None:
    lab = RvLab()
    a = lab.client("a", hostname="agent-a")
    assert registered(lab, a)
    done = lab.result(a, lab.call(a, lambda c, now: c.set_hostname(None, now)))
    assert isinstance(done, RequestDone)
    assert a.client is not None and a.client.hostname is None
    gone = lab.result(a, lab.call(a, lambda c, now: c.lookup("agent-a", now)))
    assert isinstance(gone, RequestFailed) and gone.code == "not_found"
    b = lab.client("b", hostname="agent-a")
    assert registered(lab, b)


def test_a_hostname_stays_with_its_key_for_the_retention_period() -> None:
    lab = RvLab(server_config=server_config(hostname_retention=600.0, sweep_interval=10.0))
    quick = client_config(record_lifetime=120.0, locator_lifetime=60.0)
    a = lab.client("a", hostname="agent-a", config=quick)
    assert registered(lab, a)
    lab.leave(a)  # a goes away for good
    lab.settle(300)  # its record expired, its claim has not
    gone = lab.client("probe")
    assert registered(lab, gone)
    event = lab.result(gone, lab.call(gone, lambda c, now: c.lookup("agent-a", now)))
    assert isinstance(event, RequestFailed) and event.code == "not_found"
    b = lab.client("b", hostname="agent-a", config=quick)
    assert lab.run_until(lambda: bool(b.of(RegistrationFailed)))
    assert b.of(RegistrationFailed)[0].code == "already_exists"
    lab.settle(400)  # past the retention after a's last renewal
    c = lab.client("c", hostname="agent-a", config=quick)
    assert registered(lab, c)


def test_the_same_key_gets_its_hostname_back_after_a_restart() -> None:
    lab = RvLab()
    a = lab.client("a", hostname="agent-a")
    assert registered(lab, a)
    first = lab.store.registrations[a.address].record.sequence
    lab.settle(5)
    a2 = lab.restart_client(a)
    assert registered(lab, a2)
    # Sequence numbers come from the wall clock: the restarted node went up by itself.
    assert lab.store.registrations[a.address].record.sequence > first
    assert a2.client is not None and a2.client.hostname == "agent-a"


# ------------------------------------------------------------------ sequence numbers, expiry


def test_sequence_numbers_must_go_up() -> None:
    lab = RvLab()
    raw = RawClient(lab, "raw")
    ident = raw.app.node.identity
    soon = int(lab.net.wall_clock()) + 600
    assert isinstance(raw.ask(register_message(ident, 1, 10, soon)), RegisteredReply)
    for rid, sequence in ((2, 10), (3, 9)):
        answer = raw.ask(register_message(ident, rid, sequence, soon))
        assert isinstance(answer, ErrorReply)
        assert answer.code is ErrorCode.STALE_SEQUENCE and answer.detail == 10
    assert isinstance(raw.ask(register_message(ident, 4, 11, soon)), RegisteredReply)


def test_records_must_be_the_senders_own_current_and_not_too_long_lived() -> None:
    lab = RvLab()
    raw = RawClient(lab, "raw")
    other = Identity.generate(lab.net.rng_for("other"))
    wall = int(lab.net.wall_clock())
    cases = [
        register_message(other, 1, 5, wall + 600),  # someone else's record
        register_message(raw.app.node.identity, 2, 5, wall - 1),  # expired
        register_message(raw.app.node.identity, 3, 5, wall + 30 * 86400),  # too long
    ]
    for data in cases:
        answer = raw.ask(data)
        assert isinstance(answer, ErrorReply) and answer.code is ErrorCode.INVALID_ARGUMENT
    assert other.address not in lab.store.registrations


def test_a_clock_set_back_does_not_lock_a_node_out() -> None:
    lab = RvLab()
    a = lab.client("a", hostname="agent-a")
    assert registered(lab, a)
    a.node.close(lab.now)
    lab.settle(1)
    lab.leave(a)
    # The restarted node's clock is ten minutes behind: its sequence numbers are older
    # than the ones the server holds. The server says which sequence it holds; the
    # client moves past it.
    behind = lab.client(
        "a",
        identity=a.node.identity,
        addr=("192.0.2.1", 5001),
        hostname="agent-a",
        wall_clock=lambda: lab.net.wall_clock() - 600,
    )
    assert registered(lab, behind)
    assert behind.client is not None and behind.client.hostname == "agent-a"
    assert not behind.of(RegistrationFailed)


def test_records_expire_when_not_renewed() -> None:
    lab = RvLab(server_config=server_config(sweep_interval=5.0))
    quick = client_config(record_lifetime=60.0, locator_lifetime=30.0)
    a = lab.client("a", hostname="agent-a", config=quick)
    b = lab.client("b")
    assert registered(lab, a, b)
    lab.settle(120)  # a keeps refreshing
    event = lab.result(b, lab.call(b, lambda c, now: c.lookup("agent-a", now)))
    assert isinstance(event, LookupResult)
    assert event.record.expires_at > lab.net.wall_clock()
    lab.leave(a)
    lab.settle(70)
    event = lab.result(b, lab.call(b, lambda c, now: c.lookup(a.address, now)))
    assert isinstance(event, RequestFailed) and event.code == "not_found"
    assert a.address not in lab.store.registrations  # swept, not only hidden


# ------------------------------------------------------------------ privacy of locators


def test_lookups_never_reveal_where_a_node_is() -> None:
    lab = RvLab()
    b_local = ("203.0.113.77", 4242)
    a = lab.client("a", hostname="agent-a")
    b = lab.client("b", hostname="agent-b", candidates=[b_local, ("192.0.2.2", 5002)])
    assert registered(lab, a, b)
    b_observed = b.of(Registered)[0].observed
    assert b_observed is not None
    for query in ("agent-b", b.address):
        assert isinstance(
            lab.result(a, lab.call(a, lambda c, now, q=query: c.lookup(q, now))), LookupResult
        )
    refused = lab.result(a, lab.call(a, lambda c, now: c.request_introduction(b.address, now)))
    assert isinstance(refused, RequestFailed)
    seen = b"".join(a.from_server)
    assert packed(b_local) not in seen and packed(b_observed) not in seen
    # The probe itself works: once b accepts a, the introduction carries both.
    lab.call(b, lambda c, now: c.publish_allow_list([a.address], now))
    lab.settle(1)
    intro = lab.result(a, lab.call(a, lambda c, now: c.request_introduction(b.address, now)))
    assert isinstance(intro, IntroductionReceived)
    seen = b"".join(a.from_server)
    assert packed(b_local) in seen and packed(b_observed) in seen


# ------------------------------------------------------------------ introductions


def test_an_introduction_reaches_both_sides_and_they_connect() -> None:
    lab = RvLab()
    a = lab.client("a", hostname="agent-a")
    b = lab.client("b", hostname="agent-b", allow_list=[a.address])
    a.follow_introductions = b.follow_introductions = True
    assert registered(lab, a, b)
    intro = lab.result(a, lab.call(a, lambda c, now: c.request_introduction(b.address, now)))
    assert isinstance(intro, IntroductionReceived)
    assert intro.record.address == b.address and intro.request_id is not None
    assert ("192.0.2.2", 5002) in intro.candidates
    assert intro.start_delay >= 0 and intro.probe_limit > 0
    assert lab.run_until(lambda: bool(b.of(IntroductionReceived)))
    pushed = b.of(IntroductionReceived)[0]
    assert pushed.record.address == a.address and pushed.request_id is None
    assert ("192.0.2.1", 5001) in pushed.candidates
    assert lab.run_until(lambda: a.node.has_session(b.address) and b.node.has_session(a.address))
    assert any(isinstance(e, HandshakeCompleted) and e.address == b.address for e in a.node_events)


def test_a_refused_introduction_looks_exactly_like_an_unknown_node() -> None:
    lab = RvLab()
    b = lab.client("b", hostname="agent-b")  # private, trusts nobody
    c = lab.client("c")
    assert registered(lab, b, c)
    unknown = Identity.generate(lab.net.rng_for("unknown")).address
    before = len(c.from_server)
    refused = lab.result(c, lab.call(c, lambda cl, now: cl.request_introduction(b.address, now)))
    missing = lab.result(c, lab.call(c, lambda cl, now: cl.request_introduction(unknown, now)))
    assert isinstance(refused, RequestFailed) and isinstance(missing, RequestFailed)
    assert refused.code == missing.code == "not_found"
    assert refused.message.replace(b.address, "X") == missing.message.replace(unknown, "X")
    wire = c.from_server[before:]
    assert len(wire) == 2 and len(wire[0]) == len(wire[1])
    lab.settle(2)
    assert not b.of(IntroductionReceived)  # and b is not told anything either


def test_a_public_node_accepts_introductions_from_anyone() -> None:
    lab = RvLab()
    b = lab.client("b", public=True)
    c = lab.client("c")
    assert registered(lab, b, c)
    intro = lab.result(c, lab.call(c, lambda cl, now: cl.request_introduction(b.address, now)))
    assert isinstance(intro, IntroductionReceived)


def test_the_allow_list_is_replaced_whole() -> None:
    lab = RvLab()
    a = lab.client("a")
    c = lab.client("c")
    b = lab.client("b", allow_list=[a.address, c.address])
    assert registered(lab, a, b, c)
    for asker in (a, c):
        event = lab.result(
            asker, lab.call(asker, lambda cl, now: cl.request_introduction(b.address, now))
        )
        assert isinstance(event, IntroductionReceived)
    done = lab.result(b, lab.call(b, lambda cl, now: cl.publish_allow_list([c.address], now)))
    assert isinstance(done, RequestDone)
    refused = lab.result(a, lab.call(a, lambda cl, now: cl.request_introduction(b.address, now)))
    assert isinstance(refused, RequestFailed) and refused.code == "not_found"
    accepted = lab.result(c, lab.call(c, lambda cl, now: cl.request_introduction(b.address, now)))
    assert isinstance(accepted, IntroductionReceived)


def test_an_offline_target_is_still_introduced_by_its_signed_candidates() -> None:
    lab = RvLab()
    a = lab.client("a")
    b = lab.client("b", allow_list=[a.address], candidates=[("203.0.113.5", 7777)])
    assert registered(lab, a, b)
    lab.leave(b)
    lab.settle(200)  # the server notices b is gone
    assert lab.server.server is not None and not lab.server.server.is_online(b.address)
    intro = lab.result(a, lab.call(a, lambda c, now: c.request_introduction(b.address, now)))
    assert isinstance(intro, IntroductionReceived)
    assert intro.candidates == (("203.0.113.5", 7777),)


def test_introductions_need_a_registered_requester() -> None:
    lab = RvLab()
    b = lab.client("b", public=True)
    assert registered(lab, b)
    raw = RawClient(lab, "raw")
    from pilot_proto.rendezvous.messages import Introduce

    answer = raw.ask(encode_message(Introduce(1, b.address)))
    assert isinstance(answer, ErrorReply) and answer.code is ErrorCode.INVALID_ARGUMENT


# ------------------------------------------------------------------ limits


def test_request_rate_limit() -> None:
    lab = RvLab(server_config=server_config(requests_per_second=0.01, request_burst=4))
    a = lab.client("a")
    assert registered(lab, a)  # register + allow list: two tokens
    results = [
        lab.result(a, lab.call(a, lambda c, now: c.lookup(a.address, now))) for _ in range(3)
    ]
    assert [type(r) for r in results[:2]] == [LookupResult, LookupResult]
    assert isinstance(results[2], RequestFailed) and results[2].code == "rate_limited"


def test_registrations_per_source_ip_are_limited() -> None:
    lab = RvLab(server_config=server_config(max_registrations_per_ip=2))
    apps = [lab.client(f"n{i}", addr=("192.0.2.50", 6000 + i)) for i in range(3)]
    assert registered(lab, *apps[:2])
    assert lab.run_until(lambda: bool(apps[2].of(RegistrationFailed)))
    assert apps[2].of(RegistrationFailed)[0].code == "rate_limited"
    other_ip = lab.client("elsewhere", addr=("192.0.2.51", 6000))
    assert registered(lab, other_ip)


def test_default_limits_never_throttle_a_busy_local_site() -> None:
    lab = RvLab()
    apps = [lab.client(f"n{i}", hostname=f"n{i}", addr=("192.0.2.60", 6000 + i)) for i in range(40)]
    assert registered(lab, *apps, timeout=60)
    a = apps[0]
    rids = [lab.call(a, lambda c, now, i=i: c.lookup(f"n{i % 40}", now)) for i in range(500)]
    results = [lab.result(a, rid, timeout=60) for rid in rids]
    assert all(isinstance(r, LookupResult) for r in results)


# ------------------------------------------------------------------ restarts, key changes


def test_after_a_server_restart_clients_register_again_by_themselves() -> None:
    lab = RvLab()
    a = lab.client("a", hostname="agent-a")
    b = lab.client("b", public=True)
    assert registered(lab, a, b)
    server = lab.restart_server()
    assert server.server is not None
    assert lab.run_until(
        lambda: (
            server.server is not None
            and server.server.is_online(a.address)
            and server.server.is_online(b.address)
        ),
        timeout=120,
    )
    assert a.client is not None and a.client.stats["server_restarts"] >= 1
    # Introductions need the fresh presence: they work again.
    intro = lab.result(a, lab.call(a, lambda c, now: c.request_introduction(b.address, now)))
    assert isinstance(intro, IntroductionReceived)
    assert ("192.0.2.2", 5002) in intro.candidates


def test_a_changed_server_key_is_reported_not_silently_refused() -> None:
    lab = RvLab()
    a = lab.client("a")
    assert registered(lab, a)
    old_key = lab.server_identity.static_public
    new_identity = Identity.generate(lab.net.rng_for("reinstalled server"))
    lab.restart_server(new_identity)
    assert lab.run_until(lambda: bool(a.of(KeyChanged)), timeout=300)
    changed = a.of(KeyChanged)[0]
    assert changed.endpoint == SERVER_ADDR
    assert changed.pinned == old_key and changed.presented == new_identity.static_public
    assert a.client is not None and a.client.state is ClientState.KEY_CHANGED
    assert a.of(Disconnected)  # the lost session was reported first
    # Nothing registers with the impostor, and no request goes through afterwards.
    assert lab.server.server is not None and not lab.server.server.is_online(a.address)


def test_a_wrong_pin_on_first_start_is_a_key_change() -> None:
    lab = RvLab()
    wrong = Identity.generate(lab.net.rng_for("old server"))
    a = lab.client("a", start=False)
    assert a.client is not None
    a.client._pinned = wrong.static_public  # as if pinned from an earlier install
    lab.start(a)
    assert lab.run_until(lambda: bool(a.of(KeyChanged)), timeout=120)
    assert a.of(KeyChanged)[0].presented == lab.server_identity.static_public
    assert not a.of(Registered)


def test_an_unreachable_server_is_reported_then_reached_when_it_comes_back() -> None:
    lab = RvLab()
    lab.net.remove_host(SERVER_ADDR)
    a = lab.client("a", config=client_config(reconnect_min=5.0))
    assert lab.run_until(lambda: bool(a.of(Disconnected)), timeout=120)
    assert "cannot reach" in a.of(Disconnected)[0].reason
    assert not a.of(KeyChanged)
    lab.restart_server()  # the same server comes back
    assert registered(lab, a, timeout=300)


def test_no_internal_errors_anywhere_in_a_busy_run() -> None:
    lab = RvLab(seed=4)
    a = lab.client("a", hostname="agent-a", public=True)
    b = lab.client("b", hostname="agent-b", allow_list=[a.address])
    assert registered(lab, a, b)
    lab.call(b, lambda c, now: c.request_introduction(a.address, now))
    lab.call(a, lambda c, now: c.request_introduction(b.address, now))
    lab.settle(100)
    for app in (a, b, lab.server):
        assert app.node.stats["internal_error"] == 0
        part = app.client or app.server
        assert part is not None and part.stats["internal_error"] == 0


def test_a_server_that_closes_its_sessions_is_reconnected_to_when_it_returns() -> None:
    lab = RvLab()
    a = lab.client("a", hostname="agent-a", config=client_config(reconnect_min=2.0))
    assert registered(lab, a)
    lab.server.node.close(lab.now)  # what `rendezvous serve` does on SIGTERM
    lab.net.flush()
    assert lab.run_until(lambda: bool(a.of(Disconnected)))
    assert a.client is not None and a.client.state is ClientState.WAITING
    lab.leave(lab.server)
    lab.settle(3)
    lab.restart_server()
    assert lab.run_until(lambda: len(a.of(Registered)) == 2, timeout=120)
    event = lab.result(a, lab.call(a, lambda c, now: c.lookup("agent-a", now)))
    assert isinstance(event, LookupResult)
