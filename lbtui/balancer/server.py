"""Running the balancer: the listener, start-up and graceful shutdown.

The listener is the fast one (``listener.py``: ``asyncio.Protocol`` + llhttp) unless
``[listener] engine = "aiohttp"`` asks for aiohttp's low-level server; both feed the same
pipeline. Shutdown copies uvicorn's order: stop accepting, let in-flight requests finish up to a
grace deadline, then cancel what is left, then close the upstream connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from aiohttp import web

from lbtui.balancer.health import HealthChecker
from lbtui.balancer.listener import FastListener
from lbtui.balancer.proxy import Proxy
from lbtui.config import Config

TICK_S = 0.25
"""Upkeep period: readmissions, slow-start weights, panic mode."""
KEEPALIVE_S = 75.0
"""An idle client connection is closed after this long."""


class BalancerServer:
    """The proxy listening on its address. ``port`` is the bound port once started."""

    def __init__(self, config: Config, proxy: Proxy | None = None) -> None:
        self.config = config
        self.proxy = proxy or Proxy(config)
        self._runner: web.ServerRunner | None = None
        self._site: web.SockSite | None = None
        self._fast: FastListener | None = None
        self.health: HealthChecker | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.host = config.listener.host
        self.port = config.listener.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.proxy.tick()

    async def start(self) -> None:
        await self.proxy.start()
        if self.config.health.enabled:
            self.health = HealthChecker(
                self.config.health, self.proxy.health_result, clock=self.proxy.clock
            )
            await self.health.start(list(self.proxy.backends.values()))
            checker = self.health
            self.proxy.on_membership(
                lambda b, added: checker.add(b) if added else checker.remove(b.name)
            )
        self._ticker = asyncio.create_task(self._tick_forever(), name="lbtui-tick")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            await self._stop_background()
            await self.proxy.close()
            msg = f"cannot listen on {self.host}:{self.port}: {exc.strerror}"
            raise OSError(exc.errno, msg) from exc
        sock.listen(4096)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        if self.config.listener.engine == "fast":
            self._fast = FastListener(self.proxy, keepalive_timeout_s=KEEPALIVE_S)
            await self._fast.start(sock)
            return
        server = web.Server(
            self.proxy.handle,
            access_log=None,
            auto_decompress=False,
            keepalive_timeout=KEEPALIVE_S,
            max_field_size=16_384,
        )
        self._runner = web.ServerRunner(
            server, handle_signals=False, shutdown_timeout=self.config.proxy.shutdown_grace_s
        )
        await self._runner.setup()
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()

    async def stop(self) -> None:
        """Stop accepting, drain in-flight requests up to the grace period, close upstreams.

        Faults are rolled back first, so that no injected hang holds up the drain."""
        self.proxy.clear_faults()
        if self._fast is not None:
            await self._fast.shutdown(self.config.proxy.shutdown_grace_s)
            self._fast = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._stop_background()
        await self.proxy.close()

    async def _stop_background(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self.health is not None:
            await self.health.stop()
            self.health = None

    async def __aenter__(self) -> BalancerServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
