"""Message bodies: the checks `send-message` and `reply` apply, on both sides of the
local API (pilotctl first, so bad input fails fast; the daemon again, for other clients).
"""

from __future__ import annotations

import json

from .errors import ErrorCode, PilotctlError
from .limits import MAX_MESSAGE_BYTES

MESSAGE_TYPES = ("text", "json", "binary")


def check_message(type: str, data: bytes) -> None:
    """Raise `invalid_argument` or `too_large` for a body that must not be sent."""
    if type not in MESSAGE_TYPES:
        raise PilotctlError(
            ErrorCode.INVALID_ARGUMENT,
            f"unknown message type {type!r}",
            "use --type text, json or binary",
        )
    if len(data) > MAX_MESSAGE_BYTES:
        raise too_large(len(data))
    if type == "json":
        try:
            json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise PilotctlError(
                ErrorCode.INVALID_ARGUMENT,
                f"--type json but the data is not valid JSON: {exc}",
                "check the quoting, e.g. --data '{\"task\": \"analyze\"}'",
            ) from None
    elif type == "text":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise PilotctlError(
                ErrorCode.INVALID_ARGUMENT,
                "--type text but the data is not valid UTF-8",
                "send raw bytes with --type binary",
            ) from None


def too_large(size: int) -> PilotctlError:
    return PilotctlError(
        ErrorCode.TOO_LARGE,
        f"the message is {size} bytes; the limit is {MAX_MESSAGE_BYTES}",
        "send large payloads with: pilotctl send-file NAME|ADDR PATH",
    )
