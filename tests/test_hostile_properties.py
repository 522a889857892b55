"""Hypothesis "never raises" properties over every entry point that faces hostile input
(issue 7), the same entry points the atheris harnesses in `fuzz/` drive.

Inputs are random bytes and mutations of the harnesses' seeds (real traffic of the
simulator), plus structured inputs that get behind the cryptography: well-formed frames
with wild values, sealed under a genuine session key and fed to a real Node.
"""

from __future__ import annotations

import pytest
from delivery_harness import frames_strategy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import HARNESSES, corpus_inputs, load
from fuzz import node as node_harness
from fuzz.connection import join_records
from fuzz.rendezvous_server import RendezvousSession
from pilot_proto.delivery.frames import Frame, encode_payload
from pilot_proto.node import ACCEPTED_OUTCOMES
from pilot_proto.transmit import Addr

#: Examples per harness; the slow ones (a Node or a socket per example) get fewer.
EXAMPLES = {"node": 60, "rendezvous_server": 40, "local_api": 60}


def _mutate(seed: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    data = bytearray(seed)
    for op, position, chunk in edits:
        at = position % (len(data) + 1)
        if op == 0 and data:  # overwrite
            data[at % len(data) : at % len(data) + len(chunk)] = chunk
        elif op == 1:  # insert
            data[at:at] = chunk
        elif op == 2:  # delete
            del data[at : at + len(chunk)]
        else:  # truncate
            del data[at:]
    return bytes(data)


def hostile_inputs(name: str) -> st.SearchStrategy[bytes]:
    seeds = corpus_inputs(name)
    edits = st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=8)),
        max_size=4,
    )
    return st.one_of(
        st.binary(max_size=2048),
        st.sampled_from(seeds),
        st.builds(_mutate, st.sampled_from(seeds), edits),
    )


@pytest.mark.parametrize("name", HARNESSES)
def test_no_entry_point_raises_on_hostile_bytes(name: str) -> None:
    harness = load(name)

    @settings(max_examples=EXAMPLES.get(name, 150),
              suppress_health_check=[HealthCheck.too_slow], deadline=None)
    @given(data=hostile_inputs(name))
    def check(data: bytes) -> None:
        harness.test_one_input(data)

    check()


packet_numbers = st.integers(0, 1 << 20)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads=st.lists(st.tuples(packet_numbers, st.lists(frames_strategy, min_size=1,
                                                            max_size=6)), max_size=12),
       sources=st.lists(st.sampled_from([node_harness.PEER_ADDR, ("203.0.113.9", 9)]),
                        min_size=12, max_size=12),
       trusted=st.booleans())
def test_well_formed_frames_with_wild_values_inside_a_real_session_never_raise(
    payloads: list[tuple[int, list[Frame]]], sources: list[Addr], trusted: bool
) -> None:
    """Frames get past the AEAD here: the peer holds the keys. From the peer's address or
    (roaming) another one, whatever the values, the node stays consistent. A stranger's
    frames (trust, refusals and all) reach the application with nothing at all."""
    session = node_harness.Session(trusted=trusted)
    for (number, frames), source in zip(payloads, sources, strict=False):
        session.deliver(session.peer.seal(encode_payload(number, frames)), source)
        session.advance(0.01)
        session.check()
    session.advance(60.0)
    session.check()
    if not trusted:
        assert session.app_events == 0
    stats = session.node.stats
    drops = sum(n for reason, n in stats.items() if reason.startswith("drop_"))
    assert stats["datagrams_received"] == drops + sum(stats[k] for k in ACCEPTED_OUTCOMES)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=st.lists(st.one_of(st.binary(max_size=600),
                                   st.sampled_from(corpus_inputs("rendezvous_messages"))),
                         max_size=6),
       rounds=st.integers(1, 3))
def test_the_rendezvous_server_takes_any_request_from_a_session(
    requests: list[bytes], rounds: int
) -> None:
    session = RendezvousSession()
    for _ in range(rounds):
        for request in requests:
            session.request(request)
    session.check()
    # The same through the harness' record layout, so both paths stay in step.
    load("rendezvous_server").test_one_input(join_records(requests))
