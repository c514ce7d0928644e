"""Throughput side by side: direct, naive aiohttp proxy, nginx, HAProxy, lbtui round robin.

Run: ``.venv/bin/python bench/throughput.py [--duration 10] [--connections 64] [--backends static]``

Four backends, then one system after another in the same run, each measured with
``wrk -t1 -cN -dD`` after a short warm-up (not measured). The proxy's CPU time (user+system,
workers included) over the measured run gives the CPU cost per request.

``--backends static`` (default) puts one nginx worker answering ``return 200`` (64 bytes) on four
ports behind the proxies, as in DESIGN.md's performance notes: then the proxy is the bottleneck.
``--backends fleet`` uses four ``lbtui.fleet.backend`` processes (aiohttp, ``--size 64``), which
cap every proxy near their own rate and so flatter the slower proxies' ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass

from common import (
    HOST,
    BenchError,
    Proc,
    Procs,
    WrkResult,
    cpu_meter,
    log,
    require_tools,
    run_wrk,
    table,
)

SYSTEMS = ("direct", "naive aiohttp", "nginx", "haproxy", "lbtui round_robin")


@dataclass(frozen=True)
class Sample:
    system: str
    wrk: WrkResult
    cpu_s: float | None

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.cpu_s is None or not self.wrk.requests:
            return None
        return self.cpu_s * 1e6 / self.wrk.requests


def starter(procs: Procs, system: str, ports: list[int]) -> Callable[[], Proc | None]:
    return {
        "direct": lambda: None,
        "naive aiohttp": lambda: procs.naive_proxy(ports),
        "nginx": lambda: procs.nginx_proxy(ports),
        "haproxy": lambda: procs.haproxy(ports, hardened=True),
        "lbtui round_robin": lambda: procs.lbtui(ports, "round_robin"),
    }[system]


def measure(procs: Procs, system: str, ports: list[int], args: argparse.Namespace) -> Sample:
    proxy = starter(procs, system, ports)()
    try:
        url = f"http://{HOST}:{proxy.port if proxy else ports[0]}/"
        if args.warmup > 0:
            run_wrk(url, args.warmup, args.connections)
        if proxy is None:
            return Sample(system, run_wrk(url, args.duration, args.connections), None)
        with cpu_meter([proxy.pid]) as meter:
            result = run_wrk(url, args.duration, args.connections)
        return Sample(system, result, meter.seconds)
    finally:
        if proxy is not None:
            procs.stop(proxy)


def summarize(samples: list[Sample]) -> list[list[str]]:
    by: dict[str, list[Sample]] = {}
    for s in samples:
        by.setdefault(s.system, []).append(s)
    rps = {k: statistics.median(s.wrk.rps for s in v) for k, v in by.items()}
    ref = rps.get("nginx")
    rows = []
    for system, ss in by.items():
        cpu = [c for s in ss if (c := s.cpu_us_per_request) is not None]
        rows.append(
            [
                system,
                f"{rps[system]:,.0f}",
                f"{rps[system] / ref:.2f}" if ref else "-",
                f"{statistics.median(cpu):.0f}" if cpu else "-",
                str(sum(s.wrk.non_2xx_3xx for s in ss)),
                str(sum(s.wrk.socket_errors for s in ss)),
            ]
        )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (10)")
    p.add_argument("--connections", type=int, default=64, help="wrk -c (64)")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (2)")
    p.add_argument("--rounds", type=int, default=1, help="repeat all systems; medians (1)")
    p.add_argument("--backends", choices=("static", "fleet"), default="static")
    p.add_argument("--only", action="append", choices=SYSTEMS, help="run just these systems")
    args = p.parse_args()
    systems = args.only or list(SYSTEMS)
    try:
        require_tools("wrk", "nginx", "haproxy")
        with Procs() as procs:
            if args.backends == "static":
                _, ports = procs.static_backends(4)
            else:
                ports = [b.port for b in procs.fleet(4, size=64)]
            samples: list[Sample] = []
            failed: dict[str, str] = {}
            for rnd in range(args.rounds):
                for system in systems:
                    log(f"[round {rnd + 1}/{args.rounds}] {system} …")
                    try:
                        s = measure(procs, system, ports, args)
                    except BenchError as exc:  # one system failing must not void the others
                        log(f"  FAILED: {exc}")
                        failed.setdefault(system, str(exc).splitlines()[-1])
                        continue
                    cpu = s.cpu_us_per_request
                    cpu_text = f", {cpu:.0f} µs CPU/req" if cpu is not None else ""
                    errors = s.wrk.socket_errors_text()
                    log(
                        f"  {s.wrk.rps:,.0f} req/s{cpu_text}, "
                        f"non-2xx {s.wrk.non_2xx_3xx}, socket errors {errors}"
                    )
                    samples.append(s)
    except BenchError as exc:
        print(f"throughput: {exc}", file=sys.stderr)
        return 1
    print(
        f"\nwrk -t1 -c{args.connections} -d{args.duration:g}s, 4 {args.backends} backends, "
        f"{args.rounds} round(s){' (medians)' if args.rounds > 1 else ''}\n"
    )
    headers = ["system", "req/s", "÷ nginx", "proxy CPU µs/req", "non-2xx", "socket errors"]
    print(table(headers, summarize(samples)))
    for system, why in failed.items():
        print(f"\n{system}: failed (at least once): {why}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
