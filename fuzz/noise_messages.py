"""Harness: `HandshakeState.read_message` of the general Noise implementation (noise/).

The first byte picks a pattern and a position: the input is read as the first message of
a responder, or as the second message of an initiator that wrote the first. Reading may
raise only `NoiseError`, and a failed read leaves the state as it was: a genuine message
still reads afterwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pilot_proto.errors import NoiseError
from pilot_proto.noise import HandshakeState

if TYPE_CHECKING:
    from .traffic import Traffic


_S_INIT = bytes(range(1, 33))
_S_RESP = bytes(range(2, 34))
_PSK = b"\x42" * 32


def _rng(n: int) -> bytes:
    return b"\x33" * n


def _public(private: bytes) -> bytes:
    state = HandshakeState("Noise_N_25519_AESGCM_SHA256", initiator=False, s=private)
    return state.local_static_public or b""


_RS = _public(_S_RESP)
_IS = _public(_S_INIT)

# (protocol, initiator kwargs, responder kwargs)
_CASES: list[tuple[str, dict[str, object], dict[str, object]]] = [
    ("Noise_IK_25519_AESGCM_SHA256", {"s": _S_INIT, "rs": _RS}, {"s": _S_RESP}),
    ("Noise_XX_25519_AESGCM_SHA256", {"s": _S_INIT}, {"s": _S_RESP}),
    ("Noise_NN_25519_AESGCM_SHA256", {}, {}),
    ("Noise_N_25519_AESGCM_SHA256", {"rs": _RS}, {"s": _S_RESP}),
    ("Noise_X_25519_AESGCM_SHA256", {"s": _S_INIT, "rs": _RS}, {"s": _S_RESP}),
    ("Noise_KK_25519_AESGCM_SHA256", {"s": _S_INIT, "rs": _RS}, {"s": _S_RESP, "rs": _IS}),
    ("Noise_XXpsk3_25519_AESGCM_SHA256", {"s": _S_INIT, "psks": [_PSK]},
     {"s": _S_RESP, "psks": [_PSK]}),
    ("Noise_IXpsk2_25519_AESGCM_SHA256", {"s": _S_INIT, "psks": [_PSK]},
     {"s": _S_RESP, "psks": [_PSK]}),
]


def _pair(case: int) -> tuple[HandshakeState, HandshakeState]:
    name, init, resp = _CASES[case]
    return (
        HandshakeState(name, initiator=True, rng=_rng, **init),  # type: ignore[arg-type]
        HandshakeState(name, initiator=False, rng=_rng, **resp),  # type: ignore[arg-type]
    )


def test_one_input(data: bytes) -> None:
    if not data:
        return
    case, second = divmod(data[0] % (2 * len(_CASES)), 2)
    body = data[1:]
    initiator, responder = _pair(case)
    message1 = initiator.write_message(b"one")
    if not second:
        try:
            responder.read_message(body)
        except NoiseError:
            assert responder.read_message(message1) == b"one", "a failed read changed state"
        return
    responder.read_message(message1)
    if responder.complete:
        return  # one-way pattern: there is no second message
    message2 = responder.write_message(b"two")
    try:
        initiator.read_message(body)
    except NoiseError:
        assert initiator.read_message(message2) == b"two", "a failed read changed state"


def seeds(traffic: Traffic) -> list[bytes]:
    out = []
    for case in range(len(_CASES)):
        initiator, responder = _pair(case)
        message1 = initiator.write_message(b"one")
        out.append(bytes((2 * case,)) + message1)
        responder.read_message(message1)
        if not responder.complete:
            out.append(bytes((2 * case + 1,)) + responder.write_message(b"two"))
    return out
