"""The agent-to-agent flow of issue 5, for real: `make demo` runs it.

A rendezvous server and two daemons (agent-a, agent-b) run as real processes on
loopback, each daemon in its own temporary state dir, on free ports. Every step is the
`pilotctl` command a user would type, printed with its output; then the file that landed
in agent-b's inbox, the reply, and the restarts. Everything started is stopped and the
temporary directory removed at the end, also when a step fails or on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_SCRIPT = Path(sys.executable).with_name("pilotctl")
PILOTCTL = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "pilot_daemon"]


class StepFailed(Exception):
    pass


class Demo:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.server: subprocess.Popen[str] | None = None
        self.homes: list[Path] = []

    # --- running and printing ---

    def env(self, home: Path | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PILOT_HOME", "PILOT_RENDEZVOUS", "NOTIFY_SOCKET")}
        if home is not None:
            env["PILOT_HOME"] = str(home)
        return env

    def step(self, title: str) -> None:
        print(f"\n== {title}", flush=True)

    def run(self, home: Path | None, *args: str, expect_ok: bool = True) -> str:
        shown = "pilotctl " + shlex.join(args)
        if home is not None:
            shown = f"PILOT_HOME={home} {shown}"
        print(f"$ {shown}", flush=True)
        done = subprocess.run([*PILOTCTL, *args], env=self.env(home), capture_output=True,
                              text=True, timeout=90)
        output = (done.stdout + done.stderr).rstrip()
        if output:
            print("  " + output.replace("\n", "\n  "), flush=True)
        if expect_ok and done.returncode != 0:
            raise StepFailed(f"`{shown}` exited with {done.returncode}")
        return done.stdout

    def json(self, home: Path, *args: str) -> dict:  # type: ignore[type-arg]
        done = subprocess.run([*PILOTCTL, "--json", *args], env=self.env(home),
                              capture_output=True, text=True, timeout=90)
        body = json.loads(done.stdout)
        if body.get("status") != "ok":
            raise StepFailed(f"pilotctl {' '.join(args)}: {body}")
        return body["data"]  # type: ignore[no-any-return]

    # --- processes ---

    def start_rendezvous(self, home: Path) -> str:
        port = free_udp_port()
        listen = f"127.0.0.1:{port}"
        print(f"$ PILOT_HOME={home} pilotctl rendezvous serve --listen {listen} &", flush=True)
        self.server = subprocess.Popen(
            [*PILOTCTL, "rendezvous", "serve", "--listen", listen], env=self.env(home),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.server.stdout is not None
        ready, _, _ = select.select([self.server.stdout], [], [], 20)
        line = self.server.stdout.readline().strip() if ready else ""
        if "#" not in line:
            raise StepFailed(f"the rendezvous did not start: {line!r}")
        print(f"  {line}", flush=True)
        return line

    def stop_everything(self) -> None:
        for home in self.homes:
            if (home / "daemon.lock").exists():
                with contextlib.suppress(Exception):
                    subprocess.run([*PILOTCTL, "daemon", "stop"], env=self.env(home),
                                   capture_output=True, timeout=40)
        server = self.server
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(5)
        if server is not None:
            for stream in (server.stdout, server.stderr):
                if stream is not None:
                    stream.close()

    # --- the flow ---

    def main(self) -> None:
        a, b = self.root / "a", self.root / "b"
        self.homes = [a, b]
        self.step("1. a rendezvous server (prints HOST:PORT#KEY once ready)")
        line = self.start_rendezvous(self.root / "rendezvous")
        rendezvous = line.split("#", 1)[0]

        self.step("2. two agents, each with its own daemon and state dir")
        self.run(a, "daemon", "start", "--hostname", "agent-a", "--rendezvous", rendezvous)
        self.run(b, "daemon", "start", "--hostname", "agent-b", "--rendezvous", rendezvous)
        a_id = self.json(a, "info")["node_id"]

        self.step("3. agent-a asks agent-b for trust; agent-b sees it and approves")
        self.run(a, "handshake", "agent-b", "--justification", "task routing")
        deadline = time.monotonic() + 10
        while not self.json(b, "pending") and time.monotonic() < deadline:
            time.sleep(0.05)
        self.run(b, "pending")
        self.run(b, "approve", a_id)

        self.step("4. agent-a sends a task; it returns once agent-b has it on disk")
        out = self.run(a, "send-message", "agent-b", "--data", "run subtask: analyze document X")
        message_id = out.split()[2]
        print(f"$ ls {b}/inbox/", flush=True)
        names = sorted(os.listdir(b / "inbox"))
        print("  " + "\n  ".join(names), flush=True)
        for name in names:
            print(f"$ cat {b}/inbox/{name}", flush=True)
            print("  " + (b / "inbox" / name).read_text().rstrip().replace("\n", "\n  "),
                  flush=True)

        self.step("5. agent-b replies; the reply lands in agent-a's inbox")
        self.run(b, "reply", message_id, "--data", "done: 3 findings")
        self.run(a, "inbox")
        self.run(a, "peers")

        self.step("6. agent-b restarts: same address, trust kept, no new handshake")
        self.run(b, "daemon", "stop")
        self.run(b, "daemon", "start")
        self.run(b, "trust")
        self.run(a, "send-message", "agent-b", "--data", "are you back?")

        self.step("7. agent-a restarts while agent-b runs: the session is made again by itself")
        self.run(a, "daemon", "stop")
        self.run(a, "daemon", "start")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(p["path"] == "direct" for p in self.json(b, "peers")):
                break
            time.sleep(0.1)
        self.run(b, "peers")
        self.run(b, "send-message", "agent-a", "--data", "welcome back")
        print("\ndemo complete: every step above ran as real processes on loopback", flush=True)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run() -> int:
    root = Path(tempfile.mkdtemp(prefix="pilot-demo-"))
    demo = Demo(root)
    code = 0
    try:
        demo.main()
    except StepFailed as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        for home in demo.homes:
            log = home / "daemon.log"
            if log.exists():
                print(f"--- {log} (last lines)", file=sys.stderr)
                print("\n".join(log.read_text().splitlines()[-15:]), file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    finally:
        print("\n== cleaning up: daemons and rendezvous stopped, "
              f"{root} removed", flush=True)
        demo.stop_everything()
        shutil.rmtree(root, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(run())
