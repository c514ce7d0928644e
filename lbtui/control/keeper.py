"""``Keeper``: while a console watches, the state's time-moving figures are kept up to date in
the background, so that a poll pays only for what moved with outcomes and events.

At 1,000 backends under traffic most of a poll's work is time passing, not requests: every
backend that showed a rate has its "now" window slide each 100 ms, and every backend with
traffic in the last minute has its series shift at each 1 s tick (a thousand splices at once).
A poll that waited for all of it answered in 15–50 ms and, sliced or not, was a burst of work
for every request in flight to wait behind.

Here the first poll is answered as before (everything brought up to date, in slices). From the
second poll that comes within ``watch_s`` of the one before — a console, or Prometheus-like
polling — a background task walks the backends once per poll interval (at least one "now" slot,
at most one tick apart), timed to end just before the next poll is due, and **paced**: after
each 0.5 ms slice it rests three times as long, so it never takes more than a quarter of the
loop, and a proxied request meets one slice at most.
A poll then only catches up (``StateCache.catch_up``): a key per backend, a splice of each one
with new outcomes, a rebuild of each one an event named. Counters, states, in-flight and
actions are read at the answer; rates, percentiles and series of backends with no new outcome
are at most one interval old (250 ms for a console at its default refresh). When no poll has
come for ``watch_s`` the task stops, and the next poll is answered whole again.

Envoy and HAProxy keep their stats work off the request path with threads; one event loop can
only spread it thin, and this is how.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from lbtui.control.statecache import StateCache

WATCH_S = 2.0
"""Two polls closer than this: someone is watching, keep the state in the background."""
AHEAD_S = 0.01
"""A background pass is timed to end this long before the next poll is due."""
LAG_S = 0.5
"""A background pass that started longer than the interval plus this ago is too old to answer
from (the loop is too busy to keep up): the poll brings everything up to date itself."""


class Keeper:
    """Answers ``GET /api/v1/state`` from ``cache``, keeping it up to date while watched."""

    def __init__(
        self,
        cache: StateCache,
        *,
        watch_s: float = WATCH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache = cache
        self.watch_s = watch_s
        self._clock = clock
        self._last_poll: float | None = None
        self._interval = cache.tick_s
        self._kept_at = float("-inf")
        """When the last background pass started: the views are at least that fresh."""
        self._span = 0.0
        """How long the last pass took, rests included."""
        self._task: asyncio.Task[None] | None = None
        self.caught_up = 0
        """Polls answered from the kept views after a catch-up (what the tests read)."""
        self.passes = 0
        """Background passes so far."""

    @property
    def keeping(self) -> bool:
        return self._task is not None and not self._task.done()

    async def body(self, since: int | None = None, epoch: str | None = None) -> bytes:
        """``StateCache.body``, answered from the kept views while they are fresh enough."""
        now = self._clock()
        last, self._last_poll = self._last_poll, now
        if last is not None:
            self._interval = min(max(now - last, self.cache.rate_tick_s), self.cache.tick_s)
        cache = self.cache
        if self.keeping and now - self._kept_at <= self._interval + LAG_S:
            cache.busy_s = cache.longest_s = 0.0
            cache.begin_answer()
            try:
                await cache.catch_up()
                self.caught_up += 1
                return await cache.answer(since, epoch)
            finally:
                cache.end_answer()
        body = await cache.body(since, epoch)
        if last is not None and now - last <= self.watch_s and not self.keeping:
            self._kept_at = now
            self._task = asyncio.ensure_future(self._keep())
        return body

    async def _keep(self) -> None:
        clock = self._clock
        while self._last_poll is not None and clock() - self._last_poll <= self.watch_s:
            # end the pass just before the next poll is due: what moves between the two (the
            # outcomes a poll catches up on) is as little as it can be
            start = self._last_poll + self._interval - self._span - AHEAD_S
            while start <= self._kept_at:
                start += self._interval
            await asyncio.sleep(max(0.0, start - clock()))
            started = clock()
            await self.cache.refresh(paced=True)
            self._kept_at = started
            self._span = clock() - started
            self.passes += 1

    async def close(self) -> None:
        """Stop the background task (the admin API's shutdown)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
