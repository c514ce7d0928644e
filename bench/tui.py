"""What the console costs the data plane: the TUI attached in-process vs not at all, same run.

Setup: 4 demo backend processes (1 ms), the balancer with 50 backends (backend i → process
i mod 4) on its own event loop in a background thread — as ``lbtui demo`` runs it — and an
open-loop load of 1,000 req/s from a separate ``lbtui load`` process, so the client's CPU is not
in the picture. Run A: no console. Run B: ``LbtuiApp`` attached through ``ThreadedControl``
(headless, so it renders every frame but writes nothing to a terminal), refreshing 4 times a
second, with a delay fault applied to one backend.

Figures: achieved rate and client p99 (from ``lbtui load``'s summary) in both runs; CPU of the
console's thread (the main thread) and of the data-plane thread, from per-thread CPU times.

    .venv/bin/python bench/tui.py [--duration 15] [--rate 1000] [--backends 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
LBTUI = str(Path(sys.executable).with_name("lbtui"))


class DataPlane:
    """Fleet + balancer on an event loop in a background thread."""

    def __init__(self, n_backends: int) -> None:
        self.n = n_backends
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tid = 0
        self.url = ""
        self.control: Any = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="dataplane")

    def _run(self) -> None:
        from lbtui.runtime import new_event_loop

        self.tid = threading.get_native_id()
        loop = self.loop = new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self._main())
        loop.close()

    async def _main(self) -> None:
        from lbtui import config as config_mod
        from lbtui.control.runtime import run_balancer
        from lbtui.control.threaded import ThreadedControl
        from lbtui.fleet.spec import BackendSpec
        from lbtui.fleet.supervisor import Fleet

        self._stop = asyncio.Event()
        fleet = Fleet([BackendSpec(f"p{i}", latency_ms=1.0) for i in range(4)])
        await fleet.start()
        urls = [m.url for m in fleet.backends]
        cfg = config_mod.from_dict(
            {
                "listener": {"address": "127.0.0.1:0"},
                "admin": {"enabled": False},
                "backends": [
                    {"name": f"b{i:02d}", "url": urls[i % len(urls)]} for i in range(self.n)
                ],
            },
            "bench",
        )
        rt = run_balancer(cfg, fleet=fleet)
        await rt.start()
        self.url = rt.server.url
        self.control = ThreadedControl(rt.control, asyncio.get_running_loop())
        self.ready.set()
        await self._stop.wait()
        await rt.stop()
        await fleet.stop()

    def start(self) -> None:
        self.thread.start()
        if not self.ready.wait(30):
            raise SystemExit("the data plane did not start")

    def stop(self) -> None:
        assert self.loop is not None
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)


def thread_cpu(tid: int) -> float:
    for t in psutil.Process().threads():
        if t.id == tid:
            return float(t.user_time + t.system_time)
    return 0.0


def load(url: str, rate: float, duration: float) -> dict[str, Any]:
    out = subprocess.run(
        [LBTUI, "load", url + "/", "--rate", str(rate), "--duration", f"{duration}s", "--json"],
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    if out.returncode != 0:
        raise SystemExit(f"lbtui load failed: {out.stderr[-500:]}")
    return dict(json.loads(out.stdout))


def run_once(args: argparse.Namespace, with_tui: bool) -> dict[str, float]:
    dp = DataPlane(args.backends)
    dp.start()
    try:
        main_tid = threading.get_native_id()
        result: dict[str, Any] = {}
        from lbtui.control.model import FaultSpec, SetFault

        assert dp.loop is not None
        asyncio.run_coroutine_threadsafe(
            dp.control._inner.act(SetFault(backend="b00", fault=FaultSpec(kind="delay", ms=20.0))),
            dp.loop,
        ).result(5)
        cpu0 = (thread_cpu(main_tid), thread_cpu(dp.tid))
        t0 = time.monotonic()
        if with_tui:
            from lbtui.tui.app import LbtuiApp

            app = LbtuiApp(dp.control, refresh_s=0.25)

            def drive() -> None:
                result.update(load(dp.url, args.rate, args.duration))
                app.call_from_thread(app.exit)

            threading.Thread(target=drive, daemon=True).start()
            app.run(headless=True, size=(180, 60))
        else:
            result.update(load(dp.url, args.rate, args.duration))
        wall = time.monotonic() - t0
        cpu1 = (thread_cpu(main_tid), thread_cpu(dp.tid))
    finally:
        dp.stop()
    lat = result.get("corrected", {})
    return {
        "achieved": float(result.get("achieved_rate", 0.0)),
        "p50_ms": float(lat.get("p50", 0.0)) * 1e3,
        "p99_ms": float(lat.get("p99", 0.0)) * 1e3,
        "errors": float(sum(result.get("errors", {}).values())),
        "tui_cpu_pct": 100.0 * (cpu1[0] - cpu0[0]) / wall,
        "dp_cpu_pct": 100.0 * (cpu1[1] - cpu0[1]) / wall,
    }


def run_process_mode(args: argparse.Namespace, with_tui: bool) -> dict[str, float]:
    """The balancer as ``lbtui serve`` in its own process; the console attached over HTTP."""
    from bench.common import HOST, Procs, free_port, wait_port

    with Procs() as procs:
        fleet = procs.fleet(4)
        port, admin = free_port(), free_port()
        argv = [LBTUI, "serve", "--listen", f"{HOST}:{port}", "--admin", f"{HOST}:{admin}"]
        for i in range(args.backends):
            argv += ["--backend", f"b{i:02d}=http://{HOST}:{fleet[i % 4].port}"]
        lb = procs.start("lbtui", argv, port)
        wait_port(port)
        wait_port(admin)
        import httpx

        httpx.put(
            f"http://{HOST}:{admin}/api/v1/backends/b00/fault",
            json={"kind": "delay", "ms": 20.0},
            timeout=5,
        ).raise_for_status()
        lbp = psutil.Process(lb.pid)
        main_tid = threading.get_native_id()
        result: dict[str, Any] = {}
        t0 = time.monotonic()
        c0 = (thread_cpu(main_tid), sum(lbp.cpu_times()[:2]))
        if with_tui:
            from lbtui.control.client import HttpControl
            from lbtui.tui.app import LbtuiApp

            app = LbtuiApp(HttpControl(f"http://{HOST}:{admin}"), refresh_s=0.25)

            def drive() -> None:
                result.update(load(f"http://{HOST}:{port}", args.rate, args.duration))
                app.call_from_thread(app.exit)

            threading.Thread(target=drive, daemon=True).start()
            app.run(headless=True, size=(180, 60))
        else:
            result.update(load(f"http://{HOST}:{port}", args.rate, args.duration))
        wall = time.monotonic() - t0
        c1 = (thread_cpu(main_tid), sum(lbp.cpu_times()[:2]))
    lat = result.get("corrected", {})
    return {
        "achieved": float(result.get("achieved_rate", 0.0)),
        "p50_ms": float(lat.get("p50", 0.0)) * 1e3,
        "p99_ms": float(lat.get("p99", 0.0)) * 1e3,
        "errors": float(sum(result.get("errors", {}).values())),
        "tui_cpu_pct": 100.0 * (c1[0] - c0[0]) / wall,
        "dp_cpu_pct": 100.0 * (c1[1] - c0[1]) / wall,
    }


def table(title: str, a: dict[str, float], b: dict[str, float]) -> None:
    print(f"\n{title}\n")
    print("| figure | without console | with console | target | verdict |")
    print("|---|---:|---:|---|---|")
    rate_drop = 100.0 * (a["achieved"] - b["achieved"]) / a["achieved"] if a["achieved"] else 0.0
    rows = [
        ("achieved req/s", f"{a['achieved']:.0f}", f"{b['achieved']:.0f}",
         "within 5 %", "PASS" if abs(rate_drop) <= 5 else "FAIL"),
        ("client p50 ms", f"{a['p50_ms']:.2f}", f"{b['p50_ms']:.2f}", "—", "info"),
        ("client p99 ms", f"{a['p99_ms']:.2f}", f"{b['p99_ms']:.2f}", "rise ≤ 2 ms",
         "PASS" if b["p99_ms"] - a["p99_ms"] <= 2.0 else "FAIL"),
        ("client errors", f"{a['errors']:.0f}", f"{b['errors']:.0f}", "0", "info"),
        ("console CPU % of a core", "—", f"{b['tui_cpu_pct']:.1f}", "< 15 %",
         "PASS" if b["tui_cpu_pct"] < 15 else "FAIL"),
        ("data-plane CPU % of a core", f"{a['dp_cpu_pct']:.1f}", f"{b['dp_cpu_pct']:.1f}",
         "—", "info"),
    ]  # fmt: skip
    for r in rows:
        print("| " + " | ".join(r) + " |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--backends", type=int, default=50)
    ap.add_argument("--switch-interval", type=float, default=None, help="sys.setswitchinterval")
    ap.add_argument("--mode", choices=["process", "thread", "both"], default="both")
    args = ap.parse_args()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    head = (
        f"{args.backends} backends, {args.rate:g} req/s open-loop for {args.duration:g} s "
        "(`lbtui load`), console refresh 4 Hz, a 20 ms delay fault on one backend"
    )
    if args.mode in ("process", "both"):
        a = run_process_mode(args, with_tui=False)
        b = run_process_mode(args, with_tui=True)
        table(f"### Balancer in its own process (the demo's default)\n\n{head}", a, b)
    if args.mode in ("thread", "both"):
        a = run_once(args, with_tui=False)
        b = run_once(args, with_tui=True)
        table(f"### Balancer on a thread of the console's process (--in-process)\n\n{head}", a, b)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
