"""Traffic management under load: rate limit, breaker vs nginx on 500s, a backend killed.

Run: ``.venv/bin/python bench/traffic.py [--quick] [--only rate|breaker|kill]``

All three scenarios run in one invocation (2 shared cores, noisy: compare rows of one run only)
and each prints one Markdown table (figure, measured, target, verdict) under a header that
gives the command and config used. Every process (demo backends, ``lbtui serve``, nginx) runs on
127.0.0.1, is started here and stopped by its PID on the way out, also on failure.

1. **Rate limit**: 1 backend, lbtui ``[limits] rps = 100, burst = 20``, open-loop 1,000 req/s
   (``lbtui.loadgen.LoadGenerator``). Admitted rate = 200s / duration, target 100/s ± 5 %
   (the bucket's burst adds ``burst / duration``). LoadGenerator keeps no headers, so a second
   run of the same load by this script's own small open-loop client (aiohttp, one coroutine per
   connection, constant arrival schedule) checks the headers of *every* 429.
2. **Breaker vs nginx on 500s**: 4 backends, one answering 500 to everything; 500 req/s for
   10 s through lbtui (breaker ``min_calls = 10``, one retry on 5xx) — with its default passive
   ejection, and with ejection off so the breaker alone decides — then nginx (1 worker, upstream
   keepalive) with its default ``proxy_next_upstream error timeout`` and, for reference, with
   ``http_500`` added. Figures: client-visible 5xx share and the requests the bad backend
   counted (its ``GET /_fleet/stats`` ``requests_total``, before and after each run).
3. **Kill under load**: 4 backends, lbtui with active health checks (500 ms, rise 2, fall 2,
   slow start 5 s) and ejection after 5 consecutive failures; 300 req/s for 20 s; SIGKILL of one
   backend at 3 s, restart on the same port at 10 s; once with ``round_robin`` (the default,
   which ignores weights) and once with ``weighted_round_robin`` (where slow start applies).
   Client errors come from polling the load generator's running report every 50 ms. Attempts
   on the dead backend are measured from outside as the TCP segments that reach its port (an
   ``AF_PACKET`` socket on ``lo`` with a BPF filter; needs root): while nothing listens, an
   attempt is a SYN (refused connect) or a request written on a stale pooled connection. When
   ``lbtui serve`` exposes ``/api/v1/events``, the balancer's own events for the killed
   backend are listed too. Re-entry: the new process's ``requests_total`` is polled every
   50 ms, and its ramp to a fair share is checked against slow start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import itertools
import json
import math
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from common import (
    HOST,
    LBTUI,
    PYTHON,
    BenchError,
    Proc,
    Procs,
    free_port,
    log,
    nginx_proxy_blocks,
    require_tools,
    table,
)

from lbtui.loadgen import LoadGenerator, LoadReport
from lbtui.runtime import run_async

SCENARIOS = ("rate", "breaker", "kill")
HEALTH_PATH = "/_fleet/health"
"""Health checks go to the fleet's own endpoint: not counted in ``requests_total``."""
POLL_S = 0.05
HELD_S = 0.25
"""A client whose requests started more than this late did not hold the open-loop schedule:
requests due in the run were sent after it, so 200s / duration over-counts."""
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


@dataclass(frozen=True)
class Durations:
    rate_s: float
    breaker_s: float
    kill_s: float
    kill_at_s: float
    restart_at_s: float
    open_s: float

    @classmethod
    def of(cls, quick: bool) -> Durations:
        if quick:
            return cls(rate_s=3, breaker_s=4, kill_s=9, kill_at_s=2, restart_at_s=4, open_s=1)
        return cls(rate_s=10, breaker_s=10, kill_s=20, kill_at_s=3, restart_at_s=10, open_s=2)


# --- processes ---------------------------------------------------------------------------------


def spawn_backend(
    procs: Procs,
    name: str,
    *,
    port: int = 0,
    error_rate: float = 0.0,
    error_status: int = 500,
    latency_ms: float = 1.0,
) -> Proc:
    """Start one demo backend process (does not wait: see :func:`backend_ready`)."""
    argv = [
        PYTHON, "-m", "lbtui.fleet.backend", "--name", name, "--host", HOST,
        "--port", str(port), "--latency-ms", str(latency_ms), "--jitter-ms", "0",
        "--size", "64", "--error-rate", str(error_rate), "--error-status", str(error_status),
        "--parent-pid", str(os.getpid()),
    ]  # fmt: skip
    return procs.start(name, argv, port)


def backend_ready(proc: Proc) -> bool:
    """True once the backend printed its ready line (sets ``proc.port``); raises if it died."""
    if not proc.alive():
        raise BenchError(f"{proc.name} exited early:\n{proc.output()[-2000:]}")
    line, newline, _ = proc.stdout_path.read_text().partition("\n")
    if not newline or not line.startswith("{"):
        return False
    proc.port = int(json.loads(line)["port"])
    return True


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise BenchError(f"timed out after {timeout:g} s waiting for {what}")


def start_backends(procs: Procs, n: int, bad: int | None = None) -> list[Proc]:
    backends = [
        spawn_backend(procs, f"api-{i + 1}", error_rate=1.0 if i == bad else 0.0) for i in range(n)
    ]
    for b in backends:
        wait_for(lambda b=b: backend_ready(b), 15.0, f"backend {b.name}")
    return backends


