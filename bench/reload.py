"""Live reload under open-loop load: what two reloads cost the requests in flight.

Run: ``.venv/bin/python bench/reload.py [--rate 300] [--duration 6]``. A real ``lbtui serve``
(its own process, keep-alive clients and upstreams) fronts three demo backends (processes of
``lbtui.fleet.backend``); an open-loop load (``lbtui.loadgen``: constant arrival rate, latency
from the intended send time) runs against it, and for the reload rows the config file is
rewritten and SIGHUP sent twice during the run (a backend added and the algorithm swapped; then
a backend removed). The rows are side by side: the same load with no reload, with two
reloads, and with two reloads and ``workers = 2``. A failed request is one without an answer
or with a 5xx.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

from common import HOST, PYTHON, Procs, free_port, log, port_answers, table, wait_until

from lbtui.loadgen import LoadGenerator, LoadReport


def config(port: int, backends: list[tuple[str, int]], algorithm: str, workers: int) -> str:
    text = (
        f'[listener]\naddress = "{HOST}:{port}"\nworkers = {workers}\n'
        f'[admin]\nenabled = false\n[balancer]\nalgorithm = "{algorithm}"\n'
    )
    for name, bport in backends:
        text += f'[[backends]]\nname = "{name}"\nurl = "http://{HOST}:{bport}"\n'
    return text


async def load_with_reloads(
    url: str, rate: float, duration: float, reloads: list[tuple[float, object]]
) -> LoadReport:
    gen = LoadGenerator(url, rate, duration, connections=32, timeout_s=5.0)
    task = asyncio.create_task(gen.run())
    start = time.monotonic()
    for at, act in reloads:
        await asyncio.sleep(max(0.0, start + at - time.monotonic()))
        act()  # type: ignore[operator]
    return await task


def run_row(
    procs: Procs, fleet: list[tuple[str, int]], reloads: int, workers: int, args: argparse.Namespace
) -> list[str]:
    port = free_port()
    path = procs.tmp / f"lbtui-{reloads}-{workers}.toml"
    path.write_text(config(port, fleet[:2], "round_robin", workers))
    lb = procs.start(
        f"lbtui-{reloads}-{workers}", [PYTHON, "-m", "lbtui", "serve", "--config", str(path)], port
    )
    wait_until(lambda: port_answers(port), 30, "lbtui serve")
    steps = [
        (config(port, fleet, "least_request", workers), "+b3, algorithm → least_request"),
        (config(port, fleet[1:], "least_request", workers), "-b1"),
    ][:reloads]

    def reload(text: str) -> object:
        def act() -> None:
            path.write_text(text)
            lb.popen.send_signal(signal.SIGHUP)

        return act

    plan = [(args.duration * (i + 1) / 3, reload(text)) for i, (text, _) in enumerate(steps)]
    report = asyncio.run(
        load_with_reloads(f"http://{HOST}:{port}/", args.rate, args.duration, plan)
    )
    out = lb.output()
    procs.stop(lb)
    applied = out.count("config reloaded")
    failed = sum(report.errors.values()) + sum(
        n for status, n in report.status_counts.items() if status >= 500
    )
    name = "no reload" if not reloads else f"{reloads} reloads (SIGHUP)"
    return [
        name,
        str(workers),
        f"{args.rate:g}",
        str(report.sent),
        str(report.completed),
        str(failed),
        f"{applied}/{reloads}",
        f"{report.corrected.p99 * 1e3:.1f}",
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=300.0, help="requests per second (open loop)")
    p.add_argument("--duration", type=float, default=6.0, help="seconds of load per row")
    args = p.parse_args()
    with Procs() as procs:
        fleet = [(name, procs.fleet_backend(name).port) for name in ("b1", "b2", "b3")]
        rows = []
        for reloads, workers in ((0, 1), (2, 1), (2, 2)):
            log(f"reload bench: {reloads} reloads, workers = {workers}…")
            rows.append(run_row(procs, fleet, reloads, workers, args))
    print(
        table(
            ["run", "workers", "req/s", "sent", "answered", "failed", "reloads applied", "p99 ms"],
            rows,
        )
    )
    failed = sum(int(r[5]) for r in rows)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
