"""The crypto floor: raw AES-256-GCM throughput and X25519 / Ed25519 primitive costs.

These are baselines. Session and handshake benchmarks compare against them in the same run
through `aesgcm_baseline(ctx, size)` and `crypto_floor(ctx, ...)`, which measure once per
run and share the figure.
"""

from __future__ import annotations

import itertools
import os

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .framework import Baseline, BenchContext, Result, timeit_rate

__all__ = [
    "AESGCM_SIZES",
    "PRIMITIVES",
    "aesgcm_baseline",
    "aesgcm_name",
    "crypto_floor",
    "ed25519_sign_rate",
    "ed25519_verify_rate",
    "primitive_rate",
    "raw_aesgcm_rate",
    "run",
    "x25519_exchange_rate",
    "x25519_keygen_rate",
]

MIB = 1024 * 1024
#: A datagram-sized and a bulk-sized payload.
AESGCM_SIZES = (1200, 64000)
_SIGNED_MESSAGE = bytes(64)


def aesgcm_name(payload_size: int) -> str:
    return f"crypto.aesgcm_seal_open.{payload_size}B"


def raw_aesgcm_rate(payload_size: int, seconds: float) -> float:
    """MiB/s of payload through AES-256-GCM seal followed by open, one core, no framing."""
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    payload = os.urandom(payload_size)
    counter = itertools.count()

    def seal_open() -> None:
        nonce = next(counter).to_bytes(12, "little")
        aead.decrypt(nonce, aead.encrypt(nonce, payload, None), None)

    return timeit_rate(seal_open, seconds) * payload_size / MIB


def x25519_keygen_rate(seconds: float) -> float:
    """X25519 key pairs generated per second (private key plus its public key)."""
    return timeit_rate(lambda: X25519PrivateKey.generate().public_key(), seconds)


def x25519_exchange_rate(seconds: float) -> float:
    """X25519 Diffie-Hellman exchanges per second."""
    ours = X25519PrivateKey.generate()
    theirs = X25519PrivateKey.generate().public_key()
    return timeit_rate(lambda: ours.exchange(theirs), seconds)


def ed25519_sign_rate(seconds: float) -> float:
    """Ed25519 signatures of a 64-byte message per second."""
    key = Ed25519PrivateKey.generate()
    return timeit_rate(lambda: key.sign(_SIGNED_MESSAGE), seconds)


def ed25519_verify_rate(seconds: float) -> float:
    """Ed25519 verifications of a 64-byte message per second."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    signature = key.sign(_SIGNED_MESSAGE)
    return timeit_rate(lambda: public.verify(signature, _SIGNED_MESSAGE), seconds)


#: The primitives of the crypto floor, by the name their figure carries.
PRIMITIVES = {
    "x25519_keygen": x25519_keygen_rate,
    "x25519_exchange": x25519_exchange_rate,
    "ed25519_sign": ed25519_sign_rate,
    "ed25519_verify": ed25519_verify_rate,
}


def aesgcm_baseline(ctx: BenchContext, payload_size: int) -> Baseline:
    """Raw AES-GCM MiB/s at `payload_size`, measured once per run."""
    value = ctx.measure_once(
        aesgcm_name(payload_size), lambda: raw_aesgcm_rate(payload_size, ctx.seconds)
    )
    return Baseline(aesgcm_name(payload_size), value, "MiB/s")


def primitive_rate(ctx: BenchContext, primitive: str) -> float:
    """Operations per second of one of `PRIMITIVES`, measured once per run."""
    measure = PRIMITIVES[primitive]
    return ctx.measure_once(f"crypto.{primitive}", lambda: measure(ctx.seconds))


def crypto_floor(
    ctx: BenchContext,
    *,
    keygen: int = 0,
    exchange: int = 0,
    sign: int = 0,
    verify: int = 0,
    unit: str = "handshakes/s",
) -> Baseline:
    """The most handshakes per second the primitives alone allow.

    Pass how many of each operation one handshake performs (both sides together if the
    figure it is compared with runs both sides on one core); the floor is the inverse of
    their summed costs.
    """
    counts = {
        "x25519_keygen": keygen,
        "x25519_exchange": exchange,
        "ed25519_sign": sign,
        "ed25519_verify": verify,
    }
    seconds_per_handshake = sum(
        count / primitive_rate(ctx, name) for name, count in counts.items() if count
    )
    if seconds_per_handshake == 0:
        raise ValueError("a crypto floor needs at least one operation")
    parts = ", ".join(f"{count} {name}" for name, count in counts.items() if count)
    return Baseline(f"crypto.floor({parts})", 1.0 / seconds_per_handshake, unit)


def run(ctx: BenchContext) -> list[Result]:
    results = [
        Result(
            name=aesgcm_name(size),
            value=aesgcm_baseline(ctx, size).value,
            unit="MiB/s",
            better="higher",
            layout="one process",
        )
        for size in AESGCM_SIZES
    ]
    results.extend(
        Result(
            name=f"crypto.{primitive}",
            value=primitive_rate(ctx, primitive),
            unit="ops/s",
            better="higher",
            layout="one process",
        )
        for primitive in PRIMITIVES
    )
    return results
