"""What watching costs at each fleet size: the admin plane of one balancer with 10, 100, 300 and
1,000 backends, and what a console and a Prometheus polling it do to proxied latency.

Run: ``.venv/bin/python bench/fleetsize.py [--sizes 10,100,300,1000] [--seconds 10] [--quick]``

Set-up, per size N: one nginx worker answering ``return 200`` on N ports (one backend process,
N addresses, so every backend has its own upstream pool), and ``lbtui serve`` in front of them
(round robin, active health checks every 2 s, backends ``b1`` … ``bN``). An open-loop load of
``--rate`` req/s (``lbtui load``, a process of its own) runs through it throughout.

Per size, in the same balancer process and one after another:

1. **quiet**: ``--seconds`` of load, nobody watching: proxied p50 / p99 (corrected, from the
   intended send time);
2. **watched**: the same load while ``/api/v1/state`` is polled 4 times a second and
   ``/metrics`` once a second (one console and one Prometheus), each on its own keep-alive
   connection: proxied p50 / p99 again, each answer's latency (sent → body read) and size, and
   the handler's own time from its ``Server-Timing`` header;
3. **idle**: no load; the balancer's CPU for ``--seconds`` alone, then with a console attached
   (``lbtui attach``'s app, headless, default refresh, in a process of its own), and that
   console's own CPU.

``--rounds`` repeats 1–2 alternately and reports medians. Every process is stopped by its PID
on the way out; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from admin import METRICS, STATE, Poll, Pollers, run_load
from common import (
    HOST,
    PYTHON,
    STATIC_BODY,
    BenchError,
    Procs,
    cpu_meter,
    free_port,
    log,
    table,
    wait_port,
)

RATE = 500.0
CONSOLE_REFRESH_S = 0.25
"""``lbtui attach``'s default ``--refresh``."""


# --- the console process -----------------------------------------------------------------------


def console(url: str, seconds: float, warmup: float) -> int:
    """``--console URL``: the attach console, headless, for ``warmup + seconds``; prints
    ``measuring`` after the warm-up, then one JSON line with its CPU share meanwhile."""
    from textual.pilot import Pilot

    from lbtui.control.client import HttpControl
    from lbtui.tui.app import LbtuiApp

    app = LbtuiApp(HttpControl(url, read_only=True), refresh_s=CONSOLE_REFRESH_S)

    async def drive(pilot: Pilot[None]) -> None:
        await asyncio.sleep(warmup)
        cpu, wall = time.process_time(), time.monotonic()
        print("measuring", flush=True)
        await asyncio.sleep(seconds)
        share = 100.0 * (time.process_time() - cpu) / (time.monotonic() - wall)
        print(json.dumps({"cpu_percent": share}), flush=True)
        pilot.app.exit()

    app.run(headless=True, size=(200, 60), auto_pilot=drive)
    return 0


# --- one fleet size ----------------------------------------------------------------------------


@dataclass
class Phase:
    p50_ms: float
    p99_ms: float
    achieved: float
    errors: int


@dataclass
class SizeResult:
    size: int
    quiet: list[Phase] = field(default_factory=list)
    watched: list[Phase] = field(default_factory=list)
    state: list[Poll] = field(default_factory=list)
    metrics: list[Poll] = field(default_factory=list)
    idle_cpu: float = float("nan")
    idle_console_cpu: float = float("nan")
    console_cpu: float = float("nan")


def lbtui_config(size: int) -> str:
    return '[balancer]\nalgorithm = "round_robin"\n[health]\nenabled = true\ninterval_ms = 2000\n'


def static_backends(procs: Procs, n: int) -> list[int]:
    """One nginx worker answering ``return 200`` (64 bytes) on ``n`` distinct ports (each
    probed free; a set, since the kernel may offer a port it just gave again)."""
    ports: list[int] = []
    seen: set[int] = set()
    while len(ports) < n:
        p = free_port()
        if p not in seen:
            seen.add(p)
            ports.append(p)
    listens = "\n".join(f"    listen {HOST}:{p};" for p in ports)
    body = STATIC_BODY.rstrip()
    server = f'  server {{\n{listens}\n    location / {{ return 200 "{body}\\n"; }}\n  }}'
    procs.nginx("static-backends", server, ports[0], connections=max(4096, 4 * n))
    return ports


def phase(port: int, rate: float, seconds: float, procs: Procs) -> Phase:
    load = run_load(port, rate, seconds, procs)
    return Phase(load.p50_ms, load.p99_ms, load.achieved_rate, load.errors)


