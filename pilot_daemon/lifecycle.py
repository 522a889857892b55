"""`pilotctl daemon start | stop | status`: pilotctl's side of the daemon's life.

start: the daemon runs as a detached child (`python -m pilot_daemon daemon start
  --foreground`, new session, cwd /, output to daemon.log). It reports readiness, or
  its start-up error with a DESIGN 9 code, as one JSON line on a pipe whose write end
  it inherits (fd number in PILOT_READY_FD). `start` prints that and returns: the
  daemon is up, or the reason it is not, and a failed child has exited.
stop: `POST /v1/shutdown`, then wait until the process has exited (pidfd) and the
  lock is free; the daemon closes its UDP socket and removes its API socket before
  that. A daemon that does not answer gets SIGTERM, and SIGKILL as a last resort.
status: `GET /v1/health`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import time

from .client import LocalClient
from .errors import ErrorCode, PilotctlError
from .limits import START_TIMEOUT_SECONDS, STOP_TIMEOUT_SECONDS
from .lockfile import lock_is_held, read_lock_pid
from .names import check_hostname, parse_endpoint
from .paths import StateDir

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

READY_FD_ENV = "PILOT_READY_FD"  # same name as daemon.READY_FD_ENV (not imported: asyncio)


def _options_argv(ns: argparse.Namespace) -> list[str]:
    """Check the start flags' values (exit 1 on bad ones) and rebuild them for the child."""
    argv: list[str] = []
    if ns.hostname is not None:
        argv += ["--hostname", check_hostname(ns.hostname)]
    if ns.rendezvous is not None:
        parse_endpoint(ns.rendezvous, what="rendezvous", allow_key=True)
        argv += ["--rendezvous", ns.rendezvous]
    if ns.listen is not None:
        parse_endpoint(ns.listen, what="listen address", allow_port_zero=True)
        argv += ["--listen", ns.listen]
    if ns.public:
        argv.append("--public")
    if ns.trust_auto_approve:
        argv.append("--trust-auto-approve")
    return argv


def run_foreground(ns: argparse.Namespace, state: StateDir, json_output: bool) -> int:
    """`daemon start --foreground`: run the daemon in this process until it stops."""
    _options_argv(ns)
    from .daemon import DaemonOptions, run_daemon

    options = DaemonOptions(
        hostname=ns.hostname, rendezvous=ns.rendezvous, listen=ns.listen,
        public=ns.public, trust_auto_approve=ns.trust_auto_approve,
    )
    return run_daemon(state, options, json_output=json_output)


def start(ns: argparse.Namespace, state: StateDir) -> Any:
    import subprocess

    argv = _options_argv(ns)
    state.ensure()
    if lock_is_held(state.lock):
        pid = read_lock_pid(state.lock)
        raise PilotctlError(
            ErrorCode.ALREADY_EXISTS,
            f"a daemon is already running on {state.root}" + (f" (pid {pid})" if pid else ""),
            "stop it first (pilotctl daemon stop), or use another state dir (PILOT_HOME)",
        )
    read_end, write_end = os.pipe()
    env = dict(os.environ, PILOT_HOME=str(state.root), **{READY_FD_ENV: str(write_end)})
    log_fd = os.open(state.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "pilot_daemon", "daemon", "start", "--foreground", *argv],
            stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, pass_fds=(write_end,),
            start_new_session=True, cwd="/", env=env,
        )
    finally:
        os.close(write_end)
        os.close(log_fd)
    try:
        line = _read_ready_line(read_end, START_TIMEOUT_SECONDS)
    finally:
        os.close(read_end)
    if line is None:
        child.terminate()
        raise PilotctlError(
            ErrorCode.TIMEOUT,
            f"the daemon did not report readiness within {START_TIMEOUT_SECONDS:g} s",
            f"see {state.log}",
        )
    if not line:
        code = child.wait(timeout=5)
        raise PilotctlError(
            ErrorCode.INTERNAL,
            f"the daemon exited during start-up (exit status {code})",
            f"see {state.log}",
        )
    try:
        envelope = json.loads(line)
    except ValueError:
        raise PilotctlError(ErrorCode.INTERNAL, "the daemon sent a malformed readiness report",
                            f"see {state.log}") from None
    if envelope.get("status") == "ok":
        child.returncode = 0  # detached on purpose: no "still running" warning at exit
        return envelope.get("data")
    with contextlib.suppress(Exception):
        child.wait(timeout=5)  # it exits after reporting; do not leave a zombie behind
    raise PilotctlError.from_envelope(envelope)


def _read_ready_line(fd: int, timeout: float) -> bytes | None:
    """The readiness line; b"" if the child closed the pipe without one, None on timeout."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def stop(state: StateDir) -> dict[str, Any]:
    if not lock_is_held(state.lock):
        _remove_stale_socket(state)
        raise PilotctlError(
            ErrorCode.NOT_RUNNING,
            f"the pilot daemon is not running (state dir {state.root})",
            "nothing to stop",
        )
    pid = read_lock_pid(state.lock)
    pidfd = _open_pidfd(pid)
    try:
        try:
            LocalClient(state, timeout=5).request("POST", "/v1/shutdown")
        except PilotctlError:
            if pid is not None:  # not answering: fall back on the signal
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        if not _wait_gone(state, pidfd, STOP_TIMEOUT_SECONDS) and pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not _wait_gone(state, pidfd, 5.0):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                if not _wait_gone(state, pidfd, 5.0):
                    raise PilotctlError(ErrorCode.TIMEOUT,
                                        f"the daemon (pid {pid}) did not exit")
    finally:
        if pidfd is not None:
            os.close(pidfd)
    _remove_stale_socket(state)  # only left behind if it had to be killed
    return {"pid": pid, "stopped": True}


def _open_pidfd(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


def _wait_gone(state: StateDir, pidfd: int | None, timeout: float) -> bool:
    """Wait until the process has exited (pidfd readable) and the lock is released."""
    deadline = time.monotonic() + timeout
    if pidfd is not None:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(max(0.0, timeout) * 1000):
            return False
    while lock_is_held(state.lock):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _remove_stale_socket(state: StateDir) -> None:
    if lock_is_held(state.lock):
        return
    target = state.connect_path()
    with contextlib.suppress(OSError):
        target.unlink()
    if state.socket_link.is_symlink():
        with contextlib.suppress(OSError):
            state.socket_link.unlink()


def status(state: StateDir) -> Any:
    return LocalClient(state, timeout=5).request("GET", "/v1/health")


def responsive(state: StateDir) -> bool:
    try:
        status(state)
    except PilotctlError:
        return False
    return True