def tcp_accepts(port: int) -> bool:
    """A bare TCP connect (no request: readiness must not spend tokens or feed breakers)."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Lbtui:
    proc: Proc
    port: int
    admin_port: int
    config_text: str
    command: str

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"


def start_lbtui(procs: Procs, name: str, body: str, backends: Sequence[Proc]) -> Lbtui:
    """``lbtui serve --config FILE`` with ``body`` plus listener, admin address and backends."""
    port, admin = free_port(), free_port()
    text = f'[listener]\naddress = "{HOST}:{port}"\n\n[admin]\naddress = "{HOST}:{admin}"\n\n'
    text += body.strip() + "\n"
    for b in backends:
        text += f'\n[[backends]]\nname = "{b.name}"\nurl = "http://{HOST}:{b.port}"\n'
    conf = procs.tmp / f"{name}.toml"
    conf.write_text(text)
    argv = [LBTUI, "serve", "--config", str(conf)]
    proc = procs.start(name, argv, port)

    def ready() -> bool:
        if not proc.alive():
            raise BenchError(f"{name} exited early:\n{proc.output()[-2000:]}")
        return "lbtui: balancing" in proc.output() and tcp_accepts(port)

    wait_for(ready, 15.0, f"{name} to listen")
    return Lbtui(proc, port, admin, text, "lbtui serve --config " + conf.name)


def lbtui_trouble(lb: Lbtui, label: str) -> str | None:
    """A line naming the first traceback in lbtui's output (an unhandled exception is a bug
    whatever the figures say), or None."""
    out = lb.proc.output()
    n = out.count("Traceback (most recent call last)")
    if not n:
        return None
    where, exc = "?", "?"
    for line in out[out.index("Traceback (most recent call last)") :].splitlines()[1:200]:
        if not line.startswith(" "):
            exc = line.strip()
            break
        if line.strip().startswith("File "):
            where = line.strip()
    msg = f"**{label}: {n} traceback(s) in lbtui's output**; first ends in {where}: `{exc}`"
    log(msg)
    return msg


def start_nginx(procs: Procs, name: str, ports: Sequence[int], next_upstream: str | None) -> Proc:
    """nginx, 1 worker, round robin with ``keepalive 64`` (bench/common.py's proxy config)."""
    port = free_port()
    upstream, server = nginx_proxy_blocks(ports, port)
    if next_upstream is not None:
        directive = "proxy_http_version 1.1;"
        server = server.replace(
            directive, f"{directive}\n      proxy_next_upstream {next_upstream};"
        )
    return procs.nginx(name, server, port, upstream)


# --- what can be read from outside ------------------------------------------------------------


def get_json(url: str, timeout: float = 2.0) -> Any:
    with _OPENER.open(url, timeout=timeout) as resp:
        return json.load(resp)


def fleet_total(port: int) -> int:
    return int(get_json(f"http://{HOST}:{port}/_fleet/stats")["requests_total"])


def fetch_events(admin_port: int) -> list[dict[str, Any]] | None:
    """The balancer's events from the admin API, or None when there is no such API (yet)."""
    try:
        data = get_json(f"http://{HOST}:{admin_port}/api/v1/events?since=0", timeout=1.0)
    except (OSError, ValueError):
        return None
    if isinstance(data, dict):
        data = data.get("events", data.get("items"))
    if not isinstance(data, list):
        return None
    return [e for e in data if isinstance(e, dict)]


def event_time(event: dict[str, Any]) -> float | None:
    """An event's time on this process's monotonic clock (CLOCK_MONOTONIC is system-wide)."""
    at = event.get("at")
    if isinstance(at, int | float):
        return float(at)
    wall = event.get("wall")
    if isinstance(wall, int | float):
        return float(wall) - (time.time() - time.monotonic())
    return None


class PortSniffer:
    """Every TCP segment that reaches one port on ``lo`` (and every RST sent from it), seen on an
    ``AF_PACKET`` socket with a classic BPF filter so that other traffic never wakes this thread.
    Root only; bounded by ``max_s``. Each loopback packet passes twice (outgoing, incoming): the
    filter keeps the incoming copy only.

    Once the backend is dead, nothing answers on its port, so an *attempt* on it is either a SYN
    (a new connect, refused) or a segment with payload (a request written on a pooled keep-alive
    connection whose other end is gone; answered by RST): both are recorded, with their time.
    """

    ETH_P_ALL = 0x0003
    SO_ATTACH_FILTER = 26
    SKF_AD_PKTTYPE = 0xFFFFF004  # SKF_AD_OFF + SKF_AD_PKTTYPE
    SNAP = 96

    def __init__(self, port: int, max_s: float) -> None:
        self.port = port
        self.max_s = max_s
        self.syns: list[float] = []
        """SYNs (without ACK) to the port: connects."""
        self.data: list[float] = []
        """Segments with payload to the port: requests (or parts of them)."""
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._prog_buf: Any = None

    def _filter(self) -> bytes:
        # incoming copy, IPv4, TCP, not a fragment, and src port or dst port == port
        ins = [
            (0x20, 0, 0, self.SKF_AD_PKTTYPE),  # ld pkttype
            (0x15, 0, 11, 0),  # jeq PACKET_HOST        else drop
            (0x28, 0, 0, 12),  # ldh [12]               ethertype
            (0x15, 0, 9, 0x0800),  # jeq IPv4          else drop
            (0x30, 0, 0, 23),  # ldb [23]               IP protocol
            (0x15, 0, 7, 6),  # jeq TCP                 else drop
            (0x28, 0, 0, 20),  # ldh [20]               flags + fragment offset
            (0x45, 5, 0, 0x1FFF),  # jset               drop fragments
            (0xB1, 0, 0, 14),  # ldxb 4*([14]&0xf)      IP header length
            (0x48, 0, 0, 14),  # ldh [x+14]             TCP src port
            (0x15, 3, 0, self.port),  # jeq port        accept
            (0x48, 0, 0, 16),  # ldh [x+16]             TCP dst port
            (0x15, 1, 0, self.port),  # jeq port        accept, else drop
            (0x06, 0, 0, 0),  # ret 0                   drop
            (0x06, 0, 0, self.SNAP),  # ret SNAP        accept the headers
        ]
        code = b"".join(struct.pack("HBBI", *i) for i in ins)
        self._prog_buf = ctypes.create_string_buffer(code)
        return struct.pack("HL", len(ins), ctypes.addressof(self._prog_buf))

    def start(self) -> bool:
        try:
            # protocol 0: nothing is queued before the filter is attached; bind turns it on
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except (OSError, AttributeError) as exc:
            self.error = f"no AF_PACKET socket ({exc}); needs root on Linux"
            return False
        try:
            sock.setsockopt(socket.SOL_SOCKET, self.SO_ATTACH_FILTER, self._filter())
            sock.bind(("lo", self.ETH_P_ALL))
            sock.settimeout(0.2)
        except OSError as exc:
            sock.close()
            self.error = f"cannot capture on lo: {exc}"
            return False
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="port-sniffer", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        deadline = time.monotonic() + self.max_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                pkt = sock.recv(self.SNAP)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            ip = pkt[14:]
            if len(ip) < 20:
                continue
            ihl = (ip[0] & 0x0F) * 4
            total = (ip[2] << 8) | ip[3]
            tcp = ip[ihl:]
            if len(tcp) < 14:
                continue
            dport = (tcp[2] << 8) | tcp[3]
            doff = (tcp[12] >> 4) * 4
            flags = tcp[13]
            if dport != self.port:
                continue
            if flags & 0x12 == 0x02:
                self.syns.append(now)
            elif total - ihl - doff > 0:
                self.data.append(now)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._sock is not None:
            self._sock.close()


# --- load --------------------------------------------------------------------------------------


async def load(url: str, rate: float, duration: float, connections: int) -> LoadReport:
    gen = LoadGenerator(url, rate, duration, connections=connections, timeout_s=5.0)
    return await asyncio.wait_for(gen.run(), timeout=duration + 30)


async def load_sampled(
    url: str, rate: float, duration: float, connections: int
) -> tuple[LoadReport, list[tuple[float, int, int]]]:
    """:func:`load`, with ``(seconds since start, 200s so far, 429s so far)`` every 100 ms."""
    gen = LoadGenerator(url, rate, duration, connections=connections, timeout_s=5.0)
    run = asyncio.create_task(gen.run())
    t0 = time.monotonic()
    samples: list[tuple[float, int, int]] = [(0.0, 0, 0)]
    try:
        while not run.done() and time.monotonic() - t0 < duration + 30:  # bounded
            await asyncio.sleep(0.1)
            counts = gen.report().status_counts
            samples.append((time.monotonic() - t0, counts.get(200, 0), counts.get(429, 0)))
        report = await asyncio.wait_for(run, timeout=duration + 30)
    finally:
        if not run.done():
            gen.stop()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(run, timeout=10)
    counts = report.status_counts
    samples.append((time.monotonic() - t0, counts.get(200, 0), counts.get(429, 0)))
    return report, samples


def per_second_from_samples(samples: list[tuple[float, int, int]]) -> list[tuple[int, int]]:
    """``(200s, 429s)`` answered in each whole second of a run, from cumulative samples."""
    out: list[tuple[int, int]] = []
    prev = samples[0]
    k = 1
    for s in samples[1:]:
        while s[0] >= k and k <= 3600:  # bounded
            out.append((s[1] - prev[1], s[2] - prev[2]))
            prev = s
            k += 1
    return out


def per_second_from_times(ok: list[float], rejected: list[float]) -> list[tuple[int, int]]:
    n = int(max([*ok, *rejected, 0.0]))
    bins = [[0, 0] for _ in range(n)]  # whole seconds only: the last partial one is dropped
    for i, times in enumerate((ok, rejected)):
        for t in times:
            if 0 <= t < n:
                bins[int(t)][i] += 1
    return [(a, b) for a, b in bins]


def limiting_rate(bins: list[tuple[int, int]]) -> tuple[float | None, int]:
    """Median 200s per second over the seconds in which the limiter also rejected (it was
    saturated), leaving out the first second (the bucket's burst): the admitted rate that does
    not depend on the client keeping its schedule. Also the number of such seconds."""
    sat = sorted(a for a, b in bins[1:] if b > 0)
    if not sat:
        return None, 0
    mid = len(sat) // 2
    med = sat[mid] if len(sat) % 2 else (sat[mid - 1] + sat[mid]) / 2
    return float(med), len(sat)


@dataclass
class HeaderCheck:
    """What this script's own open-loop client saw: statuses and the headers of every 429."""

    duration_s: float
    scheduled: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    rejected: int = 0
    retry_after: int = 0
    retry_after_valid: int = 0
    retry_after_values: Counter[str] = field(default_factory=Counter)
    ratelimit_both: int = 0
    max_start_delay_s: float = 0.0
    ok_times: list[float] = field(default_factory=list)
    """Completion times of the 200s, seconds after the first request was due."""
    rejected_times: list[float] = field(default_factory=list)


async def header_check(url: str, rate: float, duration: float, connections: int) -> HeaderCheck:
    """Open-loop GETs at ``rate`` for ``duration``: request *i* is due at ``t0 + i / rate`` and
    is taken by the next free connection; every answer's status and 429 headers are kept."""
    out = HeaderCheck(duration)
    total = int(rate * duration)
    out.scheduled = total
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[float | None] = asyncio.Queue()
    t0 = loop.time() + 0.05

    async def dispatch() -> None:
        i = 0
        while i < total:  # bounded: total requests
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            while i < total and t0 + i / rate <= now:
                queue.put_nowait(t0 + i / rate)
                i += 1
        for _ in range(connections):
            queue.put_nowait(None)

    async def worker(session: aiohttp.ClientSession) -> None:
        while True:  # ends at its sentinel; the queue holds a bounded schedule
            due = await queue.get()
            if due is None:
                return
            out.max_start_delay_s = max(out.max_start_delay_s, loop.time() - due)
            try:
                async with session.get(url) as resp:
                    await resp.read()
                    out.statuses[resp.status] += 1
                    if resp.status == 200:
                        out.ok_times.append(loop.time() - t0)
                    elif resp.status == 429:
                        out.rejected_times.append(loop.time() - t0)
                    if resp.status == 429:
                        out.rejected += 1
                        ra = resp.headers.get("Retry-After")
                        if ra is not None:
                            out.retry_after += 1
                            out.retry_after_values[ra] += 1
                            if ra.strip().isdigit():
                                out.retry_after_valid += 1
                        if "RateLimit" in resp.headers and "RateLimit-Policy" in resp.headers:
                            out.ratelimit_both += 1
            except (aiohttp.ClientError, OSError, TimeoutError):
                out.errors += 1

    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=5.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(worker(session)) for _ in range(connections)]
        tasks.append(asyncio.create_task(dispatch()))
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=duration + 30)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return out


