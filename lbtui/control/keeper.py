"""``Keeper``: while a console watches, the state's time-moving figures are kept up to date in
the background, so that a poll pays only for what moved with outcomes and events; and while
Prometheus scrapes steadily, the lines of the backends that moved are written in the background,
so that a scrape writes only those that moved in the last moments.

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

``/metrics`` is kept the same way (``Exposition.refresh``) when scraped at least every
``watch_s``: a scrape at 1 s intervals over 1,000 backends under 500 req/s finds about 400 of
them moved, and wrote their lines all at once. A scrape's counters are still read at the scrape.

Envoy and HAProxy keep their stats work off the request path with threads; one event loop can
only spread it thin, and this is how.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

WATCH_S = 2.0
"""Two polls closer than this: someone is watching, keep the state in the background."""
AHEAD_S = 0.01
"""A background pass is timed to end this long before the next poll is due."""
LAG_S = 0.5
"""A background pass that started longer than the interval plus this ago is too old to answer
from (the loop is too busy to keep up): the poll brings everything up to date itself."""


class Keeper:
    """Runs ``refresh`` in the background while polls come steadily: once per poll interval
    (clamped to ``shortest_s`` … ``longest_s``), each pass timed to end just before the next
    poll is due. The caller tells it of each poll (``arrived``, then ``answered``)."""

    def __init__(
        self,
        refresh: Callable[[], Awaitable[None]],
        *,
        shortest_s: float,
        longest_s: float,
        watch_s: float = WATCH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._refresh = refresh
        self.shortest_s = shortest_s
        self.longest_s = longest_s
        self.watch_s = watch_s
        self._clock = clock
        self._last_poll: float | None = None
        self._watched = False
        self._interval = longest_s
        self._kept_at = float("-inf")
        """When the last background pass started: what it kept is at least that fresh."""
        self._span = 0.0
        """How long the last pass took, rests included."""
        self._task: asyncio.Task[None] | None = None
        self.caught_up = 0
        """Polls that found the background passes keeping up (what the tests read)."""
        self.passes = 0
        """Background passes so far."""

    @property
    def keeping(self) -> bool:
        return self._task is not None and not self._task.done()

    def arrived(self) -> bool:
        """A poll came: ``True`` when the background passes keep up with the polls, so that
        it may answer by catching up on what moved since the last pass alone."""
        now = self._clock()
        last, self._last_poll = self._last_poll, now
        self._watched = last is not None and now - last <= self.watch_s
        if last is not None:
            self._interval = min(max(now - last, self.shortest_s), self.longest_s)
        fresh = self.keeping and now - self._kept_at <= self._interval + LAG_S
        self.caught_up += fresh
        return fresh

    def answered(self) -> None:
        """The poll was answered: start keeping in the background if polls come steadily."""
        if self._watched and not self.keeping:
            self._kept_at = self._clock()
            self._task = asyncio.ensure_future(self._keep())

    async def _keep(self) -> None:
        clock = self._clock
        while self._last_poll is not None and clock() - self._last_poll <= self.watch_s:
            # end the pass just before the next poll is due: what moves between the two (what
            # a poll catches up on) is as little as it can be
            start = self._last_poll + self._interval - self._span - AHEAD_S
            while start <= self._kept_at:
                start += self._interval
            await asyncio.sleep(max(0.0, start - clock()))
            started = clock()
            await self._refresh()
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
