"""Pattern derivation checked against patterns the Noise specification spells out."""

from __future__ import annotations

from collections import Counter

import pytest

from pilot_proto.errors import NoiseError
from pilot_proto.noise import (
    HandshakePattern,
    base_pattern_names,
    check_pattern_validity,
    derive_pattern,
    parse_protocol_name,
)

# Written out in Noise revision 34, sections 7.4-7.6 and 9.4.
SPEC_PATTERNS = {
    "N": "<- s\n...\n-> e, es",
    "K": "-> s\n<- s\n...\n-> e, es, ss",
    "X": "<- s\n...\n-> e, es, s, ss",
    "NN": "-> e\n<- e, ee",
    "KN": "-> s\n...\n-> e\n<- e, ee, se",
    "NK": "<- s\n...\n-> e, es\n<- e, ee",
    "KK": "-> s\n<- s\n...\n-> e, es, ss\n<- e, ee, se",
    "NX": "-> e\n<- e, ee, s, es",
    "KX": "-> s\n...\n-> e\n<- e, ee, se, s, es",
    "XN": "-> e\n<- e, ee\n-> s, se",
    "IN": "-> e, s\n<- e, ee, se",
    "XK": "<- s\n...\n-> e, es\n<- e, ee\n-> s, se",
    "IK": "<- s\n...\n-> e, es, s, ss\n<- e, ee, se",
    "XX": "-> e\n<- e, ee, s, es\n-> s, se",
    "IX": "-> e, s\n<- e, ee, se, s, es",
    "NK1": "<- s\n...\n-> e\n<- e, ee, es",
    "NX1": "-> e\n<- e, ee, s\n-> es",
    "X1N": "-> e\n<- e, ee\n-> s\n<- se",
    "X1K": "<- s\n...\n-> e, es\n<- e, ee\n-> s\n<- se",
    "XK1": "<- s\n...\n-> e\n<- e, ee, es\n-> s, se",
    "X1K1": "<- s\n...\n-> e\n<- e, ee, es\n-> s\n<- se",
    "X1X": "-> e\n<- e, ee, s, es\n-> s\n<- se",
    "XX1": "-> e\n<- e, ee, s\n-> es, s, se",
    "X1X1": "-> e\n<- e, ee, s\n-> es, s\n<- se",
    "K1N": "-> s\n...\n-> e\n<- e, ee\n-> se",
    "K1K": "-> s\n<- s\n...\n-> e, es\n<- e, ee\n-> se",
    "KK1": "-> s\n<- s\n...\n-> e\n<- e, ee, se, es",
    "K1K1": "-> s\n<- s\n...\n-> e\n<- e, ee, es\n-> se",
    "K1X": "-> s\n...\n-> e\n<- e, ee, s, es\n-> se",
    "KX1": "-> s\n...\n-> e\n<- e, ee, se, s\n-> es",
    "K1X1": "-> s\n...\n-> e\n<- e, ee, s\n-> se, es",
    "I1N": "-> e, s\n<- e, ee\n-> se",
    "I1K": "<- s\n...\n-> e, es, s\n<- e, ee\n-> se",
    "IK1": "<- s\n...\n-> e, s\n<- e, ee, se, es",
    "I1K1": "<- s\n...\n-> e, s\n<- e, ee, es\n-> se",
    "I1X": "-> e, s\n<- e, ee, s, es\n-> se",
    "IX1": "-> e, s\n<- e, ee, se, s\n-> es",
    "I1X1": "-> e, s\n<- e, ee, s\n-> se, es",
    # Section 9.4 examples.
    "Npsk0": "<- s\n...\n-> psk, e, es",
    "Kpsk0": "-> s\n<- s\n...\n-> psk, e, es, ss",
    "Xpsk1": "<- s\n...\n-> e, es, s, ss, psk",
    "NNpsk0": "-> psk, e\n<- e, ee",
    "NNpsk2": "-> e\n<- e, ee, psk",
    "NKpsk0": "<- s\n...\n-> psk, e, es\n<- e, ee",
    "XXpsk3": "-> e\n<- e, ee, s, es\n-> s, se, psk",
    "IKpsk2": "<- s\n...\n-> e, es, s, ss\n<- e, ee, se, psk",
    "XXpsk0+psk3": "-> psk, e\n<- e, ee, s, es\n-> s, se, psk",
}


@pytest.mark.parametrize("name", sorted(SPEC_PATTERNS))
def test_derived_pattern_matches_specification(name: str) -> None:
    assert derive_pattern(name).notation() == SPEC_PATTERNS[name]


def test_fields_of_a_derived_pattern() -> None:
    pattern = parse_protocol_name("Noise_XXpsk0+psk3_25519_AESGCM_SHA256").pattern
    assert pattern.name == "XXpsk0+psk3"
    assert pattern.initiator_pre_messages == ()
    assert pattern.responder_pre_messages == ()
    assert pattern.messages == (("psk", "e"), ("e", "ee", "s", "es"), ("s", "se", "psk"))
    assert pattern.psk_count == 2
    ik = derive_pattern("IK")
    assert ik.responder_pre_messages == ("s",)
    assert ik.psk_count == 0
    assert not ik.is_one_way
    assert derive_pattern("N").is_one_way


