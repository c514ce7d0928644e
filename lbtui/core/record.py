"""The outcome record: every request's outcome, counted once, in one place.

The proxy calls ``started`` when an attempt is sent to a backend and exactly one of ``finished``
(a response came back, whatever its status) or ``failed`` (no usable response: connect error,
timeout, reset) when it ends. Everything the console, ``/metrics`` and the admin API show is read
from these records; no view keeps counters of its own.

Cumulative counters (``*_total``) never go down, as Prometheus expects; rolling figures follow
the one windowing rule of ``lbtui.core.window``: rates and shares over the last
``RATE_WINDOW_S`` (1 s), percentiles over ``QUANTILE_WINDOW_S`` (10 s, ``None`` below
``MIN_QUANTILE_SAMPLES``), sparklines one value per complete second over ``SERIES_WINDOW_S``.
A record made with ``start`` (the balancer's clock when it began counting) divides its rates by
the time elapsed until the window has filled.

A backend's rate rᵢ counts attempts *started* on it (what the balancer sent; the same count as
``requests_total``, so rate × time agrees with ``/metrics``). ``refused_at_cap`` counts the
requests the algorithm picked it for while it was at its ``max_rps``: rate plus refusals is
its demand, which the overload figure M compares with the cap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from lbtui.core.window import (
    MIN_QUANTILE_SAMPLES,
    QUANTILE_SLOTS,
    QUANTILE_WINDOW_S,
    RATE_SLOTS,
    RATE_WINDOW_S,
    SERIES_WINDOW_S,
    LatencyHistogram,
    RollingCounter,
    RollingHistogram,
    bucket_of,
    quantiles_of,
)

_SERIES_SLOTS = int(SERIES_WINDOW_S) + 1
"""One-second slots: the complete seconds of the series plus the current one. A series shows
the last ``SERIES_WINDOW_S - 1`` complete seconds and, last, the "now" rate: the very figure
the table shows, so a sparkline's end and the table never disagree (a partial second would
read low until it ended: the detail pane once said ``now 8.0`` while the table said 104)."""


class FailureKind(StrEnum):
    """Why an attempt produced no usable response."""

    CONNECT = "connect"
    TIMEOUT = "timeout"
    RESET = "reset"


CODE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def _sum_columns(rows: Iterable[Sequence[int]]) -> list[int]:
    """Element-wise sum of equally long rows."""
    return list(map(sum, zip(*rows, strict=True)))


_K = TypeVar("_K")


def _sum_maps(maps: Iterable[Mapping[_K, int]], into: dict[_K, int]) -> dict[_K, int]:
    """Add every count of ``maps`` into ``into`` (keys in the order first seen)."""
    for m in maps:
        for k, v in m.items():
            into[k] = into.get(k, 0) + v
    return into


@dataclass(frozen=True, slots=True)
class BackendFigures:
    """A backend's figures at one instant, ready to serialise."""

    in_flight: int
    requests_total: int
    responses_total: dict[str, int]
    failures_total: dict[str, int]
    bytes_in_total: int
    bytes_out_total: int
    rps: float
    error_ratio: float
    bytes_per_s: float
    p50_ms: float | None
    """``None`` (as the other percentiles) below ``MIN_QUANTILE_SAMPLES`` in the window."""
    p90_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    rps_series: list[float]
    demand_rps: float
    """``rps`` plus the picks refused because the backend was at its ``max_rps``."""
    refused_at_cap_total: int
    latency_samples: int
    """Samples in the percentile window."""


