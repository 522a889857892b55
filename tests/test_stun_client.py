"""Sans-IO STUN client transactions, in virtual time."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pilot_proto.errors import LocalProtocolError
from pilot_proto.stun import (
    ChangeRequest,
    StunAttr,
    StunClass,
    StunMessage,
    address_attribute,
    build_binding_response,
    build_error_response,
    check_fingerprint,
    decode_message,
    encode_message,
    short_term_key,
)
from pilot_proto.stun_client import (
    BindingFailed,
    BindingSucceeded,
    StunClient,
    StunClientConfig,
    same_endpoint,
)
from pilot_proto.stun_server import answer_binding_request
from pilot_proto.transmit import Transmit

SERVER = ("192.0.2.10", 3478)
ME = ("203.0.113.5", 40000)


def counter_rng(seed: int = 0) -> Callable[[int], bytes]:
    counter = itertools.count()

    def rng(n: int) -> bytes:
        return hashlib.sha256(f"{seed}:{next(counter)}".encode()).digest()[:n]

    return rng


def run_until_idle(client: StunClient, limit: float = 1000.0) -> list[tuple[float, Transmit]]:
    """Fire timers in virtual time until nothing is pending; every send with its time."""
    sent = [(0.0, t) for t in client.datagrams_to_send(0.0)]
    for _ in range(100):
        timer = client.get_timer()
        if timer is None or timer > limit:
            break
        client.handle_timer(timer)
        sent += [(timer, t) for t in client.datagrams_to_send(timer)]
    return sent


def test_default_retransmission_schedule_and_timeout() -> None:
    # RFC 8489 section 6.2.1: with RTO 500 ms and Rc 7, sends at 0, 500, 1500, 3500,
    # 7500, 15500 and 31500 ms; the transaction fails at 39500 ms.
    client = StunClient(counter_rng())
    tid = client.start_binding(SERVER, 0.0)
    sent = run_until_idle(client)
    assert [round(t, 6) for t, _ in sent] == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(tx.addr == SERVER and tx.data == sent[0][1].data for _, tx in sent)
    result = client.next_result()
    assert isinstance(result, BindingFailed)
    assert result.transaction_id == tid and result.server == SERVER
    assert "timeout" in result.reason and result.error_code is None
    assert client.next_result() is None
    assert client.get_timer() is None and client.pending == 0
    assert client.stats["retransmissions"] == 6 and client.stats["timeouts"] == 1


def test_failure_time_is_rm_times_rto_after_last_send() -> None:
    client = StunClient(counter_rng(), StunClientConfig(rto=0.1, rc=3, rm=2))
    client.start_binding(SERVER, 10.0)
    client.datagrams_to_send(10.0)
    times = []
    while (timer := client.get_timer()) is not None:
        times.append(round(timer, 6))
        client.handle_timer(timer)
    assert times == [10.1, 10.3, 10.5]  # two resends, then 2 x 0.1 s of waiting
    assert isinstance(client.next_result(), BindingFailed)


def test_request_on_the_wire() -> None:
    client = StunClient(counter_rng(), StunClientConfig(software="pilot-test"))
    tid = client.start_binding(SERVER, 0.0)
    [tx] = client.datagrams_to_send(0.0)
    assert client.datagrams_to_send(0.0) == []
    msg = decode_message(tx.data)
    assert msg.message_class is StunClass.REQUEST and msg.method == 1
    assert msg.transaction_id == tid
    assert msg.software == "pilot-test"
    assert check_fingerprint(tx.data)


def test_success_from_the_server() -> None:
    client = StunClient(counter_rng())
    client.start_binding(SERVER, 0.0)
    [tx] = client.datagrams_to_send(0.0)
    answer = answer_binding_request(
        tx.data, ME, other_address=("192.0.2.11", 3479), response_origin=SERVER
    )
    assert answer is not None
    assert client.receive_datagram(answer, SERVER, 0.042)
    result = client.next_result()
    assert isinstance(result, BindingSucceeded)
    assert result.mapped_address == ME
    assert result.other_address == ("192.0.2.11", 3479)
    assert result.response_origin == SERVER
    assert result.rtt == pytest.approx(0.042)
    assert client.get_timer() is None
    # The same response again matches nothing.
    assert not client.receive_datagram(answer, SERVER, 0.05)
    assert client.stats["drop_unknown_transaction"] == 1


def test_rtt_is_measured_from_the_last_retransmission() -> None:
    client = StunClient(counter_rng())
    client.start_binding(SERVER, 0.0)
    [tx] = client.datagrams_to_send(0.0)
    client.handle_timer(0.5)
    client.handle_timer(1.5)
    assert len(client.datagrams_to_send(1.5)) == 2
    answer = answer_binding_request(tx.data, ME)
    assert answer is not None
    assert client.receive_datagram(answer, SERVER, 1.6)
    result = client.next_result()
    assert isinstance(result, BindingSucceeded)
    assert result.rtt == pytest.approx(0.1)


def test_wrong_source_and_wrong_transaction_are_ignored() -> None:
    client = StunClient(counter_rng())
    tid = client.start_binding(SERVER, 0.0)
    [tx] = client.datagrams_to_send(0.0)
    answer = answer_binding_request(tx.data, ME)
    assert answer is not None
    # An off-path attacker who guessed the id but not the server's address.
    assert not client.receive_datagram(answer, ("192.0.2.66", 3478), 0.01)
    assert not client.receive_datagram(answer, (SERVER[0], 3479), 0.01)
    other_tid = build_binding_response(bytes(12), ("198.51.100.99", 1))
    assert not client.receive_datagram(other_tid, SERVER, 0.01)
    assert client.stats["drop_wrong_source"] == 2
    assert client.stats["drop_unknown_transaction"] == 1
    assert client.next_result() is None and client.pending == 1
    assert client.receive_datagram(answer, SERVER, 0.02)
    result = client.next_result()
    assert isinstance(result, BindingSucceeded) and result.transaction_id == tid


def test_garbage_and_requests_are_dropped_and_counted() -> None:
    client = StunClient(counter_rng())
    tid = client.start_binding(SERVER, 0.0)
    [tx] = client.datagrams_to_send(0.0)
    assert not client.receive_datagram(b"\x53hello", SERVER, 0.0)
    assert not client.receive_datagram(tx.data, SERVER, 0.0)  # our own request reflected
    broken = bytearray(build_binding_response(tid, ME, fingerprint=True))
    broken[-1] ^= 0xFF
    assert not client.receive_datagram(bytes(broken), SERVER, 0.0)
    allocate = encode_message(StunMessage(3, StunClass.SUCCESS_RESPONSE, tid))
    assert not client.receive_datagram(allocate, SERVER, 0.0)
    malformed = encode_message(
        StunMessage(1, StunClass.SUCCESS_RESPONSE, tid, ((StunAttr.XOR_MAPPED_ADDRESS, b"x"),))
    )
    assert not client.receive_datagram(malformed, SERVER, 0.0)
    assert client.stats["drop_not_stun"] == 1
    assert client.stats["drop_not_response"] == 1
    assert client.stats["drop_bad_fingerprint"] == 1
    assert client.stats["drop_wrong_method"] == 1
    assert client.stats["drop_malformed"] == 1
    assert client.pending == 1


def test_error_response_fails_the_transaction_with_its_code() -> None:
    client = StunClient(counter_rng())
    tid = client.start_binding(SERVER, 0.0, change_request=ChangeRequest(True, True))
    error = build_error_response(tid, 420, unknown_attributes=[StunAttr.CHANGE_REQUEST])
    assert client.receive_datagram(error, SERVER, 0.1)
    result = client.next_result()
    assert isinstance(result, BindingFailed)
    assert result.error_code == 420 and "420" in result.reason


def test_mapped_address_fallback_and_missing_address() -> None:
    client = StunClient(counter_rng())
    old_style = client.start_binding(SERVER, 0.0)
    legacy = encode_message(
        StunMessage(
            1,
            StunClass.SUCCESS_RESPONSE,
            old_style,
            (address_attribute(StunAttr.MAPPED_ADDRESS, ME),),
        )
    )
    assert client.receive_datagram(legacy, SERVER, 0.1)
    result = client.next_result()
    assert isinstance(result, BindingSucceeded) and result.mapped_address == ME
    empty_tid = client.start_binding(SERVER, 0.0)
    empty = encode_message(StunMessage(1, StunClass.SUCCESS_RESPONSE, empty_tid))
    assert client.receive_datagram(empty, SERVER, 0.1)
    failed = client.next_result()
    assert isinstance(failed, BindingFailed) and "mapped address" in failed.reason


def test_authenticated_transaction_needs_an_authenticated_answer() -> None:
    key = short_term_key("hunter2")
    client = StunClient(counter_rng())
    tid = client.start_binding(SERVER, 0.0, username="alice", key=key)
    [tx] = client.datagrams_to_send(0.0)
    request = decode_message(tx.data)
    assert request.username == "alice" and request.has(StunAttr.MESSAGE_INTEGRITY)
    unsigned = build_binding_response(tid, ME)
    wrong = build_binding_response(tid, ME, key=b"other")
    assert not client.receive_datagram(unsigned, SERVER, 0.1)
    assert not client.receive_datagram(wrong, SERVER, 0.1)
    assert client.stats["drop_bad_integrity"] == 2
    signed = build_binding_response(tid, ME, key=key, integrity="sha256", fingerprint=True)
    assert client.receive_datagram(signed, SERVER, 0.1)
    assert isinstance(client.next_result(), BindingSucceeded)


def test_response_from_a_changed_address() -> None:
    alternate = ("192.0.2.11", 3479)
    client = StunClient(counter_rng())
    tid = client.start_binding(
        SERVER, 0.0, change_request=ChangeRequest(True, True), response_from=alternate
    )
    [tx] = client.datagrams_to_send(0.0)
    assert tx.addr == SERVER
    assert decode_message(tx.data).change_request == ChangeRequest(True, True)
    answer = build_binding_response(tid, ME)
    assert not client.receive_datagram(answer, SERVER, 0.1)  # the change was not made
    assert client.receive_datagram(answer, alternate, 0.1)
    # A refusal comes from where the request went.
    refused_tid = client.start_binding(
        SERVER, 0.2, change_request=ChangeRequest(True, True), response_from=alternate
    )
    refusal = build_error_response(refused_tid, 420, unknown_attributes=[3])
    assert not client.receive_datagram(refusal, ("192.0.2.66", 3478), 0.3)
    assert client.receive_datagram(refusal, SERVER, 0.3)


def test_concurrent_transactions_and_the_earliest_timer() -> None:
    client = StunClient(counter_rng())
    a = client.start_binding(SERVER, 0.0)
    b = client.start_binding(("192.0.2.20", 3478), 0.2)
    assert a != b
    assert client.get_timer() == pytest.approx(0.5)
    assert len(client.datagrams_to_send(0.2)) == 2
    client.handle_timer(0.5)
    [resend] = client.datagrams_to_send(0.5)
    assert resend.addr == SERVER
    assert client.get_timer() == pytest.approx(0.7)
    assert client.cancel(a) and not client.cancel(a)
    assert client.get_timer() == pytest.approx(0.7)
    assert client.pending == 1


def test_late_timer_does_not_burst() -> None:
    client = StunClient(counter_rng())
    client.start_binding(SERVER, 0.0)
    client.datagrams_to_send(0.0)
    client.handle_timer(5.0)  # the binding slept through several deadlines
    assert len(client.datagrams_to_send(5.0)) == 1
    assert client.get_timer() == pytest.approx(6.0)  # next interval (1 s) from the real send


def test_ipv6_spellings_of_the_server_match() -> None:
    server = ("2001:db8::10", 3478)
    client = StunClient(counter_rng())
    client.start_binding(server, 0.0)
    [tx] = client.datagrams_to_send(0.0)
    answer = answer_binding_request(tx.data, ("2001:db8::5", 4000))
    assert answer is not None
    assert client.receive_datagram(answer, ("2001:0db8:0:0::10", 3478), 0.1)
    assert same_endpoint(("::ffff:192.0.2.1", 1), ("192.0.2.1", 1))
    assert not same_endpoint(("192.0.2.1", 1), ("192.0.2.1", 2))


def test_config_and_rng_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        StunClientConfig(rto=0)
    with pytest.raises(LocalProtocolError):
        StunClientConfig(rc=0)
    stuck = StunClient(lambda n: bytes(n))
    stuck.start_binding(SERVER, 0.0)
    with pytest.raises(LocalProtocolError, match="repeating"):
        stuck.start_binding(SERVER, 0.0)
    with pytest.raises(LocalProtocolError, match="wrong number"):
        StunClient(lambda n: b"short").start_binding(SERVER, 0.0)


@given(data=st.binary(max_size=120), flip=st.integers(0, 200))
def test_any_datagram_never_raises(data: bytes, flip: int) -> None:
    client = StunClient(counter_rng())
    tid = client.start_binding(SERVER, 0.0)
    answer = bytearray(build_binding_response(tid, ME, fingerprint=True))
    answer[flip % len(answer)] ^= 0x5A
    for datagram in (data, bytes(answer), data[:4] + answer[4:]):
        consumed = client.receive_datagram(datagram, SERVER, 0.1)
        assert consumed == (client.pending == 0)
        if consumed:
            break
    assert sum(client.stats.values()) >= 2
