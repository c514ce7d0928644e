"""A long soak: steady load, rotating faults and hostile clients; is anything leaking?

Run: ``.venv/bin/python bench/soak.py [--minutes 30] [--rate 200] [--interval 30]``

Three demo backends (``lbtui.fleet.backend`` processes) behind ``lbtui serve`` (run from this
source tree: ``python -m lbtui``), with health checks, retries, breakers, ejection and a
concurrency limit on. The run alternates intervals of ``--interval`` seconds: a fault-free one,
then one with a fault, rotating through proxy-side faults set over the admin API (abort 503 on
half the requests, delay 300 ± 100 ms, down, reset) and a real one (the backend process
SIGSTOPped, then SIGCONTinued). All along, hostile clients come and go: malformed chunked bodies,
slowloris heads, bodies that stop, half-closed sockets and idle connections.

Every interval prints one row: lbtui's RSS and open fds (psutil), requests in flight (admin
API), and what the load saw. The verdict at the end: RSS, fds and in-flight flat (no trend
between the first and last third), and no 5xx in the fault-free intervals. Exit 1 if not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import psutil
from common import HOST, PYTHON, Proc, Procs, free_port, log, table, wait_until

FAULTS: list[tuple[str, dict[str, object] | None]] = [
    ("abort 503 50 % on b1", {"kind": "abort", "status": 503, "percent": 50}),
    ("delay 300±100 ms on b2", {"kind": "delay", "ms": 300, "jitter_ms": 100}),
    ("down on b3", {"kind": "down"}),
    ("reset on b1", {"kind": "reset"}),
    ("b2 process SIGSTOP", None),
]
FAULT_TARGET = {0: "b1", 1: "b2", 2: "b3", 3: "b1", 4: "b2"}

CONFIG = """
[proxy]
client_header_timeout_s = 5
client_body_timeout_s = 5
read_timeout_ms = 2000
[limits]
max_in_flight = 200
[health]
enabled = true
path = "/_fleet/health"
interval_ms = 500
rise = 2
fall = 2
"""


@dataclass
class Interval:
    """What happened between two samples."""

    fault: str
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    hostile: int = 0


class Soak:
    def __init__(self, args: argparse.Namespace, lb: Proc, backends: list[Proc], admin: str):
        self.args = args
        self.lb = lb
        self.backends = backends
        self.admin = admin
        self.url = f"http://{HOST}:{lb.port}/"
        self.current = Interval("none")
        self.stopping = False
        self.rows: list[list[str]] = []
        self.samples: list[tuple[float, float, int, int]] = []  # t, rss MiB, fds, in flight
        self.fault_free_5xx = 0

    # -- load ----------------------------------------------------------------------------------

    async def load(self, session: aiohttp.ClientSession) -> None:
        """Open loop at ``--rate``: a request every 1/rate s, each in its own task."""
        gap = 1.0 / self.args.rate
        tasks: set[asyncio.Task[None]] = set()
        nxt = time.monotonic()
        while not self.stopping:
            nxt += gap
            if len(tasks) < 512:
                t = asyncio.ensure_future(self.one(session))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
        await asyncio.gather(*tasks, return_exceptions=True)

    async def one(self, session: aiohttp.ClientSession) -> None:
        interval = self.current  # counted where it started
        try:
            async with session.get(self.url, timeout=aiohttp.ClientTimeout(total=10)) as r:
                await r.read()
                interval.statuses[r.status] += 1
        except (aiohttp.ClientError, TimeoutError, OSError):
            interval.errors += 1

    # -- hostile clients -------------------------------------------------------------------------

    async def _raw(self, data: bytes, *, half_close: bool = False, drip: bytes = b"") -> None:
        self.current.hostile += 1
        try:
            reader, writer = await asyncio.open_connection(HOST, self.lb.port)
        except OSError:
            return

        async def dripping() -> None:
            for byte in drip:
                await asyncio.sleep(1.0)
                writer.write(bytes([byte]))

        dripper = asyncio.ensure_future(dripping())
        try:
            writer.write(data)
            if half_close and writer.can_write_eof():
                writer.write_eof()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(), 30)  # until lbtui closes it
        except (ConnectionError, OSError):
            pass
        finally:
            dripper.cancel()
            writer.close()

    async def hostile(self, name: str, every_s: float, data: bytes, **kw: object) -> None:
        tasks: set[asyncio.Task[None]] = set()
        while not self.stopping:
            t = asyncio.ensure_future(self._raw(data, **kw))  # type: ignore[arg-type]
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            await asyncio.sleep(every_s)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def hostiles(self) -> list[asyncio.Task[None]]:
        chunked = b"POST /up HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n"
        return [
            asyncio.ensure_future(c)
            for c in (
                self.hostile("malformed", 0.2, chunked + b"5\r\nhello\r\nzz\r\n"),
                self.hostile("slowloris", 0.5, b"GET / HTTP/1.1\r\nHost: lb\r\n", drip=b"X" * 60),
                self.hostile(
                    "stalled body",
                    1.0,
                    b"POST / HTTP/1.1\r\nHost: lb\r\nContent-Length: 1000\r\n\r\n0123456789",
                ),
                self.hostile(
                    "half-closed", 0.2, b"GET / HTTP/1.1\r\nHost: lb\r\n", half_close=True
                ),
                self.hostile("idle", 1.0, b""),
            )
        ]

    # -- faults ------------------------------------------------------------------------------------

    async def fault(self, session: aiohttp.ClientSession, i: int, on: bool) -> None:
        name, spec = FAULTS[i]
        target = FAULT_TARGET[i]
        if spec is None:
            proc = self.backends[int(target[1:]) - 1]
            os.kill(proc.pid, signal.SIGSTOP if on else signal.SIGCONT)
            return
        url = f"{self.admin}/api/v1/backends/{target}/fault"
        if on:
            body = {**spec, "duration_s": self.args.interval}
            async with session.put(url, json=body) as r:
                if r.status >= 300:
                    log(f"setting {name}: {r.status} {await r.text()}")
        else:
            async with session.delete(url) as r:
                await r.read()

    # -- sampling ----------------------------------------------------------------------------------

    async def sample(self, session: aiohttp.ClientSession, t: float, done: Interval) -> None:
        p = psutil.Process(self.lb.pid)
        rss = p.memory_info().rss / 2**20
        fds = p.num_fds()
        async with session.get(f"{self.admin}/api/v1/state") as r:
            state = json.loads(await r.read())
        in_flight = int(state["totals"]["in_flight"])
        self.samples.append((t, rss, fds, in_flight))
        total = sum(done.statuses.values())
        five = sum(n for s, n in done.statuses.items() if s >= 500)
        if done.fault == "none":
            self.fault_free_5xx += five
        row = [
            f"{t / 60:5.1f}",
            done.fault,
            f"{rss:.1f}",
            str(fds),
            str(in_flight),
            f"{total:,}",
            str(five),
            str(done.statuses.get(429, 0)),
            str(done.errors),
            str(done.hostile),
        ]
        self.rows.append(row)
        log(" | ".join(row))

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as admin_session,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64), timeout=timeout
            ) as session,
        ):
            loaders = [asyncio.ensure_future(self.load(session)), *self.hostiles()]
            t0 = time.monotonic()
            end = t0 + self.args.minutes * 60
            k = 0
            fault_i = 0
            while time.monotonic() < end:
                with_fault = k % 2 == 1
                if with_fault:
                    await self.fault(admin_session, fault_i, True)
                    self.current = Interval(FAULTS[fault_i][0])
                else:
                    self.current = Interval("none")
                k += 1
                await asyncio.sleep(
                    max(0.0, min(end, t0 + k * self.args.interval) - time.monotonic())
                )
                done = self.current
                if with_fault:
                    await self.fault(admin_session, fault_i, False)
                    fault_i = (fault_i + 1) % len(FAULTS)
                await self.sample(admin_session, time.monotonic() - t0, done)
            self.stopping = True
            await asyncio.gather(*loaders, return_exceptions=True)


def start_lbtui(procs: Procs, ports: list[int]) -> tuple[Proc, str]:
    port, admin_port = free_port(), free_port()
    text = f'[listener]\naddress = "{HOST}:{port}"\n[admin]\naddress = "{HOST}:{admin_port}"\n'
    text += CONFIG
    for i, p in enumerate(ports):
        text += f'\n[[backends]]\nname = "b{i + 1}"\nurl = "http://{HOST}:{p}"\n'
    conf = procs.tmp / "soak.toml"
    conf.write_text(text)
    proc = procs.start("lbtui", [PYTHON, "-m", "lbtui", "serve", "--config", str(conf)], port)
    wait_until(lambda: "lbtui: balancing" in proc.output() or not proc.alive(), 20, "lbtui serve")
    if not proc.alive():
        raise SystemExit(f"lbtui exited:\n{proc.output()[-2000:]}")
    return proc, f"http://{HOST}:{admin_port}"


def trend(values: list[float]) -> str:
    """First third's median → last third's median."""
    n = max(1, len(values) // 3)
    return f"{statistics.median(values[:n]):.1f} → {statistics.median(values[-n:]):.1f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0, help="length of the soak (30)")
    p.add_argument("--rate", type=float, default=200.0, help="requests per second (200)")
    p.add_argument("--interval", type=float, default=30.0, help="seconds per row (30)")
    args = p.parse_args()
    with Procs() as procs:
        backends = procs.fleet(3)
        lb, admin = start_lbtui(procs, [b.port for b in backends])
        soak = Soak(args, lb, backends, admin)
        log("min | fault | RSS MiB | fds | in flight | requests | 5xx | 429 | errors | hostile")
        try:
            asyncio.run(soak.run())
        finally:
            for b in backends:  # never leave a backend stopped
                with contextlib.suppress(ProcessLookupError):
                    os.kill(b.pid, signal.SIGCONT)
    headers = [
        "min",
        "fault",
        "RSS MiB",
        "fds",
        "in flight",
        "requests",
        "5xx",
        "429",
        "errors",
        "hostile conns",
    ]
    print(f"\nsoak: {args.minutes:g} min, {args.rate:g} req/s, a row every {args.interval:g} s\n")
    print(table(headers, soak.rows))
    if not soak.samples:
        return 1
    rss = [s[1] for s in soak.samples]
    fds = [float(s[2]) for s in soak.samples]
    in_flight = [s[3] for s in soak.samples]
    print(
        f"\nRSS MiB {trend(rss)} (max {max(rss):.1f}); fds {trend(fds)} (max {max(fds):.0f}); "
        f"in flight at samples: max {max(in_flight)}; 5xx in fault-free intervals: "
        f"{soak.fault_free_5xx}"
    )
    return 0 if soak.fault_free_5xx == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
