"""Runs test vectors in the common JSON format (cacophony, snow): {"vectors": [...]}.

Each vector names a protocol, both parties' keys, prologues and psks (hex), and a list
of messages: the handshake first, then transport messages. Every ciphertext, every
decrypted payload and the handshake hash (when given) must match; a vector marked
`"fail": true` passes only if something fails.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import NoiseError
from .cipher_state import CipherState
from .handshake_state import HandshakeState
from .protocol import parse_protocol_name

Outcome = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True, slots=True)
class VectorResult:
    source: str
    index: int
    protocol_name: str
    outcome: Outcome
    reason: str = ""

    def describe(self) -> str:
        where = f"{self.source}#{self.index}"
        return f"{self.outcome.upper()} {where} {self.protocol_name}: {self.reason}"


class _Mismatch(Exception):
    """The implementation ran but produced something other than the vector says."""


def run_vector(vector: Mapping[str, Any], *, source: str = "", index: int = 0) -> VectorResult:
    """Run one vector; never raises."""
    name = str(vector.get("protocol_name", "?"))
    try:
        protocol = parse_protocol_name(name)
    except NoiseError as exc:
        return VectorResult(source, index, name, "skipped", str(exc))
    expect_failure = bool(vector.get("fail", False))
    try:
        _run(protocol.name, vector)
    except (NoiseError, _Mismatch) as exc:
        if expect_failure:
            return VectorResult(source, index, name, "passed")
        return VectorResult(source, index, name, "failed", str(exc))
    except (KeyError, ValueError, TypeError) as exc:
        return VectorResult(source, index, name, "failed", f"malformed vector: {exc!r}")
    if expect_failure:
        return VectorResult(source, index, name, "failed", "expected a failure, all succeeded")
    return VectorResult(source, index, name, "passed")


def run_vector_file(path: str | Path) -> list[VectorResult]:
    """Run every vector in one JSON file."""
    source = str(path)
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        vectors = document["vectors"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [VectorResult(source, 0, "-", "failed", f"cannot read vector file: {exc}")]
    return [run_vector(vector, source=source, index=i) for i, vector in enumerate(vectors)]


def summary_line(results: Iterable[VectorResult]) -> str:
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for result in results:
        counts[result.outcome] += 1
    return f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"


def _hex(vector: Mapping[str, Any], key: str) -> bytes | None:
    value = vector.get(key)
    return None if value is None else bytes.fromhex(value)


def _party(protocol_name: str, vector: Mapping[str, Any], *, initiator: bool) -> HandshakeState:
    prefix = "init_" if initiator else "resp_"
    return HandshakeState(
        protocol_name,
        initiator=initiator,
        prologue=_hex(vector, prefix + "prologue") or b"",
        s=_hex(vector, prefix + "static"),
        e=_hex(vector, prefix + "ephemeral"),
        rs=_hex(vector, prefix + "remote_static"),
        psks=[bytes.fromhex(psk) for psk in vector.get(prefix + "psks", [])],
    )


def _run(protocol_name: str, vector: Mapping[str, Any]) -> None:
    initiator = _party(protocol_name, vector, initiator=True)
    responder = _party(protocol_name, vector, initiator=False)
    messages = vector["messages"]
    handshake_length = len(initiator.protocol.pattern.messages)
    one_way = initiator.protocol.pattern.is_one_way
    transport: tuple[CipherState, CipherState] | None = None
    responder_transport: tuple[CipherState, CipherState] | None = None

    for number, message in enumerate(messages):
        payload = bytes.fromhex(message["payload"])
        expected = bytes.fromhex(message["ciphertext"])
        if number < handshake_length:
            sender, receiver = (initiator, responder) if number % 2 == 0 else (responder, initiator)
            ciphertext = sender.write_message(payload)
            _check(ciphertext == expected, number, "ciphertext", ciphertext, expected)
            received = receiver.read_message(ciphertext)
            _check(received == payload, number, "payload", received, payload)
            continue
        if transport is None or responder_transport is None:
            if not (initiator.complete and responder.complete):
                raise _Mismatch("handshake did not complete")
            if "handshake_hash" in vector:
                wanted = bytes.fromhex(vector["handshake_hash"])
                for party in (initiator, responder):
                    got = party.handshake_hash
                    _check(got == wanted, number, "handshake hash", got, wanted)
            transport = initiator.split()
            responder_transport = responder.split()
        # Transport messages keep alternating; in one-way patterns all go initiator->responder.
        from_initiator = one_way or number % 2 == 0
        if from_initiator:
            ciphertext = transport[0].encrypt_with_ad(b"", payload)
            decrypt = responder_transport[0]
        else:
            ciphertext = responder_transport[1].encrypt_with_ad(b"", payload)
            decrypt = transport[1]
        _check(ciphertext == expected, number, "ciphertext", ciphertext, expected)
        received = decrypt.decrypt_with_ad(b"", ciphertext)
        _check(received == payload, number, "payload", received, payload)

    if transport is None and "handshake_hash" in vector:
        wanted = bytes.fromhex(vector["handshake_hash"])
        got = initiator.handshake_hash
        _check(got == wanted, len(messages), "handshake hash", got, wanted)


def _check(ok: bool, number: int, what: str, got: bytes, wanted: bytes) -> None:
    if not ok:
        raise _Mismatch(f"message {number}: {what} {got.hex()} != expected {wanted.hex()}")
