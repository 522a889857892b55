"""The error vocabulary shared by pilotctl, the local API and the daemon (DESIGN 9).

Every failure a user can see carries one of the ten codes below, a message saying what
went wrong and, where there is one, a hint saying what to do about it. The same object
becomes the `{"status":"error",...}` envelope on the wire and on stdout under `--json`.
"""

from __future__ import annotations

from enum import StrEnum

# pilotctl imports this module on every command: keep `typing` out of its start-up path.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class ErrorCode(StrEnum):
    """The error codes of DESIGN 9 (contract: scripts match on these strings)."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    NOT_RUNNING = "not_running"
    NOT_TRUSTED = "not_trusted"
    CONNECTION_FAILED = "connection_failed"
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    KEY_CHANGED = "key_changed"
    INTERNAL = "internal"


# The local API answers with an HTTP status that matches the code, so `curl -f` and
# generic HTTP tooling see failures as failures; the body still carries the exact code.
HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.NOT_RUNNING: 503,
    ErrorCode.NOT_TRUSTED: 403,
    ErrorCode.CONNECTION_FAILED: 502,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.KEY_CHANGED: 409,
    ErrorCode.INTERNAL: 500,
}


class PilotctlError(Exception):
    """A failure with a code, a message and an optional hint, as DESIGN 9 shapes them."""

    def __init__(self, code: ErrorCode | str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.hint = hint

    def envelope(self) -> dict[str, Any]:
        """The `{"status":"error",...}` object printed under --json and sent by the API."""
        return {
            "status": "error",
            "code": self.code.value,
            "message": self.message,
            "hint": self.hint,
        }

    @classmethod
    def from_envelope(cls, body: object) -> PilotctlError:
        """Rebuild an error from an envelope; anything malformed becomes `internal`."""
        if isinstance(body, dict):
            code = body.get("code")
            message = body.get("message")
            hint = body.get("hint")
            if code in ErrorCode._value2member_map_ and isinstance(message, str):
                return cls(str(code), message, hint if isinstance(hint, str) else None)
        return cls(ErrorCode.INTERNAL, f"malformed error from the daemon: {body!r:.200}")

    def __repr__(self) -> str:
        return f"PilotctlError({self.code.value!r}, {self.message!r}, hint={self.hint!r})"


class UsageError(PilotctlError):
    """The command line did not parse (exit 2, code `invalid_argument`)."""

    def __init__(self, message: str, usage: str | None = None) -> None:
        super().__init__(ErrorCode.INVALID_ARGUMENT, message, "see: pilotctl --help")
        self.usage = usage


def ok_envelope(data: object) -> dict[str, Any]:
    """The `{"status":"ok","data":...}` envelope."""
    return {"status": "ok", "data": data}
