"""What a run recorded, on one clock: seconds since the load started.

The runner samples the balancer's snapshot and the load generator's counters a few times a
second (``Sample``), keeps every event of the balancer's stream (``RunEvent``, its time moved
onto the run's clock), every timeline action as carried out (``ActionRecord``), the fleet's own
request-id bookkeeping per process (``ProcessTally``), and what it undid at the end
(``RollbackStep``). Counters are cumulative, as read; figures over a window are differences
between the two samples that bound the window from inside (:meth:`Recording.window`), so
nothing is counted twice, nothing outside a window leaks into it, and a check, the chart and
the JSON all read the same numbers.

Pure data and arithmetic: no I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from lbtui.core.events import Event, Figure
from lbtui.core.window import N_BUCKETS, quantile_of

CLIENT_CLASSES = ("2xx", "3xx", "4xx", "429", "5xx", "transport")
"""How client outcomes are counted: status classes, with ``429`` apart from other 4xx, and
``transport`` for requests that got no answer (connect error, timeout, reset)."""

Verdict = Literal["passed", "failed", "aborted", "interrupted", "error"]


def client_class(status: int) -> str:
    if status == 429:
        return "429"
    return f"{status // 100}xx"


@dataclass(frozen=True, slots=True)
class BackendSample:
    """One backend at one sample (cumulative counters as the balancer recorded them)."""

    requests: int
    """Attempts sent to it (``requests_total``)."""
    errors: int
    """5xx answers plus attempts without a usable answer."""
    p99_ms: float
    """Over the balancer's percentile window; 0 when it held too few samples."""
    in_flight: int
    breaker: str | None
    admin: str
    ejected: bool
    health: str | None
    fault: str | None
    """The active proxy-side fault, described; ``None`` without one."""
    weight: float
    """Effective weight."""


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    """Seconds since the load started."""
    client: Mapping[str, int]
    """Cumulative client outcomes by :data:`CLIENT_CLASSES`."""
    client_latency: Mapping[int, int]
    """Client latency (corrected) recorded since the previous sample: histogram bucket →
    count (``lbtui.core.window`` buckets)."""
    balancer_requests: int
    retries: int
    fallbacks: int
    rate_limited: int
    admitted: int
    """Requests the global rate limiter let through (``limits.global_allowed_total``)."""
    limits_rps: float | None
    backends: Mapping[str, BackendSample]
    load_rate: float
    """The load's target rate at this sample."""


@dataclass(frozen=True, slots=True)
class RunEvent:
    """A balancer event on the run's clock: the typed event itself, so checks match on its
    class; the report reads its wire fields."""

    t: float
    event: Event

    @property
    def id(self) -> int:
        return self.event.id

    @property
    def kind(self) -> str:
        return str(self.event.kind)

    @property
    def backend(self) -> str | None:
        return self.event.backend

    @property
    def message(self) -> str:
        return self.event.message

    @property
    def data(self) -> Mapping[str, Figure]:
        return self.event.data


@dataclass(frozen=True, slots=True)
class ActionRecord:
    number: int
    """1-based, in file order."""
    id: str | None
    action: str
    backend: str | None
    description: str
    planned_at: float
    at: float
    """When it was carried out (run seconds)."""
    took_s: float
    ok: bool
    detail: str
    """What happened (``pid 1234``), or why it failed."""
    ends_at: float | None = None
    """When its effect ends by itself (a fault's duration)."""


@dataclass(frozen=True, slots=True)
class ProcessTally:
    """A fleet process's own count, last read (a killed process's figures are the last
    ones read before the kill)."""

    backend: str
    pid: int
    requests: int
    by_method: Mapping[str, int]
    request_ids_repeated: int
    request_ids_capped: bool


@dataclass(frozen=True, slots=True)
class RollbackStep:
    what: str
    ok: bool
    detail: str = ""


