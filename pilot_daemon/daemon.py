"""The daemon process: state dir, lock, identity, UDP socket, local API, network service.

`Daemon.serve()` runs one daemon to completion:

1. `$PILOT_HOME` created 0700, `daemon.log` opened;
2. `daemon.lock` taken with flock: a second daemon on the same state dir is refused
   (`already_exists`), and the lock's release tells `daemon stop` the daemon is gone;
3. identity loaded, or created on first start (0600, never regenerated);
4. database opened (migrated), crash leftovers settled;
5. rendezvous resolved: `--rendezvous`, else `PILOT_RENDEZVOUS`, else the saved one;
6. UDP socket bound: `--listen`, else the saved address, else a free port (saved);
7. local API socket up, network service started;
8. readiness reported (pipe to `daemon start`, sd_notify, or a line on stdout);
9. run until SIGTERM/SIGINT or `POST /v1/shutdown`, then close everything in reverse and
   release the lock last.

Any failure before readiness is reported with its DESIGN 9 code and the process exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .control import ControlPlane, DaemonFacts
from .errors import ErrorCode, PilotctlError, ok_envelope
from .events import EventBus
from .httpserver import UnixHttpServer
from .inbox import Inbox
from .limits import HOUSEKEEPING_INTERVAL_SECONDS
from .localapi import start_local_api
from .lockfile import acquire_lock
from .names import Endpoint, check_hostname, parse_endpoint
from .network import NetworkConfig, NetworkService, default_network_service
from .paths import StateDir
from .received import ReceivedFiles
from .store import Store, StoreError

log = logging.getLogger("pilot_daemon")

__all__ = ["Daemon", "DaemonOptions", "run_daemon"]

READY_FD_ENV = "PILOT_READY_FD"
RENDEZVOUS_ENV = "PILOT_RENDEZVOUS"
DEFAULT_LISTEN = "0.0.0.0:0"


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    """The `daemon start` flags, as typed."""

    hostname: str | None = None
    rendezvous: str | None = None
    listen: str | None = None
    public: bool = False
    trust_auto_approve: bool = False


class Daemon:
    """One daemon on one state dir. `serve()` from a fresh event loop."""

    def __init__(
        self,
        state: StateDir,
        options: DaemonOptions,
        *,
        network_factory: Callable[[], NetworkService] = default_network_service,
        environ: dict[str, str] | None = None,
        report_ready: Callable[[dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.options = options
        self._network_factory = network_factory
        self._environ = dict(os.environ if environ is None else environ)
        self._report_ready = report_ready
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.ready = threading.Event()  # for in-process embedding (tests)
        self.control: ControlPlane | None = None

    # --- stopping, from anywhere ---

    def request_stop(self) -> None:
        """Ask the daemon to shut down; safe from any thread or a signal handler."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)

    # --- the run ---

    async def serve(self) -> None:
        """Start, report readiness, run until asked to stop, shut down. Raises
        PilotctlError for start-up failures (after undoing what was started)."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            self._install_signal_handlers(stack)
            self.state.ensure()
            lock_fd = acquire_lock(self.state.lock)
            stack.callback(os.close, lock_fd)  # released last: `daemon stop` waits on it

            identity = load_or_create_identity(self.state.identity)
            store = open_store(self.state.database)
            stack.callback(store.close)
            settings = store.load_settings()

            rendezvous = resolve_rendezvous(self.options.rendezvous, self._environ, settings)
            hostname = (
                check_hostname(self.options.hostname) if self.options.hostname
                else settings.hostname
            )
            wanted = parse_endpoint(
                self.options.listen or settings.udp_listen or DEFAULT_LISTEN,
                what="listen address", allow_port_zero=True,
            )
            udp = bind_udp(wanted)
            stack.callback(udp.close)
            listen = Endpoint(wanted.host, udp.getsockname()[1])  # port 0 -> the one chosen

            bus = EventBus(self._clock)
            stack.callback(bus.close)
            network = self._network_factory()
            socket_path = self.state.bind_path()
            facts = DaemonFacts(
                pid=os.getpid(),
                started_at=self._clock(),
                version=_version(),
                state_dir=self.state.root,
                socket_path=socket_path,
                listen=str(listen),
                rendezvous=rendezvous,
                public=self.options.public,
                trust_auto_approve=self.options.trust_auto_approve,
            )
            control = ControlPlane(
                identity=identity,
                store=store,
                inbox=Inbox(self.state.inbox),
                received=ReceivedFiles(self.state.received),
                bus=bus,
                network=network,
                facts=facts,
                request_shutdown=self.request_stop,
                clock=self._clock,
            )
            self.control = control
            control.recover()

            server = await start_api(control, self.state, socket_path)
            stack.push_async_callback(server.close)
            stack.callback(_remove_link, self.state, socket_path)

            # Saved before the network starts: a key it learns on first use (XX) is then
            # pinned on top of this, not overwritten by it.
            store.update_settings(rendezvous=rendezvous.hostport, rendezvous_key=rendezvous.key)
            await network.start(
                NetworkConfig(
                    identity=identity,
                    udp_socket=udp,
                    rendezvous=rendezvous,
                    hostname=hostname,
                    public=self.options.public,
                    trust_auto_approve=self.options.trust_auto_approve,
                    handshake_floor_ns=settings.handshake_floor_ns,
                    state_dir=self.state.root,
                ),
                control,
            )
            stack.push_async_callback(network.stop)

            store.update_settings(udp_listen=str(listen), hostname=hostname)
            log.info(
                "daemon up: pid %d, node %s, hostname %s, udp %s, rendezvous %s, socket %s",
                os.getpid(), identity.address, hostname, listen, rendezvous, socket_path,
            )
            status = network.status()
            if not status.available:
                log.warning("network commands will fail with connection_failed: %s",
                            status.detail)
            info = await control.info()
            self.ready.set()
            if self._report_ready is not None:
                self._report_ready(info)

            housekeeping = asyncio.ensure_future(self._housekeeping(control))
            stack.callback(housekeeping.cancel)
            await self._stop.wait()
            log.info("daemon stopping")
            bus.publish("daemon.stopping", {"pid": os.getpid()})
            bus.close()  # ends event streams cleanly before the API server waits on them
            _sd_notify(self._environ, "STOPPING=1")
        log.info("daemon stopped")

    @staticmethod
    async def _housekeeping(control: ControlPlane) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_SECONDS)
            try:
                control.housekeeping()
            except Exception:
                log.exception("housekeeping failed")

    def _install_signal_handlers(self, stack: contextlib.AsyncExitStack) -> None:
        # Installed before anything starts: a SIGTERM that arrives during start-up (or
        # right after readiness is reported) must mean "stop cleanly", not "die now".
        if threading.current_thread() is not threading.main_thread():
            return  # embedded in a test's thread: stopped with request_stop()
        assert self._loop is not None and self._stop is not None
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(signum, self._stop.set)
            stack.callback(self._loop.remove_signal_handler, signum)
        self._loop.add_signal_handler(signal.SIGHUP, lambda: None)  # no terminal to lose
        stack.callback(self._loop.remove_signal_handler, signal.SIGHUP)


# --- start-up steps (each raises PilotctlError with its DESIGN 9 code) ---


def load_or_create_identity(path: Path) -> Any:
    # Imported here: pilot_proto pulls in `cryptography`, which only the daemon needs.
    from pilot_proto.errors import InvalidIdentity, KeyFilePermissionError
    from pilot_proto.identity import Identity

    try:
        if path.exists():
            return Identity.load(path)
        identity = Identity.generate(os.urandom)
        identity.save(path)
        log.info("created identity %s in %s", identity.address, path)
        return identity
    except KeyFilePermissionError as exc:
        raise PilotctlError(ErrorCode.INVALID_ARGUMENT, str(exc), f"chmod 600 {path}") from None
    except InvalidIdentity as exc:
        raise PilotctlError(
            ErrorCode.INTERNAL, str(exc),
            "the identity is never regenerated on purpose: restore the key file from a backup",
        ) from None


def open_store(path: Path) -> Store:
    try:
        return Store(path)
    except StoreError as exc:
        raise PilotctlError(ErrorCode.INTERNAL, str(exc), "see daemon.log") from None


def resolve_rendezvous(given: str | None, environ: dict[str, str], settings: Any) -> Endpoint:
    """--rendezvous, else $PILOT_RENDEZVOUS, else the saved one (with its pinned key)."""
    text = given or environ.get(RENDEZVOUS_ENV) or None
    if text is None:
        if settings.rendezvous is None:
            raise PilotctlError(
                ErrorCode.INVALID_ARGUMENT,
                "no rendezvous server configured",
                "pass --rendezvous HOST:PORT[#KEY] or set PILOT_RENDEZVOUS=HOST:PORT[#KEY] "
                "(it is saved for later starts)",
            )
        saved = parse_endpoint(settings.rendezvous, what="saved rendezvous", allow_key=True)
        return Endpoint(saved.host, saved.port, settings.rendezvous_key)
    endpoint = parse_endpoint(text, what="rendezvous", allow_key=True)
    if endpoint.key is None and endpoint.hostport == settings.rendezvous:
        # Same server as last time: keep the key pinned then (DESIGN 6).
        return Endpoint(endpoint.host, endpoint.port, settings.rendezvous_key)
    return endpoint


def bind_udp(endpoint: Endpoint) -> socket.socket:
    """The node's one UDP socket (DESIGN 1), bound here so a taken port fails the start."""
    try:
        infos = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise PilotctlError(
            ErrorCode.INVALID_ARGUMENT,
            f"cannot resolve the listen host {endpoint.host!r}: {exc.strerror}",
            "give an IP address: --listen 0.0.0.0:PORT",
        ) from None
    family, kind, proto, _canon, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == 98:  # EADDRINUSE
            raise PilotctlError(
                ErrorCode.ALREADY_EXISTS,
                f"UDP port {endpoint.hostport} is already in use",
                "choose another port with --listen HOST:PORT (port 0 picks a free one)",
            ) from None
        raise PilotctlError(
            ErrorCode.INVALID_ARGUMENT,
            f"cannot bind UDP {endpoint.hostport}: {exc.strerror}",
            "choose another address with --listen HOST:PORT",
        ) from None
    sock.setblocking(False)
    return sock


