"""The balancer and its control plane, started and stopped as one (``lbtui serve``, ``demo``).

Order (uvicorn's, and what a scraper or a console expects): the data plane starts first, then
the admin API, so the API never answers for a balancer that is not there; on the way out the
admin API stops first (its event streams end), then the balancer drains. A refused admin
configuration (non-loopback without a token) is raised by the constructor, before anything
listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Callable

from lbtui.balancer.proxy import Proxy
from lbtui.balancer.server import BalancerServer
from lbtui.config import Config
from lbtui.config.diff import Change, TableChanged
from lbtui.control.api import AdminServer
from lbtui.control.local import LocalControl
from lbtui.control.reload import Loader, Reloader, ReloadResult
from lbtui.core.faults import Faults
from lbtui.fleet.supervisor import Fleet

GC_THRESHOLDS = (10_000, 20, 10)
"""``gc.set_threshold`` while ``lbtui serve`` runs (Python's: 700, 10, 10); see where it is set."""


class BalancerRuntime:
    """``async with run_balancer(config) as rt:`` — ``rt.server``, ``rt.control``, ``rt.admin``
    (``None`` when ``[admin] enabled = false``)."""

    def __init__(
        self,
        config: Config,
        *,
        fleet: Fleet | None = None,
        faults: Faults | None = None,
        proxy: Proxy | None = None,
        loader: Loader | None = None,
        source: str = "config",
    ) -> None:
        self.config = config
        self.server = BalancerServer(config, proxy)
        self.control = LocalControl(self.server.proxy, fleet, faults)
        self.reloader: Reloader | None = (
            Reloader(loader, self.server.proxy, source, self._reloaded)
            if loader is not None
            else None
        )
        """Reads the config file again (SIGHUP, the admin API); None when there is no file."""
        self.admin: AdminServer | None = (
            AdminServer(config.admin, self.control, reloader=self.reloader)
            if config.admin.enabled
            else None
        )

    def _reloaded(self, config: Config, changes: list[Change]) -> None:
        self.config = config
        health = any(
            isinstance(c, TableChanged) and c.table in ("health", "groups") for c in changes
        )  # a group's health table changes the checks too
        self.server.reconfigure(config, health, changes)

    def reload(self) -> ReloadResult:
        """Read the config file again and apply what changed (``control/reload.py``)."""
        if self.reloader is None:
            return ReloadResult(
                applied=False, source="(none)", problems=["started without a config file"]
            )
        return self.reloader.reload()

    async def start(self) -> None:
        await self.server.start()
        if self.admin is not None:
            try:
                await self.admin.start()
            except BaseException:
                await self.server.stop()
                raise

    async def stop(self) -> None:
        try:
            if self.admin is not None:
                await self.admin.stop()
        finally:
            await self.server.stop()

    async def __aenter__(self) -> BalancerRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def run_balancer(
    config: Config,
    *,
    fleet: Fleet | None = None,
    faults: Faults | None = None,
    loader: Loader | None = None,
    source: str = "config",
) -> BalancerRuntime:
    """The runtime for ``config``, not yet started: use it as ``async with``. With ``loader``
    (the file read again with the start-up flags) it can reload (SIGHUP, the admin API)."""
    return BalancerRuntime(config, fleet=fleet, faults=faults, loader=loader, source=source)


async def serve_until_signalled(
    runtime: BalancerRuntime,
    on_ready: Callable[[BalancerRuntime], None] | None = None,
    on_signal: Callable[[BalancerRuntime, signal.Signals], None] | None = None,
    on_reload: Callable[[ReloadResult], None] | None = None,
) -> None:
    """Start ``runtime``, wait for SIGINT or SIGTERM, then stop it gracefully; ``on_signal``
    is told which signal came, before the drain starts. SIGHUP reloads the config file (when
    the runtime has one) and tells ``on_reload`` what that did; the balancer keeps serving.
    SIGUSR1 reopens the access log file (logrotate's ``postrotate``)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[signal.Signals] = []

    def stop_on(sig: signal.Signals) -> None:
        received.append(sig)
        stop.set()

    if runtime.reloader is not None:
        runtime.reloader.on_result = on_reload  # the API's reloads are told too

    def reload_on_hup() -> None:
        result = runtime.reload()
        if on_reload is not None and runtime.reloader is None:
            on_reload(result)

    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop_on, sig)
            installed.append(sig)
    with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
        loop.add_signal_handler(signal.SIGHUP, reload_on_hup)
        installed.append(signal.SIGHUP)
    with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
        loop.add_signal_handler(signal.SIGUSR1, runtime.server.reopen_access_log)
        installed.append(signal.SIGUSR1)
    thresholds = gc.get_threshold()
    try:
        async with runtime:
            # What start-up built lives as long as the process: keep it out of the collector's
            # scans, so that full collections under load stay short (gc.freeze's purpose).
            gc.collect()
            gc.freeze()
            # and collect the young generation every 10,000 new containers, not 700: most of
            # what a proxied request or an admin answer makes is freed by its count before
            # then, so less survives into the middle generation, whose collections took 4 ms
            # every 0.7 s at 1,000 backends watched (bench/stalls.py: GC 5.8 -> 1.1 ms a second)
            gc.set_threshold(*GC_THRESHOLDS)
            if runtime.admin is not None:  # and the admin caches, once each is first built
                runtime.admin.state.freeze_built = True
                runtime.admin.exposition.freeze_built = True
            if on_ready is not None:
                on_ready(runtime)
            await stop.wait()
            if on_signal is not None and received:
                on_signal(runtime, received[0])
    finally:
        gc.set_threshold(*thresholds)
        for sig in installed:
            loop.remove_signal_handler(sig)
