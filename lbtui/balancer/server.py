"""Running the balancer: its listeners (``listeners.py``), start-up and graceful shutdown.

With ``[listener] workers = N`` this process is the primary of N that share the port
(``workers.py``); the workers run this same class with ``worker_index`` set.

The listener is the fast one (``listener.py``: ``asyncio.Protocol`` + llhttp) unless
``[listener] engine = "aiohttp"`` asks for aiohttp's low-level server; both feed the same
pipeline. Shutdown copies uvicorn's order: stop accepting, let in-flight requests finish up to a
grace deadline, then cancel what is left, then close the upstream connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lbtui.balancer.accesslog import AccessLog
from lbtui.balancer.discovery import Discovery
from lbtui.balancer.health import HealthChecker
from lbtui.balancer.listeners import Listeners
from lbtui.balancer.pool import Backend
from lbtui.balancer.proxy import Proxy
from lbtui.config import Config, ListenerSpec
from lbtui.config.diff import (
    Change,
    ListenerClosed,
    ListenerOpened,
    ListenerReplaced,
    TableChanged,
)
from lbtui.core.events import ConfigNote
from lbtui.errors import LbtuiError
from lbtui.units import parse_hostport

if TYPE_CHECKING:
    from aiohttp import web

    from lbtui.balancer.listener import FastListener
    from lbtui.balancer.shared import SharedLimits
    from lbtui.balancer.workers import WorkerGroup

TICK_S = 0.25
"""Upkeep period: readmissions, slow-start weights, panic mode."""
Changes = Sequence[Change]
ListenerChange = ListenerOpened | ListenerClosed | ListenerReplaced
log = logging.getLogger("lbtui.server")

KEEPALIVE_S = 75.0
"""An idle client connection is closed after this long."""


class BalancerServer:
    """The proxy listening on its address. ``port`` is the bound port once started."""

    def __init__(
        self, config: Config, proxy: Proxy | None = None, *, worker_index: int = 0
    ) -> None:
        self.config = config
        self.processes = config.listener.process_count
        self.worker_index = worker_index
        """0: this process runs the health checks (and, with workers, starts and leads them)."""
        self.shared: SharedLimits | None = None
        self.workers: WorkerGroup | None = None
        if proxy is None and self.processes > 1 and worker_index == 0:
            from lbtui.balancer.shared import SharedLimits

            self.shared = SharedLimits.create(
                workers=self.processes, max_clients=config.limits.max_clients
            )
            proxy = Proxy(config, shared=self.shared)
        elif self.processes > 1 and (proxy is None or proxy.shared is None):
            raise ValueError("a proxy for several processes needs its limits in shared memory")
        self.proxy = proxy or Proxy(config)
        self.listeners: Listeners | None = None
        self.health: HealthChecker | None = None
        self.discoveries: list[Discovery] = []
        """The groups' discovery tasks (file, DNS), in the primary."""
        self._ticker: asyncio.Task[None] | None = None
        self.access_log: AccessLog | None = None
        self._reopening: set[asyncio.Task[None]] = set()
        first = config.all_listeners[0]
        self.host, self.port = parse_hostport(first.address)
        """The first listener's address (the port it got, once started)."""

    @property
    def url(self) -> str:
        """The first listener's URL."""
        return self.urls[0]

    @property
    def _fast(self) -> FastListener | None:
        """The first listener's fast server (what tests of one listener look at)."""
        return self.listeners.first().fast if self.listeners and self.listeners.open_ones else None

    @property
    def _runner(self) -> web.ServerRunner | None:
        """The first listener's aiohttp server runner (``engine = "aiohttp"``)."""
        ls = self.listeners
        return ls.first().runner if ls and ls.open_ones else None

    @property
    def urls(self) -> list[str]:
        """Every listener's URL (``https://`` for TLS ones), in the config's order."""
        if self.listeners is not None and self.listeners.open_ones:
            return [one.url for one in self.listeners.open_ones.values()]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return [f"http://{host}:{self.port}"]

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.proxy.tick()

    async def start(self) -> None:
        self._open_access_log()  # first: a path that cannot be opened stops the start here
        await self.proxy.start()
        if self.worker_index == 0:
            self._start_health()
            self.proxy.on_membership(self._membership)
            self._start_discovery()
        self._ticker = asyncio.create_task(self._tick_forever(), name="lbtui-tick")
        listeners = self.listeners = Listeners(
            self.proxy,
            self.config,
            processes=self.processes,
            primary=self.worker_index == 0,
            keepalive_s=KEEPALIVE_S,
        )
        self.proxy.listeners = listeners
        try:
            for spec in self.config.all_listeners:
                await listeners.open(spec)
        except BaseException:
            await listeners.shutdown(0)
            await self._stop_background()
            if self.access_log is not None:
                await self.access_log.close()
                self.access_log = None
            await self.proxy.close()
            self._close_shared()
            raise
        first = listeners.first()
        self.host, self.port = first.host, first.port
        store = self.proxy.state.limit_store
        if store is not None:  # named once the port is known
            name = self.config.balancer.name or f"{self.host}:{self.port}"
            await store.start(f"{name}#{self.worker_index}" if self.worker_index else name)
        if self.processes > 1 and self.worker_index == 0:
            from lbtui.balancer.workers import WorkerGroup

            assert self.shared is not None
            self.workers = WorkerGroup(
                self.config, self.proxy, self.shared, self.processes, listeners.resolved()
            )
            try:
                await self.workers.start()
            except BaseException:
                self.workers = None
                await self.stop()
                raise

    def _open_access_log(self) -> None:
        cfg = self.config.access_log
        if cfg is None:
            return
        base = Path(self.config.base_dir) if self.config.base_dir else None
        access_log = AccessLog(cfg, base=base)
        access_log.open()
        self.access_log = self.proxy.pipeline.access_log = access_log

    def reopen_access_log(self) -> None:
        """SIGUSR1: the access log file is opened again by its name (after logrotate), here
        and in every worker."""
        if self.access_log is not None:
            self.access_log.reopen()
        if self.workers is not None:
            for pid in self.workers.pids.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR1)

    def _start_health(self) -> None:
        """Active checks on every backend, spread over one interval (the primary only)."""
        groups = any(g.health is not None and g.health.enabled for g in self.config.groups)
        if not self.config.health.enabled and not groups:
            return
        checker = self.health = HealthChecker(
            self.config.health,
            self.proxy.health_result,
            clock=self.proxy.clock,
            config_for=self.proxy.state.health_for,
        )
        backends = list(self.proxy.backends.values())
        for i, b in enumerate(backends):
            checker.add(b, offset_s=(checker.config.interval_ms / 1e3) * i / len(backends))

    def _start_discovery(self) -> None:
        """A discovery task for each group that names a source (the primary only); after a
        reload, the tasks whose source is unchanged go on, a changed source starts over
        from the backends the old one added (so it removes those it no longer lists)."""
        base = Path(self.config.base_dir) if self.config.base_dir else None
        old = {d.group: d for d in self.discoveries}
        kept: list[Discovery] = []
        for g in self.config.groups:
            was = old.pop(g.name, None)
            if g.discovery is None:
                if was is not None:
                    old[g.name] = was  # stopped below; what it added stays in the group
                continue
            if was is not None and was.config == g.discovery:
                kept.append(was)
                continue
            d = Discovery(self.proxy, g.name, g.discovery, base)
            if was is not None:
                was.cancel()
                d.owned = dict(was.owned)
            d.start()
            kept.append(d)
        for d in old.values():
            d.cancel()
        self.discoveries = kept

    def _membership(self, backend: Backend, added: bool) -> None:
        if self.health is not None:
            if added:
                self.health.add(backend)
            else:
                self.health.remove(backend.name)

    def reconfigure(self, config: Config, health_changed: bool, changes: Changes = ()) -> None:
        """A reload was applied (``control/reload.py``): the checks start again with the new
        ``[health]`` table when it changed; listeners open and close as ``changes`` say."""
        self.config = config
        self.after_reload(config, changes)
        if health_changed and self.worker_index == 0 and self._ticker is not None:
            if self.health is not None:
                self.health.cancel_all()
                self.health = None
            self._start_health()
        if self.worker_index == 0 and self._ticker is not None:
            self._start_discovery()

    def after_reload(self, config: Config, changes: Changes) -> None:
        """What a reload changes in this process beyond the pipeline: its listeners and its
        access log (the primary and every worker alike)."""
        self.config = config
        self.reopen_listeners(changes)
        if any(isinstance(c, TableChanged) and c.table == "access_log" for c in changes):
            self._swap_access_log()

    def _swap_access_log(self) -> None:
        """The new ``[access_log]``: opened first (a path that cannot be opened keeps the old
        log, and says so), then put in the old one's place, which writes what it has."""
        old = self.access_log
        self.access_log = self.proxy.pipeline.access_log = None
        try:
            self._open_access_log()
        except LbtuiError as exc:
            self.access_log = self.proxy.pipeline.access_log = old
            log.warning("access log not changed: %s", exc)
            if self.worker_index == 0:
                self.proxy.events.emit(ConfigNote(message=f"access log not changed: {exc}"))
            return
        if old is not None:
            task = asyncio.get_running_loop().create_task(old.close())
            self._reopening.add(task)
            task.add_done_callback(self._reopening.discard)

    def reopen_listeners(self, changes: Changes) -> None:
        """Open, close or replace listeners as a reload says, in the background: a closed one
        stops accepting at once and its requests finish within the grace period. With
        several processes each does the same (a new listener on port 0 only in the primary:
        the others could not know its port)."""
        todo = [c for c in changes if isinstance(c, ListenerChange)]
        if todo and self.listeners is not None:
            task = asyncio.get_running_loop().create_task(self._listeners_changed(todo))
            self._reopening.add(task)
            task.add_done_callback(self._reopening.discard)

    async def _listeners_changed(self, changes: list[ListenerChange]) -> None:
        listeners = self.listeners
        assert listeners is not None
        grace = self.config.proxy.shutdown_grace_s
        closing = []
        for c in changes:
            spec = None if isinstance(c, ListenerClosed) else c.spec
            name = c.name if isinstance(c, ListenerClosed) else c.spec.name
            if not isinstance(c, ListenerOpened) and name in listeners.open_ones:
                closing.append(asyncio.ensure_future(listeners.close(name, grace)))
            if spec is None or (self.worker_index > 0 and parse_hostport(spec.address)[1] == 0):
                continue
            try:
                await self._open_when_free(spec)
            except (OSError, ValueError, LbtuiError) as exc:
                log.warning("listener %s not opened: %s", name, exc)
                if self.worker_index == 0:
                    self.proxy.events.emit(
                        ConfigNote(message=f"listener {name} could not be opened: {exc}")
                    )
        await asyncio.gather(*closing, return_exceptions=True)

    async def _open_when_free(self, spec: ListenerSpec) -> None:
        """Open ``spec``; its address may still be held for a moment by the listener it
        replaces, which stops accepting at its first step: tried again for up to a second."""
        listeners = self.listeners
        assert listeners is not None
        for _ in range(20):
            try:
                await listeners.open(spec)
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                await asyncio.sleep(0.05)
        await listeners.open(spec)

    def _close_shared(self) -> None:
        """Let go of the limits' shared memory (the primary's also removes it)."""
        if self.shared is not None:
            self.shared.close()
            self.shared = None

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting, drain in-flight requests up to the grace period (``grace_s``, else
        the configured one), close upstreams.

        Faults are rolled back first, so that no injected hang holds up the drain."""
        self.proxy.clear_faults()
        grace = self.config.proxy.shutdown_grace_s if grace_s is None else grace_s
        workers, self.workers = self.workers, None
        drains = [workers.stop(grace)] if workers is not None else []
        if self.listeners is not None:
            drains.append(self.listeners.shutdown(grace))
            self.listeners = None
        await asyncio.gather(*drains)
        await self._stop_background()
        if self.access_log is not None:
            self.proxy.pipeline.access_log = None
            await self.access_log.close()
            self.access_log = None
        await self.proxy.close()
        self._close_shared()

    async def _stop_background(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self.health is not None:
            await self.health.stop()
            self.health = None
        discoveries, self.discoveries = self.discoveries, []
        for d in discoveries:
            await d.stop()

    async def __aenter__(self) -> BalancerServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