# --- output helpers ----------------------------------------------------------------------------


def verdict(ok: bool | None) -> str:
    return "info" if ok is None else ("PASS" if ok else "FAIL")


def void(delay_s: float) -> str:
    """The verdict of a figure the client could not measure: it fell behind its schedule."""
    return f"void (client {delay_s:.1f} s late)"


def void_short(observed_s: float) -> str:
    return f"void (run ended {observed_s:.1f} s after)"


def pct(n: float, d: float) -> str:
    return f"{100.0 * n / d:.2f} %" if d else "n/a"


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:,.0f} ms"


def statuses_text(counts: dict[int, int] | Counter[int]) -> str:
    return ", ".join(f"{k}×{v:,}" for k, v in sorted(counts.items())) or "none"


def errors_total(report: LoadReport) -> int:
    return sum(report.errors.values())


def print_block(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    print(f"\n### {title}\n")
    for line in header:
        print(line)
    print()
    print(table(["figure", "measured", "target", "verdict"], rows))
    sys.stdout.flush()


# --- scenario 1: rate limit --------------------------------------------------------------------

RATE_TOML = """
[limits]
rps = 100
burst = 20
"""


def scenario_rate(d: Durations, connections: int) -> None:
    offered, rps, burst, duration = 1000.0, 100.0, 20.0, d.rate_s
    with Procs() as procs:
        backends = start_backends(procs, 1)
        lb = start_lbtui(procs, "lbtui-rate", RATE_TOML, backends)
        log(f"rate: LoadGenerator {offered:g}/s for {duration:g} s …")
        rep, samples = run_async(load_sampled(lb.url, offered, duration, connections))
        time.sleep(0.5)  # let the bucket refill (burst / rps = 0.2 s) between the two runs
        log(f"rate: header-checking client {offered:g}/s for {duration:g} s …")
        hc = run_async(header_check(lb.url, offered, duration, connections))
        backend_total = fleet_total(backends[0].port)
        trouble = lbtui_trouble(lb, "rate")
    sat_lg, n_lg = limiting_rate(per_second_from_samples(samples))
    sat_hc, n_hc = limiting_rate(per_second_from_times(hc.ok_times, hc.rejected_times))
    held_lg = rep.max_start_delay_s < HELD_S
    held_hc = hc.max_start_delay_s < HELD_S
    ok_lg = rep.status_counts.get(200, 0)
    ok_hc = hc.statuses.get(200, 0)
    admitted = ok_lg / duration
    admitted_hc = ok_hc / duration
    expected = rps + burst / duration
    # ± 5 % of rps, plus the burst the full bucket admits at once (burst / duration)
    lo, hi = rps * 0.95, rps * 1.05 + burst / duration
    other_lg = sum(v for k, v in rep.status_counts.items() if k not in (200, 429))
    other_hc = sum(v for k, v in hc.statuses.items() if k not in (200, 429))
    rows = [
        [
            "offered (LoadGenerator): scheduled / sent / unsent",
            f"{rep.offered_rate:,.0f}/s: {rep.scheduled:,} / {rep.sent:,} / {rep.unsent:,}",
            f"{offered:,.0f}/s, 0 unsent",
            verdict(rep.unsent == 0 and abs(rep.offered_rate - offered) < 0.02 * offered),
        ],
        [
            "late starts (LoadGenerator, > 2 ms) / max start delay",
            f"{rep.late_starts:,} / {ms(rep.max_start_delay_s)}",
            "small (open loop held)",
            "info",
        ],
        [
            f"admitted rate = 200s / {duration:g} s (LoadGenerator)",
            f"{admitted:.1f}/s ({ok_lg:,} × 200)",
            f"{rps:g}/s ± 5 % + burst/T ({lo:g}–{hi:.1f}); exact bucket: {expected:.1f}/s",
            verdict(lo <= admitted <= hi) if held_lg else void(rep.max_start_delay_s),
        ],
        [
            "admitted rate while limiting (LoadGenerator): median 200s/s over seconds with 429s",
            f"{sat_lg:g}/s over {n_lg} s" if sat_lg is not None else "no such second",
            f"{rps * 0.95:g}–{rps * 1.05:g}/s",
            verdict(sat_lg is not None and rps * 0.95 <= sat_lg <= rps * 1.05),
        ],
        [
            "429 responses (LoadGenerator)",
            f"{rep.status_counts.get(429, 0):,}",
            f"≈ {rep.sent - expected * duration:,.0f} (sent − admitted)",
            "info",
        ],
        [
            "other statuses / socket errors (LoadGenerator)",
            f"{other_lg} / {errors_total(rep)}",
            "0 / 0",
            verdict(other_lg == 0 and errors_total(rep) == 0),
        ],
        [
            "latency p50 / p99 / max, all answers (LoadGenerator, corrected)",
            f"{ms(rep.corrected.p50)} / {ms(rep.corrected.p99)} / {ms(rep.corrected.max)}",
            "—",
            "info",
        ],
        [
            f"admitted rate = 200s / {duration:g} s (own client, 2nd run)",
            f"{admitted_hc:.1f}/s ({ok_hc:,} × 200 of {hc.scheduled:,})",
            f"{lo:g}–{hi:.1f}/s",
            verdict(lo <= admitted_hc <= hi) if held_hc else void(hc.max_start_delay_s),
        ],
        [
            "admitted rate while limiting (own client): median 200s/s over seconds with 429s",
            f"{sat_hc:g}/s over {n_hc} s" if sat_hc is not None else "no such second",
            f"{rps * 0.95:g}–{rps * 1.05:g}/s",
            verdict(sat_hc is not None and rps * 0.95 <= sat_hc <= rps * 1.05),
        ],
        [
            "429s carrying Retry-After (own client, every 429 checked)",
            f"{hc.retry_after:,} of {hc.rejected:,} "
            f"(values: {', '.join(f'{k!r}×{v:,}' for k, v in hc.retry_after_values.items())})",
            "all, delay-seconds ≥ 0",
            verdict(
                hc.rejected > 0
                and hc.retry_after == hc.rejected
                and hc.retry_after_valid == hc.rejected
            ),
        ],
        [
            "429s carrying RateLimit-Policy and RateLimit (own client)",
            f"{hc.ratelimit_both:,} of {hc.rejected:,}",
            "all (DESIGN.md)",
            verdict(hc.rejected > 0 and hc.ratelimit_both == hc.rejected),
        ],
        [
            "other statuses / socket errors / max start delay (own client)",
            f"{other_hc} / {hc.errors} / {ms(hc.max_start_delay_s)}",
            "0 / 0 / small",
            verdict(other_hc == 0 and hc.errors == 0),
        ],
        [
            "requests the backend counted (readiness was a bare TCP connect)",
            f"{backend_total:,}",
            f"= 200s of both runs ({ok_lg + ok_hc:,})",
            verdict(backend_total == ok_lg + ok_hc),
        ],
    ]
    print_block(
        "1. Rate limit",
        [
            f"command: `{lb.command}` with `[limits] rps = {rps:g}, burst = {burst:g}`, "
            "1 demo backend (`python -m lbtui.fleet.backend --latency-ms 1`)",
            f"load: `LoadGenerator({lb.url}, rate={offered:g}, duration_s={duration:g}, "
            f"connections={connections})`, then the same load from this script's own open-loop "
            "aiohttp client, which reads the headers of every answer "
            "(LoadGenerator keeps no headers)",
            *([trouble] if trouble else []),
        ],
        rows,
    )


# --- scenario 2: breaker vs nginx on 500s ------------------------------------------------------


def breaker_toml(open_s: float, ejection: bool) -> str:
    text = f"""
[breaker]
min_calls = 10
open_s = {open_s:g}

[retries]
attempts = 1
retry_on_status = [500, 502, 503, 504]
"""
    if not ejection:
        text += "\n[ejection]\nconsecutive_failures = 0\n"
    return text


@dataclass
class BreakerRow:
    system: str
    report: LoadReport
    bad_requests: int
    all_requests: int
    events: list[dict[str, Any]] | None = None


def scenario_breaker(d: Durations, connections: int) -> None:
    rate, duration, open_s = 500.0, d.breaker_s, d.open_s
    min_calls, half_open_calls = 10, 3
    bad_index = 1
    rows_out: list[BreakerRow] = []
    commands: list[str] = []
    with Procs() as procs:
        backends = start_backends(procs, 4, bad=bad_index)
        bad = backends[bad_index]
        ports = [b.port for b in backends]

        def measure(system: str, url: str, admin: int | None) -> None:
            before = [fleet_total(p) for p in ports]
            log(f"breaker: {system}: {rate:g}/s for {duration:g} s …")
            rep = run_async(load(url, rate, duration, connections))
            after = [fleet_total(p) for p in ports]
            diff = [a - b for a, b in zip(after, before, strict=True)]
            events = fetch_events(admin) if admin is not None else None
            rows_out.append(BreakerRow(system, rep, diff[bad_index], sum(diff), events))

        for label, ejection in (
            ("lbtui (ejection default: 5)", True),
            ("lbtui (no ejection)", False),
        ):
            lb = start_lbtui(
                procs, f"lbtui-breaker-{int(ejection)}", breaker_toml(open_s, ejection), backends
            )
            commands.append(f"{label}: `{lb.command}`")
            try:
                measure(label, lb.url, lb.admin_port)
            finally:
                procs.stop(lb.proc)
                trouble = lbtui_trouble(lb, label)
                if trouble:
                    commands.append(trouble)
        for label, nu in (
            ("nginx (default next_upstream)", None),
            ("nginx (+ http_500)", "error timeout http_500"),
        ):
            ng = start_nginx(procs, "nginx-" + ("default" if nu is None else "http500"), ports, nu)
            commands.append(
                f"{label}: `nginx -c CONF -p PREFIX -g 'daemon off;'`, 1 worker, "
                f"upstream round robin, keepalive 64"
                + (f", `proxy_next_upstream {nu}`" if nu else "")
            )
            try:
                measure(label, f"http://{HOST}:{ng.port}/", None)
            finally:
                procs.stop(ng)
    probes_bound = min_calls + half_open_calls * math.floor(duration / open_s)
    rows: list[list[str]] = []
    for r in rows_out:
        rep = r.report
        fivexx = sum(v for k, v in rep.status_counts.items() if k >= 500)
        errs = errors_total(rep)
        is_lbtui = r.system.startswith("lbtui")
        rows.append(
            [
                f"{r.system}: client-visible 5xx share (5xx / sent)",
                f"{pct(fivexx, rep.sent)} ({fivexx:,} of {rep.sent:,}; socket errors {errs})",
                "< 1 %, 0 socket errors" if is_lbtui else "— (reference)",
                verdict(fivexx < 0.01 * rep.sent and errs == 0) if is_lbtui else "info",
            ]
        )
        rows.append(
            [
                f"{r.system}: requests that reached the bad backend",
                f"{r.bad_requests:,}",
                (
                    f"≤ min_calls + half_open_calls × ⌊T / open_s⌋ = {min_calls} + "
                    f"{half_open_calls} × {math.floor(duration / open_s)} = {probes_bound}"
                )
                if is_lbtui
                else "—",
                verdict(r.bad_requests <= probes_bound) if is_lbtui else "info",
            ]
        )
        extra = r.all_requests - rep.sent
        rows.append(
            [
                f"{r.system}: backend requests − client requests (retries)",
                f"{extra:,} ({r.all_requests:,} − {rep.sent:,})",
                "≈ 5xx answers the bad backend gave, retried once",
                "info",
            ]
        )
        rows.append(
            [
                f"{r.system}: statuses / latency p50, p99 (corrected)",
                f"{statuses_text(rep.status_counts)} / {ms(rep.corrected.p50)}, "
                f"{ms(rep.corrected.p99)}",
                "—",
                "info",
            ]
        )
        if r.events is not None:
            trans = [
                str(e.get("message", ""))
                for e in r.events
                if e.get("backend") == bad.name and e.get("kind") in ("breaker", "ejection")
            ]
            rows.append(
                [
                    f"{r.system}: breaker/ejection events of the bad backend (admin API)",
                    f"{len(trans)}: " + "; ".join(trans[:6]),
                    "—",
                    "info",
                ]
            )
    print_block(
        "2. Breaker vs nginx on 500s",
        [
            f"4 demo backends (`--latency-ms 1`), `{bad.name}` with `--error-rate 1.0 "
            f"--error-status 500`; load: `LoadGenerator(URL, rate={rate:g}, "
            f"duration_s={duration:g}, connections={connections})` per system, one after another",
            "lbtui config: `[breaker] min_calls = 10, open_s = "
            f"{open_s:g}` (so half-open probes happen within the run; other breaker keys default: "
            "count window 20, failure_rate 50 %, half_open_calls 3), `[retries] attempts = 1, "
            "retry_on_status = [500, 502, 503, 504]`; second row adds "
            "`[ejection] consecutive_failures = 0`",
            *(f"- {c}" for c in commands),
            "bad-backend requests = difference of its `GET /_fleet/stats` `requests_total` "
            "before/after the run (the proxies' readiness checks are outside it)",
        ],
        rows,
    )


# --- scenario 3: kill under load ---------------------------------------------------------------


def kill_toml(algorithm: str) -> str:
    return f"""
[balancer]
algorithm = "{algorithm}"

[health]
enabled = true
path = "{HEALTH_PATH}"
interval_ms = 500
timeout_ms = 500
rise = 2
fall = 2
slow_start_s = 5

[ejection]
consecutive_failures = 5
"""


@dataclass
class KillRun:
    algorithm: str
    command: str
    report: LoadReport
    t_start: float
    t_kill: float
    t_spawn: float
    t_ready: float | None
    failures: list[tuple[float, int]]
    """(time, client failures so far: non-2xx answers + requests without an answer)."""
    victim_totals: list[tuple[float, int, int]]
    """(time, requests_total of the restarted process, client answers so far), every 50 ms."""
    syns: list[float] | None
    """SYNs to the victim's port (connects), when the capture worked."""
    data: list[float] | None
    """Segments with payload to the victim's port (requests)."""
    sniff_error: str | None
    events: list[dict[str, Any]] | None
    victim: str


def failures_of(report: LoadReport) -> int:
    non2xx = sum(v for k, v in report.status_counts.items() if not 200 <= k < 300)
    return non2xx + errors_total(report)


async def kill_run_async(
    procs: Procs,
    lb: Lbtui,
    backends: list[Proc],
    victim_i: int,
    d: Durations,
    rate: float,
    conns: int,
) -> KillRun:
    victim = backends[victim_i]
    port = victim.port
    sniffer = PortSniffer(port, d.kill_s + 30)
    sniffing = sniffer.start()
    gen = LoadGenerator(lb.url, rate, d.kill_s, connections=conns, timeout_s=5.0)
    run = asyncio.create_task(gen.run())
    t_start = time.monotonic()
    failures: list[tuple[float, int]] = []
    totals: list[tuple[float, int, int]] = []
    t_kill = t_spawn = 0.0
    t_ready: float | None = None
    new: Proc | None = None
    timeout = aiohttp.ClientTimeout(total=0.5)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            stats_url = f"http://{HOST}:{port}/_fleet/stats"
            deadline = t_start + d.kill_s + 20
            while not run.done() and time.monotonic() < deadline:  # bounded by the deadline
                now = time.monotonic()
                so_far = gen.report()
                failures.append((now, failures_of(so_far)))
                if not t_kill and now - t_start >= d.kill_at_s:
                    victim.kill()  # SIGKILL by PID
                    t_kill = time.monotonic()
                    log(
                        f"kill: SIGKILL {victim.name} (pid {victim.pid}) "
                        f"at {t_kill - t_start:.2f} s"
                    )
                if t_kill and not t_spawn and now - t_start >= d.restart_at_s:
                    new = spawn_backend(procs, victim.name + "-restarted", port=port)
                    t_spawn = time.monotonic()
                if new is not None and t_ready is None and backend_ready(new):
                    t_ready = time.monotonic()
                    log(
                        f"kill: {victim.name} back on :{port} (pid {new.pid}) "
                        f"at {t_ready - t_start:.2f} s"
                    )
                if t_ready is not None:
                    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, KeyError):
                        async with session.get(stats_url) as resp:
                            n = int((await resp.json())["requests_total"])
                            totals.append((time.monotonic(), n, so_far.completed))
                await asyncio.sleep(max(0.0, POLL_S - (time.monotonic() - now)))
            report = await asyncio.wait_for(run, timeout=d.kill_s + 30)
    finally:
        if not run.done():
            gen.stop()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(run, timeout=10)
        sniffer.stop()
    failures.append((time.monotonic(), failures_of(report)))
    return KillRun(
        algorithm="",
        command=lb.command,
        report=report,
        t_start=t_start,
        t_kill=t_kill,
        t_spawn=t_spawn,
        t_ready=t_ready,
        failures=failures,
        victim_totals=totals,
        syns=sniffer.syns if sniffing else None,
        data=sniffer.data if sniffing else None,
        sniff_error=sniffer.error,
        events=fetch_events(lb.admin_port),
        victim=victim.name,
    )


