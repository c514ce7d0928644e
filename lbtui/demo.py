"""``lbtui demo``: a local fleet of real backend processes, the balancer with its admin API, an
open-loop load generator, and the console on top — one command, nothing else to install.

By default the data plane (fleet supervisor, balancer, admin API, load generator) runs in a
process of its own (``DataPlaneProcess``) and the console attaches to it over the admin API, with
a per-run random token: measured with ``bench/tui.py``, a console sharing the process (even on
another thread) added tens of milliseconds to the proxied p99 at 1,000 req/s through the GIL and
garbage collection, where the issue allows 2 ms. ``--in-process`` keeps everything in one process
(``DemoRuntime``: the data plane on an event loop in a background thread, reached through a
``ThreadedControl``). Either way, quitting stops the load, rolls back every proxy-side fault the
session applied, and stops the admin API, the balancer and the fleet (every process by its PID).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lbtui.errors import LbtuiError, UsageError

if TYPE_CHECKING:
    from lbtui.balancer.server import BalancerServer
    from lbtui.config import Config
    from lbtui.control.interface import Control
    from lbtui.fleet.spec import BackendSpec
    from lbtui.fleet.supervisor import Fleet
    from lbtui.loadgen import LiveFigures, LoadGenerator

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
DEFAULT_FLEET = DEMO_DIR / "fleet.toml"
DEFAULT_CONFIG = DEMO_DIR / "lbtui.toml"
DEMO_MAX_S = 8 * 3600.0
"""The demo's load stops by itself after this long (every loop is bounded)."""
START_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class DemoOptions:
    backends: int | None = None
    rate: float = 200.0
    config: Path | None = None
    fleet: Path | None = None
    admin: bool = True
    replicas: int = 1
    """More than 1: that many balancers sharing their limits (``demo_replicas.py``)."""


class LoadHandle:
    """What the console's load panel reads and steers (thread-safe enough: plain reads, and
    rate changes handed to the data plane's loop)."""

    def __init__(self, gen: LoadGenerator, loop: asyncio.AbstractEventLoop) -> None:
        self._gen = gen
        self._loop = loop

    @property
    def rate(self) -> float:
        return self._gen.rate

    def set_rate(self, rate: float) -> None:
        self._loop.call_soon_threadsafe(self._gen.set_rate, rate)

    def live(self) -> LiveFigures:
        return self._gen.live()


class DemoRuntime:
    """Fleet + balancer + admin API + load generator, on an event loop in a background thread."""

    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: BalancerServer | None = None
        self.fleet: Fleet | None = None
        self.admin_url: str | None = None
        self.control: Control | None = None
        self.load: LoadHandle | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None

    # -- the thread's side -------------------------------------------------------------------

    def _specs(self) -> list[BackendSpec]:
        from lbtui.fleet.spec import expand, load_fleet

        fleet_file = self.options.fleet or DEFAULT_FLEET
        spec = load_fleet(fleet_file)
        return expand(list(spec.backends), self.options.backends)

    def _config(self, fleet: Fleet) -> Config:
        from lbtui import config as config_mod

        data, source = self._config_data(fleet)
        return config_mod.from_dict(data, source)

    def _config_data(self, fleet: Fleet) -> tuple[dict[str, Any], str]:
        from lbtui import config as config_mod

        path = self.options.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
        data: dict[str, Any] = config_mod.read_toml(path) if path is not None else {}
        data["backends"] = [{"name": m.name, "url": m.url} for m in fleet.backends]
        data.setdefault("listener", {}).setdefault("address", "127.0.0.1:0")
        data.setdefault("admin", {}).setdefault("address", "127.0.0.1:0")
        if path is not None:
            data.setdefault("base_dir", str(Path(path).resolve().parent))
        return data, str(path) if path else "demo"

    async def _main(self) -> None:
        from lbtui.control.runtime import BalancerRuntime, run_balancer
        from lbtui.control.threaded import ThreadedControl
        from lbtui.fleet.supervisor import Fleet
        from lbtui.loadgen import LoadGenerator

        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        fleet = Fleet(self._specs())
        self.fleet = fleet
        runtime: BalancerRuntime | None = None
        load_task: asyncio.Task[Any] | None = None
        gen: LoadGenerator | None = None
        try:
            await fleet.start()
            cfg = self._config(fleet)
            if not self.options.admin:
                cfg = cfg.model_copy(
                    update={"admin": cfg.admin.model_copy(update={"enabled": False})}
                )
            runtime = run_balancer(cfg, fleet=fleet)
            await runtime.start()
            self.server = runtime.server
            if runtime.admin is not None:
                self.admin_url = runtime.admin.url
            gen = LoadGenerator(runtime.server.url + "/", self.options.rate, DEMO_MAX_S)
            load_task = asyncio.create_task(gen.run(), name="demo-load")
            self.load = LoadHandle(gen, loop)
            self.control = ThreadedControl(runtime.control, loop)
            self._ready.set()
            await self._stop.wait()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
        finally:
            if gen is not None:
                gen.stop()
            if load_task is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(load_task, 5)
            if runtime is not None:
                with contextlib.suppress(Exception):
                    await runtime.control.rollback()
                with contextlib.suppress(Exception):
                    await runtime.stop()
            await fleet.stop()

    def _run_thread(self) -> None:
        from lbtui.runtime import new_event_loop

        loop = new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    # -- the caller's side -------------------------------------------------------------------

    def start(self) -> None:
        """Start everything; returns once the balancer serves, or raises what went wrong."""
        self._thread = threading.Thread(target=self._run_thread, name="lbtui-dataplane")
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            self.stop()
            raise UsageError(f"the demo did not start within {START_TIMEOUT_S:g} s")
        if self._error is not None:
            self.stop()
            err = self._error
            if isinstance(err, LbtuiError):
                raise err
            raise UsageError(f"the demo could not start: {err}") from err

    def stop(self) -> None:
        """Stop the load, roll back faults, stop the balancer and every fleet process."""
        loop, stop = self.loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None


