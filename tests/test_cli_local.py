"""Every local-only command end to end: `pilotctl daemon start` in a temporary
PILOT_HOME (registered at a real rendezvous), then pilotctl processes against it. The
peers in its state are made up (their keys match no registered node), so network
commands answer with the DESIGN 9 code for each case rather than succeed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pilot_processes import RendezvousServer

from pilot_daemon.inbox import Inbox, IncomingMessage
from pilot_daemon.store import Store

PEER = "3fa1:09bc:0000:0000:0000:0000:0000:0001"
OTHER = "77aa:0000:0000:0000:0000:0000:0000:0002"
MSG1 = "0123456789abcdef0123456789abcdef"
MSG2 = "fedcba9876543210fedcba9876543210"


class Pilot:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if k != "PILOT_RENDEZVOUS"}
        self.env["PILOT_HOME"] = str(root)
        self.rendezvous = ""

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pilot_daemon", *args], env=self.env,
                              capture_output=True, text=True, timeout=30)

    def ok(self, *args: str) -> Any:
        done = self.run("--json", *args)
        body = json.loads(done.stdout)
        assert done.returncode == 0 and body["status"] == "ok", body
        return body["data"]

    def error(self, *args: str) -> dict[str, Any]:
        done = self.run(*args, "--json")
        body = json.loads(done.stdout)
        assert done.returncode == 1 and body["status"] == "error", body
        return body


@pytest.fixture(scope="module")
def pilot() -> Iterator[Pilot]:
    root = Path(tempfile.mkdtemp(prefix="pilot-local-")) / "home"
    # State a network service would have produced, put in place before the start.
    root.mkdir(mode=0o700)
    with Store(root / "pilot.db") as store:
        now = 1_900_000_000.0  # in the future, so nothing has expired
        store.add_trust(PEER, b"\x01" * 32, "agent-b", now)
        store.add_pending("r" * 32, OTHER, b"\x02" * 32, "agent-c", "task routing", now)
        store.enqueue("ab" * 16, PEER, "text", now, data=b"queued")
    files = root / "received"
    files.mkdir(mode=0o700)
    (files / "report.pdf").write_bytes(b"%PDF")
    home = Pilot(root)
    server = RendezvousServer(root.parent / "rv")
    home.rendezvous = server.hostport
    try:
        started = home.run("daemon", "start", "--hostname", "agent-a",
                           "--rendezvous", server.hostport, "--listen", "127.0.0.1:0")
        assert started.returncode == 0, started.stderr
        inbox = Inbox(root / "inbox")
        inbox.write(IncomingMessage(MSG1, "text", PEER, "agent-b", b"run subtask: analyze X",
                                    None, 1_750_000_000.0))
        inbox.write(IncomingMessage(MSG2, "json", PEER, "agent-b", b'{"findings": 3}', MSG1,
                                    1_750_000_060.0))
        yield home
    finally:
        home.run("daemon", "stop")
        server.stop()
        shutil.rmtree(root.parent, ignore_errors=True)


def test_info(pilot: Pilot) -> None:
    info = pilot.ok("info")
    assert info["hostname"] == "agent-a"
    assert info["listen"].startswith("127.0.0.1:")
    assert info["rendezvous"].startswith(pilot.rendezvous + "#")  # the key learned, pinned
    assert len(info["node_id"].split(":")) == 8
    assert info["nat_type"] is None and info["candidates"] == [info["listen"]]
    assert info["network"]["available"] is True and info["network"]["registered"] is True
    human = pilot.run("info").stdout
    assert f"node_id             {info['node_id']}" in human
    assert "registered" in human


def test_pending_and_trust(pilot: Pilot) -> None:
    pending = pilot.ok("pending")
    assert pending == [{"node_id": OTHER, "hostname": "agent-c",
                        "justification": "task routing",
                        "received_at": "2030-03-17T17:46:40.000000Z",
                        "expires_at": "2030-03-24T17:46:40.000000Z"}]
    assert pilot.ok("trust") == [{"node_id": PEER, "hostname": "agent-b",
                                  "since": "2030-03-17T17:46:40.000000Z"}]
    table = pilot.run("pending").stdout.splitlines()
    assert table[0].split() == ["NODE_ID", "HOSTNAME", "RECEIVED", "EXPIRES", "JUSTIFICATION"]
    assert OTHER in table[1] and "task routing" in table[1]
    table = pilot.run("trust").stdout.splitlines()
    assert table[0].split() == ["NODE_ID", "HOSTNAME", "SINCE"]
    assert table[1].startswith(PEER) and "agent-b" in table[1]


def test_inbox_list_show(pilot: Pilot) -> None:
    listing = pilot.ok("inbox")
    assert [m["id"] for m in listing] == [MSG1, MSG2]
    assert all("data" not in m for m in listing)
    assert listing[1]["reply_to"] == MSG1 and listing[1]["from_hostname"] == "agent-b"
    shown = pilot.ok("inbox", "show", MSG2[:6])
    assert shown["data"] == {"findings": 3} and shown["type"] == "json"
    human = pilot.run("inbox", "show", MSG1).stdout
    assert human.rstrip().endswith("run subtask: analyze X")
    table = pilot.run("inbox").stdout.splitlines()
    assert table[0].split() == ["ID", "FROM", "TYPE", "BYTES", "RECEIVED", "REPLY_TO"]
    assert pilot.error("inbox", "show", "9999")["code"] == "not_found"


def test_received_and_outbox(pilot: Pilot) -> None:
    files = pilot.ok("received")
    assert [(f["name"], f["bytes"]) for f in files] == [("report.pdf", 4)]
    outbox = pilot.ok("outbox")
    assert [(e["id"], e["state"], e["to"]) for e in outbox] == [("ab" * 16, "queued", PEER)]
    assert "report.pdf" in pilot.run("received").stdout


def test_network_commands_answer_with_their_codes(pilot: Pilot) -> None:
    # Nobody of these names is registered at the rendezvous.
    assert pilot.error("find", "agent-z")["code"] == "not_found"
    assert pilot.error("handshake", "agent-z")["code"] == "not_found"
    assert pilot.ok("set-hostname", "agent-x")["hostname"] == "agent-x"
    assert pilot.ok("find", "agent-x")["hostname"] == "agent-x"
    assert pilot.ok("clear-hostname")["hostname"] is None
    # agent-b is trusted here, but its made-up key is registered nowhere.
    assert [(p["node_id"], p["hostname"], p["path"]) for p in pilot.ok("peers")] == [
        (PEER, "agent-b", "none")]
    for args in (["send-message", "agent-b", "--data", "hi"], ["ping", "agent-b"],
                 ["bench", "agent-b"], ["connect", "agent-b", "--message", "hi"],
                 ["send", "agent-b", "1000", "--data", "x"]):
        body = pilot.error(*args)
        assert body["code"] == "connection_failed" and "not registered" in body["message"], args
        assert body["hint"]
    # The pending request's sender cannot be reached to be told.
    assert pilot.error("approve", OTHER)["code"] == "not_found"
    for args in (["recv", "1000", "--timeout", "0.2"], ["listen", "1000", "--timeout", "0.2"]):
        assert pilot.error(*args)["code"] == "timeout", args
    for args in (["publish", "agent-b", "t", "--data", "x"],
                 ["subscribe", "agent-b", "t", "--count", "1"]):
        body = pilot.error(*args)
        assert body["code"] == "invalid_argument" and "later issue" in body["message"], args
    # Local checks still come first.
    assert pilot.error("send-message", "agent-z", "--data", "x")["code"] == "not_trusted"
    assert pilot.error("approve", PEER)["code"] == "already_exists"
    assert pilot.error("reply", "9999", "--data", "x")["code"] == "not_found"
    assert pilot.error("untrust", OTHER)["code"] == "not_found"


def test_inbox_clear_last(pilot: Pilot) -> None:
    # Named to run after the other inbox test (pytest keeps file order).
    assert pilot.run("inbox", "--clear").stdout.strip() == "removed 2 message(s) from the inbox"
    assert pilot.ok("inbox") == []
    assert os.listdir(pilot.root / "inbox") == []
    assert pilot.run("inbox").stdout.strip() == "inbox is empty"
