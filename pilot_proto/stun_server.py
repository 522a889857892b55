"""Answering STUN Binding requests (RFC 8489 section 6.3, RFC 5780 section 6), sans-IO.

What the rendezvous runs on its UDP socket(s) so that stock STUN clients and our own
`stun_client` learn their reflexive address, and through OTHER-ADDRESS the server's second
address (`--listen2`). Stateless: one datagram in, at most one datagram out.

Amplification (DESIGN section 6): no answer is larger than 3x the request; optional
attributes are dropped first (RESPONSE-ORIGIN, then OTHER-ADDRESS), and an error response
shortens its reason phrase and attribute list before the server falls silent.
"""

from __future__ import annotations

from .stun import (
    StunAttr,
    StunClass,
    StunDecodeError,
    StunMessage,
    StunMethod,
    build_binding_response,
    build_error_response,
    check_fingerprint,
    decode_message,
    has_attribute,
    peek_header,
)
from .transmit import Addr, Transmit

__all__ = [
    "AMPLIFICATION_FACTOR",
    "answer_binding",
    "answer_binding_pair",
    "answer_binding_request",
]

#: DESIGN section 6: an unauthenticated request never gets more than this factor back.
AMPLIFICATION_FACTOR = 3

# Comprehension-required attributes (RFC 8489 section 14) we accept in a request and
# ignore: credentials (Binding is answered to anyone) and attributes that only have a
# meaning in responses. CHANGE-REQUEST and RESPONSE-PORT are decided case by case.
_IGNORED_REQUIRED = frozenset(
    {
        StunAttr.MAPPED_ADDRESS,
        StunAttr.USERNAME,
        StunAttr.MESSAGE_INTEGRITY,
        StunAttr.ERROR_CODE,
        StunAttr.UNKNOWN_ATTRIBUTES,
        StunAttr.REALM,
        StunAttr.NONCE,
        StunAttr.MESSAGE_INTEGRITY_SHA256,
        StunAttr.XOR_MAPPED_ADDRESS,
    }
)
_NO_CHANGE = bytes(4)
_CHANGE_BOTH = bytes((0, 0, 0, 0x06))


def _unknown_required(
    request: StunMessage, honour_response_port: bool, can_change: bool = False
) -> tuple[int, ...]:
    """Comprehension-required attribute types (below 0x8000) this server does not act on."""
    unknown: list[int] = []
    for attr_type, value in request.attributes:
        if attr_type >= 0x8000 or attr_type in _IGNORED_REQUIRED or attr_type in unknown:
            continue
        if attr_type == StunAttr.CHANGE_REQUEST and value == _NO_CHANGE:
            continue
        if attr_type == StunAttr.CHANGE_REQUEST and can_change and value == _CHANGE_BOTH:
            continue
        if attr_type == StunAttr.RESPONSE_PORT and honour_response_port:
            continue
        # RFC 5780 section 7.2: a server that cannot answer from another address treats a
        # CHANGE-REQUEST asking for one as unknown; so are PADDING and anything else.
        unknown.append(attr_type)
    return tuple(unknown)


