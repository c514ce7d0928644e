"""The scenarios of ``python -m bench``: lbtui, nginx, HAProxy and direct, side by side.

Every scenario starts its own processes on 127.0.0.1 (``common.Procs``: stopped by PID on the
way out, also on failure), runs every system one after the other in the same invocation, and
returns tables whose rows are systems and whose last column says whether lbtui meets its
target. A system whose binary is missing (nginx, haproxy) gets a row that says so; without wrk,
closed-loop load comes from ``pyload.py`` (a Python client, much slower than wrk — the table
says so) and the static nginx backends give way to ``lbtui.fleet.backend`` processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from common import (
    BENCH,
    HOST,
    PYTHON,
    BenchError,
    Proc,
    Procs,
    WrkResult,
    cpu_meter,
    finish_wrk,
    have,
    log,
    start_wrk,
    table,
)

from lbtui.loadgen import LoadGenerator, LoadReport

HEALTH_PATH = "/_fleet/health"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy

FULL_POLICY = """
[limits]
rps = 1000000
burst = 100000
per_client_rps = 1000000
per_client_burst = 100000
max_in_flight = 100000

[breaker]
enabled = true

[health]
enabled = true
path = "/"
interval_ms = 1000
"""
"""lbtui with every per-request policy on: global and per-client token buckets, a concurrency
limit, breakers, passive ejection (default), active health checks; the admin API is polled for
its state once a second while it runs ("stats on")."""


# --- settings and results ------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    quick: bool
    backends: int
    duration: float
    """Seconds of each measured closed-loop run."""
    warmup: float
    connections: int
    rate: float
    """Open-loop arrival rate (requests per second)."""
    open_duration: float
    kill_duration: float
    kill_at: float
    idle: int
    """Idle keep-alive connections in the idle scenario."""
    nginx: bool
    haproxy: bool
    wrk: bool
    workers: int = 2
    """Processes (HAProxy: threads) of each proxy in the multi-process rows of table 1."""

    @classmethod
    def make(
        cls,
        quick: bool,
        idle: int | None = None,
        without: Sequence[str] = (),
        workers: int = 2,
    ) -> Settings:
        tools = {t: have(t) and t not in without for t in ("nginx", "haproxy", "wrk")}
        if quick:
            figures = (2, 1.0, 0.3, 64, 1000.0, 1.0, 3.0, 1.0, idle or 1000)
        else:
            figures = (4, 10.0, 2.0, 64, 1000.0, 10.0, 10.0, 3.0, idle or 10_000)
        return cls(quick, *figures, **tools, workers=workers)

    @property
    def load_tool(self) -> str:
        return "wrk" if self.wrk else "pyload (Python; wrk not installed)"

    def closed_loop_text(self, duration: float | None = None) -> str:
        d = self.duration if duration is None else duration
        if self.wrk:
            return f"wrk -t1 -c{self.connections} -d{d:g}s"
        return f"bench/pyload.py -c{self.connections} -d{d:g}s (wrk not installed)"


@dataclass
class Chart:
    """What to plot of a table: one group of bars a system, one bar a series."""

    title: str
    unit: str
    series: list[str]
    rows: list[tuple[str, list[float | None]]]
    log_scale: bool = False


@dataclass
class Table:
    key: str
    title: str
    setup: str
    headers: list[str]
    rows: list[list[str]]
    verdicts: list[tuple[str, bool | None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    chart: Chart | None = None

    def markdown(self) -> str:
        out = [f"### {self.title}", "", self.setup, "", table(self.headers, self.rows)]
        if self.verdicts:
            out.append("")
            for text, ok in self.verdicts:
                mark = "PASS" if ok else "n/a" if ok is None else "MISS"
                out.append(f"- **{mark}** {text}")
        for note in self.notes:
            out += ["", note]
        return "\n".join(out)


def missing_row(system: str, tool: str, width: int) -> list[str]:
    return [system, f"skipped: {tool} not installed", *([""] * (width - 2))]


def failed_row(system: str, why: str, width: int) -> list[str]:
    return [system, f"failed: {why[:80]}", *([""] * (width - 2))]


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


# --- processes -----------------------------------------------------------------------------------


def raise_nofile(want: int = 0) -> int:
    """Raise this process's open-files limit (children inherit it): to ``want`` if the hard
    limit can be raised that far (root can), else to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if want > hard != resource.RLIM_INFINITY:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def fast_backends(procs: Procs, s: Settings, n: int | None = None) -> tuple[list[int], str]:
    """Backends that are not the bottleneck: one nginx worker answering ``return 200`` on
    several ports, or (no nginx) Python demo backends."""
    n = s.backends if n is None else n
    if s.nginx:
        _, ports = procs.static_backends(n)
        return ports, f"{n} static nginx backends (one worker, `return 200`, 64 bytes)"
    ports = [procs.fleet_backend(f"api-{i + 1}").port for i in range(n)]
    return ports, f"{n} Python demo backends (`lbtui.fleet.backend`; nginx not installed)"


def fleet_requests(port: int) -> int:
    with _OPENER.open(f"http://{HOST}:{port}/_fleet/stats", timeout=2.0) as resp:
        return int(json.load(resp)["requests_total"])