def last_attempt_after(
    attempts: list[float], t0: float, t1: float, gap: float
) -> tuple[float | None, int]:
    """Within [t0, t1): the last attempt with another one less than ``gap`` seconds away
    (traffic comes in bursts; health checks alone are an interval apart), and the count."""
    inside = sorted(t for t in attempts if t0 <= t < t1)
    last = None
    for a, b in itertools.pairwise(inside):
        if b - a < gap:
            last = b
    return last, len(inside)


def scenario_kill(d: Durations, connections: int) -> None:
    rate, victim_i = 300.0, 1
    runs: list[KillRun] = []
    notes: list[str] = []
    for algorithm in ("round_robin", "weighted_round_robin"):
        with Procs() as procs:
            backends = start_backends(procs, 4)
            lb = start_lbtui(procs, f"lbtui-kill-{algorithm}", kill_toml(algorithm), backends)
            time.sleep(1.2)  # two health intervals: every backend has passed its first checks
            log(f"kill: {algorithm}: {rate:g}/s for {d.kill_s:g} s …")
            r = run_async(kill_run_async(procs, lb, backends, victim_i, d, rate, connections))
            r.algorithm = algorithm
            runs.append(r)
            trouble = lbtui_trouble(lb, algorithm)
            if trouble:
                notes.append(trouble)
    interval, rise, slow = 0.5, 2, 5.0
    rows: list[list[str]] = []
    for r in runs:
        a = r.algorithm
        before = max((n for t, n in r.failures if t < r.t_kill), default=0)
        final = r.failures[-1][1]
        t_last = None
        if final > before:
            t_last = next(t for t, n in r.failures if n == final) - r.t_kill
        after_kill = final - before
        rep = r.report
        rows.append(
            [
                f"{a}: client failures after the kill (non-2xx + no answer)",
                f"{after_kill} (before the kill: {before}; "
                f"statuses {statuses_text(rep.status_counts)}; errors {sum(rep.errors.values())})",
                "0",
                verdict(after_kill == 0 and before == 0),
            ]
        )
        rows.append(
            [
                f"{a}: kill → last client failure (50 ms polls)",
                ms(t_last) if t_last is not None else "none",
                "no failure at all",
                verdict(t_last is None),
            ]
        )
        # attempts on the dead backend: SYNs to its port while it is down
        ev_times: list[str] = []
        if r.events is not None:
            for e in r.events:
                if e.get("backend") != r.victim:
                    continue
                t = event_time(e)
                if t is not None and t >= r.t_kill:
                    ev_times.append(
                        f"{e.get('kind')} +{(t - r.t_kill) * 1e3:.0f} ms: {e.get('message')}"
                    )
        if r.syns is not None and r.data is not None:
            t_dead_end = r.t_spawn or time.monotonic()  # nothing listens before the respawn
            offsets = [
                f"{'S' if t in r.syns else 'D'}{(t - r.t_kill) * 1e3:.0f}"
                for t in sorted(r.syns + r.data)
                if r.t_kill <= t < t_dead_end
            ]
            log(
                f"kill: {a}: attempts on the dead port, ms after the kill (S = SYN, D = data): "
                + " ".join(offsets[:80])
            )
            last, n = last_attempt_after(r.syns + r.data, r.t_kill, t_dead_end, interval / 4)
            syn1 = sum(1 for t in r.syns if r.t_kill <= t < r.t_kill + 1.0)
            data1 = sum(1 for t in r.data if r.t_kill <= t < r.t_kill + 1.0)
            dead_s = t_dead_end - r.t_kill
            rows.append(
                [
                    f"{a}: kill → last attempt on the dead backend (packets to its port)",
                    (ms(last - r.t_kill) if last is not None else "no burst seen")
                    + f"; first 1 s: {syn1} SYNs + {data1} requests on pooled connections; "
                    f"{n} attempts in {dead_s:.1f} s dead (health checks alone ≈ "
                    f"{dead_s / interval:.0f})",
                    "≤ 1 s",
                    verdict(last is not None and last - r.t_kill <= 1.0),
                ]
            )
        else:
            rows.append(
                [
                    f"{a}: kill → last attempt on the dead backend",
                    f"not measured: {r.sniff_error}",
                    "≤ 1 s",
                    "info",
                ]
            )
        if ev_times:
            rows.append(
                [
                    f"{a}: victim's events after the kill (admin API)",
                    "; ".join(ev_times[:6]),
                    "—",
                    "info",
                ]
            )
        # re-entry
        first = next((t for t, n, _c in r.victim_totals if n > 0), None)
        # its share of what the client got answered over the last 0.5 s (not of the nominal
        # rate: on a noisy host the client falls behind and catches up in bursts)
        t_share = None
        win = 0.5
        for i, (t, n, c) in enumerate(r.victim_totals):
            j = i
            while j > 0 and t - r.victim_totals[j - 1][0] <= win:
                j -= 1
            t0, n0, c0 = r.victim_totals[j]
            if t - t0 >= win * 0.8 and c - c0 >= 20 and (n - n0) / (c - c0) >= 0.8 * 0.25:
                t_share = t
                break
        spawn_to_ready = (r.t_ready - r.t_spawn) if r.t_ready is not None else None
        target_first = interval * (rise + 1)
        if r.t_ready is None:
            rows.append([f"{a}: restart", "the restarted backend never became ready", "—", "FAIL"])
            continue
        rows.append(
            [
                f"{a}: restart: spawn → listening (ready line)",
                ms(spawn_to_ready),
                "— (Python start-up)",
                "info",
            ]
        )
        rows.append(
            [
                f"{a}: listening → first request reaches it (stats polled / 50 ms)",
                ms(first - r.t_ready) if first is not None else "never",
                f"≤ interval × rise + 1 interval of check phase = {ms(target_first)}",
                verdict(first is not None and first - r.t_ready <= target_first),
            ]
        )
        end_total = r.victim_totals[-1][1] if r.victim_totals else 0
        # Slow start ramps the weight linearly from 10 % to 100 % over slow_start_s; against 3
        # backends at weight 1, 80 % of a fair share needs a factor of about 0.76, i.e. about
        # 0.73 × slow_start_s after the backend is up again (itself 0.5–1.5 s after listening).
        lo_ramp = interval + 0.6 * slow
        hi_ramp = target_first + slow
        reached = t_share - r.t_ready if t_share is not None else None
        ramped = reached is not None and lo_ramp <= reached <= hi_ramp
        observed = r.victim_totals[-1][0] - r.t_ready if r.victim_totals else 0.0
        measured = (ms(reached) if reached is not None else "not reached") + (
            f"; {end_total:,} requests by the end"
        )
        if reached is not None and reached < lo_ramp:
            measured += " (too early: slow start not applied"
            measured += ", round_robin ignores weights)" if a == "round_robin" else ")"
        rows.append(
            [
                f"{a}: listening → ≥ 80 % of a fair share (¼ of the answers over 0.5 s)",
                measured,
                f"{lo_ramp:g}–{hi_ramp:g} s (slow start {slow:g} s, weight 10 % → 100 %)",
                verdict(ramped)
                if reached is not None or observed >= hi_ramp
                else void_short(observed),
            ]
        )
    header = [
        "4 demo backends (`--latency-ms 1`); lbtui config: `[balancer] algorithm = ALG`, "
        f'`[health] enabled = true, path = "{HEALTH_PATH}", interval_ms = 500, timeout_ms = 500, '
        "rise = 2, fall = 2, slow_start_s = 5`, `[ejection] consecutive_failures = 5` "
        "(retries, breaker: defaults)",
        *(f"- {r.algorithm}: `{r.command}`" for r in runs),
        f"load: `LoadGenerator(URL, rate={rate:g}, duration_s={d.kill_s:g}, "
        f"connections={connections})`; SIGKILL of `api-{victim_i + 1}` at {d.kill_at_s:g} s, "
        f"restart on the same port at {d.restart_at_s:g} s",
        "attempts on the dead backend: TCP segments to its port captured on lo (AF_PACKET socket, "
        "BPF filter): while nothing listens, an attempt is a SYN (new connect, refused) or a "
        "request written on a pooled connection (answered by RST); health checks add one SYN "
        "per 500 ms, so the last attempt is the last one less than 125 ms from another",
        *notes,
    ]
    if all(r.events is None for r in runs):
        header.append("admin API: `GET /api/v1/events` did not answer, so no event times were read")
    print_block("3. Kill under load", header, rows)


# --- main --------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short durations: a smoke run")
    p.add_argument("--only", action="append", choices=SCENARIOS, help="run just these scenarios")
    p.add_argument("--connections", type=int, default=128, help="load connections (128)")
    args = p.parse_args()
    d = Durations.of(args.quick)
    cmd = " ".join(["bench/traffic.py", *sys.argv[1:]])
    print(f"## `.venv/bin/python {cmd}`" + (" (quick)" if args.quick else ""))
    failed: dict[str, str] = {}
    try:
        require_tools("nginx")
    except BenchError as exc:
        print(f"traffic: {exc}", file=sys.stderr)
        return 1
    runners = {"rate": scenario_rate, "breaker": scenario_breaker, "kill": scenario_kill}
    for name in args.only or SCENARIOS:
        try:
            runners[name](d, args.connections)
        except (BenchError, subprocess.SubprocessError, OSError, TimeoutError) as exc:
            log(f"{name}: FAILED: {exc}")
            failed[name] = str(exc).splitlines()[-1] if str(exc) else type(exc).__name__
    for name, why in failed.items():
        print(f"\n{name}: failed: {why}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