def measure(size: int, args: argparse.Namespace) -> SizeResult:
    out = SizeResult(size)
    with Procs() as procs:
        ports = static_backends(procs, size)
        admin_port = free_port()
        config = lbtui_config(size) + f'[admin]\naddress = "{HOST}:{admin_port}"\n'
        lb = procs.lbtui(ports, config=config)
        wait_port(admin_port)
        log(f"{size} backends: lbtui on :{lb.port} (admin :{admin_port}); warm-up")
        run_load(lb.port, args.rate, args.warmup, procs)
        for r in range(args.rounds):
            log(f"{size} backends, round {r + 1}: quiet")
            out.quiet.append(phase(lb.port, args.rate, args.seconds, procs))
            log(f"{size} backends, round {r + 1}: watched (state 4/s, metrics 1/s)")
            pollers = Pollers(admin_port, [(STATE, 4.0), (METRICS, 1.0)]).start()
            try:
                out.watched.append(phase(lb.port, args.rate, args.seconds, procs))
            finally:
                state, metrics = pollers.stop()
            if state.errors or metrics.errors:
                raise BenchError(f"poll errors: state {state.errors}, metrics {metrics.errors}")
            out.state.append(state)
            out.metrics.append(metrics)
        log(f"{size} backends: idle")
        time.sleep(1.0)
        with cpu_meter([lb.pid]) as cpu:
            time.sleep(args.seconds)
        out.idle_cpu = 100.0 * cpu.seconds / args.seconds
        log(f"{size} backends: idle, console attached")
        argv = [PYTHON, str(Path(__file__).resolve()), "--console", f"http://{HOST}:{admin_port}"]
        argv += ["--seconds", f"{args.seconds:g}"]
        con = procs.start("console", argv)
        procs._wait_ready(con, lambda: "measuring" in con.output(), 60.0, "console to start")
        t0 = time.monotonic()
        with cpu_meter([lb.pid]) as cpu:
            procs._wait_ready(
                con, lambda: "cpu_percent" in con.output(), args.seconds + 30, "console figures"
            )
        out.idle_console_cpu = 100.0 * cpu.seconds / (time.monotonic() - t0)
        line = next(x for x in con.output().splitlines() if "cpu_percent" in x)
        out.console_cpu = float(json.loads(line)["cpu_percent"])
        procs.stop(con)
    return out


# --- the handlers alone, in CPU time ----------------------------------------------------------


def cpu_table(sizes: list[int]) -> str:
    """``--cpu``: what one answer costs in thread CPU time (not disturbed by other processes
    on a shared machine), on a balancer built in this process whose every backend has had a
    request: the whole state and ``/metrics`` read the old way (everything, every time), and
    through the caches with nothing changed, an eighth of the backends changed, and all (the
    clock held: within one tick of the windows, so "none" is what a quiet poll costs); then, the
    clock moving, the median of a poll 250 ms after the last with an eighth of the backends
    changed (500 req/s over 1,000 backends, polled 4 times a second) and of a scrape 1 s after
    the last with half of them changed; and, watched (``keeper.py``), the background pass and
    the poll that follows it 10 ms later (its catch-up and answer)."""
    headers = ["backends", "state, all", "metrics, all"]
    for what in ("none", "1/8", "all"):
        headers += [f"state, {what} changed", f"metrics, {what} changed"]
    headers += ["state, a poll (250 ms, 1/8)", "metrics, a scrape (1 s, 1/2)"]
    headers += ["state, background pass (watched)", "state, a watched poll"]
    return table(headers, [[str(n), *(f"{x:.1f}" for x in _cpu_row(n))] for n in sizes])


