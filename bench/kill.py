"""A backend dies under load: how many requests does each balancer fail?

Run: ``.venv/bin/python bench/kill.py [--duration 10] [--kill-at 3] [--connections 64]``

For each of lbtui, nginx, HAProxy (defaults: no redispatch, no health checks) and HAProxy
(hardened: ``option redispatch`` and ``check inter 500 fall 1 rise 2``): four fresh demo backends
(``lbtui.fleet.backend``), the balancer in front, ``wrk`` GETs for ``--duration`` seconds, and
SIGKILL of one backend ``--kill-at`` seconds in. Every failure a client sees is counted: non-2xx
responses and socket errors (connect, read, write, timeout). Target for lbtui: 0 and 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from common import (
    HOST,
    STATUS_SCRIPT,
    BenchError,
    Proc,
    Procs,
    WrkResult,
    finish_wrk,
    log,
    require_tools,
    start_wrk,
    table,
)

SYSTEMS = ("lbtui", "nginx", "haproxy (defaults)", "haproxy (hardened)", "naive aiohttp")
DEFAULT_SYSTEMS = SYSTEMS[:4]
HEALTH_PATH = "/_fleet/health"


@dataclass(frozen=True)
class Outcome:
    system: str
    wrk: WrkResult
    killed: str


def starter(procs: Procs, system: str, ports: list[int]) -> Callable[[], Proc]:
    return {
        "lbtui": lambda: procs.lbtui(ports, "round_robin"),
        "nginx": lambda: procs.nginx_proxy(ports),
        "haproxy (defaults)": lambda: procs.haproxy(ports, hardened=False),
        "haproxy (hardened)": lambda: procs.haproxy(ports, hardened=True, health_path=HEALTH_PATH),
        "naive aiohttp": lambda: procs.naive_proxy(ports),
    }[system]


def run_one(system: str, args: argparse.Namespace) -> Outcome:
    with Procs() as procs:
        backends = procs.fleet(4, size=64)
        proxy = starter(procs, system, [b.port for b in backends])()
        victim = backends[args.victim]
        script = None
        if args.statuses:
            script = procs.tmp / "statuses.lua"
            script.write_text(STATUS_SCRIPT)
        url = f"http://{HOST}:{proxy.port}/"
        wrk = start_wrk(url, args.duration, args.connections, script=script)
        t0 = time.monotonic()
        time.sleep(args.kill_at)  # the fault's schedule, not a wait for a condition
        victim.kill()
        log(f"  SIGKILL {victim.name} (pid {victim.pid}) at {time.monotonic() - t0:.2f} s")
        result = finish_wrk(wrk, args.duration)
        if result.statuses:
            counts = ", ".join(f"{k} × {v}" for k, v in sorted(result.statuses.items()))
            log(f"  error statuses: {counts}; first: {result.first_error!r}")
        if args.verbose:
            log(f"  --- {proxy.name} output (tail) ---\n{proxy.output()[-3000:]}")
        return Outcome(system, result, victim.name)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds of wrk (10)")
    p.add_argument("--kill-at", type=float, default=3.0, help="seconds in to SIGKILL (3)")
    p.add_argument("--connections", type=int, default=64, help="wrk -c (64)")
    p.add_argument("--victim", type=int, default=1, choices=range(4), help="backend index (1)")
    p.add_argument("--only", action="append", choices=SYSTEMS, help="run just these systems")
    p.add_argument("--verbose", "-v", action="store_true", help="print each proxy's output")
    p.add_argument(
        "--statuses",
        action="store_true",
        help="count error statuses and show the first error body (a wrk Lua script; slower)",
    )
    args = p.parse_args()
    if not 0 < args.kill_at < args.duration:
        p.error("--kill-at must fall inside --duration")
    outcomes: list[Outcome] = []
    failed: dict[str, str] = {}
    try:
        require_tools("wrk", "nginx", "haproxy")
        for system in args.only or DEFAULT_SYSTEMS:
            log(f"{system} …")
            try:
                o = run_one(system, args)
            except BenchError as exc:  # one system failing must not void the others
                log(f"  FAILED: {exc}")
                failed[system] = str(exc).splitlines()[-1]
                continue
            log(
                f"  {o.wrk.requests:,} requests, non-2xx {o.wrk.non_2xx_3xx}, "
                f"socket errors {o.wrk.socket_errors_text()}"
            )
            outcomes.append(o)
    except BenchError as exc:
        print(f"kill: {exc}", file=sys.stderr)
        return 1
    print(
        f"\nwrk -t1 -c{args.connections} -d{args.duration:g}s GET /, 4 demo backends, "
        f"SIGKILL one at {args.kill_at:g} s\n"
    )
    headers = ["system", "requests", "req/s", "non-2xx", "socket errors"]
    rows = [
        [
            o.system,
            f"{o.wrk.requests:,}",
            f"{o.wrk.rps:,.0f}",
            str(o.wrk.non_2xx_3xx),
            o.wrk.socket_errors_text(),
        ]
        for o in outcomes
    ]
    print(table(headers, rows))
    for system, why in failed.items():
        print(f"\n{system}: failed: {why}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
