"""Where the event loop stops: a balancer with N backends under open-loop load, quiet and then
watched (state polled 4/s, ``/metrics`` 1/s), with two probes inside its process.

- **turns**: a ticker asks the loop for 1 ms sleeps and reads the thread's CPU time across each
  wait; a turn that took more than 2 ms of CPU held every request in flight that long,
  whatever ran in it (an admin slice, health checks, proxied requests, the collector). CPU
  time, not wall time, so that a busy machine's preemption is not counted as a stall;
- **the collector**: ``gc.callbacks`` time each collection by generation (thread CPU time).

Issue 20: no piece of admin work holds the loop more than 2 ms at a time, and full collections
are what the slow-backend run's p99.9 waited on. Set-up as ``fleetsize.py`` (one nginx worker on
N ports, round robin, health checks every 2 s).

Run: ``.venv/bin/python bench/stalls.py [--sizes 100,1000] [--seconds 10] [--rate 500]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from admin import METRICS, STATE, Pollers, run_load
from common import HOST, PYTHON, BenchError, Proc, Procs, free_port, log, table, wait_port
from fleetsize import lbtui_config, static_backends

STALL_S = 0.002


def probe(config_path: str) -> int:
    """``--probe CONFIG``: ``lbtui serve`` with the probes; one JSON line of running totals a
    second on stdout."""
    from lbtui import config as config_mod
    from lbtui.control.runtime import run_balancer, serve_until_signalled
    from lbtui.runtime import run_async

    totals: dict[str, float] = {"turns": 0, "stalls": 0, "max_turn_ms": 0.0}
    for g in range(3):
        totals |= {f"gc{g}": 0, f"gc{g}_ms": 0.0, f"gc{g}_max_ms": 0.0}
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.thread_time()
            return
        g, ms = info["generation"], (time.thread_time() - started[0]) * 1e3
        totals[f"gc{g}"] += 1
        totals[f"gc{g}_ms"] += ms
        totals[f"gc{g}_max_ms"] = max(totals[f"gc{g}_max_ms"], ms)

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            cpu = time.thread_time()
            await asyncio.sleep(0.001)
            turn = time.thread_time() - cpu
            totals["turns"] += 1
            totals["stalls"] += turn > STALL_S
            totals["max_turn_ms"] = max(totals["max_turn_ms"], turn * 1e3)
            if time.monotonic() - last >= 1.0:
                last = time.monotonic()
                print(json.dumps(totals), flush=True)
                totals["max_turn_ms"] = 0.0  # the longest turn of each second
                for g in range(3):
                    totals[f"gc{g}_max_ms"] = 0.0

    tasks: list[asyncio.Task[None]] = []

    def ready(rt: object) -> None:
        gc.callbacks.append(on_gc)
        tasks.append(asyncio.ensure_future(ticker()))

    run_async(serve_until_signalled(run_balancer(config_mod.load(config_path)), ready))
    return 0


def window(lines: list[dict[str, float]], seconds: float) -> dict[str, float]:
    """What the probe saw between its first and last line of a phase: counts per second,
    longest turn and longest collections."""
    a, b = lines[0], lines[-1]
    out = {k: (b[k] - a[k]) / seconds for k in b if "max" not in k}
    for k in b:
        if "max" in k:
            out[k] = max(x[k] for x in lines[1:])
    return out


def probed_fleet(
    procs: Procs, size: int, script: Path, args: argparse.Namespace
) -> tuple[Proc, int, int]:
    """``size`` backends (one nginx worker on as many ports) behind a balancer run by
    ``script --probe CONFIG``, warmed up with ``args.warmup`` s of load: the balancer, its
    listener's port and its admin port."""
    ports = static_backends(procs, size)
    admin_port, port = free_port(), free_port()
    text = f'[listener]\naddress = "{HOST}:{port}"\n' + lbtui_config(size)
    text += f'[admin]\naddress = "{HOST}:{admin_port}"\n'
    for i, p in enumerate(ports):
        text += f'\n[[backends]]\nname = "b{i + 1}"\nurl = "http://{HOST}:{p}"\n'
    conf = procs.tmp / "lbtui.toml"
    conf.write_text(text)
    lb = procs.start("lbtui", [PYTHON, str(script.resolve()), "--probe", str(conf)])
    wait_port(admin_port)
    log(f"{size} backends: warm-up")
    run_load(port, args.rate, args.warmup, procs)
    return lb, port, admin_port


def run_cli(
    doc: str,
    probe: Callable[[str], int],
    measure: Callable[[int, argparse.Namespace], list[list[str]]],
    headers: list[str],
    what: str,
) -> int:
    """The command line ``stalls.py`` and ``holds.py`` share: ``--sizes``, ``--seconds``,
    ``--warmup``, ``--rate`` (and the hidden ``--probe CONFIG`` the balancer is run with)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--probe", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="100,1000", help="comma-separated fleet sizes")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop req/s")
    args = parser.parse_args()
    if args.probe:
        return probe(args.probe)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes: expected comma-separated whole numbers, got {args.sizes!r}")
    rows = [row for n in sizes for row in measure(n, args)]
    print(
        f"\n{args.rate:g} req/s open loop, {args.seconds:g} s phases; watched: state 4/s + "
        f"/metrics 1/s; {what}\n"
    )
    print(table(headers, rows))
    return 0


def measure(size: int, args: argparse.Namespace) -> list[list[str]]:
    rows = []
    with Procs() as procs:
        lb, port, admin_port = probed_fleet(procs, size, Path(__file__), args)

        def lines() -> list[dict[str, float]]:
            out = lb.stdout_path.read_text().splitlines()
            return [json.loads(x) for x in out if x.startswith("{")]

        for phase in ("quiet", "watched"):
            log(f"{size} backends: {phase}")
            first = len(lines())
            pollers = Pollers(admin_port, [(STATE, 4.0), (METRICS, 1.0)])
            if phase == "watched":
                pollers.start()
            t0 = time.monotonic()
            load = run_load(port, args.rate, args.seconds, procs)
            if phase == "watched":
                pollers.stop()
            seen = lines()[max(0, first - 1) :]
            if len(seen) < 3:
                raise BenchError(f"the probe wrote {len(seen)} lines in the {phase} phase")
            w = window(seen, time.monotonic() - t0)
            gc_ms = w["gc0_ms"] + w["gc1_ms"] + w["gc2_ms"]
            rows.append(
                [str(size), phase, f"{load.p99_ms:.2f}", f"{w['stalls']:.1f}",
                 f"{w['max_turn_ms']:.1f}", f"{gc_ms:.1f}",
                 f"{w['gc0']:.1f} / {w['gc1']:.2f} / {w['gc2']:.2f}",
                 f"{w['gc1_max_ms']:.1f} / {w['gc2_max_ms']:.1f}"]
            )  # fmt: skip
    return rows


HEADERS = [
    "backends",
    "phase",
    "proxied p99 ms",
    "turns > 2 ms CPU /s",
    "longest turn ms",
    "GC CPU ms/s",
    "collections /s gen0 / 1 / 2",
    "longest gen1 / gen2 ms",
]


def main() -> int:
    return run_cli(__doc__, probe, measure, HEADERS, "CPU time of the balancer's loop thread")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"bench/stalls.py: {exc}")
        sys.exit(1)
