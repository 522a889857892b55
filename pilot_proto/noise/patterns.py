"""Handshake patterns, derived from their names rather than looked up in a list.

A name like `XK1psk2` is read the way Noise revision 34 defines it:

- Section 7.4 (one-way) and 7.5 (interactive): the first letter says what happens to
  the initiator's static key, the second to the responder's. N: there is none.
  K: known to the peer beforehand (a pre-message). X: transmitted, once keys exist to
  hide it. I: transmitted immediately, in the first message.
- Section 7.6 (deferred): a "1" after a letter moves that party's authentication DH
  ("se" for the initiator, "es" for the responder) to the next message, and drops the
  0-RTT "ss".
- Section 9.4: `psk0` puts a "psk" token at the start of the first message, `pskN` at
  the end of message N; several combine with "+".

Every derived pattern is then checked against the validity rules of sections 7.3
and 9.3 (`check_pattern_validity`), so a derivation mistake cannot go unnoticed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import NoiseError

INITIATOR = "i"
RESPONDER = "r"

KEY_TOKENS = ("e", "s")
DH_TOKENS = ("ee", "es", "se", "ss")
PSK_TOKEN = "psk"
MESSAGE_TOKENS = frozenset((*KEY_TOKENS, *DH_TOKENS, PSK_TOKEN))

# Section 7.2: a pre-message is empty, "e", "s" or "e, s".
_VALID_PRE_MESSAGES = ((), ("e",), ("s",), ("e", "s"))

# Within one message, tokens go in this order of preference, each as soon as the keys
# it needs are known to the receiver. This reproduces every pattern spelled out in
# sections 7.4-7.6 (for example IK's "e, es, s, ss", KX's "e, ee, se, s, es",
# XX1's "es, s, se" and K1X1's "se, es").
_TOKEN_PREFERENCE = ("e", "ee", "se", "es", "s", "ss")

_INTERACTIVE_NAME = re.compile(r"([NKXI])(1?)([NKX])(1?)")
_ONE_WAY_NAME = re.compile(r"[NKX]")
_PSK_MODIFIER = re.compile(r"psk(0|[1-9][0-9]*)")


@dataclass(frozen=True, slots=True)
class HandshakePattern:
    """Pre-messages and message patterns, as token tuples in protocol order."""

    name: str
    initiator_pre_messages: tuple[str, ...]
    responder_pre_messages: tuple[str, ...]
    messages: tuple[tuple[str, ...], ...]
    psk_count: int

    def __post_init__(self) -> None:
        check_pattern_validity(self)

    @property
    def is_one_way(self) -> bool:
        # Section 7.4: one-way patterns are a single message from initiator to responder.
        return len(self.messages) == 1

    @staticmethod
    def sender_is_initiator(message_index: int) -> bool:
        """Messages alternate, the initiator sending the first (section 7.1)."""
        return message_index % 2 == 0

    def notation(self) -> str:
        """The pattern in the specification's arrow notation, one line per message."""
        lines = []
        if self.initiator_pre_messages:
            lines.append("-> " + ", ".join(self.initiator_pre_messages))
        if self.responder_pre_messages:
            lines.append("<- " + ", ".join(self.responder_pre_messages))
        if lines:
            lines.append("...")
        for index, tokens in enumerate(self.messages):
            arrow = "->" if self.sender_is_initiator(index) else "<-"
            lines.append(f"{arrow} " + ", ".join(tokens))
        return "\n".join(lines)


def base_pattern_names() -> list[str]:
    """Every base pattern name the naming rules allow: one-way, fundamental, deferred.

    Generated from the grammar above (3 + 12 + 23 names), not from a list of patterns.
    """
    names = ["N", "K", "X"]
    initiator_options = ("N", "K", "K1", "X", "X1", "I", "I1")
    responder_options = ("N", "K", "K1", "X", "X1")
    names += [i + r for i in initiator_options for r in responder_options]
    return names


def derive_pattern(name: str) -> HandshakePattern:
    """The HandshakePattern a pattern name denotes; NoiseError if it denotes none we support."""
    base, modifiers = _split_pattern_name(name)
    initiator_pre, responder_pre, messages = _base_pattern(base)
    messages = _place_psk_tokens(name, messages, modifiers)
    psk_count = sum(tokens.count(PSK_TOKEN) for tokens in messages)
    return HandshakePattern(name, initiator_pre, responder_pre, messages, psk_count)


