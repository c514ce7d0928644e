"""Rates from a foreign balancer's counters, by lbtui's one windowing rule.

HAProxy's Runtime API gives totals (``req_tot``, ``econ``, ``hrsp_5xx``…) and a few rates of
its own over its last second. To show every rate the same way as lbtui's own figures ("now" =
the last second, DESIGN.md), a source samples the totals at each read and divides the change
over the newest stretch of at least ``window_s`` it holds: (v₁ − v₀) / (t₁ − t₀). Read more
slowly than the window and the rate is over the last interval instead; a counter that went
backwards (HAProxy restarted, counters cleared) reads as 0 until the next sample. The
sparkline series keeps one rate per whole second, as ``BackendView.rps_series`` does.

Pure: the caller passes ``now`` (monotonic seconds).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from lbtui.core.window import RATE_WINDOW_S, SERIES_WINDOW_S


@dataclass(slots=True)
class _Track:
    samples: deque[tuple[float, dict[str, float]]] = field(default_factory=deque)
    series: deque[float] = field(default_factory=deque)
    second: int | None = None
    """The whole second of the last series point."""


class CounterRates:
    """Per key (a server, a frontend), counters sampled over time and their rates."""

    def __init__(
        self,
        window_s: float = RATE_WINDOW_S,
        series_s: float = SERIES_WINDOW_S,
        series_counter: str = "requests",
    ) -> None:
        self.window_s = window_s
        self.series_len = max(1, int(series_s))
        self.series_counter = series_counter
        self._tracks: dict[str, _Track] = {}

    def add(self, now: float, key: str, counters: Mapping[str, float]) -> None:
        """Record ``counters`` (totals that only grow) for ``key`` at ``now``."""
        track = self._tracks.setdefault(key, _Track())
        track.samples.append((now, dict(counters)))
        while len(track.samples) > 2 and track.samples[1][0] <= now - self.window_s:
            track.samples.popleft()  # keep one sample at or beyond the window's start
        second = int(now)
        if track.second is None:
            track.second = second
        elif second > track.second:
            value = self.rate(key, self.series_counter)
            for _ in range(min(second - track.second, self.series_len)):
                track.series.append(value)
            while len(track.series) > self.series_len - 1:
                track.series.popleft()
            track.second = second

    def rate(self, key: str, counter: str) -> float:
        """Per second over the newest stretch of at least the window (or all there is)."""
        track = self._tracks.get(key)
        if track is None or len(track.samples) < 2:
            return 0.0
        t1, new = track.samples[-1]
        t0, old = track.samples[0]
        for t, values in reversed(track.samples):
            if t <= t1 - self.window_s:
                t0, old = t, values
                break
        if t1 <= t0:
            return 0.0
        delta = new.get(counter, 0.0) - old.get(counter, 0.0)
        return max(0.0, delta) / (t1 - t0)

    def rates(self, key: str, counters: tuple[str, ...]) -> dict[str, float]:
        return {c: self.rate(key, c) for c in counters}

    def series(self, key: str) -> list[float]:
        """One rate per whole second of the series counter, oldest first, then the rate now."""
        track = self._tracks.get(key)
        past = list(track.series) if track is not None else []
        return [*past, self.rate(key, self.series_counter)]

    def forget(self, keep: set[str]) -> None:
        """Drop the keys not in ``keep`` (servers removed from the configuration)."""
        for key in [k for k in self._tracks if k not in keep]:
            del self._tracks[key]
