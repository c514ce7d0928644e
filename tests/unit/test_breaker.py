"""The circuit breaker, driven by a fake clock: ``now`` is just a number we choose."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import subprocess
import sys
from fractions import Fraction
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbtui.core.breaker import (
    BreakerConfig,
    BreakerState,
    BreakerStats,
    CircuitBreaker,
    Transition,
)

CLOSED = BreakerState.CLOSED
OPEN = BreakerState.OPEN
HALF_OPEN = BreakerState.HALF_OPEN
FORCED_OPEN = BreakerState.FORCED_OPEN
DISABLED = BreakerState.DISABLED

FAST = 0.01
"""A duration well under the default slow-call threshold of 1 s."""


def make(now: float = 0.0, **fields: Any) -> tuple[CircuitBreaker, list[Transition]]:
    """A breaker built from config ``fields`` and the list its listener appends to."""
    seen: list[Transition] = []
    return CircuitBreaker(BreakerConfig(**fields), now, listener=seen.append), seen


def trip(breaker: CircuitBreaker, now: float = 0.0) -> Transition:
    """Fail calls until the breaker opens; returns the transition."""
    for _ in range(breaker.config.window_size):
        assert breaker.allow(now)
        transition = breaker.record(True, FAST, now)
        if transition is not None:
            return transition
    raise AssertionError("the breaker did not trip")


def half_open(breaker: CircuitBreaker, now: float = 0.0) -> float:
    """Trip the breaker, wait out ``open_s`` and take the first probe; returns the time."""
    trip(breaker, now)
    now += breaker.config.open_s
    assert breaker.allow(now)
    assert breaker.state is HALF_OPEN
    return now


# -- config ---------------------------------------------------------------------------------


def test_default_config_is_resilience4j_like() -> None:
    config = BreakerConfig()
    assert (config.window, config.window_size, config.min_calls) == ("count", 20, 10)
    assert (config.failure_rate, config.slow_call_rate, config.slow_call_s) == (50.0, 100.0, 1.0)
    assert (config.open_s, config.half_open_calls) == (10.0, 3)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"window": "sliding"}, "window must be 'count' or 'time', got 'sliding'"),
        ({"window_size": 0}, "window_size must be an integer >= 1, got 0"),
        ({"window_size": 2.5}, "window_size must be an integer >= 1, got 2.5"),
        ({"min_calls": 0}, "min_calls must be an integer >= 1, got 0"),
        ({"min_calls": True}, "min_calls must be an integer >= 1, got True"),
        ({"half_open_calls": 0}, "half_open_calls must be an integer >= 1, got 0"),
        ({"failure_rate": 0}, "failure_rate must be a percentage in (0, 100], got 0"),
        ({"failure_rate": 100.5}, "failure_rate must be a percentage in (0, 100], got 100.5"),
        ({"slow_call_rate": -1.0}, "slow_call_rate must be a percentage in (0, 100], got -1.0"),
        ({"slow_call_rate": math.nan}, "slow_call_rate must be a percentage in (0, 100]"),
        ({"slow_call_s": 0.0}, "slow_call_s must be a number of seconds > 0, got 0.0"),
        ({"slow_call_s": math.inf}, "slow_call_s must be a number of seconds > 0, got inf"),
        ({"open_s": -0.5}, "open_s must be a number of seconds >= 0, got -0.5"),
        ({"min_calls": 21}, "min_calls (21) must not exceed window_size (20) for a count window"),
    ],
)
def test_config_rejects_bad_values_with_a_clear_message(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match="invalid breaker config: ") as caught:
        BreakerConfig(**fields)
    assert message in str(caught.value)


def test_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ValueError, match="window_size") as caught:
        BreakerConfig(window_size=0, failure_rate=0, open_s=-1)
    assert str(caught.value).count(";") == 2


def test_config_limits_that_are_allowed() -> None:
    BreakerConfig(window="time", window_size=5, min_calls=100)  # a time window may hold more
    BreakerConfig(min_calls=20, failure_rate=100, slow_call_rate=0.1, open_s=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        BreakerConfig().open_s = 1.0  # type: ignore[misc]


# -- closed: judging the window -------------------------------------------------------------


def test_a_new_breaker_is_closed_and_admits() -> None:
    breaker, seen = make(now=5.0)
    assert breaker.state is CLOSED
    assert breaker.allow(5.0)
    assert breaker.peek(5.0)
    stats = breaker.stats(5.0)
    assert (stats.state, stats.since, stats.reason) == (CLOSED, 5.0, "initial state")
    assert seen == []


def test_no_judgement_before_min_calls() -> None:
    breaker, seen = make(min_calls=10)
    for _ in range(9):
        assert breaker.record(True, FAST, 0.0) is None
    assert breaker.state is CLOSED
    assert breaker.stats(0.0).failure_rate is None
    transition = breaker.record(True, FAST, 1.0)
    assert transition == Transition(CLOSED, OPEN, 1.0, "failure rate 100% >= 50% over 10 calls")
    assert seen == [transition]


@pytest.mark.parametrize(("failures", "trips"), [(4, False), (5, True), (6, True)])
def test_failure_rate_just_under_and_at_threshold(failures: int, trips: bool) -> None:
    breaker, _ = make(window_size=10, min_calls=10, failure_rate=50.0)
    for _ in range(10 - failures):
        assert breaker.record(False, FAST, 0.0) is None
    results = [breaker.record(True, FAST, 0.0) for _ in range(failures)]
    assert results[:-1] == [None] * (failures - 1)
    if trips:
        assert results[-1] is not None
        assert results[-1].reason == f"failure rate {failures * 10}% >= 50% over 10 calls"
        assert breaker.state is OPEN
    else:
        assert results[-1] is None
        assert breaker.state is CLOSED
        assert breaker.stats(0.0).failure_rate == 40.0


def test_fractional_rates_read_with_one_decimal() -> None:
    breaker, _ = make(window_size=3, min_calls=3, failure_rate=66.5)
    breaker.record(False, FAST, 0.0)
    breaker.record(True, FAST, 0.0)
    transition = breaker.record(True, FAST, 0.0)
    assert transition is not None
    assert transition.reason == "failure rate 66.7% >= 66.5% over 3 calls"


def test_count_window_forgets_the_oldest_outcome() -> None:
    breaker, _ = make(window_size=5, min_calls=5, failure_rate=60.0)
    for failure in (True, True, False, False, False):
        assert breaker.record(failure, FAST, 0.0) is None
    assert breaker.stats(0.0).failures == 2
    for _ in range(2):  # push both failures out
        assert breaker.record(False, FAST, 0.0) is None
    stats = breaker.stats(0.0)
    assert (stats.calls, stats.failures, stats.failure_rate) == (5, 0, 0.0)
    assert breaker.record(True, FAST, 0.0) is None
    assert breaker.record(True, FAST, 0.0) is None
    transition = breaker.record(True, FAST, 0.0)
    assert transition is not None
    assert transition.reason == "failure rate 60% >= 60% over 5 calls"


def test_slow_calls_trip_on_their_own_rate() -> None:
    breaker, _ = make(window_size=10, min_calls=10, slow_call_rate=80.0, slow_call_s=1.0)
    for _ in range(2):
        breaker.record(False, 0.999, 0.0)  # just under the slow threshold: not slow
    for _ in range(7):
        assert breaker.record(False, 1.0, 0.0) is None  # exactly at it: slow
    transition = breaker.record(False, 1.0, 0.0)
    assert transition is not None
    assert transition.reason == "slow-call rate 80% >= 80% (calls >= 1000 ms) over 10 calls"
    assert breaker.stats(0.0).slow_calls == 8


def test_slow_call_rate_just_under_threshold_stays_closed() -> None:
    breaker, _ = make(window_size=10, min_calls=10, slow_call_rate=80.0, slow_call_s=0.25)
    for i in range(10):
        assert breaker.record(False, 0.3 if i < 7 else 0.1, 0.0) is None
    stats = breaker.stats(0.0)
    assert (stats.state, stats.slow_call_rate) == (CLOSED, 70.0)


def test_default_slow_call_rate_needs_every_call_slow() -> None:
    breaker, _ = make()
    for _ in range(9):
        breaker.record(False, 5.0, 0.0)
    assert breaker.record(False, FAST, 0.0) is None
    for _ in range(19):  # the fast call stays in the window of 20 throughout
        assert breaker.record(False, 5.0, 0.0) is None
    assert breaker.stats(0.0).slow_call_rate == 95.0
    transition = breaker.record(False, 5.0, 0.0)
    assert transition is not None
    assert transition.reason == "slow-call rate 100% >= 100% (calls >= 1000 ms) over 20 calls"


def test_a_slow_failure_counts_as_both_and_both_reasons_are_given() -> None:
    breaker, _ = make(window_size=4, min_calls=4, slow_call_rate=50.0, slow_call_s=0.25)
    for _ in range(3):
        breaker.record(False, FAST, 0.0)
    breaker.record(True, 0.5, 0.0)
    stats = breaker.stats(0.0)
    assert (stats.failures, stats.slow_calls) == (1, 1)
    breaker.record(True, 0.5, 0.0)
    assert breaker.stats(0.0).reason == (
        "failure rate 50% >= 50% and slow-call rate 50% >= 50% (calls >= 250 ms) over 4 calls"
    )


# -- time window ----------------------------------------------------------------------------


def time_breaker(**fields: Any) -> tuple[CircuitBreaker, list[Transition]]:
    return make(**{"window": "time", "window_size": 10, "min_calls": 5, **fields})


def test_time_window_trips_within_its_seconds() -> None:
    breaker, _ = time_breaker()
    for t in (0.5, 2.0, 4.0, 9.0):
        assert breaker.record(True, FAST, t) is None
    transition = breaker.record(True, FAST, 9.99)
    assert transition is not None
    assert transition.reason == "failure rate 100% >= 50% over 5 calls in the last 10 s"


def test_time_window_expires_old_buckets() -> None:
    breaker, _ = time_breaker()
    for _ in range(4):
        breaker.record(True, FAST, 0.5)
    assert breaker.record(True, FAST, 10.0) is None  # second 0 has left the window (1..10]
    assert breaker.stats(10.0).calls == 1
    for t in (10.1, 12.0, 19.5):
        breaker.record(False, FAST, t)
    stats = breaker.stats(19.9)
    assert (stats.calls, stats.failures) == (4, 1)
    assert breaker.stats(20.0).calls == 2  # second 10 (two calls) left too
    assert breaker.stats(30.0).calls == 0
    assert breaker.state is CLOSED


def test_time_window_clears_everything_after_a_long_gap() -> None:
    breaker, _ = time_breaker(min_calls=100)
    for t in range(8):
        breaker.record(t < 4, FAST, t + 0.5)
    assert breaker.stats(7.5).calls == 8
    assert breaker.record(True, FAST, 1000.0) is None
    stats = breaker.stats(1000.0)
    assert (stats.calls, stats.failures) == (1, 1)


def test_time_window_counts_a_late_report_in_the_newest_second() -> None:
    breaker, _ = time_breaker()
    breaker.record(False, FAST, 5.5)
    breaker.record(True, FAST, 3.2)  # reported with an older timestamp
    assert breaker.stats(14.9).calls == 2
    assert breaker.stats(15.0).calls == 0


def test_time_window_with_one_call_every_second_holds_window_size_calls() -> None:
    breaker, _ = time_breaker(min_calls=100)
    for t in range(50):
        breaker.record(t % 2 == 0, FAST, float(t))
    stats = breaker.stats(49.0)
    assert (stats.calls, stats.failures) == (10, 5)


def test_time_window_starts_fresh_after_closing() -> None:
    breaker, _ = time_breaker(open_s=5.0, half_open_calls=1)
    now = half_open(breaker, 0.0)
    assert breaker.record(False, FAST, now) is not None
    assert breaker.stats(now).calls == 0
    assert breaker.record(True, FAST, now) is None
    assert breaker.stats(now).calls == 1


# -- open -----------------------------------------------------------------------------------


def test_open_refuses_until_open_s_has_elapsed_then_probes() -> None:
    breaker, seen = make(min_calls=1, window_size=1, open_s=10.0)
    trip(breaker, 100.0)
    for t in (100.0, 105.0, 109.999):
        assert not breaker.peek(t)
        assert not breaker.allow(t)
    assert breaker.state is OPEN
    assert breaker.peek(110.0)  # peeking neither transitions ...
    assert breaker.state is OPEN
    assert breaker.allow(110.0)  # ... nor consumes; allowing does both
    assert breaker.state is HALF_OPEN
    assert seen[-1] == Transition(OPEN, HALF_OPEN, 110.0, "open for 10.0 s; probing with 3 calls")


def test_half_open_reason_gives_the_time_actually_spent_open() -> None:
    breaker, seen = make(min_calls=1, window_size=1, open_s=2.0, half_open_calls=1)
    trip(breaker, 0.0)
    assert breaker.allow(7.25)
    assert seen[-1].reason == "open for 7.2 s; probing with 1 call"


def test_open_s_zero_probes_on_the_next_call() -> None:
    breaker, _ = make(min_calls=1, window_size=1, open_s=0.0)
    trip(breaker, 3.0)
    assert breaker.allow(3.0)
    assert breaker.state is HALF_OPEN


def test_open_ignores_outcomes_and_releases() -> None:
    breaker, seen = make(min_calls=1, window_size=1)
    trip(breaker)
    before = breaker.stats(1.0)
    assert breaker.record(False, FAST, 1.0) is None
    assert breaker.record(True, FAST, 1.0) is None
    breaker.release(1.0)
    assert breaker.stats(1.0) == before
    assert len(seen) == 1


def test_open_stats_show_the_window_that_tripped_and_the_countdown() -> None:
    breaker, _ = make(window_size=4, min_calls=4, open_s=10.0)
    for failure in (False, True, True, True):
        breaker.record(failure, FAST, 50.0)
    stats = breaker.stats(53.5)
    assert stats.state is OPEN
    assert (stats.since, stats.open_until, stats.retry_in_s) == (50.0, 60.0, 6.5)
    assert (stats.calls, stats.failures, stats.failure_rate) == (4, 3, 75.0)
    assert stats.reason == "failure rate 75% >= 50% over 4 calls"
    assert (stats.half_open_permits, stats.probes_succeeded) == (None, None)
    assert stats.times_opened == 1
    assert breaker.stats(61.0).retry_in_s == 0.0  # due, but only allow() moves it on


# -- half-open ------------------------------------------------------------------------------


def test_half_open_hands_out_at_most_half_open_calls_permits() -> None:
    breaker, _ = make(min_calls=1, window_size=1, half_open_calls=3)
    now = half_open(breaker)
    assert breaker.stats(now).half_open_permits == 2
    assert breaker.allow(now)
    assert breaker.allow(now)
    assert breaker.stats(now).half_open_permits == 0
    assert not breaker.peek(now)
    assert not breaker.allow(now)
    assert not breaker.allow(now + 1000.0)  # waiting longer does not help: probes must report


def test_release_gives_a_permit_back() -> None:
    breaker, _ = make(min_calls=1, window_size=1, half_open_calls=2)
    now = half_open(breaker)
    assert breaker.allow(now)
    assert not breaker.allow(now)
    breaker.release(now)
    assert breaker.stats(now).half_open_permits == 1
    assert breaker.peek(now)
    assert breaker.allow(now)
    assert not breaker.allow(now)


def test_release_without_a_probe_out_changes_nothing() -> None:
    breaker, _ = make(min_calls=1, window_size=1, half_open_calls=2)
    now = half_open(breaker)
    breaker.release(now)
    breaker.release(now)  # one more than was admitted
    assert breaker.stats(now).half_open_permits == 2
    breaker.release(now)  # in closed: nothing to give back
    assert breaker.state is HALF_OPEN


def test_all_probes_succeeding_closes_with_a_fresh_window() -> None:
    breaker, seen = make(window_size=4, min_calls=4, half_open_calls=3, open_s=10.0)
    now = half_open(breaker)
    assert breaker.allow(now)
    assert breaker.allow(now)
    assert breaker.record(False, FAST, now + 0.1) is None
    stats = breaker.stats(now + 0.1)
    assert (stats.half_open_permits, stats.probes_succeeded) == (0, 1)
    assert breaker.record(False, FAST, now + 0.2) is None
    transition = breaker.record(False, FAST, now + 0.3)
    assert transition == Transition(HALF_OPEN, CLOSED, now + 0.3, "3 of 3 probe calls succeeded")
    assert seen[-1] == transition
    stats = breaker.stats(now + 0.3)
    assert (stats.state, stats.calls, stats.failures, stats.times_opened) == (CLOSED, 0, 0, 1)
    assert breaker.allow(now + 0.3)


def test_one_probe_reads_in_the_singular() -> None:
    breaker, _ = make(min_calls=1, window_size=1, half_open_calls=1)
    now = half_open(breaker)
    transition = breaker.record(False, FAST, now)
    assert transition is not None
    assert transition.reason == "1 of 1 probe call succeeded"


def test_a_failed_probe_reopens_at_once() -> None:
    breaker, seen = make(min_calls=1, window_size=1, half_open_calls=3, open_s=10.0)
    now = half_open(breaker, 0.0)
    assert breaker.allow(now)
    assert breaker.record(False, FAST, now) is None
    transition = breaker.record(True, FAST, now + 0.5)
    assert transition == Transition(HALF_OPEN, OPEN, now + 0.5, "probe call failed")
    stats = breaker.stats(now + 0.5)
    assert (stats.open_until, stats.times_opened) == (now + 10.5, 2)
    assert not breaker.allow(now + 10.0)
    assert breaker.allow(now + 10.5)
    assert breaker.stats(now + 10.5).half_open_permits == 2  # a fresh set of probes
    assert [t.new for t in seen] == [OPEN, HALF_OPEN, OPEN, HALF_OPEN]


def test_a_slow_probe_reopens_at_once() -> None:
    breaker, _ = make(min_calls=1, window_size=1, slow_call_s=1.0)
    now = half_open(breaker)
    transition = breaker.record(False, 1.5, now)
    assert transition is not None
    assert (transition.new, transition.reason) == (OPEN, "probe call slow: 1500 ms >= 1000 ms")


def test_an_outcome_with_no_probe_out_is_ignored_in_half_open() -> None:
    # A call admitted while closed that reports once the breaker is half-open and its probe
    # has been given back: no probe is out, so the outcome belongs to an earlier state.
    breaker, _ = make(min_calls=1, window_size=1, half_open_calls=1)
    now = half_open(breaker)
    breaker.release(now)
    assert breaker.record(True, FAST, now) is None
    assert breaker.record(False, FAST, now) is None
    assert breaker.state is HALF_OPEN
    assert breaker.stats(now).half_open_permits == 1


# -- operator -------------------------------------------------------------------------------


def test_forced_open_refuses_everything_until_auto() -> None:
    breaker, seen = make(min_calls=1, window_size=2)
    breaker.record(False, FAST, 0.0)
    transition = breaker.force("open", 1.0)
    assert transition == Transition(CLOSED, FORCED_OPEN, 1.0, "forced by operator")
    assert seen == [transition]
    assert not breaker.allow(1e9)
    assert not breaker.peek(1e9)
    assert breaker.record(False, FAST, 2.0) is None
    assert breaker.force("open", 3.0) is None  # already there
    stats = breaker.stats(4.0)
    assert (stats.state, stats.since, stats.calls, stats.open_until) == (FORCED_OPEN, 1.0, 0, None)
    assert stats.times_opened == 0
    back = breaker.force("auto", 5.0)
    assert back == Transition(FORCED_OPEN, CLOSED, 5.0, "forced by operator")
    assert breaker.allow(5.0)


def test_disabled_admits_everything_and_records_nothing() -> None:
    breaker, seen = make(min_calls=1, window_size=1)
    assert breaker.force("disabled", 0.0) == Transition(CLOSED, DISABLED, 0.0, "forced by operator")
    for _ in range(100):
        assert breaker.allow(0.0)
        assert breaker.record(True, 10.0, 0.0) is None
    assert breaker.peek(0.0)
    stats = breaker.stats(0.0)
    assert (stats.state, stats.calls, stats.failures, stats.times_opened) == (DISABLED, 0, 0, 0)
    assert breaker.force("disabled", 1.0) is None
    assert breaker.force("auto", 2.0) == Transition(DISABLED, CLOSED, 2.0, "forced by operator")
    assert len(seen) == 2


def test_auto_leaves_an_automatic_breaker_alone() -> None:
    breaker, seen = make(min_calls=1, window_size=1)
    assert breaker.force("auto", 0.0) is None
    trip(breaker)
    assert breaker.force("auto", 1.0) is None
    assert breaker.state is OPEN
    assert len(seen) == 1


def test_force_closed_resets_from_any_state() -> None:
    breaker, _ = make(window_size=4, min_calls=4)
    for _ in range(3):
        breaker.record(True, FAST, 0.0)
    reset = breaker.force("closed", 1.0)
    assert reset == Transition(CLOSED, CLOSED, 1.0, "forced by operator")
    assert breaker.stats(1.0).calls == 0
    trip(breaker, 2.0)
    assert breaker.force("closed", 3.0) == Transition(OPEN, CLOSED, 3.0, "forced by operator")
    assert breaker.allow(3.0)
    now = half_open(breaker, 4.0)
    assert breaker.force("closed", now) == Transition(HALF_OPEN, CLOSED, now, "forced by operator")
    assert breaker.record(False, FAST, now) is None  # the probe's outcome now lands in closed
    assert breaker.stats(now).calls == 1


def test_forcing_out_of_half_open_drops_the_probes() -> None:
    breaker, _ = make(min_calls=1, window_size=1, half_open_calls=1)
    now = half_open(breaker)
    breaker.force("open", now)
    breaker.force("auto", now)
    trip(breaker, now)
    assert breaker.allow(now + 10.0)  # a full set of permits again
    assert breaker.stats(now + 10.0).half_open_permits == 0


def test_force_rejects_an_unknown_mode() -> None:
    breaker, _ = make()
    with pytest.raises(ValueError, match="force mode must be"):
        breaker.force("half_open", 0.0)  # type: ignore[arg-type]


# -- the listener and the record ------------------------------------------------------------


def test_listener_receives_every_transition_in_order() -> None:
    breaker, seen = make(window_size=4, min_calls=4, open_s=10.0, half_open_calls=2)
    for _ in range(2):
        breaker.record(False, FAST, 0.0)
    for _ in range(2):
        breaker.record(True, FAST, 1.0)
    assert breaker.allow(11.0)
    breaker.record(True, FAST, 11.5)
    assert breaker.allow(21.5)
    assert breaker.allow(21.5)
    breaker.record(False, FAST, 22.0)
    breaker.record(False, FAST, 22.0)
    breaker.force("open", 30.0)
    breaker.force("auto", 40.0)
    breaker.force("disabled", 50.0)
    breaker.force("closed", 60.0)
    assert [(t.old.value, t.new.value, t.at, t.reason) for t in seen] == [
        ("closed", "open", 1.0, "failure rate 50% >= 50% over 4 calls"),
        ("open", "half_open", 11.0, "open for 10.0 s; probing with 2 calls"),
        ("half_open", "open", 11.5, "probe call failed"),
        ("open", "half_open", 21.5, "open for 10.0 s; probing with 2 calls"),
        ("half_open", "closed", 22.0, "2 of 2 probe calls succeeded"),
        ("closed", "forced_open", 30.0, "forced by operator"),
        ("forced_open", "closed", 40.0, "forced by operator"),
        ("closed", "disabled", 50.0, "forced by operator"),
        ("disabled", "closed", 60.0, "forced by operator"),
    ]


def test_listener_sees_the_new_state_already_in_place() -> None:
    shown: list[tuple[BreakerState, int | None]] = []

    def listener(transition: Transition) -> None:
        stats = breaker.stats(transition.at)
        shown.append((stats.state, stats.half_open_permits))

    breaker = CircuitBreaker(
        BreakerConfig(window_size=1, min_calls=1, half_open_calls=2), 0.0, listener=listener
    )
    half_open(breaker)
    assert shown == [(OPEN, None), (HALF_OPEN, 1)]  # the first probe is already out


def test_a_breaker_without_listener_still_returns_transitions() -> None:
    breaker = CircuitBreaker(BreakerConfig(window_size=1, min_calls=1), 0.0)
    assert trip(breaker).new is OPEN


def test_stats_are_frozen_and_json_friendly() -> None:
    breaker, _ = make(window_size=10, min_calls=4, slow_call_s=0.5)
    for failure, duration in ((False, 0.1), (True, 0.1), (False, 0.7), (False, 0.1)):
        breaker.record(failure, duration, 1.0)
    stats = breaker.stats(2.0)
    assert isinstance(stats, BreakerStats)
    assert json.loads(json.dumps(dataclasses.asdict(stats))) == {
        "state": "closed",
        "since": 0.0,
        "reason": "initial state",
        "window": "count",
        "window_size": 10,
        "calls": 4,
        "failures": 1,
        "slow_calls": 1,
        "failure_rate": 25.0,
        "slow_call_rate": 25.0,
        "failure_rate_threshold": 50.0,
        "slow_call_rate_threshold": 100.0,
        "slow_call_s": 0.5,
        "min_calls": 4,
        "open_until": None,
        "retry_in_s": None,
        "half_open_permits": None,
        "probes_succeeded": None,
        "times_opened": 0,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.calls = 0  # type: ignore[misc]


def test_the_breaker_imports_no_io() -> None:
    code = (
        "import sys, lbtui.core.breaker; "
        "bad = {'asyncio', 'aiohttp', 'textual', 'rich', 'httpx'} & set(sys.modules); "
        "print(sorted(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- properties -----------------------------------------------------------------------------

Op = Literal["allow", "ok", "fail", "slow", "release", "wait"]


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(st.sampled_from(["allow", "ok", "fail", "slow", "release", "wait"]), max_size=80),
    half_open_calls=st.integers(1, 4),
)
def test_half_open_never_admits_more_than_half_open_calls_probes(
    ops: list[Op], half_open_calls: int
) -> None:
    """Whatever the proxy does, in one half-open episode the probes admitted, less the permits
    given back with release(), never exceed ``half_open_calls`` (a successful probe keeps its
    permit: it counts towards closing)."""
    breaker, seen = make(
        window_size=2, min_calls=2, open_s=1.0, half_open_calls=half_open_calls, slow_call_s=1.0
    )
    now = 0.0
    outstanding = 0  # calls admitted and not yet reported, from any state
    net = 0  # in the current half-open episode: admitted less released
    for op in ops:
        if op == "wait":
            now += 0.5
        elif op == "allow":
            before = len(seen)
            if breaker.allow(now):
                outstanding += 1
                if breaker.state is HALF_OPEN:
                    net = 1 if len(seen) > before else net + 1
        elif outstanding:
            outstanding -= 1
            if op == "release":
                net -= breaker.state is HALF_OPEN
                breaker.release(now)
            else:
                breaker.record(op == "fail", 2.0 if op == "slow" else FAST, now)
        if breaker.state is HALF_OPEN:
            assert net <= half_open_calls
            permits = breaker.stats(now).half_open_permits
            assert permits is not None
            assert 0 <= permits <= half_open_calls
            assert breaker.peek(now) == (permits > 0)
    for earlier, later in itertools.pairwise(seen):
        assert earlier.new is later.old  # transitions chain, in order
        assert earlier.at <= later.at


outcome = st.tuples(st.booleans(), st.booleans(), st.floats(0.0, 3.0))
"""(failure, slow, seconds the clock moves before the call)."""


@settings(max_examples=300, deadline=None)
@given(
    window=st.sampled_from(["count", "time"]),
    window_size=st.integers(1, 8),
    min_calls=st.integers(1, 8),
    failure_rate=st.integers(1, 100),
    slow_call_rate=st.integers(1, 100),
    outcomes=st.lists(outcome, max_size=60),
)
def test_closed_breaker_agrees_with_a_naive_window(
    window: Literal["count", "time"],
    window_size: int,
    min_calls: int,
    failure_rate: int,
    slow_call_rate: int,
    outcomes: list[tuple[bool, bool, float]],
) -> None:
    """A closed breaker trips exactly when a list of every call, re-counted from scratch with
    exact fractions, says a rate has reached its threshold; until then it stays closed."""
    if window == "count":
        min_calls = min(min_calls, window_size)
    breaker, seen = make(
        window=window,
        window_size=window_size,
        min_calls=min_calls,
        failure_rate=failure_rate,
        slow_call_rate=slow_call_rate,
        slow_call_s=1.0,
    )
    calls: list[tuple[int, bool, bool]] = []  # (second, failure, slow)
    now = 0.0
    for failure, slow, step in outcomes:
        now += step
        calls.append((math.floor(now), failure, slow))
        if window == "count":
            in_window = calls[-window_size:]
        else:
            in_window = [c for c in calls if c[0] > math.floor(now) - window_size]
        n = len(in_window)
        fails = sum(c[1] for c in in_window)
        slows = sum(c[2] for c in in_window)
        should_trip = n >= min_calls and (
            Fraction(100 * fails, n) >= failure_rate or Fraction(100 * slows, n) >= slow_call_rate
        )
        transition = breaker.record(failure, 1.5 if slow else 0.5, now)
        if should_trip:
            assert transition is not None
            assert transition.new is OPEN
            assert seen == [transition]
            return
        assert transition is None
        stats = breaker.stats(now)
        assert (stats.calls, stats.failures, stats.slow_calls) == (n, fails, slows)
        assert (stats.failure_rate is None) == (n < min_calls)
    assert breaker.state is CLOSED


def test_adopt_takes_another_process_trip_and_close_but_never_an_older_one() -> None:
    """Several processes (``[listener] workers``): a trip elsewhere opens this breaker with the
    same deadline; crossed messages (a close made before this breaker's own re-open) change
    nothing; forced states are the operator's."""
    breaker, seen = make(open_s=5.0)
    assert breaker.adopt(OPEN, 1.0, "tripped (worker 1)", open_until=6.0, at=1.0) is not None
    assert (breaker.state, breaker.open_until) == (OPEN, 6.0)
    assert not breaker.allow(5.9)
    assert breaker.allow(6.0)  # the shared deadline: probing starts here too
    assert breaker.state is HALF_OPEN
    assert breaker.record(True, FAST, 6.1) is not None  # this process's probe fails: open again
    assert breaker.state is OPEN
    # The other process's probe had succeeded at 6.05, before this re-open at 6.1: ignored.
    assert breaker.adopt(CLOSED, 6.2, "probes succeeded (worker 1)", at=6.05) is None
    assert breaker.state is OPEN
    assert breaker.adopt(CLOSED, 6.3, "probes succeeded (worker 1)", at=6.25) is not None
    assert breaker.state is CLOSED
    assert [t.new for t in seen] == [OPEN, HALF_OPEN, OPEN, CLOSED]
    breaker.force("open", 7.0)
    assert breaker.adopt(CLOSED, 7.1, "x", at=7.1) is None
    assert breaker.state is BreakerState.FORCED_OPEN
