"""``CounterRates``: a foreign balancer's totals as rates over lbtui's "now" window, with a
fake clock."""

from __future__ import annotations

import pytest

from lbtui.sources.counters import CounterRates


def test_rate_over_the_newest_stretch_of_a_window() -> None:
    r = CounterRates(window_s=1.0)
    assert r.rate("a", "requests") == 0  # nothing yet
    r.add(10.0, "a", {"requests": 100})
    assert r.rate("a", "requests") == 0  # one sample: no rate
    r.add(10.25, "a", {"requests": 150})
    assert r.rate("a", "requests") == pytest.approx(200)  # over what there is
    for i, total in enumerate((175, 200, 225, 250, 275), start=2):
        r.add(10 + 0.25 * i, "a", {"requests": total})
    # newest 11.5; the newest sample at least 1 s older is 10.5 (total 175)
    assert r.rate("a", "requests") == pytest.approx(100)


def test_traffic_that_stops_reads_zero_after_the_window() -> None:
    r = CounterRates(window_s=1.0)
    r.add(0.0, "a", {"requests": 0})
    r.add(0.5, "a", {"requests": 50})
    assert r.rate("a", "requests") > 0
    r.add(1.6, "a", {"requests": 50})
    r.add(2.0, "a", {"requests": 50})
    assert r.rate("a", "requests") == 0


def test_a_counter_that_went_back_reads_zero() -> None:
    r = CounterRates(window_s=1.0)
    r.add(0.0, "a", {"requests": 500})
    r.add(1.0, "a", {"requests": 3})  # HAProxy restarted
    assert r.rate("a", "requests") == 0


def test_series_one_value_a_second_then_now() -> None:
    r = CounterRates(window_s=1.0, series_s=5)
    for i in range(9):
        r.add(i * 0.5, "a", {"requests": i * 10})  # 20/s throughout
    series = r.series("a")
    assert series[-1] == pytest.approx(20)
    assert len(series) == 5  # 4 whole seconds kept, then now
    assert all(v == pytest.approx(20) for v in series[1:])


def test_forget_drops_keys_not_kept() -> None:
    r = CounterRates()
    r.add(0, "a", {"requests": 1})
    r.add(0, "b", {"requests": 1})
    r.forget({"a"})
    assert r.series("b") == [0.0]
