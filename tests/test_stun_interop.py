"""STUN against real implementations on loopback (DESIGN section 10, issue 6).

(a) our sans-IO client and NAT classifier, driven by a small blocking UDP loop, against a
coturn `turnserver` this test starts on free ports of 127.0.0.1 and 127.0.0.2 (two IPs, so
coturn enables RFC 5780 and answers CHANGE-REQUEST from its other addresses);
(b) coturn's stock `turnutils_stunclient` against our `answer_binding`, served from a
thread. Skipped, with the reason, only when coturn is missing and we are not root; as
root, a missing coturn is installed through scripts/system-deps.sh.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest

from pilot_proto.stun_client import (
    BindingSucceeded,
    NatBehaviour,
    NatClassifier,
    StunClient,
    StunClientConfig,
)
from pilot_proto.stun_server import answer_binding
from pilot_proto.transmit import Addr, Transmit

REPO = Path(__file__).resolve().parent.parent
ALT_IP = "127.0.0.2"  # any 127/8 address is loopback on Linux


def _coturn_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None and os.geteuid() == 0:
        # As root, install what scripts/system-packages.txt lists (coturn among them).
        try:
            subprocess.run(["bash", "scripts/system-deps.sh"], cwd=REPO, check=False, timeout=600)
        except (OSError, subprocess.SubprocessError):
            pass
        path = shutil.which(name)
    if path is None and os.geteuid() == 0:
        pytest.fail(f"{name} missing although root: scripts/system-deps.sh did not install coturn")
    if path is None:
        pytest.skip(f"{name} missing: coturn is not installed and we are not root to install it")
    return path


class SansIO(Protocol):
    def datagrams_to_send(self, now: float) -> list[Transmit]: ...
    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> bool: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...


def drive(endpoint: SansIO, sock: socket.socket, done: Callable[[], bool], limit: float) -> None:
    """The smallest possible binding: send, wait for a datagram or the timer, repeat."""
    give_up = time.monotonic() + limit
    while not done():
        now = time.monotonic()
        assert now < give_up, "no result in time"
        for tx in endpoint.datagrams_to_send(now):
            sock.sendto(tx.data, tx.addr)
        timer = endpoint.get_timer()
        wait = give_up - now if timer is None else timer - now
        sock.settimeout(min(max(wait, 0.001), 0.5))
        try:
            data, addr = sock.recvfrom(65535)
        except TimeoutError:
            if timer is not None and time.monotonic() >= timer:
                endpoint.handle_timer(time.monotonic())
            continue
        endpoint.receive_datagram(data, (addr[0], addr[1]), time.monotonic())


def _free_port_pair() -> int:
    """A UDP port P with P and P + 1 free on both loopback addresses (coturn takes both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port >= 65535:
            continue
        held = []
        try:
            for ip in ("127.0.0.1", ALT_IP):
                for p in (port, port + 1):
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    held.append(s)
                    s.bind((ip, p))
            return port
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no free pair of UDP ports on loopback")


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[tuple[Addr, Addr]]:
    """A real coturn STUN server; yields (primary, alternate) addresses."""
    binary = _coturn_binary("turnserver")
    port = _free_port_pair()
    args = [
        binary,
        "-n",  # no config file: Debian's /etc/turnserver.conf must not change the test
        "--listening-ip", "127.0.0.1",
        "--listening-ip", ALT_IP,
        "--listening-port", str(port),
        "--alt-listening-port", str(port + 1),
        "--stun-only",
        "--no-tls",
        "--no-dtls",
        "--no-tcp",
        "--no-cli",
        "--relay-threads", "1",
        "--log-file", str(tmp_path / "turnserver.log"),
        "--simple-log",
        "--pidfile", str(tmp_path / "turnserver.pid"),
        "--userdb", str(tmp_path / "turndb"),
    ]  # fmt: skip
    process = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    primary, alternate = ("127.0.0.1", port), (ALT_IP, port + 1)
    try:
        _wait_until_answering(primary, process)
        yield primary, alternate
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _one_binding(client: StunClient, server: Addr, limit: float) -> tuple[Addr, bytes]:
    """Run one Binding transaction from a fresh socket; (that socket's address, tid)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        tid = client.start_binding(server, time.monotonic())
        drive(client, sock, lambda: client.pending == 0, limit=limit)
        local = sock.getsockname()
    return (local[0], local[1]), tid


def _wait_until_answering(server: Addr, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert process.poll() is None, f"turnserver exited with {process.returncode}"
        client = StunClient(os.urandom, StunClientConfig(rto=0.1, rc=3, rm=2))
        _one_binding(client, server, limit=5)
        if isinstance(client.next_result(), BindingSucceeded):
            return
    raise AssertionError("turnserver did not answer within 15 s")


# ---------------------------------------------------------------------- (a) our client, coturn


def test_our_client_against_coturn(coturn: tuple[Addr, Addr]) -> None:
    primary, alternate = coturn
    client = StunClient(os.urandom)
    local, tid = _one_binding(client, primary, limit=10)
    result = client.next_result()
    assert isinstance(result, BindingSucceeded), result
    assert result.transaction_id == tid
    assert result.mapped_address == local  # no NAT on loopback
    assert result.other_address == alternate
    assert result.response_origin == primary
    assert 0 <= result.rtt < 5
    drops = {k: v for k, v in client.stats.items() if k.startswith("drop_")}
    assert drops == {}


def test_our_nat_classifier_against_coturn(coturn: tuple[Addr, Addr]) -> None:
    primary, alternate = coturn
    classifier = NatClassifier(os.urandom, primary)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        classifier.start(time.monotonic())
        drive(classifier, sock, lambda: classifier.done, limit=30)
        local = sock.getsockname()
    result = classifier.result
    assert result is not None
    # Loopback has no NAT: coturn answered the CHANGE-REQUEST from 127.0.0.2 and we got it.
    assert result.mapping is NatBehaviour.ENDPOINT_INDEPENDENT, result.notes
    assert result.filtering is NatBehaviour.ENDPOINT_INDEPENDENT, result.notes
    assert result.reflexive_addresses == ((local[0], local[1]),)
    assert result.other_address == alternate


# ---------------------------------------------------------------------- (b) coturn's client, ours


class BindingServer:
    """Our answerer on a UDP socket, in a thread: records what it saw and where it answered."""

    def __init__(self, other_address: Addr | None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.address: Addr = self.sock.getsockname()
        self.other_address = other_address
        self.log: list[tuple[Addr, int, Addr | None]] = []  # (source, request size, answer to)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            source = (addr[0], addr[1])
            answer = answer_binding(
                data, source, other_address=self.other_address, response_origin=self.address
            )
            self.log.append((source, len(data), None if answer is None else answer.addr))
            if answer is not None:
                self.sock.sendto(answer.data, answer.addr)

    def __enter__(self) -> BindingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def _stunclient(binary: str, server: Addr) -> str:
    done = subprocess.run(
        [binary, "-p", str(server[1]), server[0]],
        capture_output=True,
        text=True,
        timeout=20,  # it blocks forever on a lost answer; never let it hang the suite
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_coturn_stunclient_against_our_server() -> None:
    binary = _coturn_binary("turnutils_stunclient")
    with BindingServer(other_address=None) as server:
        out = _stunclient(binary, server.address)
    [(source, _, answered_to)] = server.log
    assert answered_to == source
    assert f"UDP reflexive addr: {source[0]}:{source[1]}" in out
    assert "RFC 5780" not in out  # no OTHER-ADDRESS offered, so no RFC 5780 tests


def test_coturn_stunclient_rfc5780_mode_against_our_server() -> None:
    # With OTHER-ADDRESS in the first answer, coturn's client runs its RFC 5780 tests:
    # CHANGE-REQUEST with RESPONSE-PORT (it then listens on the next port up), then
    # CHANGE-REQUEST with 1500 bytes of PADDING. One socket cannot change address, so both
    # get 420, the first one at the RESPONSE-PORT, or the client would wait forever.
    binary = _coturn_binary("turnutils_stunclient")
    other = ("127.0.0.1", 9)
    with BindingServer(other_address=other) as server:
        out = _stunclient(binary, server.address)
    assert len(server.log) == 3
    (first, _, to1), (second, _, to2), (third, size3, to3) = server.log
    assert to1 == first
    assert to2 == (second[0], second[1] + 1)  # RESPONSE-PORT honoured
    assert to3 == third == to2  # the third request comes from that next socket
    assert size3 > 1500  # PADDING: the answer stayed small (amplification is bounded)
    assert f"UDP reflexive addr: {first[0]}:{first[1]}" in out
    assert f"Other addr: : {other[0]}:{other[1]}" in out
    assert f"Response origin: : {server.address[0]}:{server.address[1]}" in out
    assert len(re.findall(r"error 420", out)) == 2