# -- the data plane in its own process --------------------------------------------------------

READY_PREFIX = "LBTUI-DATAPLANE "


class HttpLoadHandle:
    """The load panel's view of a load generator in the data-plane process: figures polled in a
    background thread (the console reads them without waiting), rate changes posted likewise."""

    POLL_S = 0.5

    def __init__(self, admin_url: str, token: str) -> None:
        import httpx

        self._client = httpx.Client(
            base_url=admin_url, headers={"Authorization": f"Bearer {token}"}, timeout=2.0
        )
        self._figures: LiveFigures | None = None
        self._rate = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._poll, name="load-poll", daemon=True)
        self._poll_once()
        self._thread.start()

    def _poll_once(self) -> None:
        from lbtui.loadgen import LiveFigures

        try:
            data = self._client.get("/api/v1/load").json()
        except Exception:  # the console shows stale figures; the next poll retries
            return
        with self._lock:
            self._rate = float(data["target_rate"])
            self._figures = LiveFigures(**data)

    def _poll(self) -> None:
        while not self._stop.wait(self.POLL_S):
            self._poll_once()

    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate: float) -> None:
        self._rate = rate

        def post() -> None:
            with contextlib.suppress(Exception):
                self._client.put("/api/v1/load", json={"rate": rate})
                self._poll_once()

        threading.Thread(target=post, daemon=True).start()

    def live(self) -> LiveFigures:
        from lbtui.loadgen import LiveFigures

        with self._lock:
            if self._figures is not None:
                return self._figures
        return LiveFigures(0.0, self._rate, 0.0, 0, 0, 0, 0, 0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._client.close()


class DataPlaneProcess:
    """``lbtui demo``'s data plane as a child process; the console attaches over HTTP."""

    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.proc: subprocess.Popen[str] | None = None
        self.balancer_url = ""
        self.admin_url = ""
        self.control: Control | None = None
        self.load: HttpLoadHandle | None = None
        self.token = ""
        self.store_note = ""
        """With replicas: where their limits are kept (the console's title says it)."""

    def start(self) -> None:
        import secrets

        from lbtui.control.client import HttpControl

        token = self.token = secrets.token_urlsafe(24)
        o = self.options
        cmd = [sys.executable, "-m", "lbtui.demo", "--parent-pid", str(os.getpid())]
        cmd += ["--rate", str(o.rate)]
        if o.replicas > 1:
            cmd += ["--replicas", str(o.replicas)]
        if o.backends is not None:
            cmd += ["--backends", str(o.backends)]
        if o.config is not None:
            cmd += ["--config", str(o.config)]
        if o.fleet is not None:
            cmd += ["--fleet", str(o.fleet)]
        env = dict(os.environ, LBTUI_ADMIN_TOKEN=token)
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        line = self._read_ready()
        info = json.loads(line[len(READY_PREFIX) :])
        self.balancer_url = info["balancer"]
        self.admin_url = info["admin"]
        self.store_note = info.get("store", "")
        replicas = info.get("replicas") or []
        if len(replicas) > 1:
            from lbtui.control.multi import MultiControl

            self.control = MultiControl(
                [(r["name"], HttpControl(r["admin"], token)) for r in replicas]
            )
        else:
            self.control = HttpControl(self.admin_url, token)
        self.load = HttpLoadHandle(self.admin_url, token)

    def _read_ready(self) -> str:
        import selectors

        assert self.proc is not None
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not sel.select(timeout=deadline - time.monotonic()):
                break
            line = self.proc.stdout.readline()
            if line.startswith(READY_PREFIX):
                return line.strip()
            if not line:  # the child exited: say why
                err = self.proc.stderr.read() if self.proc.stderr else ""
                self.stop()
                last = err.strip().splitlines()[-1] if err.strip() else "no message"
                raise UsageError(f"the demo could not start: {last.removeprefix('lbtui: ')}")
        self.stop()
        raise UsageError(f"the demo did not start within {START_TIMEOUT_S:g} s")

    def stop(self) -> None:
        if self.load is not None:
            self.load.close()
            self.load = None
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        self.proc = None


async def _serve_dataplane(options: DemoOptions) -> None:
    """The child: fleet, balancer, admin API (+ load routes) and load, until SIGTERM/SIGINT."""
    from aiohttp import web

    from lbtui.control.runtime import run_balancer
    from lbtui.fleet.supervisor import Fleet
    from lbtui.loadgen import LoadGenerator

    helper = DemoRuntime(options)
    fleet = Fleet(helper._specs())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await fleet.start()
    if options.replicas > 1:
        try:
            await _serve_replicas(options, helper, fleet, stop)
        finally:
            await fleet.stop()
        return
    try:
        cfg = helper._config(fleet)
        cfg = cfg.model_copy(update={"admin": cfg.admin.model_copy(update={"enabled": True})})
        runtime = run_balancer(cfg, fleet=fleet)
        assert runtime.admin is not None
        holder: list[LoadGenerator] = []

        async def get_load(request: web.Request) -> web.Response:
            if not holder:
                return web.json_response({"error": "no load yet"}, status=503)
            return web.json_response(dataclasses.asdict(holder[0].live()))

        async def put_load(request: web.Request) -> web.Response:
            try:
                holder[0].set_rate(float((await request.json())["rate"]))
            except (IndexError, KeyError, TypeError, ValueError, LbtuiError) as exc:
                return web.json_response({"error": f'expected {{"rate": R}}: {exc}'}, status=422)
            return web.json_response(dataclasses.asdict(holder[0].live()))

        # added before start: the admin API's auth guard covers them like every other route
        runtime.admin.app.router.add_get("/api/v1/load", get_load)
        runtime.admin.app.router.add_put("/api/v1/load", put_load)
        await runtime.start()
        gen = LoadGenerator(runtime.server.url + "/", options.rate, DEMO_MAX_S)
        holder.append(gen)
        load_task = asyncio.create_task(gen.run(), name="demo-load")
        try:
            ready = {"balancer": runtime.server.url, "admin": runtime.admin.url}
            print(READY_PREFIX + json.dumps(ready), flush=True)
            await stop.wait()
        finally:
            gen.stop()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(load_task, 5)
            with contextlib.suppress(Exception):
                await runtime.control.rollback()
            await runtime.stop()
    finally:
        await fleet.stop()


async def _serve_replicas(
    options: DemoOptions, helper: DemoRuntime, fleet: Fleet, stop: asyncio.Event
) -> None:
    """The child with ``--replicas``: the replicas, their store and the load spread over them
    (``demo_replicas.py``), until SIGTERM/SIGINT."""
    from aiohttp import web

    from lbtui.demo_replicas import ReplicaDemo

    data, source = helper._config_data(fleet)
    data["admin"] = {**data.get("admin", {}), "enabled": True}
    demo = ReplicaDemo(data, options.replicas, options.rate, source)
    try:
        first = await demo.build(fleet)
        assert first.admin is not None
        # the load routes on the first replica's admin API, behind its auth guard
        app = first.admin.app

        async def get_load(request: web.Request) -> web.Response:
            return web.json_response(dataclasses.asdict(demo.live()))

        async def put_load(request: web.Request) -> web.Response:
            try:
                demo.set_rate(float((await request.json())["rate"]))
            except (KeyError, TypeError, ValueError, LbtuiError) as exc:
                return web.json_response({"error": f'expected {{"rate": R}}: {exc}'}, status=422)
            return web.json_response(dataclasses.asdict(demo.live()))

        app.router.add_get("/api/v1/load", get_load)
        app.router.add_put("/api/v1/load", put_load)
        await demo.start()
        ready = {
            "balancer": first.server.url,
            "admin": first.admin.url,
            "replicas": demo.members(),
            "store": demo.store_note,
        }
        print(READY_PREFIX + json.dumps(ready), flush=True)
        await stop.wait()
    finally:
        await demo.stop()


def _dataplane_main(argv: list[str]) -> int:
    from lbtui.runtime import run_async

    ap = argparse.ArgumentParser(prog="python -m lbtui.demo")
    ap.add_argument("--parent-pid", type=int, required=True)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--backends", type=int)
    ap.add_argument("--config")
    ap.add_argument("--fleet")
    ap.add_argument("--replicas", type=int, default=1)
    a = ap.parse_args(argv)
    from lbtui.fleet.backend import die_with_parent

    die_with_parent(a.parent_pid)
    opts = DemoOptions(
        backends=a.backends,
        rate=a.rate,
        config=Path(a.config) if a.config else None,
        fleet=Path(a.fleet) if a.fleet else None,
        replicas=a.replicas,
    )
    try:
        run_async(_serve_dataplane(opts))
    except LbtuiError as exc:
        print(f"lbtui: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


# -- the command -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backends", "-n", type=int, metavar="N", help="fleet size (default: demo/fleet.toml's 4)"
    )
    parser.add_argument(
        "--rate", "-r", type=float, default=200.0, metavar="R", help="load in requests/s (200)"
    )
    parser.add_argument("--config", "-c", metavar="FILE", help="balancer TOML (demo/lbtui.toml)")
    parser.add_argument("--fleet", metavar="FILE", help="fleet TOML (demo/fleet.toml)")
    parser.add_argument(
        "--refresh", default="250ms", metavar="DURATION", help="display refresh (250ms)"
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        metavar="N",
        help="N balancers sharing their limits through a redis-server the demo starts (1)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the balancer in the console's process (on its own thread) instead of apart",
    )


def run(args: argparse.Namespace) -> int:
    from lbtui.units import parse_duration

    if args.backends is not None and not 1 <= args.backends <= 256:
        raise UsageError("--backends must be from 1 to 256")
    if not 0 <= args.rate <= 20_000:
        raise UsageError("--rate must be from 0 to 20000 requests/s")
    if not 1 <= args.replicas <= 8:
        raise UsageError("--replicas must be from 1 to 8")
    if args.replicas > 1 and args.in_process:
        raise UsageError("--replicas runs the balancers apart from the console: drop --in-process")
    try:
        refresh = parse_duration(args.refresh)
    except ValueError as exc:
        raise UsageError(f"--refresh: {exc}") from None
    options = DemoOptions(
        backends=args.backends,
        rate=args.rate,
        config=Path(args.config) if args.config else None,
        fleet=Path(args.fleet) if args.fleet else None,
        replicas=args.replicas,
    )
    from lbtui.tui.app import LbtuiApp

    if args.in_process:
        runtime = DemoRuntime(options)
        runtime.start()
        try:
            assert runtime.control is not None
            assert runtime.server is not None
            title = f"lbtui demo · balancer {runtime.server.url}"
            if runtime.admin_url:
                title += f" · admin {runtime.admin_url}"
            LbtuiApp(runtime.control, load=runtime.load, refresh_s=refresh, title=title).run()
        finally:
            runtime.stop()
        return 0
    dataplane = DataPlaneProcess(options)
    dataplane.start()
    try:
        assert dataplane.control is not None
        from lbtui.tui.screens.chaos import ChaosTarget

        title = f"lbtui demo · balancer {dataplane.balancer_url} · admin {dataplane.admin_url}"
        if options.replicas > 1:
            title = f"lbtui demo · {options.replicas} replicas · {dataplane.store_note}"
        chaos = ChaosTarget(
            dataplane.admin_url, dataplane.balancer_url, dataplane.token, DEMO_DIR / "scenarios"
        )
        from lbtui.control.multi import MultiControl

        if isinstance(dataplane.control, MultiControl):  # --replicas: the balancers panel too
            from lbtui.tui.multi_app import MultiApp

            MultiApp(
                dataplane.control, load=dataplane.load, refresh_s=refresh, title=title, chaos=chaos
            ).run()
        else:
            LbtuiApp(
                dataplane.control, load=dataplane.load, refresh_s=refresh, title=title, chaos=chaos
            ).run()
    finally:
        dataplane.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(_dataplane_main(sys.argv[1:]))
