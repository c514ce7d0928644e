"""Active health checks (HAProxy): every ``interval`` a GET of ``path`` on each backend, with a
timeout; the result goes to the backend's ``HealthState`` (rise/fall, slow start), which decides.

One task per backend, owned by the ``HealthChecker``; checks are spread over the interval so a
large pool does not probe everything at the same instant. Checks use their own connections
(closed after each check), so they neither borrow nor poison the data plane's keep-alive pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import aiohttp

from lbtui.balancer.connections import authority
from lbtui.balancer.pool import Backend
from lbtui.config import HealthConfig

_BODY_CAP = 64 * 1024


class HealthChecker:
    def __init__(
        self,
        config: HealthConfig,
        on_result: Callable[[Backend, bool, str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._on_result = on_result
        self._clock = clock
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self, backends: list[Backend]) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, limit=0),
            timeout=aiohttp.ClientTimeout(total=self.config.effective_timeout_ms / 1e3),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
        )
        n = max(len(backends), 1)
        for i, b in enumerate(backends):
            self.add(b, offset_s=(self.config.interval_ms / 1e3) * i / n)

    def add(self, backend: Backend, offset_s: float = 0.0) -> None:
        if backend.name in self._tasks:
            return
        self._tasks[backend.name] = asyncio.create_task(
            self._loop(backend, offset_s), name=f"health:{backend.name}"
        )

    def remove(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def check_once(self, backend: Backend) -> tuple[bool, str]:
        """One check: ``(passed, detail)``."""
        session = self._session
        assert session is not None
        url = f"http://{authority(backend.host, backend.port)}{backend.base_path}{self.config.path}"
        lo, hi = self.config.expect_status
        try:
            async with session.get(url, allow_redirects=False) as resp:
                await resp.content.read(_BODY_CAP)  # the status decides; the body is not kept
                if lo <= resp.status <= hi:
                    return True, f"HTTP {resp.status}"
                return False, f"HTTP {resp.status} (expected {lo}-{hi})"
        except TimeoutError:
            return False, f"no answer within {self.config.effective_timeout_ms} ms"
        except aiohttp.ClientConnectorError as exc:
            return False, f"connect failed: {exc.os_error.strerror or exc}"
        except (aiohttp.ClientError, OSError) as exc:
            return False, f"{type(exc).__name__}: {exc}"

    async def _loop(self, backend: Backend, offset_s: float) -> None:
        interval = self.config.interval_ms / 1e3
        await asyncio.sleep(offset_s)
        while True:
            started = self._clock()
            ok, detail = await self.check_once(backend)
            self._on_result(backend, ok, detail)
            await asyncio.sleep(max(0.0, interval - (self._clock() - started)))
