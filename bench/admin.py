"""The admin API under load: ``GET /api/v1/state`` and ``/metrics`` latency with 100 backends
while the balancer carries ~1,000 req/s, and what 4 state polls a second cost the data plane.

Run: ``.venv/bin/python bench/admin.py [--backends 100] [--rate 1000] [--duration 15]``

Set-up: four real backends (``--upstreams static``, default: one nginx worker answering
``return 200`` on four ports, so that the proxy is the bottleneck; ``fleet``: four
``lbtui.fleet.backend`` processes), and one lbtui process (balancer + admin API, started by this
script with ``--serve``) whose ``--backends`` backends are those four under different names,
round robin, so that every backend's record is live (the worst case for a snapshot: every
rolling window full).

1. **Latency under load**: ``lbtui load`` (a separate process, open loop) sends ``--rate``
   req/s for ``--duration`` s; meanwhile this process polls ``/api/v1/state`` 4 times a second
   and scrapes ``/metrics`` once a second, each on its own keep-alive connection, and times
   every answer (request sent → body read).
2. **Cost of polling**: ``wrk -t1 -c64`` saturates the balancer for ``--wrk-duration`` s,
   alternately without and with 4 state polls a second, ``--rounds`` times each; the medians
   of req/s and of the lbtui process's CPU per request are compared. On a shared 2-core
   machine wrk's figure swings by ±20 % from run to run, so the table also gives the share of
   the event loop's time the polls take (4 × the handler's own time, from ``Server-Timing``):
   the throughput a saturated single-loop balancer gives up to them.

Every process is stopped by its PID on the way out (``common.Procs``); every wait has a
deadline.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    HOST,
    LBTUI,
    PYTHON,
    BenchError,
    Procs,
    cpu_meter,
    finish_wrk,
    free_port,
    log,
    require_tools,
    start_wrk,
    table,
    wait_port,
)

STATE = "/api/v1/state"
METRICS = "/metrics"


# --- the lbtui process --------------------------------------------------------------------------


def serve(config_path: str) -> int:
    """``--serve``: the balancer and its admin API from ``config_path``, until SIGTERM."""
    from lbtui import config as config_mod
    from lbtui.control.runtime import run_balancer, serve_until_signalled
    from lbtui.runtime import run_async

    cfg = config_mod.load(config_path)

    def ready(rt: object) -> None:
        print("ready", flush=True)

    run_async(serve_until_signalled(run_balancer(cfg), ready))
    return 0


def write_config(path: Path, port: int, admin_port: int, upstreams: list[int], n: int) -> None:
    lines = [
        "[listener]",
        f'address = "{HOST}:{port}"',
        "[admin]",
        f'address = "{HOST}:{admin_port}"',
        "[balancer]",
        'algorithm = "round_robin"',
    ]
    for i in range(n):
        up = upstreams[i % len(upstreams)]
        lines += ["[[backends]]", f'name = "b{i:03d}"', f'url = "http://{HOST}:{up}"']
    path.write_text("\n".join(lines) + "\n")


# --- polling ------------------------------------------------------------------------------------


@dataclass
class Poll:
    path: str
    latencies_s: list[float]
    sizes: list[int]
    server_ms: list[float] = field(default_factory=list)
    """The handler's own time (its ``Server-Timing`` durations summed): what one poll costs
    the event loop, without the time the request waited behind proxied traffic."""
    errors: int = 0

    def median_ms(self) -> float:
        return statistics.median(self.latencies_s) * 1e3 if self.latencies_s else float("nan")

    def p99_ms(self) -> float:
        return _p99(self.latencies_s) * 1e3

    def server_median_ms(self) -> float:
        return statistics.median(self.server_ms) if self.server_ms else float("nan")

    def server_p99_ms(self) -> float:
        return _p99(self.server_ms)


def _p99(xs: list[float]) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(0.99 * len(s)))]


def server_timing(header: str | None) -> float | None:
    """The sum of the ``dur`` values of a ``Server-Timing`` header, in milliseconds."""
    if not header:
        return None
    return sum(float(d) for d in re.findall(r"dur=([\d.]+)", header))


def poll_loop(port: int, path: str, per_s: float, stop: threading.Event, out: Poll) -> None:
    """GET ``path`` ``per_s`` times a second on one keep-alive connection until ``stop``."""
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    period = 1.0 / per_s
    next_at = time.monotonic()
    try:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    raise BenchError(f"{path} answered {resp.status}: {body[:200]!r}")
            except (OSError, http.client.HTTPException):
                out.errors += 1
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=5)
            else:
                out.latencies_s.append(time.perf_counter() - t0)
                out.sizes.append(len(body))
                spent = server_timing(resp.getheader("Server-Timing"))
                if spent is not None:
                    out.server_ms.append(spent)
            next_at += period
            stop.wait(max(0.0, next_at - time.monotonic()))
    finally:
        conn.close()


class Pollers:
    """Background pollers, each a thread with its own connection; ``stop()`` joins them."""

    def __init__(self, port: int, plan: list[tuple[str, float]]) -> None:
        self._stop = threading.Event()
        self.polls = [Poll(path, [], []) for path, _ in plan]
        self._threads = [
            threading.Thread(
                target=poll_loop, args=(port, path, per_s, self._stop, poll), daemon=True
            )
            for (path, per_s), poll in zip(plan, self.polls, strict=True)
        ]

    def start(self) -> Pollers:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> list[Poll]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        return self.polls


# --- phases -------------------------------------------------------------------------------------


@dataclass
class Load:
    achieved_rate: float
    completed: int
    errors: int
    p50_ms: float
    p99_ms: float


def run_load(port: int, rate: float, duration: float, procs: Procs) -> Load:
    argv = [
        LBTUI, "load", f"http://{HOST}:{port}/", "--rate", f"{rate:g}",
        "--duration", f"{duration:g}s", "--connections", "64", "--json", "--quiet",
    ]  # fmt: skip
    proc = procs.start("loadgen", argv)
    try:
        proc.popen.wait(timeout=duration + 60)
    except subprocess.TimeoutExpired:
        raise BenchError("lbtui load did not finish in time") from None
    finally:
        procs.stop(proc)
    report = json.loads(proc.stdout_path.read_text())
    return Load(
        achieved_rate=report["achieved_rate"],
        completed=report["completed"],
        errors=sum(report["errors"].values()),
        p50_ms=report["corrected"]["p50"] * 1e3,
        p99_ms=report["corrected"]["p99"] * 1e3,
    )


@dataclass
class Saturation:
    rps: float
    cpu_us_per_request: float
    non_2xx: int
    state_polls: int


def saturate(port: int, admin_port: int, lbtui_pid: int, seconds: float, polls: bool) -> Saturation:
    pollers = Pollers(admin_port, [(STATE, 4.0)]) if polls else None
    with cpu_meter([lbtui_pid]) as cpu:
        popen = start_wrk(f"http://{HOST}:{port}/", seconds, 64, 1)
        if pollers is not None:
            pollers.start()
        try:
            result = finish_wrk(popen, seconds)
        finally:
            done = pollers.stop() if pollers is not None else []
    return Saturation(
        rps=result.rps,
        cpu_us_per_request=cpu.seconds * 1e6 / max(1, result.requests),
        non_2xx=result.non_2xx_3xx,
        state_polls=len(done[0].latencies_s) if done else 0,
    )


# --- main ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--backends", type=int, default=100, help="backends in the balancer")
    parser.add_argument("--upstreams", choices=("static", "fleet"), default="static")
    parser.add_argument("--rate", type=float, default=1000.0, help="req/s during phase 1")
    parser.add_argument("--duration", type=float, default=15.0, help="phase 1 seconds")
    parser.add_argument("--wrk-duration", type=float, default=8.0, help="phase 2 seconds a run")
    parser.add_argument("--rounds", type=int, default=3, help="phase 2 runs of each kind")
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    require_tools("wrk", *(("nginx",) if args.upstreams == "static" else ()))

    load_before = _loadavg()
    with Procs() as procs:
        if args.upstreams == "static":
            _nginx, upstreams = procs.static_backends(4)
        else:
            upstreams = [p.port for p in procs.fleet(4)]
        port, admin_port = free_port(), free_port()
        cfg = procs.tmp / "lbtui.toml"
        write_config(cfg, port, admin_port, upstreams, args.backends)
        lb = procs.start("lbtui", [PYTHON, str(Path(__file__).resolve()), "--serve", str(cfg)])
        procs._wait_ready(lb, lambda: "ready" in lb.output(), 20.0, "lbtui to start")
        wait_port(port)
        log(f"lbtui on :{port} (admin :{admin_port}), {args.backends} backends → {upstreams}")

        log("warm-up: 3 s of load")
        run_load(port, args.rate, 3.0, procs)

        log(f"phase 1: {args.rate:g} req/s for {args.duration:g} s, polling state 4/s, metrics 1/s")
        pollers = Pollers(admin_port, [(STATE, 4.0), (METRICS, 1.0)]).start()
        try:
            load = run_load(port, args.rate, args.duration, procs)
        finally:
            state, metrics = pollers.stop()
        if state.errors or metrics.errors:
            raise BenchError(f"poll errors: state {state.errors}, metrics {metrics.errors}")

        runs: dict[bool, list[Saturation]] = {False: [], True: []}
        for r in range(args.rounds):
            for polls in (False, True):
                log(f"phase 2, round {r + 1}: wrk {args.wrk_duration:g} s, polling={polls}")
                runs[polls].append(saturate(port, admin_port, lb.pid, args.wrk_duration, polls))

    def med(xs: list[float]) -> float:
        return statistics.median(xs)

    base_rps = med([s.rps for s in runs[False]])
    poll_rps = med([s.rps for s in runs[True]])
    base_cpu = med([s.cpu_us_per_request for s in runs[False]])
    poll_cpu = med([s.cpu_us_per_request for s in runs[True]])
    cost = (base_rps - poll_rps) / base_rps * 100
    share = 4 * state.server_median_ms() / 1000 * 100
    rows = [
        ["GET /api/v1/state, median (end to end)", f"{state.median_ms():.2f} ms", "< 5 ms",
         _ok(state.median_ms() < 5)],
        ["GET /api/v1/state, p99 (end to end)", f"{state.p99_ms():.2f} ms", "—", ""],
        ["  of which the handler (Server-Timing), median / p99",
         f"{state.server_median_ms():.2f} / {state.server_p99_ms():.2f} ms", "—", ""],
        ["GET /metrics, median (end to end)", f"{metrics.median_ms():.2f} ms", "< 20 ms",
         _ok(metrics.median_ms() < 20)],
        ["GET /metrics, p99 (end to end)", f"{metrics.p99_ms():.2f} ms", "—", ""],
        ["  of which the handler (Server-Timing), median / p99",
         f"{metrics.server_median_ms():.2f} / {metrics.server_p99_ms():.2f} ms", "—", ""],
        ["state / metrics body", f"{statistics.median(state.sizes) / 1024:.0f} / "
         f"{statistics.median(metrics.sizes) / 1024:.0f} KiB", "—", ""],
        ["polls answered (state / metrics)", f"{len(state.latencies_s)} / "
         f"{len(metrics.latencies_s)}", "—", ""],
        ["load during polls: achieved / p50 / p99", f"{load.achieved_rate:.0f} req/s / "
         f"{load.p50_ms:.1f} / {load.p99_ms:.1f} ms", f"~{args.rate:g} req/s",
         _ok(load.errors == 0 and load.achieved_rate > 0.95 * args.rate)],
        ["wrk req/s without polling (median)", f"{base_rps:.0f}", "—", ""],
        ["wrk req/s with 4 state polls/s (median)", f"{poll_rps:.0f}", "—", ""],
        ["throughput cost of polling (wrk medians)", f"{cost:+.1f} %", "< 5 %", _ok(cost < 5)],
        ["event-loop share of 4 polls/s (4 × handler median)", f"{share:.1f} %", "< 5 %",
         _ok(share < 5)],
        ["lbtui CPU µs/req without / with polling", f"{base_cpu:.0f} / {poll_cpu:.0f}", "—", ""],
    ]  # fmt: skip
    print(
        f"{args.backends} backends over 4 {args.upstreams} upstreams; phase 2: "
        f"{args.rounds} × {args.wrk_duration:g} s of wrk -t1 -c64 each way; "
        f"load average before / after: {load_before} / {_loadavg()}"
    )
    print(table(["figure", "measured", "target", ""], rows))
    print("\nwrk runs (req/s, non-2xx): without polling " + ", ".join(
        f"{s.rps:.0f} ({s.non_2xx})" for s in runs[False]) + "; with polling " + ", ".join(
        f"{s.rps:.0f} ({s.non_2xx})" for s in runs[True]))  # fmt: skip
    return 0


def _loadavg() -> str:
    """The 1-minute load average: on a shared 2-core machine, read the figures with it."""
    return f"{os.getloadavg()[0]:.1f}"


def _ok(ok: bool) -> str:
    return "ok" if ok else "MISSED"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"bench/admin.py: {exc}")
        sys.exit(1)
