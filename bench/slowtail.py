"""The tail under one slow backend, run after run: scenario 5 of ``bench/suite.py`` (one of four
backends 200 ms slow, 1,000 req/s open loop, 2 s warm-up, 10 s measured) for lbtui, a fresh
balancer each run, so that p99.9 can be read over several runs instead of one.

Each run also measures, right before lbtui and with the same generator, two reference rows:
**direct** (the load straight to one fast backend: the floor of the generator and the machine)
and **nginx** (round robin over the three fast backends only: the floor of one proxy hop). A
p99.9 that the direct row also shows is the harness's or the machine's, not the balancer's.
Every row says how late the generator itself started requests (``late``: more than 2 ms after
the intended time; ``gen stall``: the longest such delay): a stall of the generator's own loop
delays the requests due during it and is counted, from their intended send time, as latency.
``CPU pressure`` is the share of the measured run during which some task of the machine waited
for a CPU (``/proc/pressure/cpu``): above a few per cent, other work shares the two cores and
every row's tail pays for it; ``steal``: CPU time the host took from this virtual machine.
``to the slow one``: requests the slow backend counted during the warm-up / during the
measured run (a fresh ``p2c_ewma`` tries it until its first answer).

``--settle PERCENT`` waits (up to ``--settle-timeout`` s) before each row until the machine's CPU
pressure is below PERCENT: on a shared machine, rows measured in quiet moments.

``--build LABEL=PYTHON`` (repeatable) gives one lbtui row a build, the one that Python imports
(a venv's ``bin/python``): builds compared in one invocation, alternating, on the same load.

``--probe`` puts ``loopprobe.LoopProbe`` in the generator's loop and in lbtui's (started through
this script, the same serve entry as the CLI's): each loop's late turns (over 5 ms), how many
held more than 2 ms of the process's own CPU, and the worst one split into own CPU and time
spent waiting for a CPU; the same for an idle canary process (only the probe, no work: what the
machine does to any process). After the table, each lbtui run over 10 ms is explained in those
terms.

Run: ``.venv/bin/python bench/slowtail.py [--runs 5] [--algorithm p2c_ewma] [--seconds 10]
[--warmup 2] [--no-reference] [--probe] [--settle 5] [--build LABEL=PYTHON ...]``

The target (issue 20): ``p2c_ewma`` keeps p99.9 ≤ 10 ms in every run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    HOST,
    PYTHON,
    BenchError,
    Proc,
    Procs,
    free_port,
    log,
    table,
    wait_port,
    wait_until,
)
from loopprobe import LoopProbe, canary, cpu_pressure_s, serve, settle, steal_s, summary
from suite import Settings, fast_backends, fleet_requests, fmt_ms, open_errors, open_loop

from lbtui.loadgen import LoadGenerator, LoadReport

HEADERS = [
    "run", "system", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "late", "gen stall ms",
    "CPU pressure, steal", "to the slow one", "errors",
]  # fmt: skip
PROBE_HEADERS = ["generator loop (ms)", "proxy loop (ms)", "idle canary loop (ms)"]
TARGET_S = 0.010


@dataclass
class Run:
    """One measured row."""

    run: int
    system: str
    report: LoadReport
    pressure: float
    """Share of the measured run during which some task of the machine waited for a CPU."""
    steal: float
    """Seconds of the measured run the host took from this machine's CPUs."""
    to_slow_warm: int
    to_slow: int
    gen: dict[str, Any] = field(default_factory=dict)
    proxy: dict[str, Any] = field(default_factory=dict)
    canary: dict[str, Any] = field(default_factory=dict)

    def cells(self, lb_name: str, probe: bool) -> list[str]:
        c, r = self.report.corrected, self.report
        mine = self.system.startswith(lb_name)
        to_slow = f"{self.to_slow_warm} / {self.to_slow}" if mine else "-"
        cells = [
            str(self.run), self.system, fmt_ms(c.p50), fmt_ms(c.p99), fmt_ms(c.p999),
            fmt_ms(c.max), str(r.late_starts), fmt_ms(r.max_start_delay_s),
            f"{self.pressure * 100:.0f} %, steal {self.steal * 1e3:.0f} ms", to_slow,
            str(open_errors(r)),
        ]  # fmt: skip
        probes = [summary(self.gen), summary(self.proxy), summary(self.canary)]
        return cells + (probes if probe else [])