def _split_pattern_name(name: str) -> tuple[str, list[str]]:
    # Section 8: the pattern name is the base name followed by lower-case modifiers
    # joined with "+".
    cut = next((i for i, char in enumerate(name) if char.islower()), len(name))
    base, rest = name[:cut], name[cut:]
    modifiers = rest.split("+") if rest else []
    if not base:
        raise NoiseError(f"pattern name {name!r} has no base pattern")
    return base, modifiers


def _base_pattern(
    base: str,
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, ...], ...]]:
    if _ONE_WAY_NAME.fullmatch(base):
        # Section 7.4: the responder's static key is always known, the sender's is
        # absent (N), known (K) or transmitted in the one message (X).
        initiator_static_at = {"N": None, "K": 0, "X": 1}[base]
        return _schedule(initiator_static_at, False, 0, False, one_way=True)
    match = _INTERACTIVE_NAME.fullmatch(base)
    if match is None:
        raise NoiseError(f"unknown handshake pattern {base!r}")
    initiator, initiator_deferred, responder, responder_deferred = match.groups()
    if (initiator == "N" and initiator_deferred) or (responder == "N" and responder_deferred):
        raise NoiseError(f"unknown handshake pattern {base!r}: N has no static key to defer")
    # Which message first carries each static key to the peer (0: a pre-message).
    initiator_static_at = {"N": None, "K": 0, "I": 1, "X": 3}[initiator]
    responder_static_at = {"N": None, "K": 0, "X": 2}[responder]
    return _schedule(
        initiator_static_at,
        bool(initiator_deferred),
        responder_static_at,
        bool(responder_deferred),
        one_way=False,
    )