async def start_api(control: ControlPlane, state: StateDir, path: Path) -> UnixHttpServer:
    try:
        server = await start_local_api(control, path)
    except OSError as exc:
        raise PilotctlError(
            ErrorCode.INTERNAL, f"cannot create the local API socket {path}: {exc.strerror}"
        ) from None
    if path != state.socket_link:
        # State dir too deep for sun_path: the socket lives under /tmp, linked from here.
        with contextlib.suppress(FileNotFoundError):
            state.socket_link.unlink()
        state.socket_link.symlink_to(path)
    return server


def _remove_link(state: StateDir, socket_path: Path) -> None:
    if socket_path != state.socket_link and state.socket_link.is_symlink():
        state.socket_link.unlink(missing_ok=True)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pilot-proto")
    except Exception:
        return "0+unknown"


def _sd_notify(environ: dict[str, str], message: str) -> None:
    """systemd Type=notify readiness (sd_notify(3)); a no-op outside systemd."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)


# --- the process entry point (`pilotctl daemon start --foreground`) ---


def setup_logging(state: StateDir, *, to_stderr: bool) -> None:
    fd = os.open(state.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    handler: logging.Handler = logging.StreamHandler(os.fdopen(fd, "a", buffering=1))
    handlers = [handler]
    if to_stderr:
        handlers.append(logging.StreamHandler())
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    for h in handlers:
        h.setFormatter(formatter)
        root.addHandler(h)
    root.setLevel(logging.INFO)


def run_daemon(state: StateDir, options: DaemonOptions, *, json_output: bool) -> int:
    """Run in the foreground until stopped. Readiness (or the start-up error) goes to the
    pipe of a detaching `daemon start` when there is one, else to stdout."""
    os.umask(0o077)  # everything the daemon writes (db, inbox, received, log) is private
    ready_fd_text = os.environ.pop(READY_FD_ENV, None)
    ready_fd = int(ready_fd_text) if ready_fd_text and ready_fd_text.isdecimal() else None

    def report(envelope: dict[str, Any]) -> None:
        nonlocal ready_fd
        if ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(ready_fd, (json.dumps(envelope) + "\n").encode())
                os.close(ready_fd)
            ready_fd = None
        elif envelope["status"] == "ok":
            data = envelope["data"]
            if json_output:
                print(json.dumps(envelope), flush=True)
            else:
                print(f"pilot daemon running (pid {data['pid']}), node_id {data['node_id']}, "
                      f"socket {data['socket']}", flush=True)

    def on_ready(info: dict[str, Any]) -> None:
        report(ok_envelope(info))
        _sd_notify(dict(os.environ), f"READY=1\nMAINPID={os.getpid()}")

    try:
        state.ensure()
        setup_logging(state, to_stderr=ready_fd is None)
    except PilotctlError as exc:
        if ready_fd is None:
            raise
        report(exc.envelope())
        return 1
    daemon = Daemon(state, options, report_ready=on_ready)
    try:
        asyncio.run(daemon.serve())
    except PilotctlError as exc:
        log.error("start failed: %s (%s)", exc.message, exc.code.value)
        if ready_fd is None:
            raise
        report(exc.envelope())
        return 1
    except Exception as exc:
        log.exception("daemon failed")
        error = PilotctlError(ErrorCode.INTERNAL, f"the daemon failed: {exc}",
                              f"see {state.log}")
        if ready_fd is None:
            raise error from exc
        report(error.envelope())
        return 1
    return 0