def _cpu_row(n: int) -> list[float]:
    import random

    from lbtui.balancer.proxy import Proxy
    from lbtui.config import from_dict
    from lbtui.control.exposition import Exposition
    from lbtui.control.local import LocalControl
    from lbtui.control.metrics import render
    from lbtui.control.snapshot import build_snapshot
    from lbtui.control.statecache import StateCache

    backends = [{"name": f"b{i + 1}", "url": f"http://{HOST}:{10000 + i}"} for i in range(n)]
    clock = [1000.0]
    proxy = Proxy(from_dict({"backends": backends}, "bench"), clock=lambda: clock[0])
    names = list(proxy.backends)
    cache = StateCache(LocalControl(proxy), slice_s=10.0)
    expo = Exposition(proxy, None, slice_s=10.0)

    def traffic(k: int) -> None:
        for name in random.sample(names, k):
            rec = proxy.backends[name].record
            rec.started(clock[0])
            rec.finished(200, 0.002, 0, 64, clock[0])

    async def old() -> None:
        build_snapshot(proxy).to_json_bytes()

    async def old_metrics() -> None:
        render(proxy, None)

    def cached(k: int, metrics: bool, dt: float = 0.0) -> Callable[[], Awaitable[object]]:
        async def answer() -> object:
            clock[0] += dt
            traffic(k)
            return await (expo.render() if metrics else cache.body())

        return answer

    async def best(fn: Callable[[], Awaitable[object]]) -> float:
        times = []
        for _ in range(3):
            t = time.thread_time()
            await fn()
            times.append(time.thread_time() - t)
        return min(times) * 1e3

    async def median(fn: Callable[[], Awaitable[object]], k: int) -> float:
        times = []
        for _ in range(k):
            t = time.thread_time()
            await fn()
            times.append(time.thread_time() - t)
        return statistics.median(times) * 1e3

    async def row() -> list[float]:
        traffic(n)
        await cached(0, False)()
        await cached(0, True)()
        out = [await best(old), await best(old_metrics)]
        for k in (0, max(1, n // 8), n):
            out += [await best(cached(k, False)), await best(cached(k, True))]
        # what 500 req/s spread over the fleet does between two polls (4/s) and two scrapes
        # (1/s): every backend's "now" window moved; traffic on ~1/8 and ~1/2 of them
        for _ in range(12):  # a few seconds of it first, so most backends show a rate
            clock[0] += 0.25
            traffic(max(1, n // 8))
            await cache.body()
        out.append(await median(cached(max(1, n // 8), False, 0.25), 8))  # 2 s: 2 ticks
        out.append(await median(cached(max(1, n // 2), True, 1.0), 5))
        # watched (keeper.py): the background pass 240 ms after the last poll, then the poll
        # 10 ms later catching up on the outcomes between (500 req/s for 10 ms: 5 backends)
        passes, polls = [], []
        for _ in range(8):
            clock[0] += 0.24
            traffic(max(1, n // 8))
            t = time.thread_time()
            await cache.refresh(paced=False)
            passes.append(time.thread_time() - t)
            clock[0] += 0.01
            traffic(max(1, n // 200))
            t = time.thread_time()
            await cache.catch_up()
            await cache.answer()
            polls.append(time.thread_time() - t)
        out += [statistics.median(passes) * 1e3, statistics.median(polls) * 1e3]
        return out

    return asyncio.run(row())


# --- output ------------------------------------------------------------------------------------


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def rows(results: list[SizeResult]) -> list[list[str]]:
    out = []
    for r in results:
        sl = _med([p.median_ms() for p in r.state])
        sh = _med([p.server_median_ms() for p in r.state])
        ss = _med([statistics.median(p.sizes) for p in r.state if p.sizes]) / 1024
        ml = _med([p.median_ms() for p in r.metrics])
        mh = _med([p.server_median_ms() for p in r.metrics])
        ms = _med([statistics.median(p.sizes) for p in r.metrics if p.sizes]) / 1024
        q50 = _med([p.p50_ms for p in r.quiet])
        q99 = _med([p.p99_ms for p in r.quiet])
        w50 = _med([p.p50_ms for p in r.watched])
        w99 = _med([p.p99_ms for p in r.watched])
        out.append(
            [
                str(r.size),
                f"{sl:.1f} ({sh:.1f})",
                f"{ss:.0f}",
                f"{ml:.1f} ({mh:.1f})",
                f"{ms:.0f}",
                f"{q50:.2f} / {q99:.2f}",
                f"{w50:.2f} / {w99:.2f}",
                f"{w99 - q99:+.2f}",
                f"{r.idle_cpu:.1f}",
                f"{r.idle_console_cpu:.1f}",
                f"{r.console_cpu:.1f}",
            ]
        )
    return out


HEADERS = [
    "backends",
    "state ms (handler)",
    "state KiB",
    "metrics ms (handler)",
    "metrics KiB",
    "quiet p50 / p99 ms",
    "watched p50 / p99 ms",
    "Δ p99 ms",
    "lb CPU % idle",
    "lb CPU % idle + console",
    "console CPU %",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--console", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", help="comma-separated fleet sizes (default 10,100,300,1000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="load before measuring")
    parser.add_argument("--rounds", type=int, default=1, help="quiet/watched pairs per size")
    parser.add_argument("--rate", type=float, default=RATE, help="open-loop req/s")
    parser.add_argument("--quick", action="store_true", help="sizes 10,100; 3-second phases")
    parser.add_argument(
        "--cpu", action="store_true", help="only the handlers' CPU per answer, in this process"
    )
    args = parser.parse_args()
    if args.console:
        return console(args.console, args.seconds, 3.0)
    if args.quick:
        args.sizes, args.seconds, args.warmup = args.sizes or "10,100", 3.0, 1.0
    args.sizes = args.sizes or "10,100,300,1000"
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes: expected comma-separated whole numbers, got {args.sizes!r}")
    if not sizes or min(sizes) < 1:
        parser.error("--sizes: expected at least one size of 1 or more")
    if args.cpu:
        print(
            "CPU ms (thread time) of one answer: best of 3, the last four columns the median of 8"
            " polls, 5 scrapes, 8 passes and 8 watched polls; 'all': read the old way, everything"
        )
        print(cpu_table(sizes))
        return 0
    load_before = os.getloadavg()[0]
    results = [measure(n, args) for n in sizes]
    print(
        f"\n{args.rate:g} req/s open loop, {args.seconds:g} s phases, {args.rounds} round(s); "
        f"state polled 4/s + /metrics 1/s while watched; console refresh "
        f"{CONSOLE_REFRESH_S * 1e3:.0f} ms; load average before / after: "
        f"{load_before:.1f} / {os.getloadavg()[0]:.1f}\n"
    )
    print(table(HEADERS, rows(results)))
    print(
        "\nstate / metrics: median end-to-end latency of a poll during the watched phase, "
        "with the handler's own median time (Server-Timing) in brackets; CPU in % of one core."
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"bench/fleetsize.py: {exc}")
        sys.exit(1)
