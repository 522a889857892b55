"""Session layer: full IK handshakes and transport seal+open, against the crypto floor.

One process runs both sides, so each figure is pure core cost. Baselines come from
`bench_crypto` in the same run.
"""

from __future__ import annotations

import os

from pilot_proto.cookie import CookieChecker, CookieJar
from pilot_proto.handshake import OutgoingHandshake, read_initiation, write_response
from pilot_proto.identity import BindingCache, Identity
from pilot_proto.keypair import Keypair
from pilot_proto.packets import (
    decode_initiation,
    decode_response,
    encode_initiation_body,
    encode_response,
)

from .bench_crypto import AESGCM_SIZES, MIB, aesgcm_baseline, crypto_floor
from .framework import BenchContext, Result, timeit_rate

_INSTANCE = b"\x00" * 8


class _HandshakeLoop:
    """Both sides of one complete handshake per call, with real packets and MACs."""

    def __init__(self, cached_bindings: bool) -> None:
        self.a = Identity.generate(os.urandom)
        self.b = Identity.generate(os.urandom)
        self.jar = CookieJar(self.b.static_public, 120.0)
        self.checker = CookieChecker(self.b.static_public, os.urandom, 120.0)
        self.cached = cached_bindings
        self.cache_a, self.cache_b = BindingCache(), BindingCache()
        self.stamp = 0

    def __call__(self) -> None:
        cache_a, cache_b = (
            (self.cache_a, self.cache_b) if self.cached else (BindingCache(), BindingCache())
        )
        self.stamp += 1
        out = OutgoingHandshake(
            self.a,
            remote_static=self.b.static_public,
            expected_address=self.b.address,
            sender_index=1,
            timestamp_ns=self.stamp,
            instance_id=_INSTANCE,
            rng=os.urandom,
        )
        packet = self.jar.add_macs(encode_initiation_body(1, out.noise_message), 0.0)
        initiation = decode_initiation(packet)
        assert initiation is not None and self.checker.mac1_valid(packet)
        incoming = read_initiation(self.b, initiation.noise_message, cache_b, os.urandom)
        assert incoming is not None
        message, keys_b = write_response(incoming, self.b, _INSTANCE)
        response = decode_response(encode_response(2, 1, message))
        assert response is not None
        result = out.read_response(response.noise_message, cache_a)
        assert result is not None
        _, keys_a = result
        Keypair(
            local_index=1,
            remote_index=2,
            send_key=keys_a.send,
            recv_key=keys_a.recv,
            initiator=True,
            now=0.0,
            replay_window=8192,
        )
        Keypair(
            local_index=2,
            remote_index=1,
            send_key=keys_b.send,
            recv_key=keys_b.recv,
            initiator=False,
            now=0.0,
            replay_window=8192,
        )


def _transport_rate(payload_size: int, seconds: float) -> float:
    key_ab, key_ba = os.urandom(32), os.urandom(32)
    sender = Keypair(
        local_index=1,
        remote_index=2,
        send_key=key_ab,
        recv_key=key_ba,
        initiator=True,
        now=0.0,
        replay_window=8192,
    )
    receiver = Keypair(
        local_index=2,
        remote_index=1,
        send_key=key_ba,
        recv_key=key_ab,
        initiator=False,
        now=0.0,
        replay_window=8192,
    )
    payload = os.urandom(payload_size)
    replay = receiver.replay

    def seal_open() -> None:
        packet = sender.seal(payload)
        counter = sender.send_counter - 1
        if not replay.would_accept(counter) or receiver.open(packet, counter) is None:
            raise AssertionError("transport packet failed to open")

    return timeit_rate(seal_open, seconds) * payload_size / MIB


def run(ctx: BenchContext) -> list[Result]:
    seconds = 0.05 if ctx.quick else ctx.seconds
    # IK, both sides: 2 ephemeral keygens, 8 DH, and 2 binding verifications without a cache.
    floor = crypto_floor(ctx, keygen=2, exchange=8, verify=2)
    uncached = timeit_rate(_HandshakeLoop(cached_bindings=False), seconds)
    cached = timeit_rate(_HandshakeLoop(cached_bindings=True), seconds)
    results = [
        Result(
            name="session.ik_handshake",
            value=uncached,
            unit="handshakes/s",
            better="higher",
            layout="one process",
            baseline=floor,
            target=">= 60% of the crypto floor",
            target_met=uncached >= 0.6 * floor.value,
        ),
        Result(
            name="session.ik_handshake.binding_cache",
            value=cached,
            unit="handshakes/s",
            better="higher",
            layout="one process",
            baseline=floor,
            target=">= 1000/s",
            target_met=cached >= 1000,
        ),
    ]
    for size in AESGCM_SIZES:
        baseline = aesgcm_baseline(ctx, size)
        rate = _transport_rate(size, seconds)
        results.append(
            Result(
                name=f"session.transport_seal_open.{size}B",
                value=rate,
                unit="MiB/s",
                better="higher",
                layout="one process",
                baseline=baseline,
                target=">= 60% of raw AES-GCM" if size == 64000 else None,
                target_met=rate >= 0.6 * baseline.value if size == 64000 else None,
            )
        )
    return results
