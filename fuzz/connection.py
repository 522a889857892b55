"""Harness: `Connection.receive_payload`, the delivery layer's entry for authenticated
plaintext, driven statefully.

The input is a sequence of records `length (2 bytes, big-endian) || payload`; between
payloads the harness lets a little virtual time pass, fires due timers, sends what the
connection wants to send, reads readable streams and confirms received messages, as an
application would. Each input starts from a fresh Connection. Nothing may raise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pilot_proto.delivery import Connection, DeliveryConfig, MessageReceived, StreamReadable

# Small windows so that a short input can reach the limits.
_CONFIG = DeliveryConfig(
    max_message_size=1 << 16,
    message_receive_window=1 << 20,
    stream_receive_window=1 << 16,
    connection_receive_window=1 << 20,
    max_incoming_streams=8,
)

if TYPE_CHECKING:
    from .traffic import Traffic


def _rng(n: int) -> bytes:
    return b"\x5a" * n


def split_records(data: bytes) -> list[bytes]:
    records = []
    pos = 0
    while pos + 2 <= len(data):
        length = int.from_bytes(data[pos : pos + 2], "big")
        records.append(data[pos + 2 : pos + 2 + length])
        pos += 2 + length
    return records


def join_records(payloads: list[bytes]) -> bytes:
    return b"".join(len(p).to_bytes(2, "big") + p for p in payloads)


def test_one_input(data: bytes) -> None:
    now = 0.0
    connection = Connection(
        "peer", _CONFIG, rng=_rng, now=now, listening_ports=lambda port: port % 2 == 0
    )
    connection.send_message(b"ours", now)
    for payload in split_records(data):
        connection.receive_payload(payload, now)
        now += 0.01
        timer = connection.get_timer()
        if timer is not None and timer <= now:
            connection.handle_timer(now)
        connection.payloads_to_send(now)
        while (event := connection.next_event()) is not None:
            if isinstance(event, StreamReadable):
                connection.read_stream(event.stream_id, 1 << 12)
            elif isinstance(event, MessageReceived):
                connection.confirm_persisted(event.message_id, now)
    connection.handle_timer(now + 60.0)
    connection.payloads_to_send(now + 60.0)


def seeds(traffic: Traffic) -> list[bytes]:
    payloads = list(traffic.payloads)
    singles = [join_records([p]) for p in payloads]
    return [*singles, join_records(payloads[:12]), join_records(payloads)]
