"""`pilotctl daemon start | stop | status` with real processes (DESIGN 9).

Every test has its own PILOT_HOME and its own rendezvous server (the daemon registers
before it reports readiness), binds UDP on 127.0.0.1 port 0 (never a fixed port) and
stops its daemons and server in teardown, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pilot_processes import RendezvousServer

PILOTCTL = [sys.executable, "-m", "pilot_daemon"]
RENDEZVOUS = ""  # HOST:PORT of the running test's rendezvous server (fixture below)


@pytest.fixture(autouse=True)
def rendezvous_server() -> Iterator[RendezvousServer]:
    global RENDEZVOUS
    root = Path(tempfile.mkdtemp(prefix="pilot-life-rv-"))
    server = RendezvousServer(root / "rv")
    RENDEZVOUS = server.hostport
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


class Home:
    """One state dir and the pilotctl commands run against it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("PILOT_RENDEZVOUS", "NOTIFY_SOCKET")}
        self.env["PILOT_HOME"] = str(root)

    def run(self, *args: str, env: dict[str, str] | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*PILOTCTL, *args], env=env or self.env, capture_output=True,
                              text=True, timeout=timeout)

    def json(self, *args: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        done = self.run("--json", *args, **kwargs)
        return done.returncode, json.loads(done.stdout)

    def start(self, *args: str) -> dict[str, Any]:
        code, envelope = self.json("daemon", "start", "--rendezvous", RENDEZVOUS,
                                   "--listen", "127.0.0.1:0", *args)
        assert code == 0, envelope
        return envelope["data"]

    def stop_quietly(self) -> None:
        if (self.root / "daemon.lock").exists():
            self.run("daemon", "stop")


@pytest.fixture
def homes() -> Iterator[Any]:
    made: list[Home] = []
    roots: list[Path] = []

    def make(path: Path | None = None) -> Home:
        if path is None:
            path = Path(tempfile.mkdtemp(prefix="pilot-life-")) / "home"
            roots.append(path.parent)
        home = Home(path)
        made.append(home)
        return home

    yield make
    for home in made:
        home.stop_quietly()
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Running (an exited daemon may linger a moment as a zombie until init reaps it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] not in ("Z", "X")


def test_start_status_stop(homes: Any) -> None:
    home = homes()
    info = home.start("--hostname", "agent-a")
    assert stat.S_IMODE(os.stat(home.root).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home.root / "identity.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home.root / "api.sock").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home.root / "pilot.db").st_mode) == 0o600
    assert (home.root / "daemon.log").exists()
    assert info["hostname"] == "agent-a"
    assert info["rendezvous"].split("#")[0] == RENDEZVOUS  # with the key learned on first use
    pid = info["pid"]
    assert pid_alive(pid) and pid != os.getpid()
    assert home.run("daemon", "status", "--check").returncode == 0
    assert home.run("daemon", "status", "--check").stdout == ""
    code, status = home.json("daemon", "status")
    assert code == 0 and status["data"]["pid"] == pid
    assert "running" in home.run("daemon", "status").stdout
    code, stopped = home.json("daemon", "stop")
    assert code == 0 and stopped["data"] == {"pid": pid, "stopped": True}
    # `stop` returned: the process is gone, and so are its socket and UDP port.
    assert not pid_alive(pid)
    assert not (home.root / "api.sock").exists()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", int(info["listen"].rsplit(":", 1)[1])))
    done = home.run("daemon", "status", "--check")
    assert (done.returncode, done.stdout, done.stderr) == (1, "", "")
    code, envelope = home.json("daemon", "status")
    assert code == 1 and envelope["code"] == "not_running"
    code, envelope = home.json("daemon", "stop")
    assert code == 1 and envelope["code"] == "not_running"


def test_restart_keeps_identity_port_rendezvous_and_hostname(homes: Any) -> None:
    home = homes()
    first = home.start("--hostname", "agent-a")
    home.run("daemon", "stop")
    # No flags at all: everything comes back from the state dir.
    code, envelope = home.json("daemon", "start")
    assert code == 0, envelope
    second = envelope["data"]
    assert second["node_id"] == first["node_id"]
    assert second["listen"] == first["listen"]
    assert second["rendezvous"] == first["rendezvous"] and second["hostname"] == "agent-a"
    assert second["rendezvous"].startswith(RENDEZVOUS + "#")


def test_second_daemon_is_refused(homes: Any) -> None:
    home = homes()
    info = home.start()
    code, envelope = home.json("daemon", "start")
    assert code == 1 and envelope["code"] == "already_exists"
    assert str(info["pid"]) in envelope["message"]
    # Even when launched directly in the foreground, past the CLI's own check.
    done = home.run("daemon", "start", "--foreground", "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["code"] == "already_exists"
    assert home.run("daemon", "status", "--check").returncode == 0


def test_no_rendezvous_is_invalid_argument_with_both_ways_in_hint(homes: Any) -> None:
    home = homes()
    code, envelope = home.json("daemon", "start", "--listen", "127.0.0.1:0")
    assert code == 1 and envelope["code"] == "invalid_argument"
    assert "--rendezvous" in envelope["hint"] and "PILOT_RENDEZVOUS" in envelope["hint"]
    assert not (home.root / "api.sock").exists()
    # The environment variable is the second way.
    env = dict(home.env, PILOT_RENDEZVOUS=RENDEZVOUS)
    code, envelope = home.json("daemon", "start", "--listen", "127.0.0.1:0", env=env)
    assert code == 0 and envelope["data"]["rendezvous"].split("#")[0] == RENDEZVOUS


def test_port_in_use_fails_at_once_with_a_code(homes: Any) -> None:
    home = homes()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        started = time.monotonic()
        code, envelope = home.json("daemon", "start", "--rendezvous", RENDEZVOUS,
                                   "--listen", f"127.0.0.1:{port}")
        assert time.monotonic() - started < 10
    assert code == 1 and envelope["code"] == "already_exists"
    assert str(port) in envelope["message"] and "--listen" in envelope["hint"]
    assert home.run("daemon", "status", "--check").returncode == 1
    assert not (home.root / "api.sock").exists()


def test_bad_flag_values_exit_1(homes: Any) -> None:
    home = homes()
    for args in (["--hostname", "Bad_Name"], ["--listen", "nowhere"],
                 ["--rendezvous", "127.0.0.1:99999"], ["--rendezvous", "h:1#bad key"]):
        code, envelope = home.json("daemon", "start", *args)
        assert code == 1 and envelope["code"] == "invalid_argument", args
    assert not home.root.exists() or not (home.root / "api.sock").exists()


def test_busy_poll_setting_is_checked_and_zero_is_accepted(homes: Any) -> None:
    home = homes()
    for bad in ("fast", "-5", "2e6"):
        env = dict(home.env, PILOT_BUSY_POLL_US=bad)
        code, envelope = home.json("daemon", "start", "--rendezvous", RENDEZVOUS,
                                   "--listen", "127.0.0.1:0", env=env)
        assert code == 1 and envelope["code"] == "invalid_argument", bad
        assert "PILOT_BUSY_POLL_US" in envelope["message"] and envelope["hint"]
    env = dict(home.env, PILOT_BUSY_POLL_US="0")
    code, envelope = home.json("daemon", "start", "--rendezvous", RENDEZVOUS,
                               "--listen", "127.0.0.1:0", env=env)
    assert code == 0, envelope
    assert home.run("daemon", "status", "--check").returncode == 0


def test_sigterm_is_a_clean_shutdown(homes: Any) -> None:
    home = homes()
    pid = home.start()["pid"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not pid_alive(pid)
    assert not (home.root / "api.sock").exists()
    log = (home.root / "daemon.log").read_text()
    assert "daemon stopped" in log


def test_after_sigkill_a_new_start_works(homes: Any) -> None:
    home = homes()
    first = home.start()
    os.kill(first["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(first["pid"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (home.root / "api.sock").exists()  # stale, left behind
    code, envelope = home.json("info")
    assert code == 1 and envelope["code"] == "not_running"
    second = home.start()
    assert second["node_id"] == first["node_id"] and second["pid"] != first["pid"]


def test_foreground_reports_readiness_and_stops_on_sigterm(homes: Any) -> None:
    home = homes()
    proc = subprocess.Popen(
        [*PILOTCTL, "--json", "daemon", "start", "--foreground", "--rendezvous", RENDEZVOUS,
         "--listen", "127.0.0.1:0"],
        env=home.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["status"] == "ok" and ready["data"]["pid"] == proc.pid
        assert home.run("daemon", "status", "--check").returncode == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)
    assert "daemon stopped" in proc.stderr.read()  # type: ignore[union-attr]
    assert not (home.root / "api.sock").exists()


def test_sd_notify_readiness(homes: Any, tmp_path: Path) -> None:
    home = homes()
    notify = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(notify))
        listener.settimeout(15)
        env = dict(home.env, NOTIFY_SOCKET=str(notify))
        proc = subprocess.Popen(
            [*PILOTCTL, "daemon", "start", "--foreground", "--rendezvous", RENDEZVOUS,
             "--listen", "127.0.0.1:0"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            message = listener.recv(1024).decode()
            assert "READY=1" in message and f"MAINPID={proc.pid}" in message
            proc.terminate()
            assert listener.recv(1024) == b"STOPPING=1"
            assert proc.wait(10) == 0
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(5)


def test_deep_state_dir_through_pilotctl(homes: Any) -> None:
    root = Path(tempfile.mkdtemp(prefix="pilot-deep-"))
    try:
        home = homes(root / ("x" * 70) / ("y" * 50))
        home.start()
        assert (home.root / "api.sock").is_symlink()
        target = Path(os.readlink(home.root / "api.sock"))
        assert str(target).startswith(f"/tmp/pilot-{os.getuid()}/")
        code, info = home.json("info")
        assert code == 0 and info["data"]["socket"] == str(target)
        home.run("daemon", "stop")
        assert not target.exists() and not (home.root / "api.sock").is_symlink()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_start_failure_inside_the_child_is_reported(homes: Any) -> None:
    home = homes()
    home.root.mkdir(mode=0o700, parents=True)
    (home.root / "identity.key").write_text("garbage\n")
    os.chmod(home.root / "identity.key", 0o600)
    code, envelope = home.json("daemon", "start", "--rendezvous", RENDEZVOUS,
                               "--listen", "127.0.0.1:0")
    assert code == 1 and envelope["code"] == "internal"
    assert "identity" in envelope["message"] and envelope["hint"]
    os.chmod(home.root / "identity.key", 0o644)
    code, envelope = home.json("daemon", "start")
    assert code == 1 and envelope["code"] == "invalid_argument"
    assert "chmod 600" in envelope["hint"]
