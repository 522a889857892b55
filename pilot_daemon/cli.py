"""pilotctl: the command line of the pilot daemon (DESIGN 9).

Output: human text by default; with `--json` (anywhere on the command line) one
envelope on stdout, `{"status":"ok","data":...}` or `{"status":"error","code",
"message","hint"}`. Exit 0 ok, 1 error, 2 usage error (code `invalid_argument`).

Start-up cost matters (agents run pilotctl in loops): this module imports only argparse,
json and the light local modules; each command imports what it alone needs.
"""

from __future__ import annotations

import json
import os
import sys

from .cliparser import build_parser, command_word
from .errors import ErrorCode, PilotctlError, UsageError, ok_envelope
from .paths import StateDir

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any

    from .client import LocalClient

# `daemon status --check` and foreground runs produce their own output (or none).
_SILENT = object()


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    json_mode, words = _take_json_flag(words)
    try:
        word = command_word(words)
        parser = build_parser(only=word if word in COMMANDS else None)
        if not words:
            raise UsageError("no command given", usage=parser.format_usage())
        ns = parser.parse_args(words)
        if ns.version:
            _print_ok(json_mode, "version", {"version": _version()})
            return 0
        if ns.command is None:
            raise UsageError("no command given", usage=parser.format_usage())
        key = ns.command + (f" {ns.action}" if getattr(ns, "action", None) and
                            ns.command in ("daemon", "rendezvous") else "")
        result = COMMANDS[ns.command](ns, _Context(json_mode, parser))
    except UsageError as exc:
        _print_error(json_mode, exc, usage=exc.usage)
        return 2
    except PilotctlError as exc:
        _print_error(json_mode, exc)
        return 1
    except KeyboardInterrupt:
        return 130
    if isinstance(result, int) and not isinstance(result, bool):
        return result  # commands that ran in the foreground report their own exit status
    if result is _SILENT:
        return 0
    if isinstance(result, tuple):
        key, data = result
    else:
        data = result
    try:
        _print_ok(json_mode, key, data)
        sys.stdout.flush()
    except BrokenPipeError:
        # `pilotctl inbox | head -1`: the reader left; that is not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _take_json_flag(words: list[str]) -> tuple[bool, list[str]]:
    """Remove every `--json` before a `--`, so it works anywhere on the command line."""
    if "--" in words:
        cut = words.index("--")
        head, tail = words[:cut], words[cut:]
    else:
        head, tail = words, []
    kept = [w for w in head if w != "--json"]
    return len(kept) != len(head), kept + tail


def _print_ok(json_mode: bool, key: str, data: object) -> None:
    if json_mode:
        print(json.dumps(ok_envelope(data), ensure_ascii=False))
        return
    from .render import RENDERERS, generic

    print(RENDERERS.get(key, generic)(data))


def _print_error(json_mode: bool, exc: PilotctlError, usage: str | None = None) -> None:
    if json_mode:
        print(json.dumps(exc.envelope(), ensure_ascii=False))
        return
    if usage:
        sys.stderr.write(usage)
    sys.stderr.write(f"error: {exc.message}\n")
    if exc.hint:
        sys.stderr.write(f"hint: {exc.hint}\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pilot-proto")
    except PackageNotFoundError:
        return "0+unknown"


class _Context:
    """What every command handler gets besides its arguments."""

    def __init__(self, json_mode: bool, parser: argparse.ArgumentParser) -> None:
        self.json_mode = json_mode
        self.parser = parser  # may hold only the running command: see cliparser
        self.state = StateDir.from_env()

    def client(self, timeout: float = 10.0) -> LocalClient:
        from .client import LocalClient

        return LocalClient(self.state, timeout=timeout)


# --- node ---


def _info(ns: argparse.Namespace, ctx: _Context) -> object:
    return ctx.client().request("GET", "/v1/info")


def _find(ns: argparse.Namespace, ctx: _Context) -> object:
    from .names import check_peer

    return ctx.client(30).request("GET", f"/v1/find/{check_peer(ns.name)}")


def _set_hostname(ns: argparse.Namespace, ctx: _Context) -> object:
    from .names import check_hostname

    return ctx.client(30).request("PUT", "/v1/hostname",
                                  {"hostname": check_hostname(ns.hostname)})


def _clear_hostname(ns: argparse.Namespace, ctx: _Context) -> object:
    return ctx.client(30).request("DELETE", "/v1/hostname")


def _context(ns: argparse.Namespace, ctx: _Context) -> object:
    from .cliparser import command_schema

    schema = command_schema(build_parser())  # every command, not just `context`
    if not ctx.json_mode:
        print(json.dumps(schema, indent=2, ensure_ascii=False))
        return _SILENT
    return schema


# --- trust ---