def probed_open_loop(url: str, rate: float, duration: float, probe: LoopProbe) -> LoadReport:
    """``suite.open_loop`` with a :class:`LoopProbe` ticking in the generator's loop."""

    async def go() -> LoadReport:
        gen = LoadGenerator(url, rate, duration, connections=64, timeout_s=5.0)
        ticker = asyncio.ensure_future(probe.run())
        try:
            return await asyncio.wait_for(gen.run(), timeout=duration + 30)
        finally:
            ticker.cancel()

    probe.reset()
    return asyncio.run(go())


def lbtui_with(
    procs: Procs, ports: list[int], algorithm: str, python: str, probe: bool, label: str
) -> Proc:
    """``lbtui serve`` of the build that ``python`` imports (its venv's ``lbtui``, the CLI), or
    with ``probe`` through this script with a :class:`LoopProbe` inside."""
    port = free_port()
    text = f'[listener]\naddress = "{HOST}:{port}"\n\n[admin]\naddress = "{HOST}:{free_port()}"\n'
    text += f'\n[balancer]\nalgorithm = "{algorithm}"\n'
    for i, p in enumerate(ports):
        text += f'\n[[backends]]\nname = "b{i + 1}"\nurl = "http://{HOST}:{p}"\n'
    name = f"lbtui-probed-{label}" if probe else f"lbtui-{label}"
    conf = procs.tmp / f"{name}.toml"
    conf.write_text(text)
    if probe:
        argv = [python, str(Path(__file__).resolve()), "--serve", str(conf)]
    else:
        # the venv's console script: ``python -m`` would put the working directory first on
        # the path, and a source tree there would be imported instead of the build
        script = Path(python).parent / "lbtui"
        argv = [str(script) if script.exists() else python, "serve", "--config", str(conf)]
        if not script.exists():
            argv[1:1] = ["-P", "-m", "lbtui"]
    proc = procs.start(name, argv)
    proc.port = port
    wait_port(port, 15.0)
    return proc


def last_totals(proc: Proc) -> dict[str, Any]:
    lines = [x for x in proc.stdout_path.read_text().splitlines() if x.startswith("{")]
    return dict(json.loads(lines[-1])) if lines else {}


def measure(
    run: int,
    system: str,
    start: Callable[[], Proc | None],
    procs: Procs,
    target: int,
    slow: int,
    args: argparse.Namespace,
    canary: Proc | None,
) -> Run:
    """Warm-up, then the measured run against ``start()``'s port (``target`` when it starts
    nothing); the proxy is stopped after."""
    if args.settle:
        seen = settle(args.settle / 100, args.settle_timeout)
        if seen >= args.settle / 100:
            log(f"  the machine stayed busy: CPU pressure {seen * 100:.0f} %")
    proxy = start()
    try:
        url = f"http://{HOST}:{proxy.port if proxy else target}/"
        before_warm = fleet_requests(slow)
        open_loop(url, args.rate, args.warmup)
        before = fleet_requests(slow)
        probed = proxy is not None and proxy.name.startswith("lbtui-probed")
        for probed_proc in (proxy if probed else None, canary):
            if probed_proc is not None:  # the counts start with the measured run
                os.kill(probed_proc.pid, signal.SIGUSR2)
        gen = LoopProbe()
        pressure0, steal0 = cpu_pressure_s(), steal_s()
        t0 = time.monotonic()
        if args.probe:
            r = probed_open_loop(url, args.rate, args.seconds, gen)
        else:
            r = open_loop(url, args.rate, args.seconds)
        pressure = (cpu_pressure_s() - pressure0) / (time.monotonic() - t0)
        steal = steal_s() - steal0
        to_slow = fleet_requests(slow) - before
        if probed or canary is not None:
            time.sleep(0.6)  # one more line of totals
        return Run(
            run, system, r, pressure, steal, before - before_warm, to_slow,
            gen.totals() if args.probe else {}, last_totals(proxy) if probed else {},
            last_totals(canary) if canary is not None else {},
        )  # fmt: skip
    finally:
        if proxy is not None:
            procs.stop(proxy)


