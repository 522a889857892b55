"""Trust inside sessions, end to end (DESIGN 8): real `pilotctl` processes with a public
agent. Trust requests and answers travel inside the session a public node accepts, and a
message the receiver does not accept ends at once in `not_trusted` on the sender's side,
never in a 30 s `timeout`.

One world per module (a rendezvous, agent-a private, agent-b public), used in file order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from pilot_processes import Agent, World, wait_for


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with World.temporary("pilot-e2e-trust-") as w:
        rv = w.rendezvous.hostport
        w.a_id = w.a.start("--hostname", "agent-a", "--rendezvous", rv)["node_id"]
        w.b_id = w.b.start("--hostname", "agent-b", "--rendezvous", rv, "--public")["node_id"]
        yield w


def inbox_count(agent: Agent) -> int:
    return len(agent.ok("inbox"))


def test_in_session_handshake_approve_then_messages(world: World) -> None:
    a, b = world.a, world.b
    body = a.error("send-message", "agent-b", "--data", "before any trust")
    assert body["code"] == "not_trusted"
    assert body["hint"] == "ask for trust first: pilotctl handshake agent-b"

    asked = a.ok("handshake", "agent-b", "--justification", "task routing")
    assert (asked["status"], asked["via"], asked["node_id"]) == (
        "requested", "session", world.b_id)
    pending = wait_for(lambda: b.ok("pending"))
    assert [(p["node_id"], p["hostname"], p["justification"]) for p in pending] == [
        (world.a_id, "agent-a", "task routing")]

    b.ok("approve", world.a_id)
    sent = a.ok("send-message", "agent-b", "--data", "run subtask: analyze document X")
    assert sent["delivered"] is True
    assert [t["node_id"] for t in a.ok("trust")] == [world.b_id]
    inbox = b.ok("inbox")
    assert [(m["from"], m["from_hostname"]) for m in inbox] == [(world.a_id, "agent-a")]


def test_untrusted_sender_fails_fast_with_not_trusted(world: World) -> None:
    a, b = world.a, world.b
    assert b.ok("untrust", world.a_id)["removed"] is True
    before = inbox_count(b)
    # b is public: a still reaches it and makes a session, but b refuses the message and
    # a hears so at once (a REFUSED frame), instead of waiting 30 s for a receipt.
    done = a.run("--json", "send-message", "agent-b", "--data", "still there?", timeout=25)
    assert done.returncode == 1, (done.stdout, done.stderr)
    body: dict[str, Any] = json.loads(done.stdout)
    assert body["status"] == "error" and body["code"] == "not_trusted", body
    assert "refused the message" in body["message"]
    assert body["hint"] == "ask for trust first: pilotctl handshake agent-b"
    human = a.run("send-message", "agent-b", "--data", "and now?", timeout=25)
    assert human.returncode == 1 and human.stderr.startswith(
        f"error: agent-b ({world.b_id}) does not trust this node")
    assert inbox_count(b) == before
    assert b.ok("pending") == []


def test_in_session_reject_starts_the_cool_down(world: World) -> None:
    b = world.b
    c = world.agent("c")
    c_id = c.start("--hostname", "agent-c", "--rendezvous", world.rendezvous.hostport)[
        "node_id"]
    assert c.ok("handshake", "agent-b", "--justification", "may I?")["via"] == "session"
    wait_for(lambda: [p for p in b.ok("pending") if p["node_id"] == c_id])
    assert b.ok("reject", c_id)["notified"] is True

    def refused() -> dict[str, Any] | None:
        done = c.run("--json", "handshake", "agent-b")
        return json.loads(done.stdout) if done.returncode == 1 else None

    body = wait_for(refused)
    assert body["code"] == "not_trusted" and "after" in body["hint"]
    assert c.ok("trust") == []


def test_private_peer_that_untrusted_us_refuses_at_the_rendezvous(world: World) -> None:
    rv = world.rendezvous.hostport
    d, e = world.agent("d"), world.agent("e")
    d_id = d.start("--hostname", "agent-d", "--rendezvous", rv)["node_id"]
    e.start("--hostname", "agent-e", "--rendezvous", rv, "--trust-auto-approve")
    # A private peer is asked through the mailbox (no introduction for strangers).
    assert d.ok("handshake", "agent-e")["via"] == "mailbox"
    assert d.ok("send-message", "agent-e", "--data", "hello")["delivered"] is True
    e.ok("untrust", d_id)
    done = d.run("--json", "send-message", "agent-e", "--data", "again", timeout=25)
    body = json.loads(done.stdout)
    assert done.returncode == 1 and body["code"] == "not_trusted", body
    assert body["hint"] == "ask for trust first: pilotctl handshake agent-e"
    # Nothing about where agent-e is: no address or port in what d is told.
    assert "127.0.0.1" not in done.stdout


def test_public_service_auto_approves_in_session(world: World) -> None:
    rv = world.rendezvous.hostport
    f, g = world.agent("f"), world.agent("g")
    f_id = f.start("--hostname", "agent-f", "--rendezvous", rv, "--public",
                   "--trust-auto-approve")["node_id"]
    g_id = g.start("--hostname", "agent-g", "--rendezvous", rv)["node_id"]
    assert g.ok("handshake", "agent-f", "--justification", "service")["via"] == "session"
    # The accept comes back in the session; the send waits for it, then is delivered.
    assert g.ok("send-message", "agent-f", "--data", "hello service")["delivered"] is True
    assert [t["node_id"] for t in f.ok("trust")] == [g_id]
    assert [t["node_id"] for t in g.ok("trust")] == [f_id]
    assert f.ok("pending") == []
