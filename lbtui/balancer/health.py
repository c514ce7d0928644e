"""Active health checks (HAProxy): every ``interval`` a GET of ``path`` on each backend, with a
timeout; the result goes to the backend's ``HealthState`` (rise/fall, slow start), which decides.

One task per backend, owned by the ``HealthChecker``; checks are spread over the interval so a
large pool does not probe everything at the same instant. Checks use their own connections
(closed after each check), so they neither borrow nor poison the data plane's keep-alive pool.

A check is a bare ``asyncio.Protocol``: it writes one ``GET … Connection: close`` and reads the
status line, nothing more (HAProxy's ``httpchk`` does the same; a body of any size is never
read). An aiohttp client request
costs about five times the CPU, and at 1,000 backends every 2 s that was a quarter of a core
taken from the event loop that serves traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import cast

from lbtui.balancer.connections import authority
from lbtui.balancer.pool import Backend
from lbtui.config import HealthConfig


class HealthChecker:
    def __init__(
        self,
        config: HealthConfig,
        on_result: Callable[[Backend, bool, str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        config_for: Callable[[str], HealthConfig] | None = None,
    ) -> None:
        self.config = config
        self._on_result = on_result
        self._clock = clock
        self._config_for = config_for
        """A backend's own settings (its group's ``health``); None: ``config`` for all."""
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def settings(self, backend: Backend) -> HealthConfig:
        """The checks ``backend`` gets: its group's, else the ``[health]`` table."""
        return self._config_for(backend.name) if self._config_for else self.config

    async def start(self, backends: list[Backend]) -> None:
        n = max(len(backends), 1)
        for i, b in enumerate(backends):
            self.add(b, offset_s=(self.config.interval_ms / 1e3) * i / n)

    def add(self, backend: Backend, offset_s: float = 0.0) -> None:
        if backend.name in self._tasks or not self.settings(backend).enabled:
            return
        self._tasks[backend.name] = asyncio.create_task(
            self._loop(backend, offset_s), name=f"health:{backend.name}"
        )

    def remove(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()

    def cancel_all(self) -> None:
        """Stop every check without waiting for them (a reload replaces this checker)."""
        for t in self._tasks.values():
            t.cancel()
        self._tasks.clear()

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def check_once(self, backend: Backend) -> tuple[bool, str]:
        """One check: ``(passed, detail)``."""
        cfg = self.settings(backend)
        request = (
            f"GET {backend.base_path}{cfg.path} HTTP/1.1\r\n"
            f"Host: {authority(backend.host, backend.port)}\r\n"
            "User-Agent: lbtui-health\r\nConnection: close\r\n\r\n"
        ).encode()
        lo, hi = cfg.expect_status
        loop = asyncio.get_running_loop()
        status: asyncio.Future[int] = loop.create_future()
        try:
            async with asyncio.timeout(cfg.effective_timeout_ms / 1e3):
                try:
                    transport, _ = await loop.create_connection(
                        lambda: _Probe(request, status), backend.host, backend.port
                    )
                except OSError as exc:
                    return False, f"connect failed: {exc.strerror or exc}"
                try:
                    code = await status
                finally:
                    transport.close()
        except TimeoutError:
            return False, f"no answer within {cfg.effective_timeout_ms} ms"
        except (ConnectionError, OSError, ValueError) as exc:
            return False, f"{type(exc).__name__}: {exc}"
        if lo <= code <= hi:
            return True, f"HTTP {code}"
        return False, f"HTTP {code} (expected {lo}-{hi})"

    async def _loop(self, backend: Backend, offset_s: float) -> None:
        interval = self.settings(backend).interval_ms / 1e3
        await asyncio.sleep(offset_s)
        while True:
            started = self._clock()
            ok, detail = await self.check_once(backend)
            self._on_result(backend, ok, detail)
            await asyncio.sleep(max(0.0, interval - (self._clock() - started)))


class _Probe(asyncio.Protocol):
    """Sends ``request``, resolves ``status`` with the status code of the answer's first line."""

    def __init__(self, request: bytes, status: asyncio.Future[int]) -> None:
        self._request = request
        self._status = status
        self._head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance here
        cast(asyncio.WriteTransport, transport).write(self._request)

    def data_received(self, data: bytes) -> None:
        if self._status.done():
            return
        self._head += data
        line, found, _ = self._head.partition(b"\r\n")
        if not found:
            if len(self._head) > 8192:
                self._status.set_exception(ValueError("no status line in the first 8 KiB"))
            return
        parts = line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            self._status.set_exception(ValueError(f"not an HTTP status line: {line[:80]!r}"))
            return
        self._status.set_result(int(parts[1]))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._status.done():
            self._status.set_exception(
                exc or ConnectionError("the backend closed the connection before answering")
            )
