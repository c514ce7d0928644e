"""Does lbtui stream? Its RSS during a 1 GiB download and a 1 GiB upload through it.

Run: ``.venv/bin/python bench/memory.py [--mib 1024]``

lbtui serve in front of one demo backend. The download is ``GET /?size=N`` (the backend streams
N bytes; this client reads and discards them chunk by chunk); the upload is a ``POST`` whose body
is an async generator of 1 MiB chunks (the backend reads and discards it, and its
``/_fleet/stats`` confirms how many bytes arrived). A thread samples the
lbtui process's RSS every 50 ms (psutil). Reported per transfer: baseline (median RSS over the
half second before it), peak, rise = peak − baseline, and throughput. Target: rise < 50 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import psutil
from common import HOST, BenchError, Procs, log, table

MIB = 1 << 20
SAMPLE_S = 0.05
TRANSFER_TIMEOUT_S = 600.0


@dataclass
class RssSampler:
    """Samples one process's RSS every ``SAMPLE_S`` seconds on a thread until stopped."""

    pid: int
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        proc = psutil.Process(self.pid)

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.samples.append((time.monotonic(), proc.memory_info().rss))
                except psutil.Error:
                    return
                self._stop.wait(SAMPLE_S)

        self._thread = threading.Thread(target=loop, name="rss-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def between(self, t0: float, t1: float) -> list[int]:
        return [rss for t, rss in self.samples if t0 <= t <= t1]


@dataclass(frozen=True)
class Transfer:
    name: str
    nbytes: int
    seconds: float
    baseline: int
    peak: int
    status: int

    @property
    def rise(self) -> int:
        return self.peak - self.baseline


async def download(session: aiohttp.ClientSession, url: str, size: int) -> tuple[int, int]:
    got = 0
    async with session.get(f"{url}?size={size}") as resp:
        async for chunk in resp.content.iter_any():
            got += len(chunk)
        return resp.status, got


async def backend_bytes_in(session: aiohttp.ClientSession, backend_url: str) -> int:
    async with session.get(f"{backend_url}_fleet/stats") as resp:
        return int((await resp.json())["bytes_in"])


async def upload(
    session: aiohttp.ClientSession, url: str, size: int, backend_url: str
) -> tuple[int, int]:
    """POST ``size`` bytes; the count returned is what the backend says it received."""
    block = b"\0" * MIB
    sent = 0
    before = await backend_bytes_in(session, backend_url)

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent < size:
            piece = block if size - sent >= MIB else block[: size - sent]
            sent += len(piece)
            yield piece

    async with session.post(url, data=body()) as resp:
        await resp.read()
        status = resp.status
    return status, await backend_bytes_in(session, backend_url) - before


async def measure(
    sampler: RssSampler,
    name: str,
    action: Callable[[], Awaitable[tuple[int, int]]],
) -> Transfer:
    await asyncio.sleep(0.5)  # idle half a second: the baseline window
    t0 = time.monotonic()
    status, nbytes = await asyncio.wait_for(action(), TRANSFER_TIMEOUT_S)
    t1 = time.monotonic()
    await asyncio.sleep(2 * SAMPLE_S)
    baseline = int(statistics.median(sampler.between(t0 - 0.5, t0)))
    peak = max(sampler.between(t0 - 0.5, time.monotonic()))
    return Transfer(name, nbytes, t1 - t0, baseline, peak, status)


async def run(url: str, pid: int, size: int, backend_url: str) -> list[Transfer]:
    sampler = RssSampler(pid)
    sampler.start()
    timeout = aiohttp.ClientTimeout(total=TRANSFER_TIMEOUT_S)
    try:
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
            for _ in range(20):  # warm: pools, caches, first-request allocations
                async with session.get(url) as resp:
                    await resp.read()
            actions: list[tuple[str, Callable[[], Awaitable[tuple[int, int]]]]] = [
                ("download", lambda: download(session, url, size)),
                ("upload", lambda: upload(session, url, size, backend_url)),
            ]
            results = []
            for name, action in actions:
                log(f"{name} {size / MIB:,.0f} MiB …")
                t = await measure(sampler, name, action)
                log(f"  status {t.status}, {t.nbytes / MIB:,.0f} MiB in {t.seconds:.1f} s")
                results.append(t)
            return results
    finally:
        sampler.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=1024, help="size of each transfer in MiB (1024)")
    args = p.parse_args()
    size = args.mib * MIB
    try:
        with Procs() as procs:
            backend = procs.fleet_backend("api-1", size=64)
            lb = procs.lbtui([backend.port])
            results = asyncio.run(
                run(f"http://{HOST}:{lb.port}/", lb.pid, size, f"http://{HOST}:{backend.port}/")
            )
    except BenchError as exc:
        print(f"memory: {exc}", file=sys.stderr)
        return 1
    print(f"\nlbtui serve RSS, sampled every {SAMPLE_S * 1e3:.0f} ms, {args.mib:,} MiB each way\n")
    headers = ["transfer", "status", "MiB", "MiB/s", "RSS baseline", "RSS peak", "rise", "< 50 MiB"]
    rows = [
        [
            t.name,
            str(t.status),
            f"{t.nbytes / MIB:,.0f}",
            f"{t.nbytes / MIB / t.seconds:,.0f}",
            f"{t.baseline / MIB:.1f} MiB",
            f"{t.peak / MIB:.1f} MiB",
            f"{t.rise / MIB:.1f} MiB",
            "yes" if t.rise < 50 * MIB and t.nbytes == size and t.status == 200 else "NO",
        ]
        for t in results
    ]
    print(table(headers, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