def verdict(runs: list[Run], lb_name: str) -> list[str]:
    """The worst p99.9 of each system, and for each lbtui run over the target what the floor
    and the loops say about it."""
    lines = []
    systems = list(dict.fromkeys(r.system for r in runs))
    for name in systems:
        mine = [r for r in runs if r.system == name]
        worst = max(r.report.corrected.p999 for r in mine)
        over = sum(r.report.corrected.p999 > TARGET_S for r in mine)
        lines.append(
            f"worst p99.9, {name}: {worst * 1e3:.2f} ms ({over} of {len(mine)} runs over 10 ms)"
        )
    lines.append("target: lbtui ≤ 10 ms in every run")
    direct = [r for r in runs if r.system == "direct"]
    if direct and any(r.report.corrected.p999 > TARGET_S for r in direct):
        lines.append(
            "the direct row (no balancer) is over 10 ms too: the generator or the machine is "
            "the floor in those runs, not the balancer"
        )
    for r in runs:
        if not r.system.startswith(lb_name) or r.report.corrected.p999 <= TARGET_S or not r.gen:
            continue
        g, p = r.gen, r.proxy
        why = [
            f"run {r.run}, {r.system}: p99.9 {r.report.corrected.p999 * 1e3:.2f} ms; "
            f"CPU pressure {r.pressure * 100:.0f} %"
        ]
        for who, t in (("generator", g), ("lbtui", p), ("the idle canary", r.canary)):
            if t:
                why.append(
                    f"{who}'s worst turn {t['worst_ms']:.1f} ms (own CPU {t['worst_cpu_ms']:.1f}, "
                    f"waiting for a CPU {t['worst_wait_ms']:.1f}), {t['cpu_stalls']} turns "
                    "over 2 ms of own CPU"
                )
        if g and p and g["worst_at"] and abs(g["worst_at"] - p["worst_at"]) < 0.05:
            why.append("both worst turns at the same moment")
        lines.append("; ".join(why))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--algorithm", default="p2c_ewma")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds of load before each measured run (longer: a balancer in its steady state)",
    )
    parser.add_argument(
        "--no-reference", action="store_true", help="lbtui only: no direct and nginx rows"
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="loop probes in the generator and in lbtui: what each late turn was made of",
    )
    parser.add_argument(
        "--build",
        action="append",
        default=[],
        metavar="LABEL=PYTHON",
        help="an lbtui row for the build this Python imports (repeat to compare builds in one "
        "run, alternating); default: this Python's",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        metavar="PERCENT",
        help="before each row, wait until the machine's CPU pressure is below PERCENT",
    )
    parser.add_argument("--settle-timeout", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument("--serve", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--canary", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    if args.canary:
        return canary()
    builds = [("", PYTHON)]
    if args.build:
        try:
            builds = [(b.split("=", 1)[0], b.split("=", 1)[1]) for b in args.build]
        except IndexError:
            parser.error("--build: expected LABEL=PYTHON")
    s = Settings.make(quick=False)
    lb_name = f"lbtui {args.algorithm}"
    runs: list[Run] = []
    with Procs() as procs:
        fast, _ = fast_backends(procs, s, 3)
        slow = procs.fleet_backend("slow", latency_ms=200.0)
        ports = [slow.port, *fast]
        canary_proc = None
        if args.probe:
            argv = [PYTHON, str(Path(__file__).resolve()), "--canary"]
            canary_proc = ticking = procs.start("canary", argv)
            wait_until(lambda: "ticking" in ticking.output(), 10.0, "the canary to tick")
        systems: list[tuple[str, Callable[[], Proc | None]]] = []
        if not args.no_reference:
            systems.append(("direct", lambda: None))
            if s.nginx:
                systems.append(("nginx, 3 fast", lambda: procs.nginx_proxy(fast)))
        for label, python in builds:
            name = f"{lb_name} {label}".strip()

            def start(python: str = python, label: str = label) -> Proc:
                return lbtui_with(procs, ports, args.algorithm, python, args.probe, label)

            systems.append((name, start))
        for run in range(1, args.runs + 1):
            for name, start in systems:
                log(f"run {run}/{args.runs}: {name}")
                runs.append(measure(run, name, start, procs, fast[0], slow.port, args, canary_proc))
    print(
        f"\none of 4 backends 200 ms slow, {lb_name}, {args.rate:g} req/s open loop, "
        f"{args.seconds:g} s a run after {args.warmup:g} s of warm-up; "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    headers = HEADERS + (PROBE_HEADERS if args.probe else [])
    print(table(headers, [r.cells(lb_name, args.probe) for r in runs]))
    print()
    print("\n".join(verdict(runs, lb_name)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"bench/slowtail.py: {exc}")
        sys.exit(1)
