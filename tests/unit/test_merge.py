"""How several balancers' snapshots add up (``lbtui.control.merge``), on the recorded snapshot:
rates and counts sum, percentiles take the highest, shares weigh by rate, states take the worst
with that balancer's reason, times move onto the console's clock. And how the console fits the
balancers panel and the breakdown to a width (``lbtui.tui.replicas``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from lbtui.control.merge import BalancerView, Merger, Part, clock_shift, merge, sum_series
from lbtui.control.model import Snapshot
from lbtui.tui.replicas import build_balancers, build_breakdown, panel_title, store_text

MAIN = Path(__file__).resolve().parents[2] / "fixtures" / "snapshots" / "main.json"


@pytest.fixture
def recorded() -> Snapshot:
    return Snapshot.from_json(MAIN.read_bytes())


def test_rates_and_counts_sum_percentiles_take_the_highest(recorded: Snapshot) -> None:
    other = dataclasses.replace(
        recorded,
        backends=[
            dataclasses.replace(b, p99_ms=(b.p99_ms or 0) + 100 if b.name == "api-2" else 1.0)
            for b in recorded.backends
        ],
    )
    snap = merge(
        [Part("a", recorded), Part("b", other)], at=recorded.at, wall=recorded.wall,
        last_event_id=7,
    )  # fmt: skip
    assert snap.last_event_id == 7
    assert snap.totals.rps == pytest.approx(2 * recorded.totals.rps)
    assert snap.totals.requests_total == 2 * recorded.totals.requests_total
    assert snap.totals.success_ratio == pytest.approx(recorded.totals.success_ratio)
    for mine, theirs in zip(snap.backends, recorded.backends, strict=True):
        assert mine.rps == pytest.approx(2 * theirs.rps)
        assert mine.requests_total == 2 * theirs.requests_total
        assert mine.responses_total == {k: 2 * v for k, v in theirs.responses_total.items()}
        assert mine.error_ratio == pytest.approx(theirs.error_ratio)
        cap = None if theirs.max_rps is None else 2 * theirs.max_rps
        assert mine.max_rps == cap
    api2 = snap.backend("api-2")
    assert api2.p99_ms == pytest.approx((recorded.backend("api-2").p99_ms or 0) + 100)
    assert snap.backend("api-4").p99_ms == recorded.backend("api-4").p99_ms


def test_states_are_the_worst_with_that_balancers_reason(recorded: Snapshot) -> None:
    calm = dataclasses.replace(
        recorded,
        backends=[dataclasses.replace(b, admin="active", ejected=False) for b in recorded.backends],
    )
    snap = merge([Part("a", calm), Part("b", recorded)], at=1.0, wall=2.0, last_event_id=0)
    assert snap.backend("api-3").admin == recorded.backend("api-3").admin == "draining"
    ejected = snap.backend("api-1")
    assert ejected.ejected
    assert ejected.ejection_reason == recorded.backend("api-1").ejection_reason


def test_times_move_onto_the_consoles_clock(recorded: Snapshot) -> None:
    # the console's monotonic clock reads 1000 s less than the balancer's at the same instant
    at, wall = recorded.at - 1000, recorded.wall
    shift = clock_shift(recorded, at, wall)
    assert shift == pytest.approx(-1000)
    snap = merge([Part("a", recorded, shift), Part("b", recorded, shift)], at=at, wall=wall,
                 last_event_id=0)  # fmt: skip
    mine, theirs = snap.backend("api-2"), recorded.backend("api-2")
    assert mine.breaker is not None
    assert theirs.breaker is not None
    assert mine.breaker.since == pytest.approx(theirs.breaker.since - 1000)
    # what a person reads is unchanged: the wall-clock time of the transition
    assert snap.wall - (snap.at - mine.breaker.since) == pytest.approx(
        recorded.wall - (recorded.at - theirs.breaker.since)
    )


def test_series_sum_second_by_second_aligned_on_now() -> None:
    assert sum_series([[1, 2, 3], [10, 20]]) == [1, 12, 23]
    assert sum_series([]) == []


def _views(recorded: Snapshot) -> list[BalancerView]:
    return [
        BalancerView("lb1", "http://10.0.0.1:9901", True, "", recorded, 0.0),
        BalancerView(
            "lb2", "http://10.0.0.2:9901", False,
            "http://10.0.0.2:9901: unreachable (connection refused)", recorded, 12.0,
        ),
        BalancerView("lb3", "http://10.0.0.3:9901", False, "no answer", None, 0.0),
    ]  # fmt: skip


def test_the_panel_says_who_is_live_and_why_one_is_gone(recorded: Snapshot) -> None:
    views = _views(recorded)
    for width in (78, 120, 200):
        lines = build_balancers(views, "lb1", width).plain.split("\n")
        assert len(lines) == 4
        assert all(len(line) <= width for line in lines), width
        assert lines[1].startswith("▶ lb1")
        assert "● live" in lines[1]
        assert "✖ gone 12 s" in lines[2]
        assert "unreachable (conn" in lines[2]
        assert "http://10.0.0.2" not in lines[2]  # the name says which; the line says why
        assert "✖ unreachable" in lines[3]
    wide = build_balancers(views, None, 200).plain
    assert "eligible" in wide
    assert "eligible" not in build_balancers(views, None, 78).plain
    assert panel_title(views, None) == "balancers · 1 of 3 live · actions → every balancer (t)"
    assert "summed" in panel_title(views, "lb2", 200)


def test_the_breakdown_lists_each_balancer(recorded: Snapshot) -> None:
    text = build_breakdown("api-2", _views(recorded), 120).plain
    lines = text.split("\n")
    assert lines[0].startswith("on each balancer")
    assert lines[1].startswith("lb1")
    assert "OPEN" in lines[1]
    assert lines[2].startswith("lb2 12 s ago")
    assert "never reached" in lines[3]
    assert "abort 503" in text
    assert "never reached" in build_breakdown("api-2", _views(recorded), 40).plain


def test_the_limit_store_shows_with_its_state(recorded: Snapshot) -> None:
    assert store_text(recorded.limits) == "memory"
    redis = dataclasses.replace(
        recorded.limits, store="redis://10.0.0.9:6379/0", store_up=True, peers=["a", "b", "c"]
    )
    assert store_text(redis) == "redis up · 3 peers"
    down = dataclasses.replace(redis, store_up=False, peers=[])
    assert store_text(down) == "redis DOWN"
    merged = merge(
        [Part("a", dataclasses.replace(recorded, limits=redis)),
         Part("b", dataclasses.replace(recorded, limits=down))],
        at=1.0, wall=2.0, last_event_id=0,
    )  # fmt: skip
    assert merged.limits.store_up is False  # up only if every balancer reaches it
    assert merged.limits.peers == ["a", "b", "c"]


def test_an_unchanged_row_is_reused_and_a_moved_one_merged_again(recorded: Snapshot) -> None:
    merger = Merger()
    first = merger.merge([Part("a", recorded), Part("b", recorded)], at=1.0, wall=2.0,
                         last_event_id=0)  # fmt: skip
    assert merger.changed is None  # the first: every row is new
    moved = dataclasses.replace(recorded.backends[1], rps=500.0)
    other = dataclasses.replace(
        recorded, backends=[recorded.backends[0], moved, *recorded.backends[2:]]
    )
    again = merger.merge([Part("a", recorded), Part("b", other)], at=1.0, wall=2.0,
                         last_event_id=0)  # fmt: skip
    assert merger.changed == {"api-2"}
    assert again.backends[0] is first.backends[0]
    assert again.backend("api-2").rps == pytest.approx(recorded.backends[1].rps + 500)


def test_a_clock_shift_keeps_to_a_hundredth(recorded: Snapshot) -> None:
    assert clock_shift(recorded, recorded.at + 3e-6, recorded.wall) == 0
    assert clock_shift(recorded, recorded.at + 2.004, recorded.wall) == pytest.approx(2.0)
