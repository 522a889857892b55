"""HandshakeState driven through its public API: every derived pattern, and misuse."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from pilot_proto.errors import NoiseError
from pilot_proto.noise import (
    MAX_MESSAGE_LEN,
    HandshakePattern,
    HandshakeState,
    NoiseProtocol,
    base_pattern_names,
    derive_pattern,
    parse_protocol_name,
)

INITIATOR_STATIC = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
RESPONDER_STATIC_BYTES = bytes(range(101, 133))
INITIATOR_PUBLIC = INITIATOR_STATIC.public_key().public_bytes_raw()
RESPONDER_PUBLIC = (
    X25519PrivateKey.from_private_bytes(RESPONDER_STATIC_BYTES).public_key().public_bytes_raw()
)


def _protocol_names() -> list[str]:
    names = []
    for base in base_pattern_names():
        names.append(f"Noise_{base}_25519_AESGCM_SHA256")
        for position in range(len(derive_pattern(base).messages) + 1):
            names.append(f"Noise_{base}psk{position}_25519_AESGCM_SHA256")
    names.append("Noise_XXpsk0+psk3_25519_AESGCM_SHA256")
    names.append("Noise_IKpsk0+psk1+psk2_25519_AESGCM_SHA256")
    return names


ALL_PROTOCOLS = _protocol_names()
# Low-order points of Curve25519 and non-canonical encodings of them (RFC 7748 section 5).
_P = 2**255 - 19
LOW_ORDER_POINTS = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    (_P - 1).to_bytes(32, "little"),
    _P.to_bytes(32, "little"),
    (_P + 1).to_bytes(32, "little"),
]


def _rng(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def _psks(count: int) -> list[bytes]:
    return [bytes([0x70 + i]) * 32 for i in range(count)]


def _parties(
    name: str | NoiseProtocol,
    *,
    seed: int = 1,
    prologue: bytes = b"pilot test",
    responder_psks: Sequence[bytes] | None = None,
    responder_prologue: bytes | None = None,
) -> tuple[HandshakeState, HandshakeState]:
    protocol = name if isinstance(name, NoiseProtocol) else parse_protocol_name(name)
    pattern = protocol.pattern
    initiator = HandshakeState(
        protocol,
        initiator=True,
        prologue=prologue,
        s=INITIATOR_STATIC,
        rs=RESPONDER_PUBLIC if "s" in pattern.responder_pre_messages else None,
        psks=_psks(pattern.psk_count),
        rng=_rng(seed),
    )
    responder = HandshakeState(
        protocol,
        initiator=False,
        prologue=prologue if responder_prologue is None else responder_prologue,
        s=RESPONDER_STATIC_BYTES,
        rs=INITIATOR_PUBLIC if "s" in pattern.initiator_pre_messages else None,
        psks=_psks(pattern.psk_count) if responder_psks is None else responder_psks,
        rng=_rng(seed + 1000),
    )
    return initiator, responder


def _sender_receiver(
    index: int, initiator: HandshakeState, responder: HandshakeState
) -> tuple[HandshakeState, HandshakeState]:
    return (initiator, responder) if index % 2 == 0 else (responder, initiator)


def _expected_length(pattern: HandshakePattern, index: int, payload_len: int) -> int:
    """Message size from section 7.1: e is 32 bytes, s 32 (+16 once keyed), payload +16.

    Every DH or psk token makes a key; with psks, so does every "e" (section 9.2).
    """
    keying = {"ee", "es", "se", "ss", "psk"} | ({"e"} if pattern.psk_count else set())
    keyed = any(token in keying for message in pattern.messages[:index] for token in message)
    length = 0
    for token in pattern.messages[index]:
        keyed = keyed or token in keying
        if token == "e":
            length += 32
        elif token == "s":
            length += 48 if keyed else 32
    return length + payload_len + (16 if keyed else 0)


@pytest.mark.parametrize("name", ALL_PROTOCOLS)
@settings(max_examples=3, deadline=None)
@given(payloads=st.lists(st.binary(max_size=100), min_size=5, max_size=5), seed=st.integers(0, 9))
def test_round_trip(name: str, payloads: list[bytes], seed: int) -> None:
    initiator, responder = _parties(name, seed=seed)
    pattern = initiator.protocol.pattern
    for index in range(len(pattern.messages)):
        sender, receiver = _sender_receiver(index, initiator, responder)
        assert not sender.complete and sender.message_index == index
        message = sender.write_message(payloads[index])
        assert len(message) == _expected_length(pattern, index, len(payloads[index]))
        assert receiver.read_message(message) == payloads[index]
    assert initiator.complete and responder.complete
    assert initiator.message_index == responder.message_index == len(pattern.messages)
    assert initiator.handshake_hash == responder.handshake_hash
    assert len(initiator.handshake_hash) == 32

    # Each side learns the peer's static key exactly when the pattern uses it.
    initiator_static_used = "s" in pattern.initiator_pre_messages or any(
        "s" in m for m in pattern.messages[0::2]
    )
    responder_static_used = "s" in pattern.responder_pre_messages or any(
        "s" in m for m in pattern.messages[1::2]
    )
    assert initiator.remote_static == (RESPONDER_PUBLIC if responder_static_used else None)
    assert responder.remote_static == (INITIATOR_PUBLIC if initiator_static_used else None)
    assert responder.remote_ephemeral == initiator.local_ephemeral_public
    if not pattern.is_one_way:
        assert initiator.remote_ephemeral == responder.local_ephemeral_public

    initiator_send, initiator_receive = initiator.split()
    responder_receive, responder_send = responder.split()
    assert initiator_send.key == responder_receive.key
    assert initiator_receive.key == responder_send.key
    assert initiator_send.key != initiator_receive.key
    for payload in payloads:
        ciphertext = initiator_send.encrypt_with_ad(b"hdr", payload)
        assert responder_receive.decrypt_with_ad(b"hdr", ciphertext) == payload
        if not pattern.is_one_way:
            ciphertext = responder_send.encrypt_with_ad(b"", payload)
            assert initiator_receive.decrypt_with_ad(b"", ciphertext) == payload


def _handshake_fails(name: str, tamper_index: int, tamper: Callable[[bytes], bytes]) -> bool:
    initiator, responder = _parties(name)
    pattern = initiator.protocol.pattern
    try:
        for index in range(len(pattern.messages)):
            sender, receiver = _sender_receiver(index, initiator, responder)
            message = sender.write_message(b"payload %d" % index)
            if index == tamper_index:
                message = tamper(message)
            receiver.read_message(message)
        initiator_send, initiator_receive = initiator.split()
        responder_receive, responder_send = responder.split()
        responder_receive.decrypt_with_ad(b"", initiator_send.encrypt_with_ad(b"", b"data"))
        if not pattern.is_one_way:
            initiator_receive.decrypt_with_ad(b"", responder_send.encrypt_with_ad(b"", b"data"))
    except NoiseError:
        return True
    return False


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_tampering_is_detected_before_transport(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(ALL_PROTOCOLS))
    pattern = parse_protocol_name(name).pattern
    index = data.draw(st.integers(0, len(pattern.messages) - 1))
    mask = data.draw(st.integers(1, 255))
    position = data.draw(st.integers(0, 10_000))

    def flip(message: bytes) -> bytes:
        at = position % len(message)
        return message[:at] + bytes([message[at] ^ mask]) + message[at + 1 :]

    assert _handshake_fails(name, index, flip)


@pytest.mark.parametrize(
    "name",
    [
        "Noise_IK_25519_AESGCM_SHA256",
        "Noise_XX_25519_AESGCM_SHA256",
        "Noise_X_25519_AESGCM_SHA256",
        "Noise_XXpsk0+psk3_25519_AESGCM_SHA256",
        "Noise_X1K1_25519_AESGCM_SHA256",
    ],
)
def test_failed_reads_leave_state_untouched(name: str) -> None:
    initiator, responder = _parties(name)
    pattern = initiator.protocol.pattern
    rejected = 0
    for index in range(len(pattern.messages)):
        sender, receiver = _sender_receiver(index, initiator, responder)
        message = sender.write_message(b"hello")
        hash_before = receiver.handshake_hash
        # Every truncation and a flipped tag byte; for unkeyed messages some are accepted.
        candidates = [message[:cut] for cut in range(len(message))]
        candidates.append(message[:-1] + bytes([message[-1] ^ 0x80]))
        for candidate in candidates:
            try:
                fresh = _clone_receiver(name, index, candidate)
            except NoiseError:
                fresh = None
            if fresh is None:
                with pytest.raises(NoiseError):
                    receiver.read_message(candidate)
                rejected += 1
                assert receiver.message_index == index
                assert receiver.handshake_hash == hash_before
        assert receiver.read_message(message) == b"hello"
    assert rejected > 0
    assert initiator.handshake_hash == responder.handshake_hash
    send, _ = initiator.split()
    receive, _ = responder.split()
    assert receive.decrypt_with_ad(b"", send.encrypt_with_ad(b"", b"x")) == b"x"


def _clone_receiver(name: str, index: int, candidate: bytes) -> HandshakeState:
    """Replay the same handshake up to message `index` and feed it `candidate`."""
    initiator, responder = _parties(name)
    for earlier in range(index):
        sender, receiver = _sender_receiver(earlier, initiator, responder)
        receiver.read_message(sender.write_message(b"hello"))
    sender, receiver = _sender_receiver(index, initiator, responder)
    sender.write_message(b"hello")
    receiver.read_message(candidate)
    return receiver


def test_truncated_keyed_messages_are_rejected() -> None:
    initiator, responder = _parties("Noise_IK_25519_AESGCM_SHA256")
    first = initiator.write_message(b"")
    for cut in range(len(first)):
        with pytest.raises(NoiseError):
            responder.read_message(first[:cut])
    responder.read_message(first)
    second = responder.write_message(b"")
    for cut in range(len(second)):
        with pytest.raises(NoiseError):
            initiator.read_message(second[:cut])
    initiator.read_message(second)
    assert initiator.complete


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8])
def test_low_order_ephemeral_is_rejected(point: bytes) -> None:
    # IK: the responder's "es" DH runs while reading message 1.
    initiator, responder = _parties("Noise_IK_25519_AESGCM_SHA256")
    message = initiator.write_message(b"")
    with pytest.raises(NoiseError, match="low-order"):
        responder.read_message(point + message[32:])
    assert responder.message_index == 0
    # NN: message 1 has no DH; the "ee" DH fails when the responder answers.
    initiator, responder = _parties("Noise_NN_25519_AESGCM_SHA256")
    initiator.write_message(b"")
    responder.read_message(point)
    with pytest.raises(NoiseError, match="low-order"):
        responder.write_message(b"")
    # XX: the initiator's "ee" DH runs while reading message 2.
    initiator, responder = _parties("Noise_XX_25519_AESGCM_SHA256")
    responder.read_message(initiator.write_message(b""))
    reply = responder.write_message(b"")
    with pytest.raises(NoiseError, match="low-order"):
        initiator.read_message(point + reply[32:])


def test_low_order_pre_message_static_is_rejected() -> None:
    initiator = HandshakeState(
        "Noise_NK_25519_AESGCM_SHA256", initiator=True, rs=bytes(32), rng=_rng(3)
    )
    with pytest.raises(NoiseError, match="low-order"):
        initiator.write_message(b"")


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(ALL_PROTOCOLS),
    garbage=st.binary(max_size=200),
    as_initiator=st.booleans(),
)
def test_any_bytes_into_read_message_raise_only_noise_error(
    name: str, garbage: bytes, as_initiator: bool
) -> None:
    initiator, responder = _parties(name)
    receiver = responder
    if as_initiator and not initiator.protocol.pattern.is_one_way:
        initiator.write_message(b"")
        receiver = initiator
    try:
        payload = receiver.read_message(garbage)
    except NoiseError:
        assert receiver.message_index in (0, 1)
    else:
        assert isinstance(payload, bytes)


def test_wrong_turn_and_after_completion() -> None:
    initiator, responder = _parties("Noise_NN_25519_AESGCM_SHA256")
    with pytest.raises(NoiseError, match="peer's to send"):
        responder.write_message(b"")
    with pytest.raises(NoiseError, match="ours to send"):
        initiator.read_message(bytes(48))
    with pytest.raises(NoiseError, match="not complete"):
        initiator.split()
    responder.read_message(initiator.write_message(b""))
    with pytest.raises(NoiseError, match="peer's to send"):
        initiator.write_message(b"")
    initiator.read_message(responder.write_message(b""))
    for party in (initiator, responder):
        assert party.complete
        with pytest.raises(NoiseError, match="already complete"):
            party.write_message(b"")
        with pytest.raises(NoiseError, match="already complete"):
            party.read_message(bytes(48))
    assert initiator.split() is initiator.split()


def test_mismatched_prologue_or_psk_fails() -> None:
    initiator, responder = _parties("Noise_NN_25519_AESGCM_SHA256", responder_prologue=b"other")
    responder.read_message(initiator.write_message(b""))
    with pytest.raises(NoiseError):
        initiator.read_message(responder.write_message(b""))
    initiator, responder = _parties("Noise_NNpsk0_25519_AESGCM_SHA256", responder_psks=[bytes(32)])
    with pytest.raises(NoiseError):
        responder.read_message(initiator.write_message(b""))


def test_message_size_limit() -> None:
    initiator, responder = _parties("Noise_NN_25519_AESGCM_SHA256")
    largest = initiator.write_message(bytes(MAX_MESSAGE_LEN - 32))
    assert len(largest) == MAX_MESSAGE_LEN
    assert responder.read_message(largest) == bytes(MAX_MESSAGE_LEN - 32)
    with pytest.raises(NoiseError, match="65535"):
        responder.write_message(bytes(MAX_MESSAGE_LEN - 32 - 16 + 1))
    assert responder.message_index == 1
    initiator, responder = _parties("Noise_NN_25519_AESGCM_SHA256")
    with pytest.raises(NoiseError, match="65535"):
        initiator.write_message(bytes(MAX_MESSAGE_LEN - 31))
    assert initiator.message_index == 0
    with pytest.raises(NoiseError, match="65535"):
        responder.read_message(bytes(MAX_MESSAGE_LEN + 1))
    responder.read_message(initiator.write_message(b"ok"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"protocol": "Noise_XX_25519_AESGCM_SHA256", "initiator": True, "rng": _rng(1)}, " s"),
        ({"protocol": "Noise_NK_25519_AESGCM_SHA256", "initiator": True, "rng": _rng(1)}, "rs"),
        (
            {
                "protocol": "Noise_XX_25519_AESGCM_SHA256",
                "initiator": True,
                "s": bytes(32),
                "rs": RESPONDER_PUBLIC,
                "rng": _rng(1),
            },
            "transmit",
        ),
        ({"protocol": "Noise_NN_25519_AESGCM_SHA256", "initiator": True}, "rng"),
        (
            {"protocol": "Noise_NNpsk0_25519_AESGCM_SHA256", "initiator": True, "rng": _rng(1)},
            "1 psks",
        ),
        (
            {
                "protocol": "Noise_NNpsk0_25519_AESGCM_SHA256",
                "initiator": True,
                "rng": _rng(1),
                "psks": [bytes(31)],
            },
            "32 bytes",
        ),
        (
            {
                "protocol": "Noise_XX_25519_AESGCM_SHA256",
                "initiator": True,
                "s": bytes(31),
                "rng": _rng(1),
            },
            "32-byte",
        ),
        (
            {
                "protocol": "Noise_NK_25519_AESGCM_SHA256",
                "initiator": True,
                "rs": bytes(33),
                "rng": _rng(1),
            },
            "32-byte",
        ),
        ({"protocol": "Noise_NN_25519_ChaChaPoly_SHA256", "initiator": True}, "ChaChaPoly"),
    ],
)
def test_construction_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(NoiseError, match=match):
        HandshakeState(**kwargs)  # type: ignore[arg-type]


def test_rng_that_returns_short_output() -> None:
    initiator = HandshakeState(
        "Noise_NN_25519_AESGCM_SHA256", initiator=True, rng=lambda n: bytes(n - 1)
    )
    with pytest.raises(NoiseError, match="rng"):
        initiator.write_message(b"")


EARLY_EPHEMERAL = X25519PrivateKey.from_private_bytes(bytes(range(50, 82)))
EARLY_PUBLIC = EARLY_EPHEMERAL.public_key().public_bytes_raw()


def _pre_message_ephemeral_handshake(
    protocol: NoiseProtocol, responder_re: bytes
) -> tuple[HandshakeState, HandshakeState]:
    psks = _psks(protocol.pattern.psk_count)
    initiator = HandshakeState(
        protocol,
        initiator=True,
        s=INITIATOR_STATIC,
        e=EARLY_EPHEMERAL,
        rs=RESPONDER_PUBLIC,
        psks=psks,
    )
    responder = HandshakeState(
        protocol,
        initiator=False,
        s=RESPONDER_STATIC_BYTES,
        re=responder_re,
        psks=psks,
        rng=_rng(5),
    )
    assert responder.read_message(initiator.write_message(b"early data")) == b"early data"
    assert initiator.read_message(responder.write_message(b"reply")) == b"reply"
    return initiator, responder


@pytest.mark.parametrize(
    ("first_message", "psk_count"),
    [(("es", "s", "ss"), 0), (("psk", "es", "s", "ss"), 1)],
)
def test_pre_message_ephemeral_is_bound_into_the_handshake(
    first_message: tuple[str, ...], psk_count: int
) -> None:
    # Section 7.2 allows "e" in pre-messages (compound protocols). Here the initiator's
    # ephemeral is known to the responder beforehand; with a psk the pre-message "e"
    # also goes through MixKey (section 9.2).
    pattern = HandshakePattern(
        "custom", ("e",), ("s",), (first_message, ("e", "ee", "se")), psk_count
    )
    protocol = NoiseProtocol("Noise_custom_25519_AESGCM_SHA256", pattern)
    initiator, responder = _pre_message_ephemeral_handshake(protocol, EARLY_PUBLIC)
    assert initiator.handshake_hash == responder.handshake_hash
    assert responder.remote_static == INITIATOR_PUBLIC
    assert responder.remote_ephemeral == EARLY_PUBLIC
    assert initiator.local_ephemeral_public == EARLY_PUBLIC
    assert initiator.remote_ephemeral == responder.local_ephemeral_public
    with pytest.raises(NoiseError):
        _pre_message_ephemeral_handshake(protocol, INITIATOR_PUBLIC)
    with pytest.raises(NoiseError, match="pre-shared ephemeral"):
        HandshakeState(
            protocol,
            initiator=True,
            s=INITIATOR_STATIC,
            rs=RESPONDER_PUBLIC,
            psks=_psks(psk_count),
        )
