"""The local API: HTTP routes over the Unix socket, bound to the control plane.

Every route answers the DESIGN 9 envelope: `{"status":"ok","data":...}` with 200, or
`{"status":"error","code","message","hint"}` with a matching HTTP status. The route
table below is the reference; docs/LOCAL_API.md describes each route for humans.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .control import ControlPlane
from .errors import ErrorCode, PilotctlError
from .events import EVENT_KINDS
from .httpserver import Request, Response, StreamResponse, UnixHttpServer
from .limits import SEND_TIMEOUT_SECONDS

__all__ = ["ROUTES", "LocalApi", "start_local_api"]

RouteHandler = Callable[["LocalApi", Request, dict[str, str]],
                        Awaitable[Response | StreamResponse | object]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: str  # path with {name} parameters
    handler: RouteHandler
    summary: str

    def match(self, path: str) -> dict[str, str] | None:
        found = _compile(self.pattern).fullmatch(path)
        return found.groupdict() if found else None


@functools.cache
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern))


class LocalApi:
    def __init__(self, control: ControlPlane) -> None:
        self.control = control

    async def handle(self, request: Request) -> Response | StreamResponse:
        allowed: list[str] = []
        for route in ROUTES:
            params = route.match(request.path)
            if params is None:
                continue
            if route.method != request.method:
                allowed.append(route.method)
                continue
            try:
                result = await route.handler(self, request, params)
            except PilotctlError as exc:
                return Response.error(exc)
            if isinstance(result, Response | StreamResponse):
                return result
            return Response.ok(result)
        if allowed:
            return Response(405, PilotctlError(
                ErrorCode.INVALID_ARGUMENT,
                f"{request.method} is not allowed on {request.path}",
                f"use {' or '.join(sorted(set(allowed)))}").envelope())
        return Response.error(PilotctlError(
            ErrorCode.NOT_FOUND, f"no route {request.method} {request.path}",
            "the routes are listed in docs/LOCAL_API.md; try GET /v1/info"))

    # --- daemon ---

    async def health(self, request: Request, params: dict[str, str]) -> object:
        return await self.control.health()

    async def info(self, request: Request, params: dict[str, str]) -> object:
        return await self.control.info()

    async def shutdown(self, request: Request, params: dict[str, str]) -> object:
        return await self.control.shutdown()

    # --- trust ---

    async def pending(self, request: Request, params: dict[str, str]) -> object:
        return await self.control.pending()

    async def trust(self, request: Request, params: dict[str, str]) -> object:
        return await self.control.trust()

    async def handshake(self, request: Request, params: dict[str, str]) -> object:
        body = request.json()
        return await self.control.handshake(
            _text(body, "target"), _text(body, "justification", required=False)
        )

    async def approve(self, request: Request, params: dict[str, str]) -> object:
        return await self.control.approve(_text(request.json(), "node_id"))

    async def reject(self, request: Request, params: dict[str, str]) -> object:
        return await self.control.reject(_text(request.json(), "node_id"))

    async def untrust(self, request: Request, params: dict[str, str]) -> object:
        return await self.control.untrust(params["node_id"])

    # --- names ---

    async def find(self, request: Request, params: dict[str, str]) -> object:
        return await self.control.find(params["name"])

    async def set_hostname(self, request: Request, params: dict[str, str]) -> object:
        return await self.control.set_hostname(_text(request.json(), "hostname"))

    async def clear_hostname(self, request: Request, params: dict[str, str]) -> object:
        return await self.control.clear_hostname()

    # --- messages and files ---

    async def send_message(self, request: Request, params: dict[str, str]) -> object:
        body = request.json()
        type_, data = _message_body(body)
        return await self.control.send_message(
            _text(body, "to"), type_, data,
            wait=_number(body, "wait", required=False),
            timeout=_number(body, "timeout", required=False) or SEND_TIMEOUT_SECONDS,
        )

    async def reply(self, request: Request, params: dict[str, str]) -> object:
        body = request.json()
        type_, data = _message_body(body)
        return await self.control.reply(
            params["id"], type_, data, wait=_number(body, "wait", required=False)
        )

    async def send_file(self, request: Request, params: dict[str, str]) -> object:
        body = request.json()
        return await self.control.send_file(
            _text(body, "to"), _text(body, "path"),
            _number(body, "timeout", required=False) or 600.0,
            _text(body, "name", required=False),
        )

    async def inbox_list(self, request: Request, params: dict[str, str]) -> object:
        return await self.control.inbox_list()

    async def inbox_show(self, request: Request, params: dict[str, str]) -> object:
        return await self.control.inbox_show(params["id"])

    async def inbox_remove(self, request: Request, params: dict[str, str]) -> object:
        return await self.control.inbox_remove(params["id"])

    async def inbox_clear(self, request: Request, params: dict[str, str]) -> object:
        return await self.control.inbox_clear()

    async def received(self, request: Request, params: dict[str, str]) -> object:
        return await self.control.received_list()

    async def outbox(self, request: Request, params: dict[str, str]) -> object:
        return await self.control.outbox_list()

    # --- diagnostics ---

    async def peers(self, request: Request, params: dict[str, str]) -> object:
        return await self.control.peers()

    async def ping(self, request: Request, params: dict[str, str]) -> object:
        body = request.json()
        return await self.control.ping(
            _text(body, "target"),
            int(_number(body, "count", required=False) or 4),
            _number(body, "timeout", required=False) or 10.0,
        )

    async def bench(self, request: Request, params: dict[str, str]) -> object:
        body = request.json()
        return await self.control.bench(
            _text(body, "target"),
            int(_number(body, "bytes", required=False) or 1 << 20),
            _number(body, "timeout", required=False) or 120.0,
        )



    # --- events ---

    async def events(self, request: Request, params: dict[str, str]) -> StreamResponse:
        kinds_text = request.query.get("kinds", "")
        kinds = {k for k in kinds_text.split(",") if k} or None
        unknown = (kinds or set()) - set(EVENT_KINDS)
        if unknown:
            raise PilotctlError(
                ErrorCode.INVALID_ARGUMENT,
                f"unknown event kinds: {', '.join(sorted(unknown))}",
                f"known kinds: {', '.join(EVENT_KINDS)}",
            )
        subscription = self.control.bus.subscribe(kinds)

        async def items() -> AsyncIterator[dict[str, Any]]:
            with subscription:
                # A first line at once, so a client knows the stream is live.
                yield {"kind": "stream.open", "kinds": sorted(kinds) if kinds else None}
                async for event in subscription:
                    yield event.as_json()

        return StreamResponse(items())


def _later(operation: str) -> RouteHandler:
    async def handler(api: LocalApi, request: Request, params: dict[str, str]) -> object:
        return await api.control.later(operation, request.json())

    return handler


# Commands whose network side belongs to later issues: routed, answered by the network.
LATER_OPERATIONS = ("connect", "send", "recv", "listen", "publish", "subscribe")

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/health", LocalApi.health, "liveness: pid, node_id, uptime"),
    Route("GET", "/v1/info", LocalApi.info, "node and daemon information (`info`)"),
    Route("POST", "/v1/shutdown", LocalApi.shutdown, "stop the daemon (`daemon stop`)"),
    Route("GET", "/v1/pending", LocalApi.pending, "pending trust requests (`pending`)"),
    Route("GET", "/v1/trust", LocalApi.trust, "trusted peers (`trust`)"),
    Route("DELETE", "/v1/trust/{node_id}", LocalApi.untrust, "`untrust ADDR`"),
    Route("POST", "/v1/handshake", LocalApi.handshake, "`handshake NAME|ADDR`"),
    Route("POST", "/v1/approve", LocalApi.approve, "`approve ADDR`"),
    Route("POST", "/v1/reject", LocalApi.reject, "`reject ADDR`"),
    Route("GET", "/v1/find/{name}", LocalApi.find, "`find NAME`"),
    Route("PUT", "/v1/hostname", LocalApi.set_hostname, "`set-hostname NAME`"),
    Route("DELETE", "/v1/hostname", LocalApi.clear_hostname, "`clear-hostname`"),
    Route("POST", "/v1/messages", LocalApi.send_message, "`send-message`"),
    Route("POST", "/v1/messages/{id}/reply", LocalApi.reply, "`reply MESSAGE_ID`"),
    Route("POST", "/v1/files", LocalApi.send_file, "`send-file NAME|ADDR PATH`"),
    Route("GET", "/v1/inbox", LocalApi.inbox_list, "inbox listing (`inbox`)"),
    Route("DELETE", "/v1/inbox", LocalApi.inbox_clear, "`inbox --clear`"),
    Route("GET", "/v1/inbox/{id}", LocalApi.inbox_show, "`inbox show ID`"),
    Route("DELETE", "/v1/inbox/{id}", LocalApi.inbox_remove, "delete one inbox message"),
    Route("GET", "/v1/received", LocalApi.received, "files in received/ (`received`)"),
    Route("GET", "/v1/outbox", LocalApi.outbox, "outbox entries (`outbox`)"),
    Route("GET", "/v1/peers", LocalApi.peers, "peer paths (`peers`)"),
    Route("POST", "/v1/ping", LocalApi.ping, "`ping NAME|ADDR`"),
    Route("POST", "/v1/bench", LocalApi.bench, "`bench NAME|ADDR`"),
    Route("GET", "/v1/events", LocalApi.events, "event stream (NDJSON, chunked)"),
    *(Route("POST", f"/v1/{op}", _later(op), f"`{op}` (network side: later issue)")
      for op in LATER_OPERATIONS),
)


async def start_local_api(control: ControlPlane, path: Path) -> UnixHttpServer:
    api = LocalApi(control)
    server = UnixHttpServer(api.handle)
    await server.start(path)
    return server


# --- request body helpers ---


def _text(body: dict[str, Any], name: str, *, required: bool = True) -> Any:
    value = body.get(name)
    if value is None:
        if required:
            raise PilotctlError(ErrorCode.INVALID_ARGUMENT, f"missing field {name!r}")
        return None
    if not isinstance(value, str):
        raise PilotctlError(ErrorCode.INVALID_ARGUMENT, f"field {name!r} must be a string")
    return value


def _number(body: dict[str, Any], name: str, *, required: bool = True) -> Any:
    value = body.get(name)
    if value is None:
        if required:
            raise PilotctlError(ErrorCode.INVALID_ARGUMENT, f"missing field {name!r}")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise PilotctlError(
            ErrorCode.INVALID_ARGUMENT, f"field {name!r} must be a non-negative number"
        )
    return float(value)


def _message_body(body: dict[str, Any]) -> tuple[str, bytes]:
    """(type, raw bytes) from `type`, `data` and optional `encoding: base64`."""
    type_ = _text(body, "type", required=False) or "text"
    if "data" not in body:
        raise PilotctlError(ErrorCode.INVALID_ARGUMENT, "missing field 'data'")
    data = body["data"]
    encoding = _text(body, "encoding", required=False)
    if encoding is not None:
        if encoding != "base64" or not isinstance(data, str):
            raise PilotctlError(
                ErrorCode.INVALID_ARGUMENT, "encoding must be 'base64' with a string data"
            )
        try:
            return type_, base64.b64decode(data, validate=True)
        except binascii.Error:
            raise PilotctlError(ErrorCode.INVALID_ARGUMENT, "data is not valid base64") \
                from None
    if isinstance(data, str):
        return type_, data.encode("utf-8")
    if type_ == "json":
        # Convenience for curl users: a JSON value instead of JSON text.
        return type_, json.dumps(data, ensure_ascii=False).encode("utf-8")
    raise PilotctlError(
        ErrorCode.INVALID_ARGUMENT, "data must be a string (or any JSON value with type json)"
    )
