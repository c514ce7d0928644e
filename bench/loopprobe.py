"""What a late event-loop turn waited on: its own CPU, the collector, or a CPU to run on.

A ticker asks the loop for 1 ms sleeps. A turn whose wall time exceeds ``stall_s`` held every
request in flight that long; for each such turn the probe splits the wall time into

- **cpu**: the thread's own CPU time (``time.thread_time``): callbacks that ran long, including
  collections (timed apart through ``gc.callbacks``);
- **wait**: time the thread was runnable but not running (the scheduler's ``run_delay`` from
  ``/proc/thread-self/schedstat``): another process had the core, the machine's doing;
- the rest: neither running nor runnable in the guest's view (page faults, I/O, or a virtual
  CPU the host did not run: steal), normally near 0.

``cpu_stalls`` counts turns with more than 2 ms of the thread's own CPU (``bench/stalls.py``'s
criterion): work of the process itself that held the loop, whatever the machine did.

``bench/stalls.py`` counts only CPU so that a busy machine's preemption is not charged to the
balancer; this probe shows both, because an open-loop run's p99.9 pays for either. It runs in
the load generator's loop (``slowtail.py --probe``), with ``serve`` inside ``lbtui serve`` (the
same entry as the CLI's, plus the ticker; SIGUSR2 restarts the counts after warm-up; JSON lines
of totals on stdout), and with ``canary`` alone in an idle process: the control, since
whatever late turns an idle process sees are the machine's.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import time
from typing import Any

SCHEDSTAT = "/proc/thread-self/schedstat"
CPU_STALL_S = 0.002
PSI_CPU = "/proc/pressure/cpu"


def cpu_pressure_s() -> float:
    """Seconds during which some runnable task of the machine waited for a CPU (PSI's
    ``some`` total; 0.0 where the kernel has no PSI)."""
    try:
        with open(PSI_CPU) as f:
            first = f.readline().split()
        return int(dict(x.split("=") for x in first[1:])["total"]) / 1e6
    except (OSError, KeyError, ValueError):
        return 0.0


def settle(share: float, timeout_s: float) -> float:
    """Wait (at most ``timeout_s``) until the machine's CPU pressure over the last 2 s is below
    ``share``; returns the last share seen. Other jobs on a shared machine come and go: a row
    measured in a quiet moment says more about the system under test."""
    deadline = time.monotonic() + timeout_s
    while True:
        t0, p0 = time.monotonic(), cpu_pressure_s()
        time.sleep(2.0)
        seen = (cpu_pressure_s() - p0) / (time.monotonic() - t0)
        if seen < share or time.monotonic() >= deadline:
            return seen


def steal_s() -> float:
    """Seconds the host did not run this virtual machine's CPUs while they had work (``steal``
    in ``/proc/stat``, all CPUs summed; 0.0 on bare metal or where unknown)."""
    try:
        with open("/proc/stat") as f:
            return int(f.readline().split()[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def run_delay_s() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (0.0 where unknown)."""
    try:
        with open(SCHEDSTAT, "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class LoopProbe:
    """Counts of late turns and what they were made of, since the last :meth:`reset`."""

    def __init__(self, stall_s: float = 0.005) -> None:
        self.stall_s = stall_s
        self._gc_t0 = 0.0
        self.reset()

    def reset(self) -> None:
        self.turns = 0
        self.stalls = 0
        self.cpu_stalls = 0
        self.worst_at = 0.0
        """Wall-clock time (``time.time``) at the end of the worst turn: to line up two probes."""
        self.stall_ms = 0.0
        self.stall_cpu_ms = 0.0
        self.stall_wait_ms = 0.0
        self.worst_ms = 0.0
        self.worst_cpu_ms = 0.0
        self.worst_wait_ms = 0.0
        self.gc_count = [0, 0, 0]
        self.gc_ms = 0.0
        self.gc_max_ms = 0.0
        self.wait_ms = 0.0
        """Run-queue wait over every turn, stalls or not."""

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_t0 = time.perf_counter()
            return
        ms = (time.perf_counter() - self._gc_t0) * 1e3
        self.gc_count[info["generation"]] += 1
        self.gc_ms += ms
        self.gc_max_ms = max(self.gc_max_ms, ms)

    async def run(self) -> None:
        """Tick until cancelled."""
        gc.callbacks.append(self._on_gc)
        try:
            while True:
                t, c, w = time.perf_counter(), time.thread_time(), run_delay_s()
                await asyncio.sleep(0.001)
                wall = time.perf_counter() - t
                cpu = time.thread_time() - c
                wait = run_delay_s() - w
                self.turns += 1
                self.wait_ms += wait * 1e3
                self.cpu_stalls += cpu > CPU_STALL_S
                if wall > self.stall_s:
                    self.stalls += 1
                    self.stall_ms += wall * 1e3
                    self.stall_cpu_ms += cpu * 1e3
                    self.stall_wait_ms += wait * 1e3
                    if wall * 1e3 > self.worst_ms:
                        self.worst_ms, self.worst_cpu_ms = wall * 1e3, cpu * 1e3
                        self.worst_wait_ms = wait * 1e3
                        self.worst_at = time.time()
        finally:
            gc.callbacks.remove(self._on_gc)

    def totals(self) -> dict[str, Any]:
        return {
            "turns": self.turns,
            "stalls": self.stalls,
            "cpu_stalls": self.cpu_stalls,
            "worst_at": self.worst_at,
            "stall_ms": self.stall_ms,
            "stall_cpu_ms": self.stall_cpu_ms,
            "stall_wait_ms": self.stall_wait_ms,
            "worst_ms": self.worst_ms,
            "worst_cpu_ms": self.worst_cpu_ms,
            "worst_wait_ms": self.worst_wait_ms,
            "gc": list(self.gc_count),
            "gc_ms": self.gc_ms,
            "gc_max_ms": self.gc_max_ms,
            "wait_ms": self.wait_ms,
        }


def summary(t: dict[str, Any]) -> str:
    """One cell: late turns, the worst one split into CPU / run-queue wait, GC."""
    if not t:
        return "-"
    return (
        f"{t['stalls']} late, {t['cpu_stalls']} own; worst {t['worst_ms']:.1f} = "
        f"cpu {t['worst_cpu_ms']:.1f} + wait {t['worst_wait_ms']:.1f}; gc max {t['gc_max_ms']:.1f}"
    )


def canary() -> int:
    """An idle process with only the probe in its loop: the late turns that any process on
    this machine gets, with no work of its own (SIGUSR2 restarts the counts; totals on stdout
    twice a second, as ``serve``)."""
    probe = LoopProbe()

    async def main() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, probe.reset)
        ticker = asyncio.ensure_future(probe.run())
        print("canary: ticking", flush=True)
        try:
            while True:
                await asyncio.sleep(0.5)
                print(json.dumps(probe.totals()), flush=True)
        finally:
            ticker.cancel()

    asyncio.run(main())  # until the benchmark stops it (SIGTERM)
    return 0


def serve(config_path: str) -> int:
    """``lbtui serve --config CONFIG`` with a :class:`LoopProbe` in its loop."""
    from lbtui import config as config_mod
    from lbtui.control.runtime import run_balancer, serve_until_signalled
    from lbtui.runtime import run_async

    probe = LoopProbe()
    tasks: list[asyncio.Task[None]] = []

    async def report() -> None:
        while True:
            await asyncio.sleep(0.5)
            print(json.dumps(probe.totals()), flush=True)

    def ready(rt: object) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, probe.reset)
        tasks.append(asyncio.ensure_future(probe.run()))
        tasks.append(asyncio.ensure_future(report()))
        print("lbtui: balancing (probed)", flush=True)

    run_async(serve_until_signalled(run_balancer(config_mod.load(config_path)), ready))
    return 0
