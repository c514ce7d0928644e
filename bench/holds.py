"""What holds the event loop, callback by callback: a balancer with N backends under open-loop
load, quiet and then watched (state polled 4/s, ``/metrics`` 1/s), every callback the loop runs
timed in thread CPU time and the long ones named.

``stalls.py`` measures turns of a 1 ms ticker, which add up every callback that ran meanwhile:
a turn of 2 ms may be four slices of 0.5 ms with requests between them. Issue 20 asks that no
piece of admin work hold the loop more than 2 ms *at a time*; this measures exactly that. The
probe runs the balancer on Python's own event loop (uvloop's callbacks cannot be timed from
Python) with ``asyncio.Handle._run`` wrapped: each callback's thread CPU time, and for a task's
step the coroutine, the admin path it serves (``/api/v1/state``, ``/metrics``) and where it
stopped. Python's loop is slower than uvloop at writing big answers (it copies what the socket
does not take at once), so the figures are an upper bound for ``lbtui serve``.

Run: ``.venv/bin/python bench/holds.py [--sizes 100,1000] [--seconds 10] [--rate 500]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from admin import METRICS, STATE, Pollers, run_load
from common import BenchError, Procs, log
from stalls import probed_fleet, run_cli

LONG_S = 0.001
HOLD_S = 0.002


def _name(handle: Any) -> str:
    """What a callback is: a task's coroutine (with the admin path and where it stopped), or
    the callback's own name."""
    cb = handle._callback
    task = getattr(cb, "__self__", None)
    if not isinstance(task, asyncio.Task):
        return str(getattr(cb, "__qualname__", type(cb).__name__))
    coro: Any = task.get_coro()
    name = str(getattr(coro, "__qualname__", type(coro).__name__))
    frame = getattr(coro, "cr_frame", None)
    if frame is not None and "request" in frame.f_locals:
        name += " " + str(getattr(frame.f_locals["request"], "path", "?"))
    inner = coro
    while getattr(getattr(inner, "cr_await", None), "cr_frame", None) is not None:
        inner = inner.cr_await
    frame = getattr(inner, "cr_frame", None)
    if frame is not None:
        name += f" @{frame.f_code.co_name}"
    return name


def probe(config_path: str) -> int:
    """``--probe CONFIG``: ``lbtui serve`` on Python's loop with every callback timed; one JSON
    line of running totals a second on stdout."""
    import asyncio.events

    from lbtui import config as config_mod
    from lbtui.control.runtime import run_balancer, serve_until_signalled

    long: Counter[str] = Counter()
    held: Counter[str] = Counter()
    worst: dict[str, float] = {}
    run = asyncio.events.Handle._run

    def timed(self: asyncio.Handle) -> None:
        t = time.thread_time()
        run(self)
        spent = time.thread_time() - t
        if spent > LONG_S:
            name = _name(self)
            long[name] += 1
            held[name] += spent > HOLD_S
            worst[name] = max(worst.get(name, 0.0), spent)

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]

    async def main() -> None:
        async def report() -> None:
            while True:
                await asyncio.sleep(1.0)
                print(json.dumps({"long": long, "held": held, "worst": worst}), flush=True)

        ticker = asyncio.ensure_future(report())
        try:
            await serve_until_signalled(run_balancer(config_mod.load(config_path)))
        finally:
            ticker.cancel()

    asyncio.run(main())
    return 0


def measure(size: int, args: argparse.Namespace) -> list[list[str]]:
    rows = []
    with Procs() as procs:
        lb, port, admin_port = probed_fleet(procs, size, Path(__file__), args)

        def last() -> dict[str, Any]:
            time.sleep(1.1)  # the probe's next line
            out = [x for x in lb.stdout_path.read_text().splitlines() if x.startswith("{")]
            if not out:
                raise BenchError("the probe wrote nothing")
            return dict(json.loads(out[-1]))

        before = last()
        for phase in ("quiet", "watched"):
            log(f"{size} backends: {phase}")
            pollers = Pollers(admin_port, [(STATE, 4.0), (METRICS, 1.0)])
            if phase == "watched":
                pollers.start()
            load = run_load(port, args.rate, args.seconds, procs)
            if phase == "watched":
                pollers.stop()
            after = last()
            long = Counter(after["long"]) - Counter(before["long"])
            held = Counter(after["held"]) - Counter(before["held"])
            top = ", ".join(f"{n} ×{c}" for n, c in held.most_common(3)) or "—"
            admin = sum(c for n, c in held.items() if "/api/" in n or "/metrics" in n)
            rows.append(
                [str(size), phase, f"{load.p99_ms:.2f}", f"{sum(long.values()) / args.seconds:.1f}",
                 f"{sum(held.values()) / args.seconds:.2f}", f"{admin / args.seconds:.2f}", top]
            )  # fmt: skip
            before = after
        worst = sorted(after["worst"].items(), key=lambda kv: -kv[1])[:6]
        log(
            "longest callbacks (ms, whole run): "
            + ", ".join(f"{n} {v * 1e3:.1f}" for n, v in worst)
        )
    return rows


HEADERS = [
    "backends",
    "phase",
    "proxied p99 ms",
    "callbacks > 1 ms /s",
    "> 2 ms /s",
    "of which admin > 2 ms /s",
    "most often > 2 ms",
]


def main() -> int:
    what = "thread CPU time of each callback on Python's event loop"
    return run_cli(__doc__, probe, measure, HEADERS, what)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"bench/holds.py: {exc}")
        sys.exit(1)
