"""A ``Control`` that runs another ``Control``'s calls on the event loop of another thread.

``lbtui demo`` keeps the data plane (fleet supervisor, balancer, admin API, load generator) on
its own event loop in a background thread, so that Textual's rendering on the main thread never
stalls request handling (measured: the issue asks for less than 2 ms of added p99). The console
still sees one plain ``Control``: every call is handed over with ``run_coroutine_threadsafe``
and awaited on the caller's loop, so nothing on the UI path blocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from lbtui.control.interface import Control
from lbtui.control.model import BreakerMode, Event, FaultSpec, Figure, Snapshot

T = TypeVar("T")
POLL_S = 0.2
"""How often the bridged event stream asks for new events."""


class ThreadedControl:
    """Forwards every call to ``inner`` on ``loop`` (an event loop running in another thread)."""

    def __init__(self, inner: Control, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._loop = loop
        self.read_only = inner.read_only

    def describe_target(self) -> str:
        return self._inner.describe_target()

    async def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        async def run() -> T:
            return await make()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), self._loop))

    async def snapshot(self) -> Snapshot:
        return await self._call(self._inner.snapshot)

    async def events(self, since_id: int = 0) -> list[Event]:
        return await self._call(lambda: self._inner.events(since_id))

    async def stream_events(self, since_id: int = 0) -> AsyncIterator[Event]:
        last = since_id
        while True:
            batch = await self.events(last)
            for event in batch:
                last = event.id
                yield event
            await asyncio.sleep(POLL_S)

    async def add_backend(self, name: str, url: str, weight: float = 1) -> None:
        await self._call(lambda: self._inner.add_backend(name, url, weight))

    async def remove_backend(self, name: str) -> None:
        await self._call(lambda: self._inner.remove_backend(name))

    async def set_weight(self, name: str, weight: float) -> None:
        await self._call(lambda: self._inner.set_weight(name, weight))

    async def drain(self, name: str) -> None:
        await self._call(lambda: self._inner.drain(name))

    async def disable(self, name: str) -> None:
        await self._call(lambda: self._inner.disable(name))

    async def enable(self, name: str) -> None:
        await self._call(lambda: self._inner.enable(name))

    async def set_algorithm(self, name: str) -> None:
        await self._call(lambda: self._inner.set_algorithm(name))

    async def set_limits(self, **limits: Figure) -> None:
        await self._call(lambda: self._inner.set_limits(**limits))

    async def force_breaker(self, name: str, mode: BreakerMode) -> None:
        await self._call(lambda: self._inner.force_breaker(name, mode))

    async def set_fault(self, name: str, fault: FaultSpec) -> None:
        await self._call(lambda: self._inner.set_fault(name, fault))

    async def clear_fault(self, name: str) -> None:
        await self._call(lambda: self._inner.clear_fault(name))

    async def fleet_kill(self, name: str) -> None:
        await self._call(lambda: self._inner.fleet_kill(name))

    async def fleet_restart(self, name: str) -> None:
        await self._call(lambda: self._inner.fleet_restart(name))

    async def fleet_knobs(
        self, name: str, **knobs: float | int | bool
    ) -> dict[str, float | int | bool]:
        return await self._call(lambda: self._inner.fleet_knobs(name, **knobs))

    async def aclose(self) -> None:
        return None
