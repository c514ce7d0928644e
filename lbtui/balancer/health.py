"""Active health checks (HAProxy): every ``interval`` a GET of ``path`` on each backend, with a
timeout; the result goes to the backend's ``HealthState`` (rise/fall, slow start), which decides.

One timer for all backends, owned by the ``HealthChecker``, starts each check when it is due;
checks are spread over the interval so a large pool does not probe everything at the same
instant. Checks use their own connections
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
import heapq
import math
import time
from collections.abc import Callable
from typing import cast

from lbtui.balancer.connections import authority
from lbtui.balancer.pool import Backend
from lbtui.config import HealthConfig


class HealthChecker:
    """The checks of every backend, from one timer.

    A task per backend sleeping out its interval made, at 1,000 backends, a thousand timers,
    coroutines and contexts that lived two seconds each: long enough for the garbage collector
    to promote them and scan them again in every older collection (full collections of tens of
    milliseconds under load, a stall for every request in flight). Here a heap of due times
    (plain tuples, which the collector stops scanning) and one ``call_at`` timer start each
    check as a short task when it is due; the next one is due ``interval`` after this one
    started, as HAProxy's ``inter``."""

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
        self._backends: dict[str, Backend] = {}
        """Backends checked, by name."""
        self._due: list[tuple[float, int, str, int]] = []
        """Heap of (due on ``clock``, sequence, name, ``id`` of the backend it was for): an
        entry whose backend was removed (or replaced under its name) is dropped when due."""
        self._seq = 0
        self._running: dict[str, asyncio.Task[None]] = {}
        """Checks in flight, by backend."""
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = math.inf

    def settings(self, backend: Backend) -> HealthConfig:
        """The checks ``backend`` gets: its group's, else the ``[health]`` table."""
        return self._config_for(backend.name) if self._config_for else self.config

    async def start(self, backends: list[Backend]) -> None:
        n = max(len(backends), 1)
        for i, b in enumerate(backends):
            self.add(b, offset_s=(self.config.interval_ms / 1e3) * i / n)

    def add(self, backend: Backend, offset_s: float = 0.0) -> None:
        if backend.name in self._backends or not self.settings(backend).enabled:
            return
        self._backends[backend.name] = backend
        self._push(backend, self._clock() + offset_s)

    def remove(self, name: str) -> None:
        self._backends.pop(name, None)
        task = self._running.pop(name, None)
        if task is not None:
            task.cancel()

    def cancel_all(self) -> None:
        """Stop every check without waiting for them (a reload replaces this checker)."""
        for t in self._stop_all():
            t.cancel()

    async def stop(self) -> None:
        tasks = self._stop_all()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def _stop_all(self) -> list[asyncio.Task[None]]:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_for = math.inf
        self._backends.clear()
        self._due.clear()
        tasks = list(self._running.values())
        self._running.clear()
        return tasks

    # --- the schedule ---------------------------------------------------------------------

    def _push(self, backend: Backend, due: float) -> None:
        self._seq += 1
        heapq.heappush(self._due, (due, self._seq, backend.name, id(backend)))
        if due < self._armed_for:
            self._arm(due)

    def _arm(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, due - self._clock()), self._fire)
        self._armed_for = due

    def _fire(self) -> None:
        """Start every check that is due, then wait for the next one."""
        self._timer = None
        self._armed_for = math.inf
        now = self._clock()
        due = self._due
        while due and due[0][0] <= now:
            _, _, name, ident = heapq.heappop(due)
            b = self._backends.get(name)
            if b is None or id(b) != ident or name in self._running:
                continue
            self._running[name] = asyncio.ensure_future(self._check(b))
        if due:
            self._arm(due[0][0])

    async def _check(self, backend: Backend) -> None:
        started = self._clock()
        try:
            ok, detail = await self.check_once(backend)
        except Exception as exc:  # a check that broke is a failed check, and the next is due
            ok, detail = False, f"check failed: {type(exc).__name__}: {exc}"
        finally:
            if self._running.get(backend.name) is asyncio.current_task():
                del self._running[backend.name]
        if self._backends.get(backend.name) is backend:
            self._on_result(backend, ok, detail)
            self._push(backend, started + self.settings(backend).interval_ms / 1e3)

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
