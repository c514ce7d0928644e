"""``Turns``: the admin plane's work takes one slice per turn of the event loop, whoever does it.

The state and ``/metrics`` are built in slices of half a millisecond, each followed by a yield
to the loop, so that proxied requests wait behind one slice at most. But a yield only puts the
task at the back of the loop's queue: with a poll catching up, a background pass and a scrape
all under way, one turn of the loop ran a slice of each, back to back — 1.5 ms and more that
every request in flight waited behind (16–27 turns over 2 ms a second at 1,000 backends).
Here each slice is taken with ``Turns`` held, and a yield hands it on, FIFO: the next slice of
admin work runs at the next turn, after the requests that became ready meanwhile.

One ``Turns`` is shared by everything an ``AdminServer`` builds (it belongs to that server's
event loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


class Turns:
    """A FIFO lock on "the admin slice of this turn of the loop"."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        await self._lock.acquire()

    def give(self) -> None:
        self._lock.release()

    async def rest(self, seconds: float = 0.0) -> None:
        """Yield to the loop, then hand the turn to whoever asked for it meanwhile and wait to
        take it again. Held through the yield, so that a task asking for it in this same turn
        queues instead of taking it at once; let go for a rest of ``seconds``."""
        if seconds > 0:
            await self.wait(asyncio.sleep(seconds))
            return
        await asyncio.sleep(0)
        self._lock.release()  # wakes the first waiting task, if any: its slice is next turn's
        await self._lock.acquire()

    async def wait(self, what: Awaitable[object]) -> None:
        """Hand the turn on while waiting for ``what``, then take it again."""
        self._lock.release()
        try:
            await what
        finally:
            await self._lock.acquire()
