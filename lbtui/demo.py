"""``lbtui demo``: a local fleet of real backend processes, the balancer with its admin API, an
open-loop load generator, and the console on top — one command, nothing else to install.

The data plane runs on its own event loop in a background thread (``DemoRuntime``); the console
runs on the main thread and reaches it through a ``ThreadedControl``. Quitting stops the load,
the admin API, the balancer and the fleet (every process by its PID), and rolls back every
proxy-side fault the session applied.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
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

        path = self.options.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
        data: dict[str, Any] = config_mod.read_toml(path) if path is not None else {}
        data["backends"] = [{"name": m.name, "url": m.url} for m in fleet.backends]
        data.setdefault("listener", {}).setdefault("address", "127.0.0.1:0")
        data.setdefault("admin", {}).setdefault("address", "127.0.0.1:0")
        if path is not None:
            data.setdefault("base_dir", str(Path(path).resolve().parent))
        return config_mod.from_dict(data, str(path) if path else "demo")

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
    parser.add_argument("--no-admin", action="store_true", help="do not start the admin API")


def run(args: argparse.Namespace) -> int:
    from lbtui.units import parse_duration

    if args.backends is not None and not 1 <= args.backends <= 256:
        raise UsageError("--backends must be from 1 to 256")
    if not 0 <= args.rate <= 20_000:
        raise UsageError("--rate must be from 0 to 20000 requests/s")
    try:
        refresh = parse_duration(args.refresh)
    except ValueError as exc:
        raise UsageError(f"--refresh: {exc}") from None
    runtime = DemoRuntime(
        DemoOptions(
            backends=args.backends,
            rate=args.rate,
            config=Path(args.config) if args.config else None,
            fleet=Path(args.fleet) if args.fleet else None,
            admin=not args.no_admin,
        )
    )
    runtime.start()
    try:
        from lbtui.tui.app import LbtuiApp

        assert runtime.control is not None
        title = "lbtui demo"
        if runtime.server is not None:
            title += f" · balancer {runtime.server.url}"
        if runtime.admin_url:
            title += f" · admin {runtime.admin_url}"
        app = LbtuiApp(runtime.control, load=runtime.load, refresh_s=refresh, title=title)
        app.run()
    finally:
        runtime.stop()
    return 0
