"""Hostile datagrams for flood tests: random bytes and mutations of real captured packets.

`Mutator(seed, captured, ...).next()` returns one datagram, drawn from a fixed mix:
random bytes, random bodies behind each of our packet type bytes, bit flips, truncations,
extensions, header rewrites (session index, counter, sender index), exact replays, and
initiations that carry a *valid mac1* (anyone can compute it from the target's public
static key) so they get past the cheap check and cost the responder a Diffie-Hellman.
Deterministic for a seed.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Sequence

from pilot_proto.cookie import CookieJar
from pilot_proto.packets import (
    HANDSHAKE_INITIATION,
    INITIATION_SIZE,
    MAC_SIZE,
    TRANSPORT,
    TRANSPORT_HEADER_SIZE,
)

__all__ = ["KINDS", "Mutator"]

_INDEX = struct.Struct(">I")
_COUNTER = struct.Struct(">Q")

#: The kinds of datagram a Mutator makes, in the order of its weights.
KINDS = (
    "random",
    "typed_garbage",
    "bit_flip",
    "truncation",
    "extension",
    "header_rewrite",
    "replay",
    "mac1_initiation",
)


class Mutator:
    def __init__(
        self,
        seed: int,
        captured: Sequence[bytes],
        *,
        target_static_public: bytes | None = None,
        weights: Sequence[int] = (10, 10, 20, 10, 10, 20, 15, 5),
    ) -> None:
        if not captured:
            raise ValueError("a Mutator needs at least one captured datagram")
        self._rng = random.Random(seed)  # test code: the core's no-`random` rule is not ours
        self._captured = [bytes(c) for c in captured if c]
        self._indexes = sorted(
            {_INDEX.unpack_from(c, 1)[0] for c in self._captured
             if c[0] == TRANSPORT and len(c) >= TRANSPORT_HEADER_SIZE}
        ) or [0]
        self._jar = (
            CookieJar(target_static_public, 120.0) if target_static_public is not None else None
        )
        table: list[Callable[[], bytes]] = [
            self.random, self.typed_garbage, self.bit_flip, self.truncation, self.extension,
            self.header_rewrite, self.replay, self.mac1_initiation,
        ]
        self._choices: list[tuple[str, Callable[[], bytes]]] = []
        for kind, make, weight in zip(KINDS, table, weights, strict=True):
            self._choices += [(kind, make)] * weight
        self.counts: dict[str, int] = dict.fromkeys(KINDS, 0)

    def next(self) -> bytes:
        kind, make = self._choices[self._rng.randrange(len(self._choices))]
        self.counts[kind] += 1
        return make()

    # ------------------------------------------------------------------ the kinds

    def _pick(self) -> bytearray:
        return bytearray(self._captured[self._rng.randrange(len(self._captured))])

    def random(self) -> bytes:
        return self._rng.randbytes(self._rng.randrange(1500))

    def typed_garbage(self) -> bytes:
        kind = bytes((0x50 + self._rng.randrange(7),))
        return kind + self._rng.randbytes(self._rng.randrange(400))

    def bit_flip(self) -> bytes:
        data = self._pick()
        for _ in range(1 + self._rng.randrange(3)):
            bit = self._rng.randrange(8 * len(data))
            data[bit // 8] ^= 1 << (bit % 8)
        return bytes(data)

    def truncation(self) -> bytes:
        data = self._pick()
        return bytes(data[: self._rng.randrange(len(data))])

    def extension(self) -> bytes:
        return bytes(self._pick()) + self._rng.randbytes(1 + self._rng.randrange(64))

    def header_rewrite(self) -> bytes:
        data = self._pick()
        if data[0] == TRANSPORT and len(data) >= TRANSPORT_HEADER_SIZE:
            if self._rng.randrange(2):
                index = self._indexes[self._rng.randrange(len(self._indexes))]
                _INDEX.pack_into(data, 1, index)  # a real session's index, wrong keys
            else:
                counter = _COUNTER.unpack_from(data, 5)[0] + self._rng.randrange(20000) - 10000
                _COUNTER.pack_into(data, 5, max(0, counter))
        elif len(data) >= 5:
            _INDEX.pack_into(data, 1, self._rng.getrandbits(32))
        else:
            data[0] = 0x50 + self._rng.randrange(7)
        return bytes(data)

    def replay(self) -> bytes:
        return bytes(self._pick())

    def mac1_initiation(self) -> bytes:
        size = INITIATION_SIZE - 1 - 2 * MAC_SIZE
        body = bytes((HANDSHAKE_INITIATION,)) + self._rng.randbytes(size)
        if self._jar is None:
            return body + bytes(2 * MAC_SIZE)
        return self._jar.add_macs(body, 0.0)
