"""The outcome record: every request's outcome, counted once, in one place.

The proxy calls ``started`` when an attempt is sent to a backend and exactly one of ``finished``
(a response came back, whatever its status) or ``failed`` (no usable response: connect error,
timeout, reset) when it ends. Everything the console, ``/metrics`` and the admin API show is read
from these records; no view keeps counters of its own.

Cumulative counters (``*_total``) never go down, as Prometheus expects; rolling figures (rates,
recent quantiles, error ratio) cover the last ``window_s`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from lbtui.core.window import LatencyHistogram, RollingCounter, RollingHistogram


class FailureKind(StrEnum):
    """Why an attempt produced no usable response."""

    CONNECT = "connect"
    TIMEOUT = "timeout"
    RESET = "reset"


CODE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


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
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    rps_series: list[float]


class BackendRecord:
    """One backend's outcomes."""

    __slots__ = (
        "_errors",
        "_finished",
        "_rate",
        "_recent",
        "_traffic",
        "bytes_in_total",
        "bytes_out_total",
        "failures_total",
        "in_flight",
        "latency",
        "requests_total",
        "responses_total",
        "window_s",
    )

    def __init__(self, window_s: float = 10.0, series_s: float = 60.0) -> None:
        self.window_s = window_s
        self.in_flight = 0
        self.requests_total = 0
        # index = status // 100 (0 unused)
        self.responses_total = [0, 0, 0, 0, 0, 0]
        self.failures_total: dict[FailureKind, int] = dict.fromkeys(FailureKind, 0)
        self.bytes_in_total = 0
        self.bytes_out_total = 0
        self.latency = LatencyHistogram()
        self._recent = RollingHistogram(window_s, 10)
        self._rate = RollingCounter(series_s, int(series_s))  # 1 s slots: a minute of history
        self._finished = RollingCounter(window_s, 10)
        self._errors = RollingCounter(window_s, 10)
        self._traffic = RollingCounter(window_s, 10)

    def started(self, now: float) -> None:
        self.in_flight += 1
        self.requests_total += 1
        self._rate.add(1, now)

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
        self.latency.record(latency_s)
        self._recent.record(latency_s, now)
        self._finished.add(1, now)
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
        self._finished.add(1, now)
        self._errors.add(1, now)
        self._traffic.add(bytes_in, now)

    def figures(self, now: float) -> BackendFigures:
        finished = self._finished.total(now)
        errors = self._errors.total(now)
        p50, p90, p99, p999 = self._recent.quantiles((0.5, 0.9, 0.99, 0.999), now)
        return BackendFigures(
            in_flight=self.in_flight,
            requests_total=self.requests_total,
            responses_total={c: self.responses_total[i + 1] for i, c in enumerate(CODE_CLASSES)},
            failures_total={k.value: v for k, v in self.failures_total.items()},
            bytes_in_total=self.bytes_in_total,
            bytes_out_total=self.bytes_out_total,
            rps=self._finished.rate(now),
            error_ratio=errors / finished if finished else 0.0,
            bytes_per_s=self._traffic.rate(now),
            p50_ms=p50 * 1e3,
            p90_ms=p90 * 1e3,
            p99_ms=p99 * 1e3,
            p999_ms=p999 * 1e3,
            rps_series=self._rate.series(now),
        )


class BalancerRecord:
    """Balancer-wide outcomes, as the client saw them (one count per client request)."""

    __slots__ = ("_rate", "flags_total", "in_flight", "requests_total", "responses_total")

    def __init__(self, window_s: float = 10.0) -> None:
        self.in_flight = 0
        self.requests_total = 0
        self.responses_total = [0, 0, 0, 0, 0, 0]
        self.flags_total: dict[str, int] = {}
        self._rate = RollingCounter(window_s, 10)

    def started(self) -> None:
        self.in_flight += 1
        self.requests_total += 1

    def answered(self, status: int, flag: str | None, now: float) -> None:
        """The client got its answer (or the connection was cut: status 0)."""
        self.in_flight -= 1
        cls = status // 100
        if 1 <= cls <= 5:
            self.responses_total[cls] += 1
        if flag is not None:
            self.flags_total[flag] = self.flags_total.get(flag, 0) + 1
        self._rate.add(1, now)

    def rps(self, now: float) -> float:
        return self._rate.rate(now)