def _answer(
    data: bytes,
    source: Addr,
    other_address: Addr | None,
    response_origin: Addr | None,
    honour_response_port: bool,
    can_change: bool = False,
) -> Transmit | None:
    data = bytes(data)
    header = peek_header(data)
    if header is None:
        return None
    method, message_class, tid = header
    if message_class != StunClass.REQUEST:
        return None
    has_fingerprint = has_attribute(data, StunAttr.FINGERPRINT)
    if has_fingerprint and not check_fingerprint(data):
        return None  # RFC 8489 section 7.3: not STUN after all; discard silently
    budget = AMPLIFICATION_FACTOR * len(data)
    try:
        request: StunMessage | None = decode_message(data)
    except StunDecodeError:
        request = None
    if request is None or method != StunMethod.BINDING:
        candidates = [
            build_error_response(tid, 400, reason, method=method, fingerprint=has_fingerprint)
            for reason in (None, "")
        ]
        return _first_fitting(candidates, budget, source)
    destination = source
    port = request.response_port
    if honour_response_port and port is not None:
        if port == 0:
            return _first_fitting(
                [build_error_response(tid, 400, fingerprint=has_fingerprint)], budget, source
            )
        # RFC 5780 section 7.5: the answer goes to that port of the request's address.
        destination = (source[0], port)
    unknown = _unknown_required(request, honour_response_port, can_change)
    if unknown:
        candidates = [
            build_error_response(
                tid, 420, reason, unknown_attributes=unknown[:count], fingerprint=has_fingerprint
            )
            for reason, count in ((None, len(unknown)), ("", len(unknown)), ("", 1), ("", 0))
        ]
        return _first_fitting(candidates, budget, destination)
    candidates = [
        build_binding_response(
            tid, source, response_origin=origin, other_address=other, fingerprint=has_fingerprint
        )
        for origin, other in (
            (response_origin, other_address),
            (None, other_address),
            (None, None),
        )
    ]
    return _first_fitting(candidates, budget, destination)


def _first_fitting(candidates: list[bytes], budget: int, destination: Addr) -> Transmit | None:
    for candidate in candidates:
        if len(candidate) <= budget:
            return Transmit(candidate, destination)
    return None


def answer_binding(
    data: bytes,
    source: Addr,
    *,
    other_address: Addr | None = None,
    response_origin: Addr | None = None,
) -> Transmit | None:
    """What a STUN server sends for `data` received from `source`: a `Transmit`, or None.

    - a Binding request: success with XOR-MAPPED-ADDRESS (plus RESPONSE-ORIGIN and
      OTHER-ADDRESS when given), FINGERPRINT when the request carried one;
    - RESPONSE-PORT (RFC 5780 section 7.5) is honoured: the answer, error or not, goes to
      that port of the source address, which is where RFC 5780 clients such as coturn's
      `turnutils_stunclient` wait for it (no new target: a spoofer picks any source);
    - unknown comprehension-required attributes, including a CHANGE-REQUEST that asks
      for a change (one socket cannot answer from another address) and PADDING: 420 with
      UNKNOWN-ATTRIBUTES;
    - a request of another method, or with malformed attributes: 400;
    - anything else (not STUN, not a request, a wrong FINGERPRINT): None, send nothing.

    MESSAGE-INTEGRITY and USERNAME in a request are ignored: Binding needs no credentials.
    Never raises on remote input.
    """
    return _answer(data, source, other_address, response_origin, honour_response_port=True)


def answer_binding_pair(
    data: bytes, source: Addr, local: Addr, other: Addr | None
) -> tuple[Transmit, bool] | None:
    """A server with two addresses (the rendezvous' `--listen` and `--listen2`): the
    answer to `data` that arrived at `local` from `source`, and whether it must leave
    from `other` (a CHANGE-REQUEST for both IP and port, RFC 5780 section 6.1: the
    answer's RESPONSE-ORIGIN and OTHER-ADDRESS then swap). A change of the port alone
    needs a third address: 420, as `answer_binding`. Never raises on remote input."""
    header = peek_header(data)
    change = False
    if header is not None and other is not None and header[1] == StunClass.REQUEST:
        try:
            request = decode_message(bytes(data))
        except StunDecodeError:
            request = None
        wanted = request.change_request if request is not None else None
        change = wanted is not None and wanted.change_ip and wanted.change_port
    if change:
        assert other is not None
        answer = _answer(data, source, local, other, True, can_change=True)
        return None if answer is None else (answer, True)
    answer = _answer(data, source, other, local, True)
    return None if answer is None else (answer, False)


def answer_binding_request(
    data: bytes,
    source: Addr,
    *,
    other_address: Addr | None = None,
    response_origin: Addr | None = None,
) -> bytes | None:
    """Like `answer_binding`, for callers that always answer `source`: the bytes to send
    there, or None. RESPONSE-PORT, which this cannot honour, gets 420 like any unknown
    comprehension-required attribute."""
    answer = _answer(data, source, other_address, response_origin, honour_response_port=False)
    return None if answer is None else answer.data