@dataclass
class System:
    name: str
    tool: str | None
    """The binary it needs (None: always available)."""
    start: Callable[[Procs, list[int]], Proc | None]
    processes: int = 1
    """Processes (HAProxy: threads) serving; table 1 compares rows of the same count."""


def lbtui_system(
    name: str, config: str = "", algorithm: str = "round_robin", workers: int = 1
) -> System:
    return System(
        name,
        None,
        lambda procs, ports: procs.lbtui(ports, algorithm, config, "lbtui", workers),
        workers,
    )


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


AIOHTTP = '[listener]\nengine = "aiohttp"\n'


def available(s: Settings, system: System) -> bool:
    return system.tool is None or bool(getattr(s, system.tool))


# --- load ----------------------------------------------------------------------------------------


class ClosedLoop:
    """wrk, or pyload.py when wrk is missing: started now, finished (and parsed) later."""

    def __init__(self, s: Settings, url: str, duration: float) -> None:
        self.wrk = s.wrk
        if s.wrk:
            duration = max(1.0, float(round(duration)))  # wrk takes whole seconds
        self.duration = duration
        if s.wrk:
            self.popen = start_wrk(url, duration, s.connections)
        else:
            argv = [PYTHON, str(BENCH / "pyload.py"), url, "--duration", str(duration)]
            argv += ["--connections", str(s.connections)]
            self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)

    def finish(self) -> WrkResult:
        if self.wrk:
            return finish_wrk(self.popen, self.duration)
        try:
            out, _ = self.popen.communicate(timeout=self.duration + 60)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.communicate()
            raise BenchError("pyload did not finish in time") from None
        d = json.loads(out.strip().splitlines()[-1])
        return WrkResult(
            requests=int(d["requests"]),
            seconds=float(d["seconds"]),
            rps=float(d["rps"]),
            non_2xx_3xx=int(d["non_2xx_3xx"]),
            connect_errors=int(d["connect"]),
            read_errors=int(d["read"]),
            write_errors=int(d["write"]),
            timeout_errors=int(d["timeout"]),
            raw=out,
        )


def closed_loop(s: Settings, url: str, duration: float) -> WrkResult:
    return ClosedLoop(s, url, duration).finish()


def open_loop(url: str, rate: float, duration: float, connections: int = 64) -> LoadReport:
    """``LoadGenerator`` at ``rate`` for ``duration`` seconds.

    It runs on asyncio's own loop, not uvloop: there ``loop.time()`` is the monotonic clock,
    while uvloop's is libuv's loop time, cached once an iteration at millisecond resolution,
    which shifts every intended send time of a run by up to a millisecond (sub-millisecond
    medians then drift from run to run by as much as they are worth)."""

    async def go() -> LoadReport:
        gen = LoadGenerator(url, rate, duration, connections=connections, timeout_s=5.0)
        return await asyncio.wait_for(gen.run(), timeout=duration + 30)

    return asyncio.run(go())


def open_errors(r: LoadReport) -> int:
    return sum(r.errors.values()) + r.unsent


def status_share(r: LoadReport, lo: int, hi: int) -> int:
    return sum(n for st, n in r.status_counts.items() if lo <= st < hi)


# --- 1 + 2: throughput and CPU per request -------------------------------------------------------


class StatePoller:
    """Polls lbtui's admin API (state and /metrics) once a second from a thread, as a console
    and a scraper would."""

    def __init__(self, admin_port: int) -> None:
        self.base = f"http://{HOST}:{admin_port}"
        self.polls = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            for path in ("/api/v1/state", "/metrics"):
                try:
                    with _OPENER.open(self.base + path, timeout=2.0) as resp:
                        resp.read()
                    self.polls += 1
                except OSError:
                    self.errors += 1

    def __enter__(self) -> StatePoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def admin_port_of(proc: Proc) -> int | None:
    """The admin port lbtui printed on its ready line, if any."""
    out = proc.output()
    mark = "admin API http://"
    i = out.find(mark)
    if i < 0:
        return None
    rest = out[i + len(mark) :].split()[0]
    return int(rest.rsplit(":", 1)[1].rstrip("/;,"))


FULL_POLICY_TEXT = "limits + breakers + health + stats"


def count_text(tool: str, n: int) -> str:
    """``1 worker``, ``2 threads``, …: what a proxy runs ``n`` of (one lbtui: ``1 process``)."""
    if tool == "lbtui" and n == 1:
        return "1 process"
    return plural(n, {"nginx": "worker", "haproxy": "thread", "lbtui": "worker"}[tool])


def nginx_system(workers: int) -> System:
    return System(
        f"nginx, {count_text('nginx', workers)}",
        "nginx",
        lambda procs, ports: procs.nginx_proxy(ports, workers=workers),
        workers,
    )


def haproxy_system(threads: int) -> System:
    return System(
        f"haproxy, {count_text('haproxy', threads)}",
        "haproxy",
        lambda procs, ports: procs.haproxy(ports, hardened=True, threads=threads),
        threads,
    )


