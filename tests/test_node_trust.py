"""Trust inside sessions (DESIGN 5 and 8): trust frames between nodes that do not trust each
other yet, and the refusal of everything else an untrusted peer sends, so its sender
fails fast with not_trusted instead of timing out."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from node_harness import FAST_SESSION, Lab, SimNode, record_of

from pilot_proto.config import NodeConfig
from pilot_proto.delivery import (
    Connection,
    DatagramReceived,
    DeliveryConfig,
    MessageDelivered,
    MessageFailed,
    MessageReceived,
    StreamOpened,
    StreamReset,
)
from pilot_proto.delivery.frames import (
    MAX_JUSTIFICATION_BYTES,
    Frame,
    FrameDecodeError,
    Message,
    Refused,
    TrustAccept,
    TrustReject,
    TrustRequest,
    decode_payload,
    encode_frame,
    encode_payload,
)
from pilot_proto.delivery.streams import ResetCode
from pilot_proto.errors import LocalProtocolError, PeerNotTrusted
from pilot_proto.events import TrustAccepted, TrustRejected, TrustRequested
from pilot_proto.node import ACCEPTED_OUTCOMES
from pilot_proto.simulator import LinkConditions

REQUEST = bytes(range(16))
PUBLIC = NodeConfig(session=FAST_SESSION, public=True)


def public_pair(lab: Lab, *, a_trusts_b: bool = True) -> tuple[SimNode, SimNode]:
    """a knows public b (trusting it or not); b has never heard of a."""
    a = lab.node("a")
    b = lab.node("b", PUBLIC)
    a.node.add_peer(record_of(b.identity), [b.addr], trusted=a_trusts_b)
    return a, b


def no_internal_errors(*nodes: SimNode) -> None:
    for n in nodes:
        stats = n.node.stats
        assert stats["internal_error"] == 0
        outcomes = sum(stats[k] for k in ACCEPTED_OUTCOMES)
        drops = sum(v for k, v in stats.items() if k.startswith("drop_"))
        assert stats["datagrams_received"] == outcomes + drops


def test_a_message_to_a_public_node_that_does_not_trust_us_fails_with_not_trusted() -> None:
    lab = Lab()
    a, b = public_pair(lab)
    message_id = a.node.send_message(b.address, b"let me in", lab.net.now)
    assert lab.run_until(lambda: bool(a.of(MessageFailed)), timeout=5)
    failed = a.of(MessageFailed)[0]
    assert (failed.address, failed.message_id, failed.reason) == (
        b.address, message_id, "not_trusted")
    lab.settle(3)
    assert b.of(MessageReceived) == []
    assert a.of(MessageDelivered) == []
    assert b.node.stats["untrusted_message_frames"] >= 1
    # Refused means gone: the sender stops resending it.
    sent_before = b.node.stats["untrusted_message_frames"]
    lab.settle(10)
    assert b.node.stats["untrusted_message_frames"] == sent_before
    no_internal_errors(a, b)


def test_in_session_request_accept_then_messages_flow() -> None:
    lab = Lab()
    a, b = public_pair(lab, a_trusts_b=False)
    with pytest.raises(PeerNotTrusted):
        a.node.send_message(b.address, b"too early", lab.net.now)
    a.node.send_trust_request(b.address, REQUEST, "task routing", lab.net.now)
    assert lab.run_until(lambda: bool(b.of(TrustRequested)), timeout=5)
    request = b.of(TrustRequested)[0]
    assert (request.address, request.request_id, request.justification) == (
        a.address, REQUEST, "task routing")
    # The approver trusts first, then answers: the requester's first message is welcome.
    b.node.set_trust(a.address, True, lab.net.now)
    b.node.answer_trust(a.address, REQUEST, True, lab.net.now)
    assert lab.run_until(lambda: bool(a.of(TrustAccepted)), timeout=5)
    assert a.of(TrustAccepted)[0].request_id == REQUEST
    a.node.set_trust(b.address, True, lab.net.now)
    message_id = a.node.send_message(b.address, b"run subtask", lab.net.now)
    assert lab.run_until(lambda: bool(b.of(MessageReceived)), timeout=5)
    assert [(m.message_id, m.data) for m in b.of(MessageReceived)] == [
        (message_id, b"run subtask")]
    b.node.confirm_persisted(a.address, message_id, lab.net.now)
    assert lab.run_until(lambda: bool(a.of(MessageDelivered)), timeout=5)
    no_internal_errors(a, b)


def test_messages_refused_before_trust_do_not_block_the_ones_after() -> None:
    lab = Lab()
    a, b = public_pair(lab)
    refused = [a.node.send_message(b.address, b"early %d" % i, lab.net.now) for i in range(5)]
    assert lab.run_until(lambda: len(a.of(MessageFailed)) == 5, timeout=5)
    assert {e.message_id for e in a.of(MessageFailed)} == set(refused)
    b.node.set_trust(a.address, True, lab.net.now)
    a.node.send_message(b.address, b"now welcome", lab.net.now)
    assert lab.run_until(lambda: bool(b.of(MessageReceived)), timeout=5)
    assert [m.data for m in b.of(MessageReceived)] == [b"now welcome"]


def test_reject_reaches_the_requester() -> None:
    lab = Lab()
    a, b = public_pair(lab, a_trusts_b=False)
    a.node.send_trust_request(b.address, REQUEST, "", lab.net.now)
    assert lab.run_until(lambda: bool(b.of(TrustRequested)), timeout=5)
    b.node.answer_trust(a.address, REQUEST, False, lab.net.now)
    assert lab.run_until(lambda: bool(a.of(TrustRejected)), timeout=5)
    assert a.of(TrustRejected)[0].request_id == REQUEST
    assert not b.node.is_trusted(a.address) and not a.node.is_trusted(b.address)


def test_trust_frames_are_resent_until_acknowledged() -> None:
    lab = Lab()
    a, b = public_pair(lab, a_trusts_b=False)
    a.node.connect(b.address, lab.net.now)
    assert lab.run_until(lambda: b.node.has_session(a.address), timeout=5)
    lab.net.set_link(a.addr, b.addr, LinkConditions(blackhole=True))  # lost for a while
    a.node.send_trust_request(b.address, REQUEST, "again and again", lab.net.now)
    lab.settle(1.5)
    assert b.of(TrustRequested) == []
    lab.net.set_link(a.addr, b.addr, LinkConditions())
    assert lab.run_until(lambda: bool(b.of(TrustRequested)), timeout=10)


def test_untrusted_streams_and_datagrams_never_reach_the_application() -> None:
    lab = Lab()
    a, b = public_pair(lab)
    b.node.listen(7)
    stream_id = a.node.open_stream(b.address, 7, lab.net.now)
    a.node.send_stream(b.address, stream_id, b"x" * 5000, lab.net.now, end_stream=True)
    a.node.send_datagram(b.address, b"psst", lab.net.now)
    assert lab.run_until(lambda: bool(a.of(StreamReset)), timeout=5)
    reset = a.of(StreamReset)[0]
    assert (reset.stream_id, reset.code, reset.reason) == (
        stream_id, ResetCode.NOT_TRUSTED, "not trusted")
    lab.settle(3)
    assert b.of(StreamOpened) == [] and b.of(DatagramReceived) == []
    assert b.node.stats["untrusted_stream_frames"] >= 1
    assert b.node.stats["untrusted_datagram_frames"] >= 1
    no_internal_errors(a, b)


def test_many_untrusted_streams_leave_bounded_state_and_no_events() -> None:
    lab = Lab()
    a, b = public_pair(lab)
    b.node.listen(7)
    for _ in range(60):
        stream_id = a.node.open_stream(b.address, 7, lab.net.now)
        a.node.send_stream(b.address, stream_id, b"data", lab.net.now)
    lab.settle(10)
    assert b.of(StreamOpened) == []
    # Every stream was refused in the end (16 at a time, as final sizes came back).
    assert len(a.of(StreamReset)) == 60
    no_internal_errors(a, b)


def test_trust_request_arguments_are_checked() -> None:
    lab = Lab()
    a, b = public_pair(lab, a_trusts_b=False)
    with pytest.raises(LocalProtocolError, match="16 bytes"):
        a.node.send_trust_request(b.address, b"short", "", lab.net.now)
    with pytest.raises(LocalProtocolError, match="justification"):
        a.node.send_trust_request(
            b.address, REQUEST, "x" * (MAX_JUSTIFICATION_BYTES + 1), lab.net.now)


# ------------------------------------------------------------------ hostile peers


def _connection() -> Connection:
    counter = iter(range(1 << 30))
    return Connection(
        "peer", DeliveryConfig(), now=0.0, listening_ports={7},
        rng=lambda n: b"".join(next(counter).to_bytes(4, "big") for _ in range(n // 4)),
    )


def _events(connection: Connection) -> list[object]:
    out = []
    while (event := connection.next_event()) is not None:
        out.append(event)
    return out


def test_a_refusal_fails_only_messages_that_peer_was_sent() -> None:
    sender = _connection()
    message_id = sender.send_message(b"hello", 0.0)
    # A refusal of a message not sent yet (its id guessed) is ignored: nothing left.
    sender.receive_payload(encode_payload(0, [Refused((message_id,))]), 0.1)
    assert _events(sender) == []
    assert sender.stats["unknown_refusal"] == 1
    assert sender.payloads_to_send(0.2)
    # Unknown ids are counted, never raise, and fail nothing.
    sender.receive_payload(encode_payload(1, [Refused((bytes(16), b"\xff" * 16))]), 0.3)
    assert sender.stats["unknown_refusal"] == 3
    # The real refusal, after the message left, fails it once.
    sender.receive_payload(encode_payload(2, [Refused((message_id, message_id))]), 0.4)
    assert _events(sender) == [MessageFailed("peer", message_id, "not_trusted")]


def test_many_refused_messages_out_of_order_still_all_fail_at_the_sender() -> None:
    lab = Lab()
    a, b = public_pair(lab)
    lab.net.set_link(a.addr, b.addr, LinkConditions(reorder=0.5, reorder_delay=0.05))
    sent = {a.node.send_message(b.address, b"m%d" % i, lab.net.now) for i in range(120)}
    assert lab.run_until(lambda: len(a.of(MessageFailed)) == 120, timeout=60)
    assert {e.message_id for e in a.of(MessageFailed)} == sent
    assert b.of(MessageReceived) == []
    b.node.set_trust(a.address, True, lab.net.now)
    a.node.send_message(b.address, b"welcome now", lab.net.now)
    assert lab.run_until(lambda: bool(b.of(MessageReceived)), timeout=10)
    no_internal_errors(a, b)


def test_an_untrusted_receiver_keeps_only_small_bounded_state() -> None:
    receiver = _connection()
    frames = []
    for i in range(200):
        frames.append(Message(1000 + i * 40, bytes([i]) * 16, "text", 10, 0, b"0123456789",
                              None))
    for number, frame in enumerate(frames):
        receiver.receive_untrusted(b"x" * 60, number, [frame], 0.0)
    assert _events(receiver) == []
    stats = receiver.stats
    # Out of order (base 0 never came): at most 32 refused places are kept, no data.
    assert stats["messages_refused"] == 32
    assert stats["untrusted_refusal_backlog_full"] == 168
    # Those packets were left unacknowledged: their messages come again later.
    assert stats["untrusted_packet_deferred"] == 168


def test_refusals_are_rate_limited_and_never_larger_than_their_cause() -> None:
    receiver = _connection()
    base = 0
    received = 0
    for i in range(300):
        frame = Message(base, i.to_bytes(16, "big"), "text", 0, 0, b"", None)
        base += 64  # MESSAGE_ACCOUNTING_OVERHEAD units per empty message
        received += len(encode_frame(frame))
        receiver.receive_untrusted(b"", i, [frame], 0.0)
    refusals = [
        frame for payload in receiver.payloads_to_send(0.0)
        for frame in decode_payload(payload)[1] if isinstance(frame, Refused)
    ]
    assert receiver.stats["messages_refused"] == 64
    assert receiver.stats["refusals_rate_limited"] == 236
    assert sum(len(f.message_ids) for f in refusals) == 64
    assert sum(len(encode_frame(f)) for f in refusals) < received * 64 / 300


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0x20, max_value=0x2F), st.binary(max_size=80))
def test_trust_frame_decoders_never_raise_anything_but_frame_decode_error(
    frame_type: int, body: bytes
) -> None:
    try:
        number, frames = decode_payload(bytes([0, frame_type]) + body)
    except FrameDecodeError:
        return
    if any(isinstance(f, TrustRequest) and "\ufffd" in f.justification for f in frames):
        return  # U+FFFD takes more bytes than what it replaced
    assert decode_payload(encode_payload(number, frames)) == (number, frames)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.binary(min_size=16, max_size=16),
    st.text(max_size=300).filter(lambda t: len(t.encode()) <= MAX_JUSTIFICATION_BYTES),
    st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=64),
)
def test_trust_frames_round_trip(request_id: bytes, text: str, ids: list[bytes]) -> None:
    frames = [TrustRequest(request_id, text), TrustAccept(request_id),
              TrustReject(request_id), Refused(tuple(ids))]
    assert decode_payload(encode_payload(7, list(frames))) == (7, frames)


def test_resent_and_repeated_trust_frames_make_one_event_each_and_requests_are_capped() -> None:
    receiver = _connection()
    frames: list[Frame] = [TrustRequest(REQUEST, "once"), TrustRequest(REQUEST, "once"),
                           TrustAccept(REQUEST), TrustAccept(REQUEST)]
    frames += [TrustRequest(i.to_bytes(16, "big"), "") for i in range(20)]
    for number, frame in enumerate(frames):
        receiver.receive_untrusted(b"", number, [frame], 0.0)
    events = _events(receiver)
    assert events[:2] == [TrustRequested("peer", REQUEST, "once"),
                          TrustAccepted("peer", REQUEST)]
    assert len([e for e in events if isinstance(e, TrustRequested)]) == 8
    assert receiver.stats["trust_frame_duplicate"] == 2
    assert receiver.stats["trust_requests_over_limit"] == 13


def test_a_public_node_holds_delivery_state_for_a_bounded_number_of_strangers() -> None:
    lab = Lab()
    b = lab.node("b", NodeConfig(session=FAST_SESSION, public=True, max_untrusted_connections=2))
    strangers = [lab.node(f"s{i}") for i in range(3)]
    for s in strangers:
        s.node.add_peer(record_of(b.identity), [b.addr])
        s.node.send_message(b.address, b"hello", lab.net.now)
    lab.settle(3)
    assert sorted(len(s.of(MessageFailed)) for s in strangers) == [0, 1, 1]
    assert b.node.stats["drop_untrusted_over_limit"] >= 1
    # Once a stranger's session ends, the next one gets its turn.
    first = next(s for s in strangers if s.of(MessageFailed))
    waiting = next(s for s in strangers if not s.of(MessageFailed))
    first.node.close_peer(b.address, lab.net.now)
    assert lab.run_until(lambda: bool(waiting.of(MessageFailed)), timeout=30)
    no_internal_errors(b, *strangers)