class BackendRecord:
    """One backend's outcomes."""

    __slots__ = (
        "_done",
        "_errors",
        "_rate",
        "_recent",
        "_refused",
        "_series",
        "_traffic",
        "bytes_in_total",
        "bytes_out_total",
        "failures_total",
        "in_flight",
        "latency",
        "refused_at_cap_total",
        "requests_total",
        "responses_total",
        "retries_total",
        "start",
    )

    def __init__(self, start: float = -math.inf) -> None:
        self.start = start
        """When counting began (``-inf``: rates divide by the whole window from the first)."""
        self.in_flight = 0
        self.requests_total = 0
        # index = status // 100 (0 unused)
        self.responses_total = [0, 0, 0, 0, 0, 0]
        self.failures_total: dict[FailureKind, int] = dict.fromkeys(FailureKind, 0)
        self.bytes_in_total = 0
        self.bytes_out_total = 0
        self.retries_total = 0
        """Attempts sent to this backend as a retry of a failed attempt elsewhere."""
        self.refused_at_cap_total = 0
        """Picks refused because the backend was at its ``max_rps`` (demand it did not get)."""
        self.latency = LatencyHistogram()
        self._recent = RollingHistogram(QUANTILE_WINDOW_S, QUANTILE_SLOTS, start)
        """Recent latencies, for the percentiles."""
        self._rate = RollingCounter(RATE_WINDOW_S, RATE_SLOTS, start)
        """Attempts started: the backend's rate rᵢ."""
        self._series = RollingCounter(float(_SERIES_SLOTS), _SERIES_SLOTS, start)
        self._done = RollingCounter(RATE_WINDOW_S, RATE_SLOTS, start)
        """Attempts ended (answered or failed): the error share's denominator."""
        self._errors = RollingCounter(RATE_WINDOW_S, RATE_SLOTS, start)
        self._traffic = RollingCounter(RATE_WINDOW_S, RATE_SLOTS, start)
        self._refused = RollingCounter(RATE_WINDOW_S, RATE_SLOTS, start)

    def started(self, now: float) -> None:
        self.in_flight += 1
        self.requests_total += 1
        self._rate.add(1, now)
        self._series.add(1, now)

    def refused_at_cap(self, now: float) -> None:
        """The algorithm picked this backend, but it was at its ``max_rps``: demand refused."""
        self.refused_at_cap_total += 1
        self._refused.add(1, now)

    def finished(
        self, status: int, latency_s: float, bytes_in: int, bytes_out: int, now: float
    ) -> None:
        """A response came back (``latency_s`` until its last byte)."""
        self.in_flight -= 1
        cls = status // 100
        if 1 <= cls <= 5:
            self.responses_total[cls] += 1
        self.bytes_in_total += bytes_in
        self.bytes_out_total += bytes_out
        i = bucket_of(latency_s)
        lat = self.latency
        lat.counts[i] += 1
        lat.count += 1
        lat.sum += latency_s
        self._recent.record_bucket(i, now)
        self._done.add(1, now)
        if cls == 5:
            self._errors.add(1, now)
        self._traffic.add(bytes_in + bytes_out, now)

    def failed(self, kind: FailureKind, latency_s: float, bytes_in: int, now: float) -> None:
        """No usable response: counted as an error, its time as latency."""
        self.in_flight -= 1
        self.failures_total[kind] += 1
        self.bytes_in_total += bytes_in
        self.latency.record(latency_s)
        self._recent.record(latency_s, now)
        self._done.add(1, now)
        self._errors.add(1, now)
        self._traffic.add(bytes_in, now)

    @classmethod
    def merged(cls, parts: Sequence[BackendRecord]) -> BackendRecord:
        """A new record of every outcome of ``parts`` (the records of one backend in several
        processes; they are left untouched): totals and gauges summed, histograms and rolling
        windows merged, so that its ``figures(now)`` are those one record given every write
        would show. No parts: an empty record. Every record has the same windows (the module's
        constants), so any two merge."""
        if not parts:
            return cls()
        out = cls(min(p.start for p in parts))
        out.in_flight = sum(p.in_flight for p in parts)
        out.requests_total = sum(p.requests_total for p in parts)
        out.responses_total = _sum_columns(p.responses_total for p in parts)
        out.failures_total = _sum_maps(
            (p.failures_total for p in parts), dict.fromkeys(FailureKind, 0)
        )
        out.bytes_in_total = sum(p.bytes_in_total for p in parts)
        out.bytes_out_total = sum(p.bytes_out_total for p in parts)
        out.retries_total = sum(p.retries_total for p in parts)
        out.refused_at_cap_total = sum(p.refused_at_cap_total for p in parts)
        out.latency = LatencyHistogram.merged([p.latency for p in parts])
        out._recent = RollingHistogram.merged([p._recent for p in parts])
        out._rate = RollingCounter.merged([p._rate for p in parts])
        out._series = RollingCounter.merged([p._series for p in parts])
        out._done = RollingCounter.merged([p._done for p in parts])
        out._errors = RollingCounter.merged([p._errors for p in parts])
        out._traffic = RollingCounter.merged([p._traffic for p in parts])
        out._refused = RollingCounter.merged([p._refused for p in parts])
        return out

    def rps(self, now: float) -> float:
        """Attempts started per second over the "now" window."""
        return self._rate.rate(now)

    def demand_rps(self, now: float) -> float:
        """``rps`` plus the picks refused at the cap, per second over the "now" window."""
        return self._rate.rate(now) + self._refused.rate(now)

    def rps_and_demand(self, now: float) -> tuple[float, float]:
        """``rps(now)`` and ``demand_rps(now)``, the "now" window read once."""
        rps = self._rate.rate(now)
        return rps, rps + self._refused.rate(now)

    def rates(self, now: float) -> tuple[float, float, float, float]:
        """``rps``, ``demand_rps``, ``error_ratio`` and ``bytes_per_s`` as ``figures(now)`` reads
        them: the figures over the "now" window alone, which move every 100 ms slot with no new
        outcome (the admin plane reads just these between two ticks of the longer windows)."""
        done = self._done.total(now)
        errors = self._errors.total(now)
        rps = self._rate.rate(now)
        return (
            rps,
            rps + self._refused.rate(now),
            min(errors / done, 1.0) if done else 0.0,
            self._traffic.rate(now),
        )

    def series(self, now: float, rps: float) -> list[float]:
        """``figures(now).rps_series``, given its ``rps``."""
        return [*self._series.complete_series(now)[1:], rps]

    def recent_samples(self, now: float) -> int:
        """``figures(now).latency_samples`` alone: with no new sample since, the same count
        means the same samples, so the same percentiles (the admin plane reads them again
        only when this moves)."""
        return self._recent.count(now)

    def figures(self, now: float) -> BackendFigures:
        done = self._done.total(now)
        errors = self._errors.total(now)
        counts, samples = self._recent.window_counts(now)
        qs: list[float | None] = [None, None, None, None]
        if samples >= MIN_QUANTILE_SAMPLES:
            qs = [q * 1e3 for q in quantiles_of(counts, samples, (0.5, 0.9, 0.99, 0.999))]
        rps = self._rate.rate(now)
        demand = rps + self._refused.rate(now)
        return BackendFigures(
            in_flight=self.in_flight,
            requests_total=self.requests_total,
            responses_total={c: self.responses_total[i + 1] for i, c in enumerate(CODE_CLASSES)},
            failures_total={k.value: v for k, v in self.failures_total.items()},
            bytes_in_total=self.bytes_in_total,
            bytes_out_total=self.bytes_out_total,
            rps=rps,
            error_ratio=min(errors / done, 1.0) if done else 0.0,
            bytes_per_s=self._traffic.rate(now),
            p50_ms=qs[0],
            p90_ms=qs[1],
            p99_ms=qs[2],
            p999_ms=qs[3],
            rps_series=self.series(now, rps),
            demand_rps=demand,
            refused_at_cap_total=self.refused_at_cap_total,
            latency_samples=samples,
        )


