"""What one ``/metrics`` scrape costs the event loop, the exposition alone, in this process.

Run: ``.venv/bin/python bench/scrape.py [--sizes 100,1000] [--moved 0.5] [--seconds 8]``

A balancer of N backends is built in this process (no network, an injected clock); every
backend gets an outcome, then, for ``--seconds``, the clock moves 1 s, a ``--moved`` share of
the backends (picked at random) gets one more outcome, and ``Exposition.render`` answers:
what a Prometheus scraping every second sees at 500 req/s over 1,000 backends. Only the
scrape is timed (thread CPU time, so a busy machine's other processes do not count), not the
outcomes; the exposition's own ``busy_s`` / ``longest_s`` (wall time, its slices of
``statecache.SLICE_S``: the max includes the collector's pauses and the machine's preemption)
are printed beside it. To compare two trees, run the script from each
(compiled: each in its own clone and venv), alternately.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time

from common import HOST, table


def measure(n: int, moved: float, seconds: float) -> list[str]:
    from lbtui.balancer.proxy import Proxy
    from lbtui.config import from_dict
    from lbtui.control.exposition import Exposition

    backends = [{"name": f"b{i + 1}", "url": f"http://{HOST}:{10000 + i}"} for i in range(n)]
    clock = [1000.0]
    proxy = Proxy(from_dict({"backends": backends}, "bench"), clock=lambda: clock[0])
    names = list(proxy.backends)
    expo = Exposition(proxy, None)
    expo.freeze_built = True  # as ``lbtui serve`` has it: what the first scrape kept is frozen
    rng = random.Random(1)

    def outcomes(k: int) -> None:
        for name in rng.sample(names, k):
            rec = proxy.backends[name].record
            rec.started(clock[0])
            rec.finished(200, rng.uniform(0.001, 0.004), 0, 64, clock[0])

    async def run() -> tuple[list[float], list[float], list[float], int]:
        outcomes(n)
        await expo.render()
        cpu: list[float] = []
        busy: list[float] = []
        longest: list[float] = []
        size = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end or len(cpu) < 5:
            clock[0] += 1.0
            outcomes(max(1, round(n * moved)))
            t = time.thread_time()
            size = len(await expo.render())
            cpu.append(time.thread_time() - t)
            busy.append(expo.busy_s)
            longest.append(expo.longest_s)
        return cpu, busy, longest, size

    cpu, busy, longest, size = asyncio.run(run())
    ms = 1e3
    return [
        str(n),
        f"{moved:g}",
        str(len(cpu)),
        f"{statistics.median(cpu) * ms:.1f}",
        f"{statistics.median(busy) * ms:.1f}",
        f"{statistics.median(longest) * ms:.2f}",
        f"{max(longest) * ms:.2f}",
        f"{size / 1024:.0f}",
    ]


HEADERS = [
    "backends",
    "moved a scrape",
    "scrapes",
    "CPU ms (median)",
    "busy ms (median)",
    "longest slice ms (median)",
    "longest slice ms (max)",
    "KiB",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000", help="comma-separated fleet sizes")
    parser.add_argument("--moved", type=float, default=0.5, help="share of backends moved")
    parser.add_argument("--seconds", type=float, default=8.0, help="scraping time per size")
    args = parser.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes: expected comma-separated whole numbers, got {args.sizes!r}")
    if not sizes or min(sizes) < 1:
        parser.error("--sizes: expected at least one size of 1 or more")
    if not 0.0 <= args.moved <= 1.0:
        parser.error(f"--moved: expected a share between 0 and 1, got {args.moved}")
    from lbtui.build import describe

    print(f"lbtui {describe()}; the clock moved 1 s before each scrape")
    print(table(HEADERS, [measure(n, args.moved, args.seconds) for n in sizes]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