def _handshake(ns: argparse.Namespace, ctx: _Context) -> object:
    from .limits import MAX_JUSTIFICATION_BYTES
    from .names import check_peer

    if ns.justification and len(ns.justification.encode()) > MAX_JUSTIFICATION_BYTES:
        raise PilotctlError(
            ErrorCode.TOO_LARGE,
            f"the justification is {len(ns.justification.encode())} bytes; the limit is "
            f"{MAX_JUSTIFICATION_BYTES}",
            "shorten it",
        )
    return ctx.client(40).request(
        "POST", "/v1/handshake",
        {"target": check_peer(ns.target), "justification": ns.justification},
    )


def _pending(ns: argparse.Namespace, ctx: _Context) -> object:
    return ctx.client().request("GET", "/v1/pending")


def _approve(ns: argparse.Namespace, ctx: _Context) -> object:
    from .names import check_address

    return ctx.client(40).request("POST", "/v1/approve",
                                  {"node_id": check_address(ns.node_id)})


def _reject(ns: argparse.Namespace, ctx: _Context) -> object:
    from .names import check_address

    return ctx.client(40).request("POST", "/v1/reject",
                                  {"node_id": check_address(ns.node_id)})


def _trust(ns: argparse.Namespace, ctx: _Context) -> object:
    return ctx.client().request("GET", "/v1/trust")


def _untrust(ns: argparse.Namespace, ctx: _Context) -> object:
    from .names import check_address

    return ctx.client(40).request("DELETE", f"/v1/trust/{check_address(ns.node_id)}")


# --- messages and files ---


def _message_payload(ns: argparse.Namespace) -> dict[str, Any]:
    """The `type`/`data` fields for the API, checked (too_large, invalid JSON) first."""
    from .limits import MAX_MESSAGE_BYTES
    from .payload import check_message, too_large

    if ns.file is not None:
        try:
            size = os.stat(ns.file).st_size
            if size > MAX_MESSAGE_BYTES:
                raise too_large(size)
            with open(ns.file, "rb") as handle:
                raw = handle.read(MAX_MESSAGE_BYTES + 1)
        except FileNotFoundError:
            raise PilotctlError(ErrorCode.NOT_FOUND, f"no such file: {ns.file}") from None
        except IsADirectoryError:
            raise PilotctlError(ErrorCode.INVALID_ARGUMENT, f"{ns.file} is a directory") \
                from None
        except OSError as exc:
            raise PilotctlError(ErrorCode.INVALID_ARGUMENT,
                                f"cannot read {ns.file}: {exc.strerror}") from None
    else:
        raw = ns.data.encode("utf-8", "surrogateescape")
    check_message(ns.type, raw)
    if ns.type == "binary":
        import base64

        return {"type": "binary", "data": base64.b64encode(raw).decode("ascii"),
                "encoding": "base64"}
    return {"type": ns.type, "data": raw.decode("utf-8")}


def _send_message(ns: argparse.Namespace, ctx: _Context) -> object:
    from .limits import SEND_TIMEOUT_SECONDS
    from .names import check_peer

    body = {"to": check_peer(ns.target), **_message_payload(ns), "wait": ns.wait}
    timeout = SEND_TIMEOUT_SECONDS + (ns.wait or 0) + 10
    return ctx.client(timeout).request("POST", "/v1/messages", body)


def _reply(ns: argparse.Namespace, ctx: _Context) -> object:
    from .limits import SEND_TIMEOUT_SECONDS

    ref = _message_ref(ns.message_id)
    return ctx.client(SEND_TIMEOUT_SECONDS + 10).request(
        "POST", f"/v1/messages/{ref}/reply", _message_payload(ns)
    )


def _message_ref(ref: str) -> str:
    cleaned = ref.strip().lower()
    if cleaned.endswith(".json"):
        cleaned = cleaned[:-5].rsplit("-", 1)[-1]
    if len(cleaned) < 4 or any(c not in "0123456789abcdef" for c in cleaned):
        raise PilotctlError(
            ErrorCode.INVALID_ARGUMENT, f"{ref!r} is not a message id",
            "give the id shown by `pilotctl inbox` (at least 4 hex digits)",
        )
    return cleaned


def _inbox(ns: argparse.Namespace, ctx: _Context) -> object:
    if ns.action == "show":
        if ns.message_id is None:
            raise UsageError("inbox show needs a message ID",
                             usage="usage: pilotctl inbox [show ID] [--clear]\n")
        if ns.clear:
            raise UsageError("inbox show and --clear cannot be combined",
                             usage="usage: pilotctl inbox [show ID] [--clear]\n")
        return "inbox show", ctx.client().request("GET", f"/v1/inbox/{_message_ref(ns.message_id)}")
    if ns.message_id is not None:
        raise UsageError(f"unexpected argument {ns.message_id!r} (did you mean: inbox show "
                         f"{ns.message_id}?)", usage="usage: pilotctl inbox [show ID] [--clear]\n")
    if ns.clear:
        return "inbox --clear", ctx.client().request("DELETE", "/v1/inbox")
    return "inbox", ctx.client().request("GET", "/v1/inbox")


