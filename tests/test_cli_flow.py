"""The agent-to-agent flow of issue 5, typed as pilotctl commands, against two daemons on
the loopback network (the real network service is wired in later; the daemons, their
sockets, the local API and every pilotctl process here are real)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pilot_daemon.client import LocalClient
from pilot_daemon.daemon import DaemonOptions
from pilot_daemon.paths import StateDir
from pilot_daemon.testing import DaemonThread, Switchboard


class Agent:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = dict(os.environ, PILOT_HOME=str(home))

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pilot_daemon", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def ok(self, *args: str) -> Any:
        done = self.run("--json", *args)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)["data"]


@pytest.fixture
def agents() -> Iterator[tuple[Agent, Agent, DaemonThread]]:
    root = Path(tempfile.mkdtemp(prefix="pilot-flow-"))
    board = Switchboard()
    runner = DaemonThread()
    try:
        for name in ("a", "b"):
            runner.start(root / name,
                         DaemonOptions(hostname=f"agent-{name}", rendezvous="127.0.0.1:9",
                                       listen="127.0.0.1:0"),
                         board.network())
        yield Agent(root / "a"), Agent(root / "b"), runner
    finally:
        runner.close()
        shutil.rmtree(root, ignore_errors=True)


def test_handshake_approve_message_reply(agents: tuple[Agent, Agent, DaemonThread]) -> None:
    a, b, _ = agents
    a_id = a.ok("info")["node_id"]
    requested = a.ok("handshake", "agent-b", "--justification", "task routing")
    assert requested["status"] == "requested"
    pending = b.ok("pending")
    assert [(p["node_id"], p["hostname"], p["justification"]) for p in pending] == [
        (a_id, "agent-a", "task routing")]
    approved = b.run("approve", a_id)
    assert approved.returncode == 0, approved.stderr
    sent = a.run("send-message", "agent-b", "--data", "run subtask: analyze document X")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("delivered message ")
    files = os.listdir(b.home / "inbox")
    assert len(files) == 1
    entry = json.loads((b.home / "inbox" / files[0]).read_text())
    assert entry["data"] == "run subtask: analyze document X"
    assert entry["from"] == a_id and entry["from_hostname"] == "agent-a"
    reply = b.ok("reply", entry["id"], "--data", "done: 3 findings")
    assert reply["reply_to"] == entry["id"]
    inbox_a = a.ok("inbox")
    assert [(m["reply_to"], m["from_hostname"]) for m in inbox_a] == [(entry["id"], "agent-b")]
    assert a.ok("inbox", "show", inbox_a[0]["id"])["data"] == "done: 3 findings"
    assert [t["hostname"] for t in a.ok("trust")] == ["agent-b"]
    assert [t["hostname"] for t in b.ok("trust")] == ["agent-a"]


def test_send_message_wait_prints_the_reply(agents: tuple[Agent, Agent, DaemonThread]) -> None:
    a, b, _ = agents
    a.ok("handshake", "agent-b")
    b.ok("approve", a.ok("info")["node_id"])
    replied = threading.Event()

    def responder() -> None:
        for event in LocalClient(StateDir(b.home)).stream("/v1/events?kinds=message",
                                                          timeout=30):
            if event["kind"] == "message":
                b.ok("reply", event["data"]["id"], "--type", "json",
                     "--data", '{"findings": 3}')
                replied.set()
                return

    thread = threading.Thread(target=responder)
    thread.start()
    done = a.run("--json", "send-message", "agent-b", "--data", "analyze X", "--wait", "20")
    thread.join(30)
    assert replied.is_set()
    assert done.returncode == 0, done.stdout
    data = json.loads(done.stdout)["data"]
    assert data["reply"]["data"] == {"findings": 3}
    assert data["reply"]["reply_to"] == data["id"]


def test_bad_input_through_the_cli(agents: tuple[Agent, Agent, DaemonThread],
                                   tmp_path: Path) -> None:
    a, b, _ = agents
    unknown = json.loads(a.run("--json", "handshake", "agent-zz").stdout)
    assert unknown["code"] == "not_found"
    taken = json.loads(b.run("--json", "set-hostname", "agent-a").stdout)
    assert taken["code"] == "already_exists"
    untrusted = json.loads(a.run("--json", "send-message", "agent-b", "--data", "x").stdout)
    assert untrusted["code"] == "not_trusted" and "handshake" in untrusted["hint"]
    a.ok("handshake", "agent-b")
    b.ok("approve", a.ok("info")["node_id"])
    payload = tmp_path / "report.txt"
    payload.write_text("findings")
    assert a.ok("send-file", "agent-b", str(payload))["name"] == "report.txt"
    assert a.ok("send-file", "agent-b", str(payload))["name"] == "report (1).txt"
    assert sorted(f["name"] for f in b.ok("received")) == ["report (1).txt", "report.txt"]
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)))
    a.ok("send-message", "agent-b", "--file", str(binary), "--type", "binary")
    entry = b.ok("inbox")[0]
    assert entry["type"] == "binary" and entry["bytes"] == 256
    shown = b.ok("inbox", "show", entry["id"])
    assert shown["encoding"] == "base64"
    assert b.ok("peers")[0]["path"] == "direct"
    assert b.ok("ping", "agent-a", "--count", "2")["received"] == 2
    untrusted_now = a.ok("untrust", b.ok("info")["node_id"])
    assert untrusted_now["removed"] is True
    assert a.ok("trust") == []
