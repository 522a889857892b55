"""Forged and replayed trust (DESIGN 6 and 8): an accept counts only if it answers a
request this node sent, to that very node, and only once.

The notes reach the control plane already opened and verified (the mailbox checks the
sender's keys, tests/test_rendezvous_mailbox.py); what is tested here is that a genuine
but unsolicited, misdirected or replayed answer grants nothing.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pilot_daemon.control import ControlPlane, DaemonFacts
from pilot_daemon.events import EventBus
from pilot_daemon.inbox import Inbox
from pilot_daemon.names import Endpoint
from pilot_daemon.network import PeerRecord, TrustAnswerNote, UnavailableNetwork
from pilot_daemon.received import ReceivedFiles
from pilot_daemon.store import Store
from pilot_proto.identity import Identity
from pilot_proto.simulator import SeededRandom

NOW = 1_750_000_000.0


def control_plane(home: Path) -> ControlPlane:
    """A daemon's control plane on a scratch state dir, the network unavailable."""
    for sub in ("inbox", "received"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    return ControlPlane(
        identity=Identity.generate(os.urandom), store=Store(home / "pilot.db"),
        inbox=Inbox(home / "inbox"), received=ReceivedFiles(home / "received"),
        bus=EventBus(lambda: NOW), network=UnavailableNetwork(),
        facts=DaemonFacts(os.getpid(), NOW, "test", home, home / "api.sock", "127.0.0.1:1",
                          Endpoint("127.0.0.1", 7000), False, False),
        request_shutdown=lambda: None, clock=lambda: NOW,
    )


def peer(seed: int) -> PeerRecord:
    identity = Identity.generate(SeededRandom(seed).bytes)
    return PeerRecord(identity.address, identity.public_key, f"agent-{seed}")


def test_an_unsolicited_accept_grants_no_trust(tmp_path: Path) -> None:
    control = control_plane(tmp_path)
    stranger = peer(1)
    asyncio.run(control.on_trust_answer(TrustAnswerNote("ab" * 16, stranger, True)))
    assert control.store.get_trust(stranger.address) is None
    assert control.store.list_trust() == []
    control.store.close()


def test_an_accept_from_another_node_than_the_one_asked_grants_no_trust(tmp_path: Path) -> None:
    control = control_plane(tmp_path)
    asked, other = peer(2), peer(3)
    control.store.add_outgoing("cd" * 16, asked.address, asked.hostname, NOW)
    # Another node that learned (or guessed) the request id answers in its place.
    asyncio.run(control.on_trust_answer(TrustAnswerNote("cd" * 16, other, True)))
    assert control.store.get_trust(other.address) is None
    assert control.store.get_trust(asked.address) is None
    # The node asked answers: now, and only now, it is trusted.
    asyncio.run(control.on_trust_answer(TrustAnswerNote("cd" * 16, asked, True)))
    assert control.store.get_trust(asked.address) is not None
    assert control.store.get_trust(other.address) is None
    control.store.close()


def test_a_replayed_accept_after_untrust_grants_nothing(tmp_path: Path) -> None:
    control = control_plane(tmp_path)
    asked = peer(4)
    control.store.add_outgoing("ef" * 16, asked.address, asked.hostname, NOW)
    accept = TrustAnswerNote("ef" * 16, asked, True)
    asyncio.run(control.on_trust_answer(accept))
    assert control.store.get_trust(asked.address) is not None
    asyncio.run(control.untrust(asked.address))
    assert control.store.get_trust(asked.address) is None
    asyncio.run(control.on_trust_answer(accept))  # the same note, delivered again
    assert control.store.get_trust(asked.address) is None
    control.store.close()
