"""The NAT lab (DESIGN 10): real kernel NAT in network namespaces.

    hA (198.18.1.2) -- rA [NAT] (198.51.100.2) --.
    hC (198.18.3.2) --'                          core (routes) -- rv 203.0.113.10, .11
    hB (198.18.2.2) -- rB [NAT] (198.51.100.66) -'

Every namespace name starts with a prefix unique to the run (`pnl<pid>-`); namespaces
left by crashed runs (`pnl*`) whose process is gone are deleted first. Only the
documentation and benchmark ranges are used, and nothing touches the host's own
interfaces or routes: every command runs inside a namespace of ours. The routers
MASQUERADE (`--random-fully` for address-and-port-dependent mapping); `core` is the one
routed hop between them, so a TTL-2 opener dies there (DESIGN 7).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from pilot_processes import PILOTCTL

ROOT = Path(__file__).resolve().parent.parent
PREFIX_ROOT = "pnl"
RV1, RV2 = "203.0.113.10", "203.0.113.11"
WAN = {"rA": "198.51.100.2", "rB": "198.51.100.66"}
HOSTS = {"hA": ("rA", "198.18.1"), "hB": ("rB", "198.18.2"), "hC": ("rA", "198.18.3")}
#: The NFQUEUE queue of the delay line, its iptables chain in the core, the RTT echo's port.
DELAY_QUEUE = 7
IMPAIR_CHAIN = "lab-impair"
RTT_PORT = 9000


def missing_reason() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the NAT lab needs root (network namespaces, iptables)"
    for tool in ("ip", "iptables", "tc"):
        if shutil.which(tool) is None:
            return f"the NAT lab needs {tool} (scripts/system-packages.txt)"
    return None


def run(*cmd: str, check: bool = True) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip()}")
    return done.stdout


def stop_by_stdin(proc: subprocess.Popen[str]) -> str:
    """Close a helper's stdin (its signal to finish), wait, return what it printed; a
    helper that does not finish in 5 s is killed."""
    try:
        out, _ = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


@dataclass(frozen=True)
class Impairment:
    """What `Lab.impair` applied between the NAT routers, and the UDP round trips (ms)
    measured across the core just before and just after."""

    how: str
    delay_ms: int
    loss_percent: int
    rtt_before_ms: list[float]
    rtt_after_ms: list[float]


class PathChange(NamedTuple):
    at: float  # wall clock, from daemon.log (ms resolution)
    path: str  # direct | relay | none
    rto_ms: float | None  # the RTO the liveness rule used (logged by the daemon)


def clean_stale() -> None:
    for line in run("ip", "netns", "list").splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(rf"{PREFIX_ROOT}(\d+)-", name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            run("ip", "netns", "del", name, check=False)


class Lab:
    def __init__(self, tag: str = "") -> None:
        """`tag` tells apart two labs of one process (their namespaces' names)."""
        clean_stale()
        self.prefix = f"{PREFIX_ROOT}{os.getpid()}-{tag}"
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[str]] = []
        self.daemons: list[LabDaemon] = []
        self.delayer: subprocess.Popen[str] | None = None
        self.delay_line_error = ""

    def ns(self, short: str) -> str:
        return self.prefix + short

    def sh(self, short: str, *cmd: str, check: bool = True) -> str:
        return run("ip", "netns", "exec", self.ns(short), *cmd, check=check)

    # ------------------------------------------------------------------ topology

    def build(self) -> None:
        for short in ("core", "rv", "rA", "rB", *HOSTS):
            run("ip", "netns", "add", self.ns(short))
            self.namespaces.append(self.ns(short))
            self.sh(short, "ip", "link", "set", "lo", "up")
        self.link("core", "c0", "203.0.113.1/24", "rv", "e0", f"{RV1}/24")
        self.sh("rv", "ip", "addr", "add", f"{RV2}/24", "dev", "e0")
        self.sh("rv", "ip", "route", "add", "default", "via", "203.0.113.1")
        self.link("core", "c1", "198.51.100.1/26", "rA", "wan", f"{WAN['rA']}/26")
        self.link("core", "c2", "198.51.100.65/26", "rB", "wan", f"{WAN['rB']}/26")
        for router, gw in (("rA", "198.51.100.1"), ("rB", "198.51.100.65")):
            self.sh(router, "ip", "route", "add", "default", "via", gw)
        for short in ("core", "rA", "rB"):
            self.sh(short, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for i, (host, (router, net)) in enumerate(HOSTS.items()):
            self.link(router, f"lan{i}", f"{net}.1/24", host, "e0", f"{net}.2/24")
            self.sh(host, "ip", "route", "add", "default", "via", f"{net}.1")
        for router in ("rA", "rB"):
            self.set_nat(router, random_fully=False)

    def link(self, a: str, a_if: str, a_ip: str, b: str, b_if: str, b_ip: str) -> None:
        tmp_a, tmp_b = f"{self.prefix}{a_if}"[:15], f"{self.prefix}{b}{b_if}"[:15]
        run("ip", "link", "add", tmp_a, "netns", self.ns(a), "type", "veth", "peer", "name",
            tmp_b, "netns", self.ns(b))
        self.sh(a, "ip", "link", "set", tmp_a, "name", a_if)
        self.sh(b, "ip", "link", "set", tmp_b, "name", b_if)
        for side, ifname, ip in ((a, a_if, a_ip), (b, b_if, b_ip)):
            self.sh(side, "ip", "addr", "add", ip, "dev", ifname)
            self.sh(side, "ip", "link", "set", ifname, "up")

    def set_nat(self, router: str, *, random_fully: bool) -> None:
        self.sh(router, "iptables", "-t", "nat", "-F")
        rule = ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"]
        if random_fully:
            rule.append("--random-fully")
        self.sh(router, *rule)
        self.flush_conntrack()

    def flush_conntrack(self) -> None:
        for router in ("rA", "rB"):
            self.sh(router, "conntrack", "-F", check=False)

    def set_udp_timeout(self, seconds: int) -> None:
        for router in ("rA", "rB"):
            for key in ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"):
                self.sh(router, "sysctl", "-qw", f"net.netfilter.{key}={seconds}")

    def block_between_nats(self, blocked: bool) -> None:
        """Drop UDP between the NAT routers in the core, both directions in one iptables
        call (one atomic ruleset change: `-s A,B -d A,B` expands to its rules at once)."""
        both = f"{WAN['rA']},{WAN['rB']}"
        self.sh("core", "iptables", "-A" if blocked else "-D", "FORWARD", "-p", "udp",
                "-s", both, "-d", both, "-j", "DROP", check=blocked)

    def armed_cut(self) -> Callable[[], float]:
        """The cut of `block_between_nats(True)`, made ready to go: `iptables-restore
        --noflush` already running in the core, waiting for its input, so the rules take
        effect within a millisecond of the call (a fresh `ip netns exec iptables` takes
        10-15 ms, and the cut's moment is somewhere inside it). The returned function
        applies the cut and returns the wall-clock time just before; lift it with
        `block_between_nats(False)`."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns("core"), "iptables-restore",
                                 "--noflush"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        both = f"{WAN['rA']},{WAN['rB']}"
        rules = f"*filter\n-A FORWARD -p udp -s {both} -d {both} -j DROP\nCOMMIT\n"

        def cut() -> float:
            at = time.time()
            _, err = proc.communicate(rules, timeout=10)
            if proc.returncode != 0:
                raise RuntimeError(f"iptables-restore in the core: {err.strip()}")
            return at

        return cut

    def rtt_between_nats(self, count: int) -> list[float]:
        """UDP round trips (ms) from router A to router B across the core (the lab has no
        `ping`): an echo on B's WAN address, numbered probes from A; lost ones left out."""
        script = str(ROOT / "tests" / "natlab_rtt.py")
        where = f"{WAN['rB']}:{RTT_PORT}"
        echo = subprocess.Popen(["ip", "netns", "exec", self.ns("rB"), sys.executable, script,
                                 "echo", where], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        self.procs.append(echo)
        try:
            assert echo.stdout is not None
            if echo.stdout.readline().strip() != "ready":
                raise RuntimeError("the UDP echo on router B did not start")
            out = self.sh("rA", sys.executable, script, "probe", where, str(count))
            rtts: list[float] = json.loads(out)["rtts_ms"]
            return rtts
        finally:
            stop_by_stdin(echo)

    def impair(self, delay_ms: int, loss_percent: int) -> Impairment:
        """Hold every packet between the NAT routers `delay_ms` in the core (each way) and
        drop `loss_percent` of them: the NFQUEUE delay line (tests/nfqueue_delay.py), as
        this kernel has no sch_netem; else netem on the core's links; else the loss alone
        (iptables' statistic match), said so in `how`. Measures the UDP round trip between
        the routers before and after, so the caller can assert the delay is real."""
        self.clear_impairment()
        before = self.rtt_between_nats(10)
        how = self._delay_line(delay_ms, loss_percent)
        if how is None:
            how = self._netem_or_loss(delay_ms, loss_percent)
        return Impairment(how, delay_ms, loss_percent, before, self.rtt_between_nats(20))

    def _delay_line(self, delay_ms: int, loss_percent: int) -> str | None:
        delayer = subprocess.Popen(
            ["ip", "netns", "exec", self.ns("core"), sys.executable,
             str(ROOT / "tests" / "nfqueue_delay.py"), "--queue", str(DELAY_QUEUE),
             "--delay-ms", str(delay_ms), "--loss-percent", str(loss_percent),
             "--seed", str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(delayer)
        assert delayer.stdout is not None
        if delayer.stdout.readline().strip() != "ready":
            assert delayer.stderr is not None
            self.delay_line_error = delayer.stderr.read().strip()
            stop_by_stdin(delayer)
            return None
        # No --queue-bypass: should the delay line die, the path is cut (the case fails)
        # rather than silently undelayed.
        self.sh("core", "iptables", "-N", IMPAIR_CHAIN)
        both = f"{WAN['rA']},{WAN['rB']}"
        try:
            self.sh("core", "iptables", "-A", IMPAIR_CHAIN, "-s", both, "-d", both, "-j",
                    "NFQUEUE", "--queue-num", str(DELAY_QUEUE))
        except RuntimeError as exc:
            self.delay_line_error = str(exc)
            self.sh("core", "iptables", "-X", IMPAIR_CHAIN)
            stop_by_stdin(delayer)
            return None
        self.sh("core", "iptables", "-I", "FORWARD", "-j", IMPAIR_CHAIN)
        self.delayer = delayer
        return (f"NFQUEUE delay line in the core: {delay_ms} ms each way between the NATs, "
                f"{loss_percent}% loss each way")

    def _netem_or_loss(self, delay_ms: int, loss_percent: int) -> str:
        try:
            for dev in ("c1", "c2"):
                self.sh("core", "tc", "qdisc", "add", "dev", dev, "root", "netem", "delay",
                        f"{delay_ms}ms", "loss", f"{loss_percent}%")
            return f"netem {delay_ms} ms on each core link, {loss_percent}% loss per link"
        except RuntimeError:
            for dev in ("c1", "c2"):
                self.sh("core", "iptables", "-t", "mangle", "-A", "POSTROUTING", "-o", dev,
                        "-p", "udp", "-m", "statistic", "--mode", "random", "--probability",
                        str(loss_percent / 100), "-j", "DROP")
            return (f"FALLBACK, NO DELAY: {loss_percent}% loss per link only (no NFQUEUE: "
                    f"{self.delay_line_error}; no sch_netem)")

    def clear_impairment(self) -> dict[str, Any] | None:
        """Remove every impairment; returns the delay line's counts if one ran."""
        self.sh("core", "iptables", "-D", "FORWARD", "-j", IMPAIR_CHAIN, check=False)
        self.sh("core", "iptables", "-F", IMPAIR_CHAIN, check=False)
        self.sh("core", "iptables", "-X", IMPAIR_CHAIN, check=False)
        for dev in ("c1", "c2"):
            self.sh("core", "tc", "qdisc", "del", "dev", dev, "root", check=False)
        self.sh("core", "iptables", "-t", "mangle", "-F")
        delayer, self.delayer = self.delayer, None
        if delayer is None:
            return None
        alive = delayer.poll() is None
        out = stop_by_stdin(delayer)
        counts: dict[str, Any] = json.loads(out.splitlines()[-1]) if out.strip() else {}
        counts["alive_until_cleared"] = alive
        return counts

    def leftovers(self) -> list[str]:
        """What of this lab still exists: namespaces, helper processes still running."""
        names = [line.split()[0] for line in run("ip", "netns", "list").splitlines()
                 if line.startswith(self.prefix)]
        running = [f"process {p.args!r}" for p in self.procs if p.poll() is None]
        return names + running

    def teardown(self) -> None:
        for daemon in self.daemons:
            daemon.stop()
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        for name in reversed(self.namespaces):
            run("ip", "netns", "del", name, check=False)
        self.namespaces.clear()

    # ------------------------------------------------------------------ processes

    def rendezvous(self, home: Path) -> str:
        env = dict(os.environ, PILOT_HOME=str(home))
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns("rv"), *PILOTCTL, "rendezvous", "serve", "--listen",
             f"{RV1}:3478", "--listen2", f"{RV2}:3479"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if "#" not in line:
            raise RuntimeError(f"rendezvous did not start: {line} {proc.stderr.read()}")
        return line

    def daemon(self, host: str, home: Path, rendezvous: str, hostname: str, port: int,
               timers: dict[str, Any]) -> LabDaemon:
        """`pilotctl daemon start` in the host's namespace, its own PILOT_HOME, as a user
        runs it; PILOT_PATH_TIMERS shortens the path timers (docs/CLI.md)."""
        daemon = LabDaemon(self, host, home, timers)
        self.daemons.append(daemon)
        net = HOSTS[host][1]
        daemon.ok("daemon", "start", "--rendezvous", rendezvous, "--listen",
                  f"{net}.2:{port}", "--hostname", hostname, timeout=30)
        return daemon

    def peer(self, host: str, seed: bytes, peer_address: str, rendezvous: str,
             paths: dict[str, Any], heartbeat: float = 20.0, port: int = 4000) -> LabPeer:
        net = HOSTS[host][1]
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(host), sys.executable,
             str(ROOT / "tests" / "natlab_peer.py"), "--seed", seed.hex(), "--peer",
             peer_address, "--rendezvous", rendezvous, "--listen", f"{net}.2:{port}",
             "--paths", json.dumps(paths), "--heartbeat", str(heartbeat)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        self.procs.append(proc)
        return LabPeer(proc)


class LabDaemon:
    """One host's daemon: every command is `ip netns exec NS pilotctl --json ...` with the
    host's PILOT_HOME, exactly what a user types."""

    def __init__(self, lab: Lab, host: str, home: Path, timers: dict[str, Any]) -> None:
        self.lab, self.host, self.home = lab, host, home
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("PILOT_RENDEZVOUS", "NOTIFY_SOCKET")}
        self.env.update(PILOT_HOME=str(home), PILOT_PATH_TIMERS=json.dumps(timers))
        self.stopped = False

    def run(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.lab.ns(self.host), *PILOTCTL, "--json", *args],
            capture_output=True, text=True, env=self.env, timeout=timeout, cwd=ROOT,
        )

    def ok(self, *args: str, timeout: float = 90) -> Any:
        done = self.run(*args, timeout=timeout)
        try:
            envelope = json.loads(done.stdout)
        except ValueError:
            envelope = None
        if done.returncode != 0 or not envelope or envelope.get("status") != "ok":
            raise RuntimeError(f"pilotctl {' '.join(args)} on {self.host}: exit "
                               f"{done.returncode} {done.stdout.strip()} {done.stderr[-1500:]}"
                               f"\n{self.log_tail()}")
        return envelope["data"]

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.home / "daemon.log").read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def path_log(self, address: str | None = None) -> list[tuple[float, str]]:
        """(wall-clock time, "direct"/"relay"/"none") of every path change in daemon.log
        (toward `address` only, when given)."""
        return [(c.at, c.path) for c in self.path_changes(address)]

    def path_changes(self, address: str | None = None) -> list[PathChange]:
        """Every path change in daemon.log (toward `address` only, when given), with the
        RTO the daemon logged with it."""
        out: list[PathChange] = []
        try:
            text = (self.home / "daemon.log").read_text()
        except OSError:
            return out
        for m in re.finditer(r"^(\S+ \S+),(\d{3}) \S+ \S+: path to (\S+): (\w+)(.*)$", text,
                             re.MULTILINE):
            if address is not None and m.group(3) != address:
                continue
            stamp = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
            rto = re.search(r"\[rto ([\d.]+) ms\]", m.group(5))
            out.append(PathChange(stamp + int(m.group(2)) / 1000, m.group(4),
                                  float(rto.group(1)) if rto else None))
        return out

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        try:
            done = self.run("daemon", "stop", timeout=20)
            if done.returncode == 0:
                return
        except subprocess.TimeoutExpired:
            pass
        from pilot_daemon.lockfile import read_lock_pid
        pid = read_lock_pid(self.home / "daemon.lock")
        if pid:
            try:
                os.kill(pid, 9)
            except OSError:
                pass


class LabPeer:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                pass

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def wait(self, event: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for seen in self.events:
            if seen.get("event") == event:
                self.events.remove(seen)
                return seen
        while time.monotonic() < deadline:
            try:
                item = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if item.get("event") == event:
                return item
            self.events.append(item)
        stderr = ""
        if self.proc.poll() is not None and self.proc.stderr is not None:
            stderr = self.proc.stderr.read()[-2000:]
        raise TimeoutError(f"no {event} event within {timeout} s {stderr}")

    def status(self) -> dict[str, Any]:
        self.send(cmd="status")
        return self.wait("status", 10.0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
