"""Rolling windows and histograms, driven by a hand-moved clock."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from lbtui.core.record import BackendRecord, FailureKind
from lbtui.core.window import (
    MIN_QUANTILE_SAMPLES,
    N_BUCKETS,
    Ewma,
    LatencyHistogram,
    RollingCounter,
    RollingHistogram,
    bucket_lower,
    bucket_of,
    bucket_upper,
    bucket_value,
)


@given(st.floats(min_value=1e-6, max_value=3600.0))
def test_every_value_falls_in_its_bucket(x: float):
    i = bucket_of(x)
    assert bucket_lower(i) <= x * (1 + 1e-9)
    assert x <= bucket_upper(i) * (1 + 1e-9)


@given(st.lists(st.floats(min_value=1e-5, max_value=100.0), min_size=1, max_size=300))
def test_quantiles_within_relative_error(values: list[float]):
    h = LatencyHistogram()
    for v in values:
        h.record(v)
    ordered = sorted(values)
    for q in (0.5, 0.9, 0.99, 1.0):
        exact = ordered[max(0, math.ceil(q * len(ordered)) - 1)]
        assert abs(h.quantile(q) - exact) <= exact * 0.025


def test_empty_histogram_is_zero():
    assert LatencyHistogram().quantile(0.99) == 0.0


def test_cumulative_buckets_for_prometheus():
    h = LatencyHistogram()
    for v in (0.001, 0.002, 0.05, 0.5):
        h.record(v)
    assert h.cumulative([0.0015, 0.01, 0.1, 1.0, math.inf]) == [1, 2, 3, 4, 4]


def test_counts_at_bucket_cuts_are_the_cumulative_counts():
    """``at_cuts`` (what ``/metrics`` reads) counts what ``cumulative`` does at the same
    bounds, once each bound is turned into the number of buckets under it."""
    h = LatencyHistogram()
    for v in (0.0004, 0.001, 0.002, 0.002, 0.05, 0.5, 7.0, 40.0):
        h.record(v)
    bounds = [0.0005, 0.0015, 0.01, 0.1, 1.0, 10.0, 30.0]
    cuts = [sum(1 for i in range(N_BUCKETS) if bucket_value(i) <= b) for b in bounds]
    assert h.at_cuts(cuts) == h.cumulative(bounds) == [1, 2, 4, 5, 6, 7, 7]
    assert h.at_cuts([]) == []


def test_counts_at_cuts_past_the_last_sample():
    """With every sample under the second bound, ``at_cuts`` stops reading buckets there and
    still counts every sample at each bound above: as ``cumulative``, for one histogram and
    for one merged from several processes'."""
    parts = []
    for values in ((0.0004, 0.001), (0.0012,), ()):
        h = LatencyHistogram()
        for v in values:
            h.record(v)
        parts.append(h)
    merged = LatencyHistogram.merged(parts)
    bounds = [0.0005, 0.0015, 0.01, 30.0]
    cuts = [sum(1 for i in range(N_BUCKETS) if bucket_value(i) <= b) for b in bounds]
    for h in (*parts, merged):
        assert h.at_cuts(cuts) == h.cumulative(bounds)
    assert merged.at_cuts(cuts) == [1, 3, 3, 3]
    assert parts[2].at_cuts(cuts) == [0, 0, 0, 0]


def test_rolling_counter_rate_and_expiry():
    c = RollingCounter(10.0, 10)
    for i in range(100):
        c.add(1, 100.0 + i * 0.1)  # 10/s for 10 s
    assert c.total(109.95) == 100
    assert 9.5 <= c.rate(109.95) <= 10.5
    # five seconds later half has gone
    assert c.total(114.95) == 50
    # long after everything has expired
    assert c.total(200.0) == 0
    c.add(3, 200.0)
    assert c.total(200.5) == 3


def test_rolling_counter_series_is_oldest_first():
    c = RollingCounter(4.0, 4)
    c.add(1, 0.5)
    c.add(2, 1.5)
    c.add(4, 3.5)
    assert c.series(3.6) == [1.0, 2.0, 0.0, 4.0]
    assert c.series(4.6) == [2.0, 0.0, 4.0, 0.0]


def test_rolling_histogram_forgets_old_samples():
    h = RollingHistogram(10.0, 10)
    for _ in range(100):
        h.record(0.200, 0.0)
    for _ in range(100):
        h.record(0.001, 9.0)
    assert h.count(9.5) == 200
    assert abs(h.quantiles([0.99], 9.5)[0] - 0.2) < 0.01
    # at 10.5 the samples of second 0 have left the window
    assert h.count(10.5) == 100
    assert abs(h.quantiles([0.99], 10.5)[0] - 0.001) < 0.0001


def test_ewma_moves_towards_samples_with_time():
    e = Ewma(tau_s=10.0)
    assert e.update(100.0, 0.0) == 100.0
    v = e.update(0.0, 10.0)
    assert abs(v - 100.0 * math.exp(-1)) < 1e-9


def test_backend_record_counts_each_outcome_once():
    r = BackendRecord()
    r.started(1.0)
    r.started(1.0)
    r.started(1.0)
    assert r.in_flight == 3
    r.finished(200, 0.010, 100, 2000, 1.1)
    r.finished(503, 0.020, 0, 50, 1.2)
    r.failed(FailureKind.CONNECT, 0.001, 0, 1.3)
    f = r.figures(2.0)
    assert f.in_flight == 0
    assert f.requests_total == 3
    assert f.responses_total == {"1xx": 0, "2xx": 1, "3xx": 0, "4xx": 0, "5xx": 1}
    assert f.failures_total == {"connect": 1, "timeout": 0, "reset": 0}
    assert f.bytes_in_total == 100
    assert f.bytes_out_total == 2050
    assert abs(f.error_ratio - 2 / 3) < 1e-9
    assert f.p99_ms is None  # 3 samples: too few for a percentile
    for _ in range(MIN_QUANTILE_SAMPLES):
        r.started(1.5)
        r.finished(200, 0.020, 0, 0, 1.5)
    f = r.figures(2.0)
    assert f.p99_ms is not None
    assert 19.0 <= f.p99_ms <= 21.0


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=40.0), st.floats(min_value=1e-5, max_value=5.0)
        ),
        min_size=1,
        max_size=200,
    ),
    st.floats(min_value=0.0, max_value=50.0),
)
def test_rolling_histogram_matches_a_naive_merge(samples, read_at):
    """The running sums give the same counts and quantiles as merging the live slots by hand."""
    h = RollingHistogram(10.0, 10)
    kept: list[tuple[float, float]] = []
    for at, value in sorted(samples):
        h.record(value, at)
        kept.append((at, value))
    now = max(read_at, kept[-1][0])
    slot = 1.0
    live = [v for at, v in kept if int(now / slot) - int(at / slot) < 10]
    assert h.count(now) == len(live)
    ordered = sorted(live)
    for q, got in zip((0.5, 0.99), h.quantiles([0.5, 0.99], now), strict=True):
        if not ordered:
            assert got == 0.0
            continue
        exact = ordered[max(0, math.ceil(q * len(ordered)) - 1)]
        assert abs(got - exact) <= exact * 0.025