@dataclass
class Recording:
    """Everything a run saw, appended to while it goes on."""

    samples: list[Sample] = field(default_factory=list)
    events: list[RunEvent] = field(default_factory=list)
    actions: list[ActionRecord] = field(default_factory=list)
    processes: dict[tuple[str, int], ProcessTally] = field(default_factory=dict)
    rollback: list[RollbackStep] = field(default_factory=list)
    _times: list[float] = field(default_factory=list)

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)
        self._times.append(sample.t)

    @property
    def end(self) -> float:
        return self.samples[-1].t if self.samples else 0.0

    def at_or_before(self, t: float) -> Sample | None:
        """The last sample taken at or before ``t``; ``None`` before the first one."""
        i = bisect.bisect_right(self._times, t)
        return self.samples[i - 1] if i else None

    def _span(self, start: float, end: float) -> tuple[int, int] | None:
        """Indices of the samples that bound the widest sample-aligned window inside
        ``[start, end]``; ``None`` when no two samples fit. Inside, never around: a window
        never borrows what happened just before or after it (a fault's first 503 does not
        count against the phase before it)."""
        ia = bisect.bisect_left(self._times, start)
        ib = bisect.bisect_right(self._times, end) - 1
        if ia >= len(self.samples) or ib < 0 or ib <= ia:
            return None
        return ia, ib

    def window(self, start: float, end: float) -> tuple[Sample | None, Sample | None]:
        """The samples bounding the window inside ``[start, end]`` (see :meth:`_span`)."""
        span = self._span(start, end)
        if span is None:
            return None, None
        return self.samples[span[0]], self.samples[span[1]]

    def client_totals(self) -> dict[str, int]:
        """What clients got over the whole run, by class: the one count that the summary
        line, the chart's labels and the JSON all show."""
        last = self.samples[-1].client if self.samples else {}
        return {c: last.get(c, 0) for c in CLIENT_CLASSES}

    def client_counts_tiled(self, start: float, end: float) -> tuple[dict[str, int], float]:
        """Client outcomes between the last samples at or before ``start`` and ``end``, and
        the time between those samples. Consecutive windows tile: every answer falls in
        exactly one of them (the chart's bins), unlike :meth:`client_counts`."""
        a = self.at_or_before(start) or (self.samples[0] if self.samples else None)
        b = self.at_or_before(end)
        if a is None or b is None or b.t <= a.t:
            return dict.fromkeys(CLIENT_CLASSES, 0), 0.0
        return {c: b.client.get(c, 0) - a.client.get(c, 0) for c in CLIENT_CLASSES}, b.t - a.t

    def client_counts(self, start: float, end: float) -> dict[str, int]:
        """Client outcomes that completed within the window."""
        a, b = self.window(start, end)
        if a is None or b is None:
            return dict.fromkeys(CLIENT_CLASSES, 0)
        return {c: b.client.get(c, 0) - a.client.get(c, 0) for c in CLIENT_CLASSES}

    def client_latency(self, start: float, end: float) -> tuple[list[int], int]:
        """Client latency histogram over the window: bucket counts and their total."""
        counts = [0] * N_BUCKETS
        total = 0
        span = self._span(start, end)
        if span is None:
            return counts, total
        for s in self.samples[span[0] + 1 : span[1] + 1]:
            for i, c in s.client_latency.items():
                counts[i] += c
                total += c
        return counts, total

    def client_p99_ms(self, start: float, end: float) -> tuple[float, int]:
        counts, total = self.client_latency(start, end)
        return quantile_of(counts, total, 0.99) * 1e3, total

    def backend_delta(self, name: str, start: float, end: float) -> tuple[int, int]:
        """``(attempts, errors)`` the balancer sent to / got from ``name`` in the window."""
        a, b = self.window(start, end)
        if a is None or b is None or name not in b.backends:
            return 0, 0
        bb = b.backends[name]
        ab = a.backends.get(name)
        return bb.requests - (ab.requests if ab else 0), bb.errors - (ab.errors if ab else 0)

    def totals_delta(self, start: float, end: float) -> dict[str, int]:
        a, b = self.window(start, end)
        keys = ("balancer_requests", "retries", "fallbacks", "rate_limited", "admitted")
        if a is None or b is None:
            return dict.fromkeys(keys, 0)
        return {k: getattr(b, k) - getattr(a, k) for k in keys}
