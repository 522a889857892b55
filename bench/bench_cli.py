"""The daemon and pilotctl as users meet them (issue 5): real processes on loopback.

A rendezvous server and two daemons (agent-a, agent-b) run in temporary state dirs on
free ports; every figure is measured against them, then everything is stopped:

- `cli.startup_overhead`: `pilotctl info` (a whole process: start-up, one local API
  request, output) minus `python -c pass` from the same venv, interleaved in the same
  run; median of each, wall clock. Target: at most 40 ms. `cli.startup_overhead_cpu` is
  the same difference in CPU time (user + system of the child), which a loaded machine
  disturbs less. Both run with bytecode caches in place, as any installed copy has them
  (`compileall` first; PYTHONDONTWRITEBYTECODE is dropped for the children).
- `cli.send_message`: `pilotctl send-message agent-b --data ...`, the whole CLI process
  until it returns on the peer's receipt (inbox file durable on the other side); median.
- `cli.approve_to_deliverable`: from running `pilotctl approve` on agent-b (after agent-a's
  `handshake`) to agent-a's first message being receipted (sent through agent-a's local
  API right after `approve` returns; it waits for the accept, DESIGN 8). Target: < 1 s.
- `cli.daemon_idle_rss`: VmRSS of an idle daemon (from /proc) after the flow above ran
  and it sat idle a moment; the larger of the two. Target: < 60 MiB.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .framework import Baseline, BenchContext, BenchSkipped, Result

_SCRIPT = Path(sys.executable).with_name("pilotctl")
PILOTCTL = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "pilot_daemon"]
MIB = 1 << 20


def _env(home: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PILOT_HOME", "PILOT_RENDEZVOUS", "NOTIFY_SOCKET",
                        "PYTHONDONTWRITEBYTECODE")}
    if home is not None:
        env["PILOT_HOME"] = str(home)
    return env


def _run(home: Path, *args: str) -> Any:
    done = subprocess.run([*PILOTCTL, "--json", *args], env=_env(home), capture_output=True,
                          text=True, timeout=60)
    body = json.loads(done.stdout)
    if body.get("status") != "ok":
        raise RuntimeError(f"pilotctl {' '.join(args)}: {body}")
    return body["data"]


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.decode()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return took, cpu


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class _Setup:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pilot-bench-cli-"))
        self.server: subprocess.Popen[str] | None = None
        self.homes: list[Path] = []

    def rendezvous(self) -> str:
        self.server = subprocess.Popen(
            [*PILOTCTL, "rendezvous", "serve", "--listen", "127.0.0.1:0"],
            env=_env(self.root / "rendezvous"), stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True)
        assert self.server.stdout is not None
        ready, _, _ = select.select([self.server.stdout], [], [], 20)
        line = self.server.stdout.readline().strip() if ready else ""
        if "#" not in line:
            raise BenchSkipped(f"the rendezvous did not start ({line!r})")
        return line.split("#", 1)[0]

    def daemon(self, name: str, rendezvous: str) -> Path:
        home = self.root / name
        self.homes.append(home)
        _run(home, "daemon", "start", "--hostname", name, "--rendezvous", rendezvous)
        return home

    def close(self) -> None:
        for home in self.homes:
            if (home / "daemon.lock").exists():
                with contextlib.suppress(Exception):
                    subprocess.run([*PILOTCTL, "daemon", "stop"], env=_env(home),
                                   capture_output=True, timeout=40)
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(10)
            except subprocess.TimeoutExpired:
                self.server.kill()
        if self.server is not None and self.server.stdout is not None:
            self.server.stdout.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _approve_to_deliverable(a: Path, b: Path) -> float:
    from pilot_daemon.client import LocalClient
    from pilot_daemon.paths import StateDir

    a_id = _run(a, "info")["node_id"]
    _run(a, "handshake", "agent-b", "--justification", "bench")
    deadline = time.monotonic() + 10
    while not _run(b, "pending"):
        if time.monotonic() > deadline:
            raise RuntimeError("the trust request did not arrive")
        time.sleep(0.01)
    started = time.perf_counter()
    _run(b, "approve", a_id)
    LocalClient(StateDir(a), timeout=40).request(
        "POST", "/v1/messages", {"to": "agent-b", "type": "text", "data": "first"})
    return time.perf_counter() - started


def run(ctx: BenchContext) -> list[Result]:
    if not sys.platform.startswith("linux"):
        raise BenchSkipped("reads daemon memory from /proc")
    rounds = 5 if ctx.quick else 25
    import pilot_daemon

    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    str(Path(pilot_daemon.__file__).parent)],
                   env=_env(None), stdout=subprocess.DEVNULL, check=False)
    setup = _Setup()
    try:
        rendezvous = setup.rendezvous()
        a = setup.daemon("agent-a", rendezvous)
        b = setup.daemon("agent-b", rendezvous)
        approve = _approve_to_deliverable(a, b)

        python = [sys.executable, "-c", "pass"]
        info = [*PILOTCTL, "info"]
        env_a = _env(a)
        for _ in range(2):  # warm the page cache and the .pyc files
            _timed(python, env_a)
            _timed(info, env_a)
        bare, cli = [], []
        for _ in range(rounds):  # interleaved: both see the same machine load
            bare.append(_timed(python, env_a))
            cli.append(_timed(info, env_a))
        bare_ms = statistics.median(t for t, _ in bare) * 1000
        cli_ms = statistics.median(t for t, _ in cli) * 1000
        bare_cpu = statistics.median(c for _, c in bare) * 1000
        cli_cpu = statistics.median(c for _, c in cli) * 1000

        send = [*PILOTCTL, "send-message", "agent-b", "--data", "run subtask: analyze X"]
        sends = [_timed(send, env_a)[0] for _ in range(max(3, rounds // 2))]
        send_ms = statistics.median(sends) * 1000

        time.sleep(0.5 if ctx.quick else 2.0)  # idle
        pids = [int((home / "daemon.lock").read_text().split()[0]) for home in (a, b)]
        rss = max(_rss_mib(pid) for pid in pids)
    finally:
        setup.close()

    python_baseline = Baseline("cli.python_c_pass", round(bare_ms, 3), "ms")
    overhead = cli_ms - bare_ms
    return [
        Result(name="cli.startup_overhead", value=round(overhead, 3), unit="ms",
               better="lower", layout="two processes",
               baseline=Baseline("cli.python_c_pass", round(bare_ms, 3), "ms"),
               target="<= 40 ms over python -c pass", target_met=overhead <= 40),
        Result(name="cli.startup_overhead_cpu", value=round(cli_cpu - bare_cpu, 3),
               unit="ms", better="lower", layout="two processes",
               baseline=Baseline("cli.python_c_pass_cpu", round(bare_cpu, 3), "ms"),
               target="<= 40 ms over python -c pass", target_met=cli_cpu - bare_cpu <= 40),
        Result(name="cli.info_process", value=round(cli_ms, 3), unit="ms", better="lower",
               layout="two processes", baseline=python_baseline),
        Result(name="cli.send_message", value=round(send_ms, 3), unit="ms", better="lower",
               layout="two processes", baseline=python_baseline),
        Result(name="cli.approve_to_deliverable", value=round(approve * 1000, 3), unit="ms",
               better="lower", layout="two processes", target="< 1000 ms",
               target_met=approve < 1.0),
        Result(name="cli.daemon_idle_rss", value=round(rss, 2), unit="MiB", better="lower",
               layout="one process", target="< 60 MiB", target_met=rss < 60),
    ]


if __name__ == "__main__":
    for result in run(BenchContext(quick="--quick" in sys.argv)):
        print(result)