def _send_file(ns: argparse.Namespace, ctx: _Context) -> object:
    from .names import check_peer

    path = os.path.abspath(ns.path)
    if not os.path.isfile(path):
        raise PilotctlError(ErrorCode.NOT_FOUND, f"no such file: {ns.path}")
    body = {"to": check_peer(ns.target), "path": path}
    if ctx.json_mode or not sys.stderr.isatty():
        return ctx.client(3600).request("POST", "/v1/files", body)
    from .progress import ProgressBar

    with ProgressBar(ctx.state, path, os.path.basename(path)):
        return ctx.client(3600).request("POST", "/v1/files", body)


def _received(ns: argparse.Namespace, ctx: _Context) -> object:
    return ctx.client().request("GET", "/v1/received")


def _outbox(ns: argparse.Namespace, ctx: _Context) -> object:
    return ctx.client().request("GET", "/v1/outbox")


# --- streams and events (network side: later issues) ---


def _later(operation: str, fields: Sequence[str]) -> Callable[[argparse.Namespace, _Context],
                                                             object]:
    def handler(ns: argparse.Namespace, ctx: _Context) -> object:
        from .names import check_peer

        body = {name: getattr(ns, name) for name in fields}
        if "target" in body:
            check_peer(body["target"])
        if operation == "connect" and ns.message is None:
            if sys.stdin.isatty():
                raise PilotctlError(ErrorCode.INVALID_ARGUMENT,
                                    "connect needs --message TEXT or data piped on stdin")
            body["message"] = sys.stdin.read()
        timeout = (getattr(ns, "timeout", None) or 30.0) + 10
        return ctx.client(timeout).request("POST", f"/v1/{operation}", body)

    return handler


# --- diagnostics ---


def _peers(ns: argparse.Namespace, ctx: _Context) -> object:
    return ctx.client(30).request("GET", "/v1/peers")


def _ping(ns: argparse.Namespace, ctx: _Context) -> object:
    from .names import check_peer

    return ctx.client(ns.timeout * ns.count + 10).request(
        "POST", "/v1/ping",
        {"target": check_peer(ns.target), "count": ns.count, "timeout": ns.timeout},
    )


def _bench(ns: argparse.Namespace, ctx: _Context) -> object:
    from .names import check_peer

    return ctx.client(600).request(
        "POST", "/v1/bench", {"target": check_peer(ns.target), "bytes": ns.megabytes << 20}
    )


# --- daemon and rendezvous ---


def _daemon(ns: argparse.Namespace, ctx: _Context) -> object:
    from . import lifecycle

    if ns.action == "start":
        if ns.foreground:
            return lifecycle.run_foreground(ns, ctx.state, ctx.json_mode)
        return "daemon start", lifecycle.start(ns, ctx.state)
    if ns.action == "stop":
        return "daemon stop", lifecycle.stop(ctx.state)
    if ns.check:
        return 0 if lifecycle.responsive(ctx.state) else 1
    return "daemon status", lifecycle.status(ctx.state)


def _rendezvous(ns: argparse.Namespace, ctx: _Context) -> object:
    from .names import parse_endpoint

    listen = parse_endpoint(ns.listen, what="listen address", allow_port_zero=True)
    listen2 = (parse_endpoint(ns.listen2, what="listen2 address", allow_port_zero=True)
               if ns.listen2 else None)
    try:
        from . import rendezvous  # type: ignore[attr-defined,unused-ignore]
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.rendezvous":
            raise
        raise PilotctlError(
            ErrorCode.INTERNAL,
            "the rendezvous server is not available in this build",
            "this build has the daemon's local control plane only",
        ) from None
    code: int = rendezvous.serve(listen, listen2, ctx.state, ctx.json_mode)
    return code


COMMANDS: dict[str, Callable[[argparse.Namespace, _Context], object]] = {
    "info": _info,
    "find": _find,
    "set-hostname": _set_hostname,
    "clear-hostname": _clear_hostname,
    "context": _context,
    "handshake": _handshake,
    "pending": _pending,
    "approve": _approve,
    "reject": _reject,
    "trust": _trust,
    "untrust": _untrust,
    "send-message": _send_message,
    "reply": _reply,
    "inbox": _inbox,
    "send-file": _send_file,
    "received": _received,
    "outbox": _outbox,
    "connect": _later("connect", ("target", "port", "message", "timeout")),
    "listen": _later("listen", ("port", "count", "timeout")),
    "send": _later("send", ("target", "port", "data", "timeout")),
    "recv": _later("recv", ("port", "count", "timeout")),
    "publish": _later("publish", ("target", "topic", "data")),
    "subscribe": _later("subscribe", ("target", "topic", "count", "timeout")),
    "peers": _peers,
    "ping": _ping,
    "bench": _bench,
    "daemon": _daemon,
    "rendezvous": _rendezvous,
}
