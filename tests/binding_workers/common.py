"""What every binding worker shares: the line protocol, payloads, config and replies.

A worker is a process holding one node of one binding. The test writes one JSON command
per line on its stdin, `{"id": N, "op": NAME, ...arguments}`; commands run concurrently
(a task, greenlet or thread each) and each ends with one line on stdout:
`{"id": N, "ok": true, "result": ...}` or `{"id": N, "ok": false, "error": CLASS,
"kinds": [CLASS and its bases], "message": TEXT}`. Nothing here imports a binding.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import traceback
from dataclasses import replace
from typing import Any

from pilot_proto import Identity, IdentityRecord, NodeConfig, SessionConfig
from pilot_proto.delivery import DeliveryConfig

_write_lock = threading.Lock()


def config(datagram_size: int | None = None, public: bool = False) -> NodeConfig:
    """Short handshake retries so a lost initiation or a restart costs little test time;
    `datagram_size` forces the path MTU (no probing); `public` accepts strangers' sessions
    (which carry them nothing but trust frames and refusals)."""
    return NodeConfig(
        session=replace(SessionConfig(), handshake_retry=0.5, handshake_give_up=20.0),
        delivery=DeliveryConfig(forced_datagram_size=datagram_size),
        public=public,
    )


def identity(seed_hex: str) -> Identity:
    return Identity.from_private_bytes(bytes.fromhex(seed_hex))


def record(ident: Identity) -> str:
    return IdentityRecord.create(ident, hostname=None, sequence=1, expires_at=2**40).encode().hex()


def peer_record(hex_record: str) -> IdentityRecord:
    return IdentityRecord.decode(bytes.fromhex(hex_record))


def payload(seed: int, size: int) -> bytes:
    """Deterministic bytes both sides (and the test) can reproduce."""
    return random.Random(seed).randbytes(size)


def message_body(index: int, size: int) -> bytes:
    head = f"{index:08d}".encode()
    return head + b"." * max(size - len(head), 0)


def message_index(data: bytes) -> int:
    return int(data[:8])


def started(node: Any) -> dict[str, Any]:
    host, port = node.endpoint
    return {"address": node.address, "record": record(node.identity), "endpoint": [host, port]}


def reply(command_id: int, result: Any = None, error: BaseException | None = None) -> None:
    if error is None:
        line = {"id": command_id, "ok": True, "result": result}
    else:
        line = {
            "id": command_id,
            "ok": False,
            "error": type(error).__name__,
            "kinds": [k.__name__ for k in type(error).__mro__],
            "message": str(error),
            "trace": "".join(traceback.format_exception(error)),
        }
    text = json.dumps(line) + "\n"
    with _write_lock:
        sys.stdout.write(text)
        sys.stdout.flush()


def parse(line: str) -> tuple[int, str, dict[str, Any]]:
    command = json.loads(line)
    return command.pop("id"), command.pop("op"), command
