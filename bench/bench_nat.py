"""NAT traversal as users meet it (issue 6): real daemons behind real Linux NAT routers.

The NAT lab of tests/natlab.py (network namespaces, iptables MASQUERADE, one routed hop
between the NAT routers, `pilotctl rendezvous serve --listen --listen2`), in its
endpoint-independent case: two daemons started with `pilotctl daemon start` in their
hosts' namespaces, `handshake` on one, `approve` on the other, then:

- `nat.first_message_to_direct`: from launching the first `pilotctl send-message` (right
  after `approve` returns, the accept still on its way, DESIGN 8) to the sender's daemon
  logging the proven direct path (a PONG from the peer's address); median over rounds,
  each round a fresh pair of nodes. Wall clock: daemon.log timestamps (ms).
- `nat.introduction_to_direct`: inside the sender's daemon, from the introduction applied
  (the path report's first `relay (probing)`) to the proven direct path; median.
- `nat.relay_throughput` against `nat.direct_throughput` (its baseline), in one run on one
  pair: `pilotctl bench` first over the direct path, then with UDP between the NAT routers
  dropped (`pilotctl peers` shows `relay`), through the rendezvous' relay.

Needs root (namespaces, iptables): BenchSkipped otherwise.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .framework import BenchContext, BenchSkipped, Result

ROOT = Path(__file__).resolve().parent.parent
TIMERS = {"keepalive_interval": 5.0, "reason_deadline": 4.0, "direct_retry_min": 0.5,
          "direct_retry_max": 2.0}


def _wait(what: str, check: Any, timeout: float = 20.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout} s")
        time.sleep(every)


def _pair(lab: Any, rendezvous: str, root: Path, n: int) -> tuple[Any, Any, str, str, float]:
    """Two trusting daemons; returns (a, b, a's id, b's id, launch time of the first
    send-message, wall clock)."""
    a = lab.daemon("hA", root / f"a{n}", rendezvous, f"bench-a{n}", 5000 + n, TIMERS)
    b = lab.daemon("hB", root / f"b{n}", rendezvous, f"bench-b{n}", 5000 + n, TIMERS)
    id_a, id_b = a.ok("info")["node_id"], b.ok("info")["node_id"]
    a.ok("handshake", f"bench-b{n}")
    _wait("the trust request", lambda: any(p["node_id"] == id_a for p in b.ok("pending")))
    b.ok("approve", id_a)
    started = time.time()
    a.ok("send-message", f"bench-b{n}", "--data", "first", timeout=60)
    return a, b, id_a, id_b, started


def _first_direct(daemon: Any, peer: str) -> float | None:
    return next((t for t, p in daemon.path_log(peer) if p == "direct"), None)


def _path(daemon: Any, peer: str) -> str | None:
    rows = [r for r in daemon.ok("peers") if r["node_id"] == peer]
    return rows[0]["path"] if rows else None


def run(ctx: BenchContext) -> list[Result]:
    sys.path.insert(0, str(ROOT / "tests"))
    from natlab import Lab, missing_reason

    reason = missing_reason()
    if reason is not None:
        raise BenchSkipped(reason)
    rounds = 1 if ctx.quick else 3
    megabytes = 4 if ctx.quick else 32
    lab = Lab()
    with tempfile.TemporaryDirectory(prefix="pilot-bench-nat-") as tmp:
        root = Path(tmp)
        try:
            lab.build()
            rendezvous = lab.rendezvous(root / "rv")
            to_direct: list[float] = []
            punching: list[float] = []
            pair = None
            for n in range(rounds):
                a, b, _, id_b, started = _pair(lab, rendezvous, root, n)
                direct = _wait("a proven direct path",
                               lambda d=a, peer=id_b: _first_direct(d, peer))
                first = a.path_log(id_b)[0][0]
                to_direct.append(max(direct - started, 0.0) * 1000)
                punching.append((direct - first) * 1000)
                if pair is not None:
                    pair[0].stop()
                    pair[1].stop()
                pair = (a, b, id_b, f"bench-b{n}")
            assert pair is not None
            a, b, id_b, name_b = pair
            _wait("the direct path", lambda: _path(a, id_b) == "direct")
            direct_bench = a.ok("bench", name_b, str(megabytes), timeout=120)
            lab.block_between_nats(True)
            try:
                a.run("ping", name_b, timeout=30)  # traffic: the liveness check moves it
                _wait("the relay", lambda: _path(a, id_b) == "relay", timeout=30)
                relay_bench = a.ok("bench", name_b, str(megabytes), timeout=120)
                still = _path(a, id_b)
                if still != "relay":
                    raise RuntimeError(f"the relay bench ended on the {still} path")
            finally:
                lab.block_between_nats(False)
        finally:
            lab.teardown()
    direct_result = Result(
        name="nat.direct_throughput", value=float(direct_bench["mbit_per_s"]),
        unit="Mbit/s", better="higher", layout="two processes")
    return [
        Result(name="nat.first_message_to_direct", value=round(statistics.median(to_direct), 3),
               unit="ms", better="lower", layout="two processes"),
        Result(name="nat.introduction_to_direct", value=round(statistics.median(punching), 3),
               unit="ms", better="lower", layout="two processes"),
        direct_result,
        Result(name="nat.relay_throughput", value=float(relay_bench["mbit_per_s"]),
               unit="Mbit/s", better="higher", layout="two processes",
               baseline=direct_result.as_baseline()),
    ]
