"""L and M (``lbtui.core.balance``) on made-up numbers: what is out is not missed share, and M
counts demand above the cap."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbtui.core.balance import Member, imbalance, pool_imbalance, pool_overload


def test_l_is_zero_when_every_backend_carries_its_weighted_share():
    assert imbalance([100, 100, 100, 100], [1, 1, 1, 1]) == 0
    assert imbalance([250, 50, 50], [5, 1, 1]) == pytest.approx(0)
    assert imbalance([], []) == 0


def test_l_sums_the_distance_from_each_share():
    # 400 req/s over 4 equal backends, one carrying 160: 60 over, and 20 under on each other
    assert imbalance([160, 80, 80, 80], [1, 1, 1, 1]) == pytest.approx(120)
    # every weight 0 (all draining): equal shares
    assert imbalance([30, 10], [0, 0]) == pytest.approx(20)


def test_a_backend_that_is_out_is_not_missed_share():
    """Issue #13: a killed, ejected or draining backend made L jump to 100-204."""
    live = [Member(133.3, 1, True) for _ in range(3)]
    dead = Member(0.0, 1, False)
    assert pool_imbalance([*live, dead]) == pytest.approx(0, abs=1e-9)
    # counted as if eligible it would be the missed share the console once showed
    assert imbalance([133.3, 133.3, 133.3, 0.0], [1, 1, 1, 1]) == pytest.approx(199.95)


def test_panic_counts_backends_that_are_down_but_admitting():
    """While a pool panics the pick ignores health and ejection; so do L and M."""
    up = Member(100.0, 1, True)
    ejected = Member(20.0, 1, False, admitting=True)
    open_breaker = Member(0.0, 1, False, admitting=False)
    members = [up, ejected, open_breaker]
    assert pool_imbalance(members) == 0
    assert pool_imbalance(members, panic=True) == pytest.approx(80)


def test_m_counts_demand_above_the_cap_not_the_capped_rate():
    capped = Member(rate=40, weight=1, eligible=True, demand=75, max_rps=40)
    under = Member(rate=30, weight=1, eligible=True, demand=30, max_rps=40)
    uncapped = Member(rate=500, weight=1, eligible=True, demand=500)
    out = Member(rate=0, weight=1, eligible=False, demand=90, max_rps=40)
    assert pool_overload([capped, under, uncapped, out]) == 1
    at_cap = Member(rate=40, weight=1, eligible=True, demand=40, max_rps=40)
    assert pool_overload([at_cap]) == 0  # at the cap is not over it


@given(
    st.lists(
        st.tuples(st.floats(0, 1e4), st.floats(0.01, 100), st.booleans()),
        min_size=1,
        max_size=20,
    )
)
def test_l_ignores_whatever_an_ineligible_backend_carries(rows):
    members = [Member(r, w, e) for r, w, e in rows]
    live = [m for m in members if m.eligible]
    assert pool_imbalance(members) == pytest.approx(
        imbalance([m.rate for m in live], [m.weight for m in live])
    )
    assert pool_imbalance(members) <= 2 * sum(m.rate for m in live) + 1e-6
