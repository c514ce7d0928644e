"""The one windowing rule (``lbtui.core.window``), as a console user sees it, with a fake clock:
"now" rates over the last second, percentiles over their window or ``None``, warm-up divided
by the time elapsed."""

from __future__ import annotations

import pytest

from lbtui.core.record import BackendRecord, BalancerRecord, FailureKind
from lbtui.core.window import (
    MIN_QUANTILE_SAMPLES,
    QUANTILE_WINDOW_S,
    RATE_WINDOW_S,
    SERIES_WINDOW_S,
    RollingCounter,
)


def _steady(rec: BackendRecord, rate: float, t0: float, t1: float, latency_s: float = 0.005):
    """``rate`` attempts a second from ``t0`` to ``t1``, each answered 200 at once."""
    n = round((t1 - t0) * rate)
    for i in range(n):
        t = t0 + i / rate
        rec.started(t)
        rec.finished(200, latency_s, 10, 10, t)


def test_now_rate_covers_the_last_second():
    rec = BackendRecord(start=0.0)
    _steady(rec, 100.0, 0.0, 20.0)
    assert rec.figures(20.0).rps == pytest.approx(100.0, rel=0.03)
    assert RATE_WINDOW_S == 1.0


def test_a_backend_that_stops_receiving_reads_under_10_percent_within_2_s():
    rec = BackendRecord(start=0.0)
    _steady(rec, 100.0, 0.0, 20.0)
    before = rec.figures(20.0).rps
    # the window slides by tenths: half a second later half the rate, 1.1 s later nothing
    assert rec.figures(20.5).rps == pytest.approx(before / 2, rel=0.15)
    fell = next(t / 100 for t in range(2000, 2300) if rec.figures(t / 100).rps < before / 10)
    assert fell - 20.0 <= 1.1
    assert rec.figures(22.0).rps == 0.0


def test_warm_up_divides_by_the_time_elapsed():
    """At start-up the rate reads the truth, not half of it (issue #13: a window divided by its
    whole length before it had filled)."""
    rec = BackendRecord(start=100.0)
    _steady(rec, 100.0, 100.0, 100.5)
    assert rec.figures(100.5).rps == pytest.approx(100.0, rel=0.05)
    bal = BalancerRecord(start=100.0)
    for i in range(40):
        bal.started()
        bal.answered(200, None, 100.0 + i / 100)
    assert bal.figures(100.4).rps == pytest.approx(100.0, rel=0.05)
    # and no start given: the window counts as full (the old reading, for tools that want it)
    c = RollingCounter(1.0, 10)
    for i in range(50):
        c.add(1, 100.0 + i / 100)
    assert c.rate(100.5) == pytest.approx(50.0, rel=0.15)  # about half the truth


def test_a_first_request_just_after_start_is_not_a_huge_rate():
    c = RollingCounter(1.0, 10, start=5.0)
    c.add(1, 5.001)
    assert c.rate(5.002) == pytest.approx(10.0)  # divided by one slot at least


def test_percentiles_are_none_below_the_threshold_and_after_the_window():
    rec = BackendRecord(start=0.0)
    for i in range(MIN_QUANTILE_SAMPLES - 1):
        rec.started(1.0 + i / 100)
        rec.finished(200, 0.050, 0, 0, 1.0 + i / 100)
    f = rec.figures(1.5)
    assert f.p50_ms is None
    assert f.p99_ms is None
    assert f.p999_ms is None
    assert f.latency_samples == MIN_QUANTILE_SAMPLES - 1
    rec.started(1.2)
    rec.failed(FailureKind.CONNECT, 0.050, 0, 1.2)
    f = rec.figures(1.5)
    assert f.p50_ms == pytest.approx(50.0, rel=0.03)
    assert f.p99_ms == pytest.approx(50.0, rel=0.03)
    # a backend that stopped receiving: old latencies are not shown as current once they age out
    assert rec.figures(1.2 + QUANTILE_WINDOW_S + 1.0).p99_ms is None


def test_error_share_is_over_the_now_window():
    rec = BackendRecord(start=0.0)
    for i in range(100):  # a bad second, then a good one
        rec.started(i / 100)
        rec.finished(503, 0.001, 0, 0, i / 100)
    assert rec.figures(0.995).error_ratio == pytest.approx(1.0)
    for i in range(100):
        rec.started(1.0 + i / 100)
        rec.finished(200, 0.001, 0, 0, 1.0 + i / 100)
    assert rec.figures(2.0).error_ratio == 0.0


def test_series_ends_with_the_now_rate():
    """The sparkline holds complete seconds and ends with the table's figure, not a partial
    second reading low (the detail pane once showed ``now 8.0`` while the table said 104)."""
    rec = BackendRecord(start=0.0)
    _steady(rec, 100.0, 0.0, 30.05)
    f = rec.figures(30.05)
    assert len(f.rps_series) == int(SERIES_WINDOW_S)
    assert f.rps_series[-1] == f.rps == pytest.approx(100.0, rel=0.03)
    assert f.rps_series[-2] == pytest.approx(100.0)
    bal = BalancerRecord(start=0.0)
    for i in range(3005):
        bal.started()
        bal.answered(200, None, i / 100)
    t = bal.figures(30.05)
    assert t.rps_series[-1] == t.rps
    assert t.rps_series[-2] == pytest.approx(100.0)


def test_demand_counts_what_the_cap_refused():
    rec = BackendRecord(start=0.0)
    _steady(rec, 50.0, 0.0, 2.0)
    for i in range(30):
        rec.refused_at_cap(1.0 + i / 30)
    f = rec.figures(2.0)
    assert f.rps == pytest.approx(50.0, rel=0.05)
    assert f.demand_rps == pytest.approx(80.0, rel=0.05)
    assert f.refused_at_cap_total == 30


def test_merged_records_keep_the_earliest_start():
    a, b = BackendRecord(start=10.0), BackendRecord(start=10.2)
    _steady(a, 50.0, 10.0, 10.5)
    _steady(b, 50.0, 10.2, 10.5)
    m = BackendRecord.merged([a, b])
    assert m.start == 10.0
    assert m.figures(10.5).rps == pytest.approx((25 + 15) / 0.5, rel=0.05)