def test_naming_rules_give_38_distinct_valid_patterns() -> None:
    names = base_pattern_names()
    assert len(names) == len(set(names)) == 3 + 12 + 23
    shapes = set()
    for name in names:
        pattern = derive_pattern(name)
        check_pattern_validity(pattern)
        shapes.add(
            (pattern.initiator_pre_messages, pattern.responder_pre_messages, pattern.messages)
        )
    assert len(shapes) == len(names)


@pytest.mark.parametrize("name", [n for n in base_pattern_names() if "1" in n])
def test_deferral_moves_authentication_and_drops_ss(name: str) -> None:
    deferred = derive_pattern(name)
    fundamental = derive_pattern(name.replace("1", ""))
    tokens = Counter(t for message in deferred.messages for t in message)
    expected = Counter(t for message in fundamental.messages for t in message)
    expected.pop("ss", None)
    assert tokens == expected
    assert deferred.initiator_pre_messages == fundamental.initiator_pre_messages
    assert deferred.responder_pre_messages == fundamental.responder_pre_messages

    def message_with(pattern: HandshakePattern, token: str) -> int:
        return next(i for i, m in enumerate(pattern.messages) if token in m)

    # Section 7.6: the deferred party's authentication DH comes exactly one message later.
    if name[1] == "1":
        assert message_with(deferred, "se") == message_with(fundamental, "se") + 1
    if name.endswith("1"):
        assert message_with(deferred, "es") == message_with(fundamental, "es") + 1


@pytest.mark.parametrize("name", base_pattern_names())
def test_every_psk_position_is_valid(name: str) -> None:
    base = derive_pattern(name)
    for position in range(len(base.messages) + 1):
        pattern = derive_pattern(f"{name}psk{position}")
        assert pattern.psk_count == 1
        if position == 0:
            assert pattern.messages[0] == ("psk", *base.messages[0])
        else:
            assert pattern.messages[position - 1] == (*base.messages[position - 1], "psk")
    every = "+".join(f"psk{p}" for p in range(len(base.messages) + 1))
    assert derive_pattern(name + every).psk_count == len(base.messages) + 1


@pytest.mark.parametrize(
    "name",
    [
        "Noise_XX_448_AESGCM_SHA256",
        "Noise_XX_25519_ChaChaPoly_SHA256",
        "Noise_XX_25519_AESGCM_BLAKE2s",
        "Noise_XX_25519_AESGCM",
        "Noise_XX_25519_AESGCM_SHA256_extra",
        "Nois_XX_25519_AESGCM_SHA256",
        "Noise_XY_25519_AESGCM_SHA256",
        "Noise_N1N_25519_AESGCM_SHA256",
        "Noise_NN1_25519_AESGCM_SHA256",
        "Noise_X1_25519_AESGCM_SHA256",
        "Noise_XXX_25519_AESGCM_SHA256",
        "Noise_xx_25519_AESGCM_SHA256",
        "Noise__25519_AESGCM_SHA256",
        "Noise_XXfallback_25519_AESGCM_SHA256",
        "Noise_NNhfs_25519_AESGCM_SHA256",
        "Noise_XXpsk4_25519_AESGCM_SHA256",
        "Noise_Npsk2_25519_AESGCM_SHA256",
        "Noise_XXpsk01_25519_AESGCM_SHA256",
        "Noise_XXpsk1+psk1_25519_AESGCM_SHA256",
        "Noise_XXpsk1+_25519_AESGCM_SHA256",
        "Noise_XXpsk_25519_AESGCM_SHA256",
        "Noise_XX\u00e9_25519_AESGCM_SHA256",
        "Noise_" + "X" * 300 + "_25519_AESGCM_SHA256",
    ],
)
def test_unsupported_names_raise_noise_error(name: str) -> None:
    with pytest.raises(NoiseError):
        parse_protocol_name(name)


def _pattern(
    messages: tuple[tuple[str, ...], ...],
    initiator_pre: tuple[str, ...] = (),
    responder_pre: tuple[str, ...] = (),
    psk_count: int = 0,
) -> HandshakePattern:
    return HandshakePattern("custom", initiator_pre, responder_pre, messages, psk_count)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"messages": ()}, "no messages"),
        ({"messages": (("e", "x"),)}, "unknown token"),
        ({"messages": (("e",), ("e", "ee"), ("e",))}, "sent twice"),
        ({"messages": (("e", "es"),)}, "before both of its keys"),
        ({"messages": (("e",), ("e", "ee", "ee"))}, "performed twice"),
        ({"messages": (("e",), ("e", "se")), "initiator_pre": ("s",)}, "without 'ee'"),
        (
            {"messages": (("e", "ss"),), "initiator_pre": ("s",), "responder_pre": ("s",)},
            "without 'es'",
        ),
        (
            {"messages": (("e", "es", "psk"), ()), "responder_pre": ("s",), "psk_count": 1},
            "after a psk",
        ),
        ({"messages": (("e", "psk"), ("e", "ee")), "psk_count": 2}, "psk_count"),
        ({"messages": (("e",), ("e", "ee")), "initiator_pre": ("s", "e")}, "pre-message"),
        ({"messages": (("e",), ("e", "ee")), "responder_pre": ("psk",)}, "pre-message"),
    ],
)
def test_validity_rules_reject_bad_patterns(kwargs: dict[str, object], reason: str) -> None:
    with pytest.raises(NoiseError, match=reason):
        _pattern(**kwargs)  # type: ignore[arg-type]