def throughput_systems(workers: int) -> list[System]:
    """direct, then nginx, HAProxy and lbtui (plain, on the aiohttp listener, every policy on)
    with one process (thread) each, then with ``workers`` each."""
    systems = [System("direct", None, lambda procs, ports: None)]
    for n in (1, workers):
        lb = f"lbtui, {count_text('lbtui', n)}"
        systems += [nginx_system(n), haproxy_system(n), lbtui_system(lb, workers=n)]
        if n == 1:
            systems.append(lbtui_system(f"{lb}, aiohttp listener", AIOHTTP))
        systems.append(lbtui_system(f"{lb}, {FULL_POLICY_TEXT}", FULL_POLICY, workers=n))
    return systems


@dataclass(frozen=True)
class Run:
    """One measured closed-loop run of one system."""

    res: WrkResult
    cpu_s: float | None
    """The proxy's CPU seconds (every process of it); None for direct."""
    processes: int
    """How many processes the CPU figure covers."""
    polls: int
    """Admin API answers to the ``StatePoller`` during the run."""

    @property
    def cpu_us(self) -> float | None:
        if self.cpu_s is None or not self.res.requests:
            return None
        return self.cpu_s * 1e6 / self.res.requests


def scenario_throughput(s: Settings) -> list[Table]:
    systems = throughput_systems(s.workers)
    runs: dict[str, list[Run]] = {}
    failed: dict[str, str] = {}
    rounds = 1 if s.quick else 3
    duration = s.duration if s.quick else s.duration / 2
    with Procs() as procs:
        ports, backends_text = fast_backends(procs, s)
        for rnd in range(rounds):
            for system in systems:
                if not available(s, system) or system.name in failed:
                    continue
                log(f"throughput [{rnd + 1}/{rounds}]: {system.name} …")
                proc = None
                try:
                    proc = system.start(procs, ports)
                    url = f"http://{HOST}:{proc.port if proc else ports[0]}/"
                    if s.warmup:
                        closed_loop(s, url, s.warmup)
                    poller = None
                    if proc is not None and "stats" in system.name:
                        admin = admin_port_of(proc)
                        poller = StatePoller(admin) if admin else None
                    with poller or _nothing(), cpu_meter([proc.pid] if proc else []) as meter:
                        res = closed_loop(s, url, duration)
                    run = Run(
                        res,
                        meter.seconds if proc else None,
                        meter.processes,
                        poller.polls if poller else 0,
                    )
                    runs.setdefault(system.name, []).append(run)
                    log(
                        f"  {res.rps:,.0f} req/s"
                        + (f", {run.cpu_us:.0f} µs/req" if run.cpu_us else "")
                    )
                except BenchError as exc:
                    failed[system.name] = str(exc).splitlines()[-1]
                finally:
                    if proc is not None:
                        procs.stop(proc)
    # The run with the median req/s stands for each system (rounds alternate systems, so that
    # a machine busier in one moment than another does not favour one system).
    got = {name: sorted(rs, key=lambda r: r.res.rps)[len(rs) // 2] for name, rs in runs.items()}
    measured = [system for system in systems if system.name in got]
    # Like for like: each row against nginx and the fastest proxy with as many processes.
    nginx_rps = {x.processes: got[x.name].res.rps for x in measured if x.tool == "nginx"}
    best: dict[int, float] = {}
    for x in measured:
        if x.name != "direct":
            best[x.processes] = max(best.get(x.processes, 0.0), got[x.name].res.rps)
    headers = [
        "system",
        "req/s",
        "÷ nginx",
        "÷ best proxy",
        "CPU µs/req",
        "non-2xx",
        "socket errors",
        "req/s per round",
    ]
    cpu_headers = ["system", "requests", "CPU s", "µs / request", "processes", "admin polls"]
    rows: list[list[str]] = []
    cpu_rows: list[list[str]] = []
    for system in systems:
        name = system.name
        if not available(s, system):
            rows.append(missing_row(name, system.tool or "", len(headers)))
            cpu_rows.append(missing_row(name, system.tool or "", len(cpu_headers)))
            continue
        if name in failed:
            rows.append(failed_row(name, failed[name], len(headers)))
            cpu_rows.append(failed_row(name, failed[name], len(cpu_headers)))
            continue
        run = got[name]
        res, us = run.res, run.cpu_us
        rows.append(
            [
                name,
                f"{res.rps:,.0f}",
                ratio(res.rps, nginx_rps.get(system.processes)),
                "-" if name == "direct" else ratio(res.rps, best.get(system.processes)),
                "-" if us is None else f"{us:.0f}",
                str(sum(r.res.non_2xx_3xx for r in runs[name])),
                str(sum(r.res.socket_errors for r in runs[name])),
                " ".join(f"{r.res.rps / 1e3:.1f}k" for r in runs[name]),
            ]
        )
        if name != "direct":
            cpu_rows.append(
                [
                    name,
                    f"{res.requests:,}",
                    "-" if run.cpu_s is None else f"{run.cpu_s:.2f}",
                    "-" if us is None else f"{us:.1f}",
                    str(run.processes),
                    str(run.polls) if run.polls else "-",
                ]
            )

    def rps_of(tool: str, n: int) -> float | None:
        name = f"{tool}, {count_text(tool, n)}"
        return got[name].res.rps if name in got else None

    n = s.workers
    verdicts: list[tuple[str, bool | None]] = []
    for lb_n, ng_n, target in ((1, 1, True), (n, n, True), (n, 1, False)):
        label = f"lbtui ({count_text('lbtui', lb_n)}) ÷ nginx ({count_text('nginx', ng_n)})"
        lb, ng = rps_of("lbtui", lb_n), rps_of("nginx", ng_n)
        if lb is None or ng is None:
            what = "lbtui" if lb is None else "nginx"
            verdicts.append((f"{label}: {what} not measured", None))
        elif target:
            verdicts.append((f"{label} = {lb / ng:.2f} (target ≥ 0.5)", lb / ng >= 0.5))
        else:
            verdicts.append((f"{label} = {lb / ng:.2f} (for information, no target)", None))
    cores = os.cpu_count() or 1
    setup = (
        f"{s.closed_loop_text(duration)} `GET /` (64-byte answers) after {s.warmup:g} s of "
        f"warm-up, {rounds} round(s) over all systems, the median round shown, "
        f"{backends_text}; every proxy round robin with keep-alive to the backends; "
        "CPU = the proxy's user+system CPU (all its processes) ÷ requests. The first rows run "
        "one process (HAProxy: one thread) a proxy, the last ones "
        f"{n}: nginx `worker_processes {n}` with `listen … reuseport`, HAProxy "
        f"`nbthread {n}`, lbtui `[listener] workers = {n}` ({n} processes accepting on the "
        'port with `SO_REUSEPORT`, sharing rate-limit and breaker state). "aiohttp '
        'listener": `[listener] engine = "aiohttp"`; '
        f'"{FULL_POLICY_TEXT}": the policies of table 2. "÷ nginx" and "÷ best proxy" '
        "compare each row with nginx and with the fastest proxy running as many processes "
        "(threads) as it does (direct: with nginx, 1 worker)."
    )
    notes = [
        f"This machine has {cores} cores, and wrk and the backends run on them too: the "
        f"{n}-process rows share those cores with the load generator and the backends (as do "
        f"the others), so they show what a proxy gains from {n} processes here, not how it "
        "would scale on cores of its own."
    ]
    if not s.wrk:
        notes.append(
            "Without wrk the Python load generator is the bottleneck: these req/s measure it "
            "as much as the proxies."
        )
    t1 = Table(
        "throughput",
        "1. Small GETs, maximum throughput (round robin)",
        setup,
        headers,
        rows,
        verdicts,
        notes,
        Chart(
            "Small GETs: requests per second",
            "req/s",
            ["req/s"],
            [(x.name, [got[x.name].res.rps]) for x in measured],
        ),
    )
    cpu_verdicts: list[tuple[str, bool | None]] = []
    for k in (1, n):
        name = f"lbtui, {count_text('lbtui', k)}, {FULL_POLICY_TEXT}"
        us = got[name].cpu_us if name in got else None
        if us is not None:
            cpu_verdicts.append((f"{name}: {us:.0f} µs (target ≤ 100)", us <= 100))
    t2 = Table(
        "cpu",
        "2. CPU per proxied request",
        "The runs of table 1 (" + s.closed_loop_text(duration) + ", the median round): the "
        "proxy's CPU seconds (user + system) ÷ requests answered. Every process of a proxy "
        "counts (\"processes\"): nginx's master and workers; lbtui's first process, the "
        "worker processes it starts and, with workers, the resource tracker of Python's "
        "multiprocessing (the trees are sampled through the run, so that a process exiting "
        f'early counts too). The "{FULL_POLICY_TEXT}" rows, with 1 and {n} lbtui processes, have '
        "global and per-client token buckets, a concurrency limit, breakers, passive ejection "
        "and active health checks on, and the admin API polled (state + /metrics) once a "
        "second.",
        cpu_headers,
        cpu_rows,
        cpu_verdicts,
        chart=Chart(
            "CPU per proxied request",
            "µs",
            ["µs/request"],
            [(x.name, [us]) for x in measured if (us := got[x.name].cpu_us) is not None],
        ),
    )
    return [t1, t2]


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# --- 3: added latency at a fixed rate ------------------------------------------------------------


def scenario_latency(s: Settings) -> list[Table]:
    systems = [
        System("direct", None, lambda procs, ports: None),
        System("nginx", "nginx", lambda procs, ports: procs.nginx_proxy(ports)),
        System("haproxy", "haproxy", lambda procs, ports: procs.haproxy(ports, hardened=True)),
        lbtui_system("lbtui"),
    ]
    got: dict[str, LoadReport] = {}
    failed: dict[str, str] = {}
    with Procs() as procs:
        ports, backends_text = fast_backends(procs, s)
        for system in systems:
            if not available(s, system):
                continue
            log(f"latency: {system.name} …")
            proc = None
            try:
                proc = system.start(procs, ports)
                url = f"http://{HOST}:{proc.port if proc else ports[0]}/"
                open_loop(url, s.rate, max(s.warmup, 0.5))
                got[system.name] = open_loop(url, s.rate, s.open_duration)
            except BenchError as exc:
                failed[system.name] = str(exc).splitlines()[-1]
            finally:
                if proc is not None:
                    procs.stop(proc)
    direct = got.get("direct")
    headers = ["system", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "added p50", "added p99"]
    headers += ["raw p50", "raw p99", "errors"]
    rows: list[list[str]] = []
    for system in systems:
        name = system.name
        if not available(s, system):
            rows.append(missing_row(name, system.tool or "", len(headers)))
            continue
        if name in failed:
            rows.append(failed_row(name, failed[name], len(headers)))
            continue
        r = got[name].corrected
        add50 = r.p50 - direct.corrected.p50 if direct and name != "direct" else None
        add99 = r.p99 - direct.corrected.p99 if direct and name != "direct" else None
        raw = got[name].raw
        rows.append(
            [
                name, fmt_ms(r.p50), fmt_ms(r.p90), fmt_ms(r.p99), fmt_ms(r.p999),
                fmt_ms(add50), fmt_ms(add99), fmt_ms(raw.p50), fmt_ms(raw.p99),
                str(open_errors(got[name])),
            ]
        )  # fmt: skip
    verdicts: list[tuple[str, bool | None]] = []
    lb = got.get("lbtui")
    if lb and direct:
        a50 = lb.corrected.p50 - direct.corrected.p50
        a99 = lb.corrected.p99 - direct.corrected.p99
        verdicts.append((f"lbtui adds {a50 * 1e3:.2f} ms at p50 (target ≤ 0.5 ms)", a50 <= 5e-4))
        verdicts.append((f"lbtui adds {a99 * 1e3:.2f} ms at p99 (target ≤ 2 ms)", a99 <= 2e-3))
    return [
        Table(
            "latency",
            f"3. Added latency at a fixed {s.rate:,.0f} req/s (open loop)",
            f"`lbtui.loadgen.LoadGenerator`: {s.rate:,.0f} req/s for {s.open_duration:g} s after "
            f"{max(s.warmup, 0.5):g} s of warm-up, 64 connections, latency from each request's "
            f'intended send time (no coordinated omission); {backends_text}. "added" = the '
            "system's quantile minus direct's, both measured here.",
            headers,
            rows,
            verdicts,
            chart=Chart(
                "Latency at a fixed rate",
                "ms",
                ["p50", "p99", "p99.9"],
                [
                    (n, [r.corrected.p50 * 1e3, r.corrected.p99 * 1e3, r.corrected.p999 * 1e3])
                    for n, r in got.items()
                ],
            ),
        )
    ]


# --- 4: a backend SIGKILLed under load -----------------------------------------------------------


def scenario_kill(s: Settings) -> list[Table]:
    systems = [
        lbtui_system("lbtui"),
        System("nginx", "nginx", lambda procs, ports: procs.nginx_proxy(ports)),
        System("haproxy (defaults)", "haproxy", lambda procs, ports: procs.haproxy(ports, False)),
        System(
            "haproxy (hardened)",
            "haproxy",
            lambda procs, ports: procs.haproxy(ports, True, health_path=HEALTH_PATH),
        ),
    ]
    headers = ["system", "requests", "req/s", "non-2xx", "socket errors"]
    rows: list[list[str]] = []
    lb: WrkResult | None = None
    for system in systems:
        if not available(s, system):
            rows.append(missing_row(system.name, system.tool or "", len(headers)))
            continue
        log(f"kill: {system.name} …")
        try:
            with Procs() as procs:
                backends = [procs.fleet_backend(f"api-{i + 1}") for i in range(s.backends)]
                proxy = system.start(procs, [b.port for b in backends])
                assert proxy is not None
                load = ClosedLoop(s, f"http://{HOST}:{proxy.port}/", s.kill_duration)
                time.sleep(s.kill_at)  # the fault's schedule, not a wait for a condition
                backends[-1].kill()
                res = load.finish()
        except BenchError as exc:
            rows.append(failed_row(system.name, str(exc).splitlines()[-1], len(headers)))
            continue
        if system.name == "lbtui":
            lb = res
        rows.append(
            [
                system.name,
                f"{res.requests:,}",
                f"{res.rps:,.0f}",
                str(res.non_2xx_3xx),
                res.socket_errors_text(),
            ]
        )
    verdicts: list[tuple[str, bool | None]] = []
    if lb is not None:
        ok = lb.non_2xx_3xx == 0 and lb.socket_errors == 0
        verdicts.append(
            (
                f"lbtui: {lb.non_2xx_3xx} non-2xx, {lb.socket_errors} socket errors (target 0, 0)",
                ok,
            )
        )
    return [
        Table(
            "kill",
            "4. A backend SIGKILLed under load",
            f"{s.closed_loop_text(s.kill_duration)} `GET /` through each system in front of "
            f"{s.backends} fresh Python demo backends; SIGKILL of one backend {s.kill_at:g} s in. "
            "HAProxy (defaults): no `option redispatch`, no health checks; HAProxy (hardened): "
            "both (`check inter 500 fall 1 rise 2` on /_fleet/health); nginx: its default "
            "`proxy_next_upstream error timeout`; lbtui: its defaults.",
            headers,
            rows,
            verdicts,
        )
    ]


# --- 5: one slow backend -------------------------------------------------------------------------


def scenario_slow(s: Settings) -> list[Table]:
    systems = [
        System("direct (a fast backend)", None, lambda procs, ports: None),
        System("nginx round robin", "nginx", lambda procs, ports: procs.nginx_proxy(ports)),
        System(
            "nginx least_conn",
            "nginx",
            lambda procs, ports: procs.nginx_proxy(ports, "least_conn"),
        ),
        System(
            "haproxy leastconn",
            "haproxy",
            lambda procs, ports: procs.haproxy(
                ports, True, health_path=HEALTH_PATH, balance="leastconn"
            ),
        ),
        lbtui_system("lbtui p2c_ewma", algorithm="p2c_ewma"),
        lbtui_system("lbtui least_request", algorithm="least_request"),
    ]
    warm = 2.0 if not s.quick else 0.5
    headers = ["system", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "to the slow one", "errors"]
    rows: list[list[str]] = []
    got: dict[str, LoadReport] = {}
    with Procs() as procs:
        fast, fast_text = fast_backends(procs, s, s.backends - 1)
        slow = procs.fleet_backend("slow", latency_ms=200.0)
        ports = [slow.port, *fast]
        for system in systems:
            if not available(s, system):
                rows.append(missing_row(system.name, system.tool or "", len(headers)))
                continue
            log(f"slow backend: {system.name} …")
            proxy = None
            try:
                proxy = system.start(procs, ports)
                url = f"http://{HOST}:{proxy.port if proxy else fast[0]}/"
                open_loop(url, s.rate, warm)
                before = fleet_requests(slow.port)
                r = open_loop(url, s.rate, s.open_duration)
                to_slow = fleet_requests(slow.port) - before
            except (BenchError, OSError) as exc:
                rows.append(failed_row(system.name, str(exc).splitlines()[-1], len(headers)))
                continue
            finally:
                if proxy is not None:
                    procs.stop(proxy)
            got[system.name] = r
            c = r.corrected
            share = f"{to_slow} ({100.0 * to_slow / max(r.sent, 1):.2f} %)"
            rows.append(
                [
                    system.name, fmt_ms(c.p50), fmt_ms(c.p99), fmt_ms(c.p999), fmt_ms(c.max),
                    share if proxy is not None else "-", str(open_errors(r)),
                ]
            )  # fmt: skip
    verdicts: list[tuple[str, bool | None]] = []
    lb = got.get("lbtui p2c_ewma")
    if lb:
        c = lb.corrected
        verdicts.append((f"lbtui p2c_ewma p99 {c.p99 * 1e3:.2f} ms (target ≤ 3)", c.p99 <= 3e-3))
        verdicts.append(
            (f"lbtui p2c_ewma p99.9 {c.p999 * 1e3:.2f} ms (target ≤ 10)", c.p999 <= 10e-3)
        )
    return [
        Table(
            "slow",
            "5. One backend 200 ms slow",
            f"{fast_text}, and a Python demo backend answering after 200 ms; "
            f"`LoadGenerator` {s.rate:,.0f} req/s open loop for {s.open_duration:g} s after "
            f"{warm:g} s of warm-up (at the same rate, so the balancers have learnt); "
            '"to the slow one": requests the slow backend counted during the measured run.',
            headers,
            rows,
            verdicts,
            chart=Chart(
                "One backend 200 ms slow: tail latency",
                "ms",
                ["p50", "p99", "p99.9"],
                [
                    (n, [r.corrected.p50 * 1e3, r.corrected.p99 * 1e3, r.corrected.p999 * 1e3])
                    for n, r in got.items()
                ],
                log_scale=True,
            ),
        )
    ]


# --- 6: one backend answering 500 ----------------------------------------------------------------

RETRY_ON_500 = """
[retries]
attempts = 2
retry_on_status = [500, 502, 503, 504]
"""


def scenario_errors(s: Settings) -> list[Table]:
    systems = [
        System("nginx (default)", "nginx", lambda procs, ports: procs.nginx_proxy(ports)),
        System(
            "nginx + http_500",
            "nginx",
            lambda procs, ports: procs.nginx_proxy(ports, next_upstream="error timeout http_500"),
        ),
        System(
            "haproxy (hardened + retry-on 5xx)",
            "haproxy",
            lambda procs, ports: procs.haproxy(
                ports, True, health_path=HEALTH_PATH, extra="  retry-on 500 502 503 504\n"
            ),
        ),
        lbtui_system("lbtui, retries on 5xx", RETRY_ON_500),
    ]
    headers = ["system", "answered", "5xx", "5xx share", "bad backend hits", "errors"]
    rows: list[list[str]] = []
    lb: LoadReport | None = None
    for system in systems:
        if not available(s, system):
            rows.append(missing_row(system.name, system.tool or "", len(headers)))
            continue
        log(f"500s: {system.name} …")
        try:
            with Procs() as procs:
                good = [procs.fleet_backend(f"api-{i + 1}") for i in range(s.backends - 1)]
                bad = procs.fleet_backend("bad", error_rate=1.0)
                proxy = system.start(procs, [bad.port] + [b.port for b in good])
                assert proxy is not None
                before = fleet_requests(bad.port)
                r = open_loop(f"http://{HOST}:{proxy.port}/", s.rate, s.open_duration)
                hits = fleet_requests(bad.port) - before
        except (BenchError, OSError) as exc:
            rows.append(failed_row(system.name, str(exc).splitlines()[-1], len(headers)))
            continue
        n5 = status_share(r, 500, 600)
        share = 100.0 * n5 / max(r.completed, 1)
        if system.name.startswith("lbtui"):
            lb = r
        rows.append(
            [
                system.name,
                f"{r.completed:,}",
                str(n5),
                f"{share:.2f} %",
                str(hits),
                str(open_errors(r)),
            ]
        )
    verdicts: list[tuple[str, bool | None]] = []
    if lb is not None:
        share = 100.0 * status_share(lb, 500, 600) / max(lb.completed, 1)
        verdicts.append((f"lbtui: {share:.2f} % 5xx seen by clients (target < 0.5 %)", share < 0.5))
    return [
        Table(
            "errors",
            "6. One backend answering 500 to everything",
            f"{s.backends} Python demo backends, one answering 500 to every request; "
            f"`LoadGenerator` {s.rate:,.0f} req/s for {s.open_duration:g} s from a cold start. "
            "lbtui: `retries.retry_on_status = [500, 502, 503, 504]`, `attempts = 2`, breakers "
            'and passive ejection at their defaults. "bad backend hits": requests it counted.',
            headers,
            rows,
            verdicts,
        )
    ]


# --- 7: idle keep-alive connections --------------------------------------------------------------


def tree_rss(pid: int) -> int:
    root = psutil.Process(pid)
    total = 0
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


class IdleConnections:
    """The helper process holding ``n`` idle keep-alive connections to ``port``."""

    def __init__(self, procs: Procs, port: int, n: int) -> None:
        argv = [PYTHON, str(BENCH / "idle_conns.py"), str(port), str(n)]
        self.popen = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        line = self._line(120.0)
        self.opened = int(line["opened"])
        self.answered = int(line["answered"])
        self.errors = int(line["errors"])

    def _line(self, timeout: float) -> dict[str, Any]:
        assert self.popen.stdout is not None
        box: list[str] = []
        t = threading.Thread(target=lambda: box.append(self.popen.stdout.readline()))  # type: ignore[union-attr]
        t.daemon = True
        t.start()
        t.join(timeout)
        if not box or not box[0]:
            self.close()
            raise BenchError("the idle-connections helper did not answer")
        return dict(json.loads(box[0]))

    def still_open(self) -> int:
        assert self.popen.stdin is not None
        self.popen.stdin.write("check\n")
        self.popen.stdin.flush()
        return int(self._line(30.0)["still_open"])

    def close(self) -> None:
        if self.popen.poll() is None:
            try:
                assert self.popen.stdin is not None
                self.popen.stdin.write("quit\n")
                self.popen.stdin.flush()
                self.popen.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.popen.kill()
                self.popen.wait()


def scenario_idle(s: Settings) -> list[Table]:
    n = s.idle
    cap = n + 2048
    systems = [
        System(
            "nginx",
            "nginx",
            lambda procs, ports: procs.nginx_proxy(ports, connections=cap),
        ),
        System(
            "haproxy",
            "haproxy",
            lambda procs, ports: procs.haproxy(ports, hardened=True, maxconn=cap),
        ),
        lbtui_system("lbtui"),
    ]
    dur = s.duration if s.quick else 5.0
    headers = ["system", "RSS before MiB", f"RSS with {n:,} idle", "req/s before"]
    headers += ["req/s with idle", "÷", "idle opened / answered", "still open", "errors"]
    rows: list[list[str]] = []
    verdicts: list[tuple[str, bool | None]] = []
    nofile = raise_nofile(2 * cap + 4096)
    with Procs() as procs:
        ports, backends_text = fast_backends(procs, s)
        for system in systems:
            if not available(s, system):
                rows.append(missing_row(system.name, system.tool or "", len(headers)))
                continue
            log(f"idle connections: {system.name} …")
            proxy = None
            idle = None
            try:
                proxy = system.start(procs, ports)
                assert proxy is not None
                url = f"http://{HOST}:{proxy.port}/"
                closed_loop(s, url, s.warmup)
                before = closed_loop(s, url, dur)
                rss0 = tree_rss(proxy.pid)
                idle = IdleConnections(procs, proxy.port, n)
                rss1 = tree_rss(proxy.pid)
                during = closed_loop(s, url, dur)
                still = idle.still_open()
                rss2 = max(rss1, tree_rss(proxy.pid))
            except (BenchError, OSError, psutil.Error) as exc:
                rows.append(failed_row(system.name, str(exc).splitlines()[-1], len(headers)))
                continue
            finally:
                if idle is not None:
                    idle.close()
                if proxy is not None:
                    procs.stop(proxy)
            errors = (
                idle.errors
                + before.non_2xx_3xx
                + before.socket_errors
                + during.non_2xx_3xx
                + during.socket_errors
            )
            r = during.rps / before.rps if before.rps else 0.0
            rows.append(
                [
                    system.name,
                    f"{rss0 / 2**20:.1f}",
                    f"{rss2 / 2**20:.1f}",
                    f"{before.rps:,.0f}",
                    f"{during.rps:,.0f}",
                    f"{r:.2f}",
                    f"{idle.opened:,} / {idle.answered:,}",
                    f"{still:,}",
                    str(errors),
                ]
            )
            if system.name == "lbtui":
                mib = rss2 / 2**20
                verdicts.append(
                    (f"lbtui RSS with {n:,} idle: {mib:.0f} MiB (target < 200)", mib < 200)
                )
                verdicts.append(
                    (
                        f"lbtui: {idle.answered:,} of {n:,} connections answered, {still:,} still "
                        f"open, {errors} errors (target: all, all, 0)",
                        idle.answered == n and still == n and errors == 0,
                    )
                )
                verdicts.append(
                    (f"lbtui throughput with them open ÷ without: {r:.2f} (target ≥ 0.9)", r >= 0.9)
                )
    return [
        Table(
            "idle",
            f"7. {n:,} idle keep-alive client connections",
            f"A helper process opens {n:,} connections (raw sockets, open-files limit raised "
            f"with `setrlimit`; this process's is {nofile:,}), sends one `GET /` on each, reads "
            f"the answer and keeps them idle; {s.closed_loop_text(dur)} before and while they "
            f"are held; RSS = the proxy's resident memory (all its processes); {backends_text}.",
            headers,
            rows,
            verdicts,
        )
    ]


# --- 8: picks at 1,000 backends ------------------------------------------------------------------


def scenario_picks(s: Settings) -> list[Table]:
    import picks

    if s.quick:
        picks.REPEAT = 2
        picks.SECONDS_PER_RUN = 0.01
    headers = ["algorithm", "µs/pick, 4", "µs/pick, 1,000", "+ eligibility check", "budget"]
    rows: list[list[str]] = []
    verdicts: list[tuple[str, bool | None]] = []
    for name in ("least_request", "p2c_ewma", "consistent_hash", "round_robin"):
        log(f"picks: {name} …")
        small = picks.per_pick_us(name, 4, False)
        large = picks.per_pick_us(name, 1000, False)
        elig = picks.per_pick_us(name, 1000, True)
        budgeted = name in picks.BUDGETED
        rows.append(
            [
                name,
                f"{small:.2f}",
                f"{large:.2f}",
                f"{elig:.2f}",
                f"{picks.BUDGET_US:g} µs" if budgeted else "-",
            ]
        )
        if budgeted:
            worst = max(large, elig)
            verdicts.append(
                (f"{name}: {worst:.2f} µs at 1,000 backends (budget 5)", worst < picks.BUDGET_US)
            )
    return [
        Table(
            "picks",
            "8. One pick among 1,000 backends",
            "`bench/picks.py`: best of several runs in process CPU time, the bare loop "
            "subtracted; a fresh key each pick, targets with a few requests in flight; "
            '"+ eligibility check" adds the callback the proxy passes after a failed attempt.',
            headers,
            rows,
            verdicts,
        )
    ]


def scenario_https(s: Settings) -> list[Table]:
    """Keep-alive HTTPS GETs and new TLS handshakes a second, lbtui against nginx with the
    same certificate (``bench/tls.py``)."""
    import tls

    if not (s.nginx and s.wrk):
        log("https: skipped (it needs nginx and wrk: nginx as the reference, wrk for TLS)")
        return []
    rounds = 1 if s.quick else 3
    rows, med = tls.measure(s.duration if s.quick else s.duration / 2, rounds, s.backends)
    lb, ng = med.get("lbtui, 1 process"), med.get("nginx, 1 worker")
    verdicts: list[tuple[str, bool | None]] = []
    if lb and ng:
        got = lb["rps"] / ng["rps"]
        verdicts.append((f"keep-alive HTTPS ≥ 0.5 × nginx: {got:.2f}", got >= 0.5))
    return [
        Table(
            "https",
            "9. HTTPS: keep-alive GETs and new TLS handshakes, same certificate (ECDSA P-256)",
            f"wrk -t1 -c64 against each TLS listener, {s.backends} static nginx backends behind; "
            "handshakes: the same GETs with `Connection: close` (a full handshake each); "
            f"medians of {rounds} alternating rounds; CPU is the proxy's",
            tls.HEADERS,
            rows,
            verdicts,
        )
    ]


SCENARIOS: dict[str, Callable[[Settings], list[Table]]] = {
    "throughput": scenario_throughput,
    "latency": scenario_latency,
    "kill": scenario_kill,
    "slow": scenario_slow,
    "errors": scenario_errors,
    "idle": scenario_idle,
    "picks": scenario_picks,
    "https": scenario_https,
}


# --- the machine and the tools -------------------------------------------------------------------


def _version(argv: Sequence[str], pick: Callable[[str], str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    return pick((out.stdout + out.stderr).strip()) or "unknown"


def environment(without: Sequence[str] = ()) -> dict[str, str]:
    import platform

    import aiohttp
    import httptools

    import lbtui
    from lbtui import build

    try:
        import uvloop

        uv = uvloop.__version__
    except ImportError:
        uv = "not installed"
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    first = lambda text: text.splitlines()[0] if text else ""  # noqa: E731
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": sys.version.split()[0],
        "lbtui": f"{lbtui.__version__} ({build.describe()})",
        "aiohttp": aiohttp.__version__,
        "uvloop": uv,
        "httptools": httptools.__version__,
        "nginx": _version(["nginx", "-v"], first) if have("nginx") else "not installed",
        "haproxy": _version(["haproxy", "-v"], first) if have("haproxy") else "not installed",
        "wrk": _version(["wrk", "-v"], first) if have("wrk") else "not installed",
    } | {t: "not used (--without)" for t in without}


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else 0.0