def _schedule(
    initiator_static_at: int | None,
    initiator_deferred: bool,
    responder_static_at: int | None,
    responder_deferred: bool,
    *,
    one_way: bool,
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """Put every token in its message, then order each message."""
    placed: dict[int, list[str]] = {1: ["e"]}
    if not one_way:
        # The responder answers with its ephemeral and the ephemeral-ephemeral DH.
        placed[2] = ["e", "ee"]
    if initiator_static_at:
        placed.setdefault(initiator_static_at, []).append("s")
    if responder_static_at:
        placed.setdefault(responder_static_at, []).append("s")
    if responder_static_at is not None:
        # "es" authenticates the responder: as soon as its static key and the initiator's
        # ephemeral (message 1) are known, or one message later when deferred.
        at = max(1, responder_static_at) + responder_deferred
        placed.setdefault(at, []).append("es")
    if initiator_static_at is not None and not one_way:
        # "se" authenticates the initiator: it needs the responder's ephemeral (message 2).
        at = max(2, initiator_static_at) + initiator_deferred
        placed.setdefault(at, []).append("se")
    if (
        initiator_static_at is not None
        and initiator_static_at <= 1
        and responder_static_at == 0
        and not (initiator_deferred or responder_deferred)
    ):
        # "ss" authenticates the initiator's first-message (0-RTT) payload when both static
        # keys are available then: KK, IK and the one-way K and X (sections 7.4, 7.5).
        placed[1].append("ss")

    initiator_pre = ("s",) if initiator_static_at == 0 else ()
    responder_pre = ("s",) if responder_static_at == 0 else ()
    known = {(INITIATOR, token) for token in initiator_pre}
    known |= {(RESPONDER, token) for token in responder_pre}
    messages = []
    for number in range(1, max(placed) + 1):
        sender = INITIATOR if number % 2 == 1 else RESPONDER
        messages.append(_order_message(placed.get(number, []), sender, known))
    return initiator_pre, responder_pre, tuple(messages)


def _order_message(tokens: list[str], sender: str, known: set[tuple[str, str]]) -> tuple[str, ...]:
    """Order one message's tokens by preference, each once the keys it needs are known."""
    remaining = list(tokens)
    ordered: list[str] = []
    while remaining:
        for token in _TOKEN_PREFERENCE:
            if token in remaining and _keys_known(token, known):
                break
        else:  # pragma: no cover - the schedule above never strands a token
            raise AssertionError(f"cannot order tokens {remaining}")
        remaining.remove(token)
        ordered.append(token)
        if token in KEY_TOKENS:
            known.add((sender, token))
    return tuple(ordered)


def _keys_known(token: str, known: set[tuple[str, str]]) -> bool:
    if token in DH_TOKENS:
        # Section 7.1: in "xy" x is the initiator's key and y the responder's.
        return (INITIATOR, token[0]) in known and (RESPONDER, token[1]) in known
    return True


def _place_psk_tokens(
    name: str, messages: tuple[tuple[str, ...], ...], modifiers: list[str]
) -> tuple[tuple[str, ...], ...]:
    result = [list(tokens) for tokens in messages]
    seen: set[int] = set()
    for modifier in modifiers:
        match = _PSK_MODIFIER.fullmatch(modifier)
        if match is None:
            raise NoiseError(f"unsupported pattern modifier {modifier!r} in {name!r}")
        position = int(match.group(1))
        if position in seen:
            raise NoiseError(f"modifier {modifier!r} appears twice in {name!r}")
        if position > len(messages):
            raise NoiseError(f"{modifier!r} in {name!r}: the pattern has {len(messages)} messages")
        seen.add(position)
        # Section 9.4: psk0 opens the first message, pskN closes message N.
        if position == 0:
            result[0].insert(0, PSK_TOKEN)
        else:
            result[position - 1].append(PSK_TOKEN)
    return tuple(tuple(tokens) for tokens in result)


def check_pattern_validity(pattern: HandshakePattern) -> None:
    """Raise NoiseError unless the pattern obeys sections 7.3 and 9.3."""
    name = pattern.name

    def invalid(reason: str) -> NoiseError:
        return NoiseError(f"invalid handshake pattern {name!r}: {reason}")

    for pre in (pattern.initiator_pre_messages, pattern.responder_pre_messages):
        if tuple(pre) not in _VALID_PRE_MESSAGES:
            raise invalid(f"pre-message {pre!r} is not one of e, s or e, s")
    if not pattern.messages:
        raise invalid("no messages")
    psk_tokens = sum(tokens.count(PSK_TOKEN) for tokens in pattern.messages)
    if psk_tokens != pattern.psk_count:
        raise invalid(f"psk_count {pattern.psk_count} but {psk_tokens} psk tokens")

    sent = {(INITIATOR, token) for token in pattern.initiator_pre_messages}
    sent |= {(RESPONDER, token) for token in pattern.responder_pre_messages}
    performed: set[str] = set()
    psk_seen = False

    def check_may_send_encrypted(sender: str) -> None:
        # Section 9.3: nothing encrypted after a psk until the sender has sent "e".
        if psk_seen and (sender, "e") not in sent:
            raise invalid("encrypted data after a psk before the sender's ephemeral")

    def check_may_send_payload(sender: str) -> None:
        # Section 7.3, third rule: a payload needs the ephemeral DH that pairs with the
        # static one, or it would be encrypted under a key that lacks forward secrecy.
        if sender == INITIATOR:
            pairs = (("se", "ee"), ("ss", "es"))
        else:
            pairs = (("es", "ee"), ("ss", "se"))
        for done, needed in pairs:
            if done in performed and needed not in performed:
                raise invalid(f"payload sent after {done!r} without {needed!r}")

    for index, tokens in enumerate(pattern.messages):
        sender = INITIATOR if pattern.sender_is_initiator(index) else RESPONDER
        for token in tokens:
            if token not in MESSAGE_TOKENS:
                raise invalid(f"unknown token {token!r}")
            if token in KEY_TOKENS:
                # Section 7.3, second rule: each key is sent at most once.
                if (sender, token) in sent:
                    raise invalid(f"{token!r} sent twice by the same party")
                if token == "s":
                    check_may_send_encrypted(sender)
                sent.add((sender, token))
            elif token in DH_TOKENS:
                # Section 7.3, first rule: only DH with keys both sides have.
                if not _keys_known(token, sent):
                    raise invalid(f"{token!r} before both of its keys are known")
                if token in performed:
                    raise invalid(f"{token!r} performed twice")
                performed.add(token)
            else:
                psk_seen = True
        check_may_send_encrypted(sender)
        check_may_send_payload(sender)
    # After the handshake both parties (only the initiator, for one-way) send transport data.
    check_may_send_payload(INITIATOR)
    if not pattern.is_one_way:
        check_may_send_payload(RESPONDER)
