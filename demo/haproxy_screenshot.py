"""The console attached to a real HAProxy: a screenshot, and the time from a key to HAProxy's
changed state.

    .venv/bin/python demo/haproxy_screenshot.py

Starts the demo fleet (real processes on free ports), a HAProxy in front of it with a generated
configuration (stats socket in a temporary folder, its exporter on a free port), and open-loop
load at its frontend; kills one backend so that HAProxy's check marks it DOWN (``L4CON``) and
drains another, then writes ``demo/haproxy-console.svg``. Then it presses ``d`` (drain, then
undrain) ``ROUNDS`` times on a server and prints, for each press, the time until HAProxy's own
``show stat`` says the new state: the whole path (key, worker, Runtime API command, HAProxy).
Every process it starts is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lbtui.fleet.spec import load_fleet
from lbtui.fleet.supervisor import Fleet
from lbtui.loadgen import LoadGenerator
from lbtui.sources.haproxy import HaproxyControl
from lbtui.tui.app import LbtuiApp

HERE = Path(__file__).resolve().parent
OUT = HERE / "haproxy-console.svg"
SIZE = (160, 40)
ROUNDS = 20
RATE = 200.0
WARM_S = 8.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(sock: Path, front: int, exporter: int, servers: dict[str, str]) -> str:
    lines = [
        "global",
        f"    stats socket {sock} mode 600 level admin",
        "defaults",
        "    mode http",
        "    timeout connect 1s",
        "    timeout client 10s",
        "    timeout server 10s",
        "frontend fe_main",
        f"    bind 127.0.0.1:{front}",
        "    default_backend be_app",
        "frontend fe_metrics",
        f"    bind 127.0.0.1:{exporter}",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "backend be_app",
        "    balance roundrobin",
        "    option httpchk GET /_fleet/health",
    ]
    for name, url in servers.items():
        lines.append(f"    server {name} {url.removeprefix('http://')} check inter 500ms fall 2")
    return "\n".join(lines) + "\n"


def start_haproxy(haproxy: str, cfg: Path, sock: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([haproxy, "-f", str(cfg), "-db"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not sock.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("HAProxy did not open its stats socket within 10 s")
        time.sleep(0.05)
    return proc


def status(sock: Path, server: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    header = lines[0][2:].split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("svname") == server:
            return row["status"]
    raise KeyError(server)


async def main() -> None:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    folder = Path(tempfile.mkdtemp(prefix="lbtui-hx-"))
    sock = folder / "admin.sock"
    fleet = Fleet(load_fleet(HERE / "fleet.toml").backends)
    await fleet.start()
    proc: subprocess.Popen[bytes] | None = None
    load: LoadGenerator | None = None
    load_task: asyncio.Task[object] | None = None
    try:
        front = free_port()
        cfg = folder / "haproxy.cfg"
        cfg.write_text(config(sock, front, free_port(), {m.name: m.url for m in fleet.backends}))
        proc = await asyncio.to_thread(start_haproxy, haproxy, cfg, sock)
        load = LoadGenerator(f"http://127.0.0.1:{front}/", RATE, 600)
        load_task = asyncio.create_task(load.run())
        control = HaproxyControl(f"unix://{sock}")
        app = LbtuiApp(control, refresh_s=0.25, title="lbtui attach unix:// (HAProxy)")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(2.0)
            await fleet.kill("api-4")  # HAProxy's check: DOWN, L4CON
            await pilot.press("down", "d")  # drain api-2
            end = time.monotonic() + WARM_S
            while time.monotonic() < end:
                await pilot.pause(0.25)
            OUT.parent.mkdir(exist_ok=True)
            app.save_screenshot(filename=OUT.name, path=str(OUT.parent))
            print(f"wrote {OUT}")
            await pilot.press("up")  # api-1
            await pilot.pause(0.5)
            took: list[float] = []
            for i in range(ROUNDS):
                want = "DRAIN" if i % 2 == 0 else "UP"
                start = time.perf_counter()
                # not awaited: Pilot.press returns once the screen settles, long after
                pressing = asyncio.create_task(pilot.press("d"))
                while not status(sock, "api-1").startswith(want):  # noqa: ASYNC110 (another process's state: nothing to wait on but polling)
                    await asyncio.sleep(0.001)
                took.append((time.perf_counter() - start) * 1000)
                await pressing
                await pilot.pause(0.3)  # the next snapshot shows it before the next press
            took.sort()
            print(
                f"key d → HAProxy's show stat says DRAIN/UP, {ROUNDS} presses: "
                f"median {statistics.median(took):.1f} ms, "
                f"p90 {took[int(0.9 * (len(took) - 1))]:.1f} ms, max {took[-1]:.1f} ms"
            )
        await control.aclose()
    finally:
        if load is not None:
            load.stop()
        if load_task is not None:
            await asyncio.gather(load_task, return_exceptions=True)
        if proc is not None:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(5)
        await fleet.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
