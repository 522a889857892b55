"""Human output of pilotctl (the default; `--json` prints the envelope instead).

One function per command that has a shape worth more than `key: value` lines. Tables
are plain aligned columns, so they read well in a terminal and still grep and cut.
"""

from __future__ import annotations

import json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in cells]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def when(iso: object) -> str:
    """`2025-03-01T10:15:00.123456Z` -> `2025-03-01 10:15:00Z` for tables."""
    if not isinstance(iso, str) or "T" not in iso:
        return _cell(iso)
    day, _, rest = iso.partition("T")
    return f"{day} {rest[:8]}Z"


def key_values(data: dict[str, Any], keys: Sequence[str] | None = None) -> str:
    keys = list(keys or data)
    width = max((len(k) for k in keys), default=0)
    lines = []
    for key in keys:
        value = data.get(key)
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "-"
        elif isinstance(value, dict):
            value = json.dumps(value)
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        lines.append(f"{key.ljust(width)}  {_cell(value)}")
    return "\n".join(lines)


def info(data: dict[str, Any]) -> str:
    network = data.get("network") or {}
    shown = dict(data)
    if not network.get("available"):
        shown["network"] = f"unavailable ({network.get('detail')})"
    elif network.get("registered"):
        shown["network"] = "registered"
    else:
        shown["network"] = f"not registered ({network.get('detail') or 'connecting'})"
    return key_values(shown, [
        "node_id", "hostname", "listen", "rendezvous", "nat_type", "candidates", "public",
        "trust_auto_approve", "network", "trusted_peers", "pending_requests",
        "inbox_messages", "pid", "version", "state_dir", "socket", "started_at",
    ])


def pending(data: list[dict[str, Any]]) -> str:
    if not data:
        return "no pending trust requests"
    return table(
        [(p["node_id"], p.get("hostname"), when(p.get("received_at")),
          when(p.get("expires_at")), p.get("justification")) for p in data],
        ["NODE_ID", "HOSTNAME", "RECEIVED", "EXPIRES", "JUSTIFICATION"],
    )


def trust(data: list[dict[str, Any]]) -> str:
    if not data:
        return "no trusted peers"
    return table([(t["node_id"], t.get("hostname"), when(t.get("since"))) for t in data],
                 ["NODE_ID", "HOSTNAME", "SINCE"])


def inbox(data: list[dict[str, Any]]) -> str:
    if not data:
        return "inbox is empty"
    return table(
        [(m.get("id"), m.get("from_hostname") or m.get("from"), m.get("type"), m.get("bytes"),
          when(m.get("received_at")), m.get("reply_to")) for m in data],
        ["ID", "FROM", "TYPE", "BYTES", "RECEIVED", "REPLY_TO"],
    )


def message(data: dict[str, Any]) -> str:
    head = key_values(data, ["id", "type", "from", "from_hostname", "bytes", "received_at",
                             "reply_to"])
    body = data.get("data")
    if data.get("encoding") == "base64":
        body_text = f"(base64) {body}"
    elif isinstance(body, str):
        body_text = body
    else:
        body_text = json.dumps(body, indent=2, ensure_ascii=False)
    return f"{head}\n\n{body_text}"


def received(data: list[dict[str, Any]]) -> str:
    if not data:
        return "no received files"
    return table([(f["name"], f["bytes"], when(f.get("received_at"))) for f in data],
                 ["NAME", "BYTES", "RECEIVED"])


def outbox(data: list[dict[str, Any]]) -> str:
    if not data:
        return "outbox is empty"
    return table(
        [(e["id"], e["to"], e["type"], e["state"], e["attempts"], when(e.get("created_at")))
         for e in data],
        ["ID", "TO", "TYPE", "STATE", "ATTEMPTS", "CREATED"],
    )


def peers(data: list[dict[str, Any]]) -> str:
    if not data:
        return "no peers"
    return table(
        [(p["node_id"], p.get("hostname"), p.get("path"), p.get("endpoint"), p.get("rtt_ms"),
          p.get("reason")) for p in data],
        ["NODE_ID", "HOSTNAME", "PATH", "ENDPOINT", "RTT_MS", "REASON"],
    )


def sent(data: dict[str, Any]) -> str:
    to = f"{data['hostname']} ({data['to']})" if data.get("hostname") else data.get("to")
    text = f"delivered message {data.get('id')} to {to} ({data.get('bytes')} bytes)"
    if "reply" in data:
        text += "\n\nreply:\n" + message(data["reply"])
    return text


def _peer(data: dict[str, Any], key: str = "to") -> str:
    address = data.get(key)
    hostname = data.get("hostname") if key == "to" else data.get("from_hostname")
    return f"{hostname} ({address})" if hostname else str(address)


def _body(item: dict[str, Any]) -> str:
    if item.get("encoding") == "base64":
        return f"(base64) {item.get('data')}"
    return str(item.get("data"))


def streamed(data: list[dict[str, Any]]) -> str:
    """recv / listen: each stream's data, under a line saying whose it was."""
    return "\n".join(f"from {_peer(item, 'from')} on port {item.get('port')}:\n{_body(item)}"
                     for item in data)


def stream_sent(data: dict[str, Any]) -> str:
    return f"sent {data.get('bytes')} bytes to {_peer(data)} port {data.get('port')}"


def file_sent(data: dict[str, Any]) -> str:
    return (f"delivered {data.get('name')} ({data.get('bytes')} bytes, sha256 "
            f"{data.get('sha256')}) to {_peer(data)}")


def bench(data: dict[str, Any]) -> str:
    size = (data.get("bytes") or 0) / (1 << 20)
    who = data.get("hostname") or data.get("node_id")
    return f"{size:.1f} MiB to {who} in {data.get('seconds')} s: {data.get('mbit_per_s')} Mbit/s"


def daemon_started(data: dict[str, Any]) -> str:
    return f"pilot daemon started (pid {data.get('pid')})\n" + info(data)


def daemon_status(data: dict[str, Any]) -> str:
    return (f"running: pid {data.get('pid')}, node_id {data.get('node_id')}, "
            f"up {data.get('uptime_s', 0):.0f} s")


def generic(data: object) -> str:
    if data is None:
        return "ok"
    if isinstance(data, dict):
        return key_values(data)
    return json.dumps(data, indent=2, ensure_ascii=False)


RENDERERS: dict[str, Callable[[Any], str]] = {
    "info": info,
    "pending": pending,
    "trust": trust,
    "inbox": inbox,
    "inbox show": message,
    "received": received,
    "outbox": outbox,
    "peers": peers,
    "send-message": sent,
    "reply": sent,
    "daemon start": daemon_started,
    "daemon status": daemon_status,
    "daemon stop": lambda d: f"pilot daemon stopped (pid {d.get('pid')})",
    "recv": streamed,
    "listen": streamed,
    "send": stream_sent,
    "connect": lambda d: _body(d.get("reply") or {}),
    "send-file": file_sent,
    "bench": bench,
    "inbox --clear": lambda d: f"removed {d.get('removed', 0)} message(s) from the inbox",
}
