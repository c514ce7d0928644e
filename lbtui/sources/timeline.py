"""The timeline of a source that keeps none itself (HAProxy, Prometheus): events are made by
comparing one read with the last, so following them means reading the source now and then.

``PolledTimeline`` holds those events and serves ``Control.events`` and ``stream_events``: a
follower gets what is in the ring, then waits for the next event, and when none comes within
``poll_s`` it asks for a read itself (the console's own snapshot poll counts as one).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from lbtui.control.errors import Unavailable
from lbtui.core.events import Event, EventRing


class PolledTimeline:
    """Events made by reading a source, and a way to follow them."""

    def __init__(
        self,
        read: Callable[[], Awaitable[object]],
        poll_s: float,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self.ring = EventRing(clock=clock, wall_clock=wall_clock)
        self._read = read
        self._poll_s = poll_s
        self._new = asyncio.Event()

    @property
    def last_id(self) -> int:
        return self.ring.last_id

    def emit(self, event: Event, *, notify: bool = True) -> Event:
        """``event`` on the timeline; ``notify=False`` while a read emits several (one
        :meth:`notify` after them wakes the followers once)."""
        stamped = self.ring.emit(event)
        if notify:
            self._new.set()
        return stamped

    def notify(self) -> None:
        self._new.set()

    def since(self, since_id: int) -> list[Event]:
        return self.ring.since(since_id)

    async def follow(self, since_id: int = 0) -> AsyncIterator[Event]:
        """Events above ``since_id``, then each new one, reading the source every ``poll_s``
        that brings none."""
        last = since_id
        while True:
            fresh = self.ring.since(last)
            for e in fresh:
                last = e.id
                yield e
            if fresh:
                continue
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), self._poll_s)
            except TimeoutError:
                try:
                    await self._read()
                except Unavailable:
                    await asyncio.sleep(self._poll_s)  # the snapshot poll shows the problem
