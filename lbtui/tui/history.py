"""The console's own memory of latency: p50 / p99 per backend over the last two minutes.

A snapshot carries each backend's rate series (one value a second over the last minute) but
only the latency *now*; the detail pane plots p50 and p99 over time from successive snapshots.
One sample a second per backend (the worst p99 seen in that second, the latest p50), bounded,
keyed by the balancer's clock so a repeated snapshot adds nothing. Pure: no Textual, no clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from lbtui.control.model import Snapshot


@dataclass(slots=True)
class Sample:
    second: int
    """``int(snapshot.at)``: the balancer's monotonic second."""
    p50_ms: float
    p99_ms: float


class LatencyHistory:
    """The last ``span_s`` seconds of p50 / p99 for every backend still in the snapshot."""

    def __init__(self, span_s: int = 120) -> None:
        self.span_s = span_s
        self._samples: dict[str, deque[Sample]] = {}
        self._last_at: float | None = None

    def add(self, snapshot: Snapshot) -> None:
        if self._last_at is not None and snapshot.at <= self._last_at:
            return
        self._last_at = snapshot.at
        second = int(snapshot.at)
        names = set()
        for b in snapshot.backends:
            names.add(b.name)
            ring = self._samples.get(b.name)
            if ring is None:
                ring = self._samples[b.name] = deque(maxlen=self.span_s)
            # a window with too few samples has no percentile (None): a blank in the plot
            p50 = b.p50_ms or 0.0
            p99 = b.p99_ms or 0.0
            if ring and ring[-1].second == second:
                last = ring[-1]
                last.p50_ms = p50
                last.p99_ms = max(last.p99_ms, p99)
            else:
                ring.append(Sample(second, p50, p99))
            while ring and ring[0].second <= second - self.span_s:
                ring.popleft()
        for gone in set(self._samples) - names:
            del self._samples[gone]

    def p50(self, name: str) -> list[float]:
        return [s.p50_ms for s in self._samples.get(name, ())]

    def p99(self, name: str) -> list[float]:
        return [s.p99_ms for s in self._samples.get(name, ())]

    def seconds(self, name: str) -> int:
        """How many seconds of history ``name`` has."""
        ring = self._samples.get(name)
        return ring[-1].second - ring[0].second + 1 if ring else 0