@dataclass(frozen=True, slots=True)
class BalancerFigures:
    """Balancer-wide figures at one instant (client-side view: one count per client request)."""

    in_flight: int
    requests_total: int
    responses_total: dict[str, int]
    rate_limited_total: dict[str, int]
    fallback_total: dict[str, int]
    retries_total: int
    flags_total: dict[str, int]
    rps: float
    code_rps: dict[str, float]
    rate_limited_rps: float
    fallback_rps: float
    retries_rps: float
    success_ratio: float
    rps_series: list[float]


class BalancerRecord:
    """Balancer-wide outcomes, as the client saw them (one count per client request)."""

    __slots__ = (
        "_classes",
        "_fallbacks",
        "_limited",
        "_retries",
        "_series",
        "fallback_total",
        "flags_total",
        "in_flight",
        "rate_limited_total",
        "requests_total",
        "responses_total",
        "retries_total",
    )

    def __init__(self, start: float = -math.inf) -> None:
        self.in_flight = 0
        self.requests_total = 0
        self.responses_total = [0, 0, 0, 0, 0, 0]
        self.flags_total: dict[str, int] = {}
        self.rate_limited_total: dict[str, int] = {}
        self.fallback_total: dict[str, int] = {}
        self.retries_total = 0
        self._series = RollingCounter(float(_SERIES_SLOTS), _SERIES_SLOTS, start)
        self._classes = [RollingCounter(RATE_WINDOW_S, RATE_SLOTS, start) for _ in range(6)]
        """Recent answers by status class (index ``status // 100``; 0: the connection was cut
        before an answer). Their sum is the recent answer rate."""
        self._limited = RollingCounter(RATE_WINDOW_S, RATE_SLOTS, start)
        self._fallbacks = RollingCounter(RATE_WINDOW_S, RATE_SLOTS, start)
        self._retries = RollingCounter(RATE_WINDOW_S, RATE_SLOTS, start)

    def started(self) -> None:
        self.in_flight += 1
        self.requests_total += 1

    def answered(self, status: int, flag: str | None, now: float) -> None:
        """The client got its answer (or the connection was cut: status 0)."""
        self.in_flight -= 1
        cls = status // 100
        if 1 <= cls <= 5:
            self.responses_total[cls] += 1
            self._classes[cls].add(1, now)
        else:
            self._classes[0].add(1, now)
        if flag is not None:
            self.flags_total[flag] = self.flags_total.get(flag, 0) + 1
        self._series.add(1, now)

    def count_rejection(self, scope: str, now: float) -> None:
        self.rate_limited_total[scope] = self.rate_limited_total.get(scope, 0) + 1
        self._limited.add(1, now)

    def count_fallback(self, reason: str, now: float) -> None:
        self.fallback_total[reason] = self.fallback_total.get(reason, 0) + 1
        self._fallbacks.add(1, now)

    def count_retry(self, now: float) -> None:
        self.retries_total += 1
        self._retries.add(1, now)

    @classmethod
    def merged(cls, parts: Sequence[BalancerRecord]) -> BalancerRecord:
        """A new record of every outcome of ``parts`` (the balancer's records in several
        processes; they are left untouched): totals and gauges summed, rolling windows merged,
        so that its ``figures(now)`` are those one record given every write would show. No
        parts: an empty record."""
        if not parts:
            return cls()
        out = cls()
        out.in_flight = sum(p.in_flight for p in parts)
        out.requests_total = sum(p.requests_total for p in parts)
        out.responses_total = _sum_columns(p.responses_total for p in parts)
        out.flags_total = _sum_maps((p.flags_total for p in parts), {})
        out.rate_limited_total = _sum_maps((p.rate_limited_total for p in parts), {})
        out.fallback_total = _sum_maps((p.fallback_total for p in parts), {})
        out.retries_total = sum(p.retries_total for p in parts)
        out._series = RollingCounter.merged([p._series for p in parts])
        out._classes = [
            RollingCounter.merged([p._classes[i] for p in parts])
            for i in range(len(parts[0]._classes))
        ]
        out._limited = RollingCounter.merged([p._limited for p in parts])
        out._fallbacks = RollingCounter.merged([p._fallbacks for p in parts])
        out._retries = RollingCounter.merged([p._retries for p in parts])
        return out

    def rps(self, now: float) -> float:
        classes = self._classes
        return sum(c.total(now) for c in classes) / classes[0].covered(now)

    def figures(self, now: float) -> BalancerFigures:
        rps = self.rps(now)
        answered = sum(self.responses_total[1:])
        ok = self.responses_total[1] + self.responses_total[2] + self.responses_total[3]
        recent = sum(c.total(now) for c in self._classes[1:])
        recent_ok = sum(c.total(now) for c in self._classes[1:4])
        return BalancerFigures(
            in_flight=self.in_flight,
            requests_total=self.requests_total,
            responses_total={c: self.responses_total[i + 1] for i, c in enumerate(CODE_CLASSES)},
            rate_limited_total=dict(self.rate_limited_total),
            fallback_total=dict(self.fallback_total),
            retries_total=self.retries_total,
            flags_total=dict(self.flags_total),
            rps=rps,
            code_rps={c: self._classes[i + 1].rate(now) for i, c in enumerate(CODE_CLASSES)},
            rate_limited_rps=self._limited.rate(now),
            fallback_rps=self._fallbacks.rate(now),
            retries_rps=self._retries.rate(now),
            success_ratio=(recent_ok / recent) if recent else (ok / answered if answered else 1.0),
            rps_series=[*self._series.complete_series(now)[1:], rps],
        )
